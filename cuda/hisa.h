/// Host-only interface to the sm90 HISA decode pooled cache: device-resident pooled block keys
/// (re-quantized e4m3 codes + fp32 scales) per (sequence, block) of a paged cache, updated
/// incrementally as sequences grow. Includes no CUDA header.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::cuda {

/// Pooled HISA keys of a paged fp8 cache (SPEC 4.2 with the pooling end = context length):
/// block t of sequence b pools positions [t B, min((t + 1) B, ctx[b])) with the arithmetic of
/// launch_pool_fp8 (re-quantized). Slot of (b, t): b * blocks_per_seq() + t.
class HisaPooledCache {
 public:
  HisaPooledCache();
  ~HisaPooledCache();
  HisaPooledCache(const HisaPooledCache&) = delete;
  HisaPooledCache& operator=(const HisaPooledCache&) = delete;

  /// Allocates for batch sequences of up to max_pages 64-token pages; every length becomes 0.
  Status reset(int64_t batch, int64_t max_pages, int block, int d);
  /// Device-pointer update: sequence b grows from its pooled length to context_lens[b] (host
  /// vector [batch]); only the blocks holding new tokens are re-pooled (the block that held the
  /// old last token and every later one). A shorter length re-pools only its new last block.
  /// cache [num_pages, 64 (d + 4)] and block_table [batch, max_pages] are device pointers.
  Status update(const uint8_t* cache, const int32_t* block_table, int64_t num_pages,
                const std::vector<int32_t>& context_lens, void* stream = nullptr);
  /// Host convenience: uploads in.cache and in.block_table, then update(in.context_lens).
  Status update(const ref::PagedInputs& in);
  /// Copies the pooled codes [batch * blocks_per_seq, d] and scales [batch * blocks_per_seq] out.
  Status download(std::vector<uint8_t>* codes, std::vector<float>* scales) const;
  /// Blocks re-pooled by the last update.
  int64_t last_repooled() const;

  int64_t blocks_per_seq() const;
  int64_t batch() const;
  int block() const;
  int d() const;
  const std::vector<int32_t>& lengths() const;
  const uint8_t* codes() const;   // device [batch * blocks_per_seq, d]
  const float* scales() const;    // device [batch * blocks_per_seq]

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace indexlab::cuda
