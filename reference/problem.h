/// Problem description, inputs, options and results of every indexer path (SPEC sections 1-7).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "reference/quant.h"
#include "reference/status.h"

namespace indexlab::ref {

enum class Precision { kFp32, kBf16, kFp8 };
enum class Path { kDsa, kHisa, kMisa, kMisaDagger };
enum class IndexBase { kRelative, kAbsolute };
enum class BlockAlign { kSequence, kRelease };
enum class Routing { kPooled, kOwnKey, kQNorm };

const char* precision_name(Precision p);
const char* path_name(Path p);
const char* routing_name(Routing r);
Status parse_precision(const std::string& s, Precision* out);  // fp32 | bf16 | fp8
Status parse_path(const std::string& s, Path* out);            // dsa | hisa | misa | misa_dagger
Status parse_routing(const std::string& s, Routing* out);      // pooled | own_key | q_norm
/// Bytes of one stored element of q or k: 4 (fp32), 2 (bf16), 1 (fp8 e4m3 code).
int element_bytes(Precision p);

/// Dimensions of a flat (prefill / ragged) problem.
struct Shape {
  int64_t nq = 0;  // query rows
  int64_t nk = 0;  // keys in the buffer
  int h = 0;       // indexer heads
  int d = 0;       // head dim
  int k = 0;       // tokens selected per query (top-K)
};

/// Inputs of a flat problem, already in the precision they are scored in. Values are stored
/// decoded as fp32 and must be exactly representable in `precision` (validate() checks).
struct Inputs {
  Shape shape;
  Precision precision = Precision::kFp32;
  std::vector<float> q;          // [nq, h, d]
  std::vector<float> k;          // [nk, d]
  std::vector<float> k_scale;    // [nk] positive finite per-key scale s[j]; empty means all 1
  std::vector<float> w;          // [nq, h] fp32, may be negative (fp8: q scale folded in)
  std::vector<float> q_scale;    // [nq, h] optional per-(i,h) q scale for q-norm routing; empty = 1
  std::vector<int32_t> ks;       // [nq] first visible key
  std::vector<int32_t> ke;       // [nq] one past the last visible key
  std::vector<int32_t> seq_end;  // [nq] optional end of the query's sequence in the buffer
                                 //      (HISA / MISA pooling); empty means nk
  std::vector<int32_t> block_origin;  // [nq] optional origin of the release-aligned block grid
                                      // (blocks [o + bB, o + (b+1)B)); empty means 0. Flattened
                                      // paged problems set each sequence's offset here.
};

/// Paged decode inputs (SPEC section 1). Page p holds page_tokens x d stored elements first
/// (e4m3 codes, bf16 or fp32 little-endian), then page_tokens fp32 scales: 132 bytes per token
/// at d = 128 in fp8, 8448 bytes per 64-token page.
struct PagedInputs {
  Precision precision = Precision::kFp8;
  int h = 0, d = 0, k = 0;
  int next_n = 1;                     // queries per sequence (speculative / MTP decode)
  int64_t batch = 0;                  // sequences
  int page_tokens = 64;
  int64_t num_pages = 0;
  std::vector<uint8_t> cache;         // [num_pages, page_bytes()]
  int64_t max_pages = 0;              // columns of block_table
  std::vector<int32_t> block_table;   // [batch, max_pages] physical page of each logical page
  std::vector<int32_t> context_lens;  // [batch]
  std::vector<float> q;               // [batch * next_n, h, d] row = b * next_n + r
  std::vector<float> w;               // [batch * next_n, h]
  std::vector<float> q_scale;         // [batch * next_n, h] optional (q-norm routing)

