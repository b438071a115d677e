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

/// One bf16 (bf16 x bf16 -> fp32) wgmma k-chunk of up to 16 products for one output element,
/// as MEASURED on an H100 (Sm90ProbeBf16: 73,728 single-instruction m64n8k16 outputs, 20,480 of
/// them with subnormal operands, all bit-exact): every product (exact) and the incoming
/// accumulator are aligned to the largest exponent among them, each truncated toward zero to 25
/// fraction bits at that exponent, summed exactly, and the sum truncated toward zero to fp32
/// (24 significant bits). A product's alignment exponent is ea + eb, the sum of its operands'
/// exponents (a bf16 subnormal is not flushed and counts as -126), not the exponent of the
/// normalized product: SPEC 8's text says the latter and differs from the hardware in 8,149 of
/// the 73,728 outputs (11%); counting a subnormal at its own exponent differs in 4,750; flushing
/// subnormals, 24 or 26 kept bits, or two chained 8-product halves all differ too. The
/// accumulator enters with its own fp32 exponent. a and b hold bf16 values (decoded); n <= 16.
float wgmma_bf16_chunk(const float* a, const float* b, int n, float acc);
/// A full dot product as a chain of 16-wide bf16 chunks (K = 128 is 8 of them), starting at acc.
float wgmma_bf16_dot(const float* a, const float* b, int n, float acc = 0.0f);

/// The family of chunk models the probes fit (wgmma_fp8_chunk and wgmma_bf16_chunk are members).
struct TcChunkModel {
  int align_bits = 25;            // fraction bits kept at the alignment exponent
  int result_bits = 24;           // significant bits of the truncated result
  bool operand_exponents = true;  // product exponent = ea + eb (else: of the normalized product)
  int operand_min_exponent = -126;// exponent of a subnormal operand (bf16: -126, e4m3: -6)
  bool ftz_operands = false;      // subnormal operands read as zero
};
/// One chunk of n products under model m (n is not limited; the caller chooses the chunk size).
float tc_chunk(const float* a, const float* b, int n, float acc, const TcChunkModel& m);

}  // namespace indexlab::ref
