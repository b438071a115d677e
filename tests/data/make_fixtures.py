"""Writes the tensor-file fixtures of tests/compare/test_tensor_io.cc (needs numpy, ml_dtypes, safetensors)."""
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save as save_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


# Values the C++ test repeats: exact binary fractions, negatives, and dims that are not all equal.
F32 = (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5) * 0.75      # shape (2, 3)
I32 = np.array([-7, 0, 2**31 - 1], dtype=np.int32)                     # shape (3,)
I64 = np.array([[-(2**40), 5]], dtype=np.int64)                        # shape (1, 2)
U8 = np.array([0, 17, 255], dtype=np.uint8)                            # shape (3,)
BOOL = np.array([True, False, True, True])                            # shape (4,)
F16 = np.array([1.0, -0.5, 65504.0, 2.0**-24], dtype=np.float16)       # shape (4,): max and min subnormal
BF16 = np.array([1.5, -2.25, 2.0**-130], dtype=ml_dtypes.bfloat16)     # shape (3,): a subnormal
E4M3 = np.array([448.0, -0.0, 2.0**-9, -3.5], dtype=ml_dtypes.float8_e4m3fn)  # shape (4,)
SCALAR = np.float64(0.1)                                               # shape ()

np.save(path("f32_2x3.npy"), F32)
np.save(path("bf16_3.npy"), BF16)        # descr '<V2'
np.save(path("e4m3_4.npy"), E4M3)        # descr '<V1'
np.save(path("scalar_f64.npy"), np.array(SCALAR))
np.save(path("fortran_3x2.npy"), np.asfortranarray(F32.T))
np.save(path("big_endian.npy"), F32.astype(">f4"))
# Keyword order = name order, the order indexlab's TensorMap writes in.
np.savez(path("small.npz"), b=BOOL, f16=F16, f32=F32, i32=I32, i64=I64, u8=U8)
np.savez_compressed(path("small_compressed.npz"), f32=F32, i32=I32, scalar=np.array(SCALAR))
with open(path("small.safetensors"), "wb") as f:
    f.write(save_safetensors({"f32": F32, "i64": I64, "bf16": BF16, "e4m3": E4M3, "b": BOOL, "u8": U8},
                             metadata={"producer": "make_fixtures.py"}))