  int64_t rows() const { return batch * next_n; }
  int64_t page_bytes() const {
    return static_cast<int64_t>(page_tokens) * (static_cast<int64_t>(d) * element_bytes(precision) + 4);
  }
};

struct Options {
  IndexBase index_base = IndexBase::kRelative;
  bool want_logits = false;     // also return the path's final scores as dense logits
  bool allow_nonfinite = false; // opt out of rejecting NaN / Inf in q, k, w
  // HISA (SPEC 4)
  int hisa_block = 128;         // B
  int hisa_m = 64;              // blocks kept
  bool hisa_topm_plus_ends = false;   // the paper's top-m plus {first, last} (up to m + 2 blocks)
  bool hisa_bf16_block_scores = false;// rank blocks on J rounded to bf16 (TileLang release)
  // HISA and MISA pooling
  BlockAlign align = BlockAlign::kSequence;
  bool strict_pooling = false;  // pool only keys j < ke[i] (default: j < seq_end[i])
  // MISA (SPEC 5)
  int misa_heads = 8;           // active heads h
  int misa_block = 1024;        // router block size Br
  Routing routing = Routing::kPooled;  // own_key routes on key ke[i] - 1 (the query's own key);
                                       // paged decode allows it with next_n = 1 only
  // MISA-dagger (SPEC 6)
  int64_t dagger_k1 = 8192;
  // Threads (0: OpenMP default).
  int threads = 0;
};

/// Output of a reference path: the canonical selection (score descending, then key ascending),
/// -1 padded, plus the reference score of every selected key.
struct Result {
  int64_t nq = 0;
  int k = 0;
  std::vector<int32_t> index;    // [nq, k] relative to ks (or absolute); -1 padding
  std::vector<float> score;      // [nq, k] fp32 score of each selected key; -inf at padding
  std::vector<float> bound;      // [nq, k] absolute error bound of each score before its final
                                 //         rounding to fp32 (0 when the fp64 sum was exact)
  std::vector<uint8_t> ambiguous;// [nq] 1 where some compared score's rounding to fp32 may differ
                                 //      from the correctly rounded one (SPEC 8)
  int64_t logits_cols = 0;
  std::vector<float> logits;     // [nq, logits_cols] on request: the path's final score, -inf where
                                 // a key is not visible or not a candidate of that path
  std::vector<int32_t> active_heads;  // MISA / MISA-dagger: [nq, misa_heads] chosen heads, ascending
};

/// Checks shapes, ranges and values; the message names the field and the index at fault.
Status validate(const Inputs& in, const Options& opt);
Status validate(const PagedInputs& in, const Options& opt);
/// Checks the path's own parameters (K, B, m, h, Br, K1) against the shape.
Status validate_options(Path path, const Shape& shape, const Options& opt);

/// Runs one reference path on a flat problem. Never aborts on bad input: returns the error.
Status run(Path path, const Inputs& in, const Options& opt, Result* out);
/// Runs one reference path on a paged decode problem. Relative indices are positions in the
/// sequence; absolute ones are physical cache slots (page * page_tokens + slot). Logits, on request,
/// are [rows, max_pages * page_tokens] by position.
Status run_paged(Path path, const PagedInputs& in, const Options& opt, Result* out);

/// Lays a paged problem out flat: keys of sequence b gathered in order at offset off[b],
/// ks = off[b], ke = off[b] + max(0, min(ctx, ctx - next_n + r + 1)), seq_end = off[b] + ctx,
/// block_origin = off[b].
/// slot_of_key (optional) receives the physical cache slot of each flat key.
Status flatten_paged(const PagedInputs& in, const Options& opt, Inputs* flat,
                     std::vector<int64_t>* slot_of_key = nullptr);
/// For a result computed on flatten_paged's layout with relative indices (positions from
/// flat.ks[i]): when opt asks for absolute indices, rewrites each one (not the -1 padding) into
/// its physical cache slot. Refuses, before touching r, caches whose slots exceed int32.
Status paged_indices_to_slots(const PagedInputs& in, const Options& opt, const Inputs& flat,
                              const std::vector<int64_t>& slot_of_key, Result* r);

/// Raw (unquantized) fp32 problem, from which the precision modes are derived.
struct RawInputs {
  Shape shape;
  std::vector<float> q;        // [nq, h, d]
  std::vector<float> k;        // [nk, d]
  std::vector<float> w;        // [nq, h]
  std::vector<int32_t> ks, ke; // [nq]
  std::vector<int32_t> seq_end;// [nq] optional
  std::vector<int32_t> block_origin;  // [nq] optional
};

struct QuantizeOptions {
  QuantConfig key{Quantizer::kDeepGemm, false, 1e-4f};    // per-key scales
  QuantConfig query{Quantizer::kVllmCache, false, 1e-10f};// per-(i,h) q scales, folded into w
};

/// Derives the inputs of one precision mode: fp32 copies; bf16 rounds q and k (RNE, scales 1);
/// fp8 quantizes keys per token and queries per (i, h), folding q scales into w (fp32 multiply)
/// and keeping them in q_scale.
Status quantize_inputs(const RawInputs& raw, Precision p, const QuantizeOptions& qo, Inputs* out);

}  // namespace indexlab::ref
