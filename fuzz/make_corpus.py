#!/usr/bin/env python3
"""Writes the small seed corpus of the libFuzzer targets under fuzz/corpus/<target>/ (numpy only)."""
import io, json, os, struct, zipfile
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SEP = b"\0IXLSEP\0"


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def npz(members, compress=False):
    b = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(b, **members)
    return b.getvalue()


def safetensors(tensors, meta=None):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


rng = np.random.default_rng(1)
e4m3 = np.frombuffer(bytes(rng.integers(0, 0x7E, 2 * 3 * 4, dtype=np.uint8)), dtype="V1").reshape(2, 3, 4)
bf16 = np.frombuffer(np.array([0x3F80, 0xBF80, 0x0001, 0x7F80], dtype="<u2").tobytes(), dtype="V2")
put("npy", "f4.npy", npy(rng.standard_normal((2, 3)).astype("<f4")))
put("npy", "i4.npy", npy(np.array([0, 3, 5], dtype="<i4")))
put("npy", "i8.npy", npy(np.array([[1, -1]], dtype="<i8")))
put("npy", "bool.npy", npy(np.array([True, False])))
put("npy", "e4m3.npy", npy(e4m3))
put("npy", "bf16.npy", npy(bf16))
put("npy", "scalar.npy", npy(np.float32(1.5)))

# A flat fp8 problem (nq 2, nk 4, h 3, d 4, k 2) and a paged bf16 one.
flat = {
    "q": e4m3, "k": np.frombuffer(bytes(rng.integers(0, 0x7E, 16, dtype=np.uint8)), dtype="V1").reshape(4, 4),
    "w": rng.standard_normal((2, 3)).astype("<f4"), "ks": np.array([0, 1], dtype="<i4"),
    "ke": np.array([3, 4], dtype="<i4"), "k_scale": np.full(4, 0.25, dtype="<f4"),
}
flat_json = {"name": "seed-flat", "path": "dsa", "precision": "fp8", "layout": "flat", "nq": 2, "nk": 4,
             "h": 3, "d": 4, "k": 2, "index_base": "relative"}
hisa_json = dict(flat_json, path="hisa", hisa={"block": 2, "m": 2, "topm_plus_ends": True},
                 align="release", strict_pooling=True)
misa_json = dict(flat_json, path="misa_dagger", misa={"heads": 2, "block": 2, "routing": "q_norm"},
                 dagger_k1=3)
page_tokens, d = 4, 2
cache = np.zeros((2, page_tokens * (d * 2 + 4)), dtype=np.uint8)
for p in range(2):
    vals = rng.standard_normal(page_tokens * d).astype("<f4").view("<u4") >> 16
    cache[p, : page_tokens * d * 2] = np.frombuffer(vals.astype("<u2").tobytes(), dtype=np.uint8)
    cache[p, page_tokens * d * 2:] = np.frombuffer(np.ones(page_tokens, dtype="<f4").tobytes(), dtype=np.uint8)
paged = {
    "q": rng.standard_normal((2, 1, d)).astype("<f4"), "w": np.ones((2, 1), dtype="<f4"),
    "kv_cache": cache, "block_table": np.array([[1, 0]], dtype="<i4"), "context_lens": np.array([6], dtype="<i4"),
}
paged["q"] = (paged["q"].view("<u4") & 0xFFFF0000).view("<f4")
paged_json = {"name": "seed-paged", "path": "misa", "precision": "bf16", "layout": "paged", "batch": 1,
              "next_n": 2, "page_tokens": page_tokens, "num_pages": 2, "max_pages": 2, "h": 1, "d": d, "k": 2,
              "misa": {"heads": 1, "block": 4, "routing": "pooled"}}
cand_flat = {"indices": np.array([[0, 1], [2, -1]], dtype="<i4")}
cand_paged = {"indices": np.array([[0, 3], [1, 2]], dtype="<i4")}

put("npz", "flat.npz", npz(flat))
put("npz", "flat_deflated.npz", npz(flat, compress=True))
put("npz", "paged.npz", npz(paged))
put("npz", "candidate.npz", npz(cand_flat))
for i, j in enumerate([flat_json, hisa_json, misa_json, paged_json]):
    put("problem_json", f"problem{i}.json", json.dumps(j, indent=1).encode())
put("safetensors", "mixed.safetensors", safetensors({
    "w": ("F32", [2, 3], flat["w"].tobytes()), "q": ("F8_E4M3", [2, 3, 4], e4m3.tobytes()),
    "b": ("BF16", [4], bf16.tobytes()), "ks": ("I32", [2], flat["ks"].tobytes())}, {"format": "pt"}))
put("safetensors", "empty.safetensors", safetensors({}))
put("safetensors", "scalar.safetensors", safetensors({"s": ("F64", [], np.float64(2.0).tobytes())}))
put("repro", "flat", json.dumps(flat_json).encode() + SEP + npz(flat) + SEP + npz(cand_flat))
put("repro", "hisa", json.dumps(hisa_json).encode() + SEP + npz(flat) + SEP + npz(cand_flat))
put("repro", "paged", json.dumps(paged_json).encode() + SEP + npz(paged) + SEP + npz(cand_paged))
