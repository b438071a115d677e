/// Emulation of Hopper tensor-core (wgmma) accumulation, SPEC section 8, bit for bit.
#pragma once
#include <cstdint>

namespace indexlab::ref {

/// One fp8 (e4m3 x e4m3 -> fp32) wgmma k-chunk of up to 32 products for one output element,
/// as MEASURED on an H100 (Sm90Probe: 65,536 single-instruction outputs, all bit-exact):
/// every product and the incoming accumulator are aligned to the largest exponent among them,
/// each truncated toward zero to 13 fraction bits at that exponent, summed exactly, and the
/// result truncated toward zero to 13 fraction bits (the low 10 bits of the fp32 result are 0).
/// A product's exponent is ea + eb, the sum of its operands' exponent fields (an e4m3 subnormal
/// counts as -6), not the exponent of the normalized product, which is one higher when the
/// mantissa product is >= 2: SPEC 8's text says the latter and differs from the hardware in ~17%
/// of outputs. The accumulator enters with its own fp32 exponent.
/// a and b hold e4m3 values (decoded); n <= 32.
float wgmma_fp8_chunk(const float* a, const float* b, int n, float acc);
/// A full dot product as a chain of 32-wide fp8 chunks (K = 128 is 4 of them), starting at acc.
float wgmma_fp8_dot(const float* a, const float* b, int n, float acc = 0.0f);

/// One bf16 wgmma k-chunk of up to 16 products: alignment to the largest exponent keeps 25 fraction
/// bits, the exact sum is truncated toward zero to fp32. SPEC 8's model (the exponent of the
/// normalized product), not yet probed on a GPU.
float wgmma_bf16_chunk(const float* a, const float* b, int n, float acc);
float wgmma_bf16_dot(const float* a, const float* b, int n, float acc = 0.0f);

}  // namespace indexlab::ref
