/// Host-only interface to the sm90 decode pooled cache of HISA and MISA: device-resident pooled
/// block keys per (sequence, block) of a paged cache (re-quantized e4m3 codes + fp32 scales for
/// HISA's block scores, fp32 means for MISA's router), updated incrementally as sequences grow.
/// Includes no CUDA header.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "reference/problem.h"
#include "reference/status.h"

namespace indexlab::cuda {

/// What a PagedPooledCache keeps of each block: HISA's re-quantized codes and scale (SPEC 4.2),
/// MISA's fp32 mean (SPEC 5.1: not re-quantized), or both.
enum class PooledForm { kQuantized, kMeans, kBoth };

/// Pooled keys of a paged fp8 cache (SPEC 4.2 / 5.1 with the pooling end = context length):
/// block t of sequence b pools positions [t B, min((t + 1) B, ctx[b])) with the arithmetic of
/// launch_pool_fp8 (fp64 sum in ascending order, one fp32 division; re-quantized for the codes).
/// Slot of (b, t): b * blocks_per_seq() + t. Equal bit for bit to pooling each block from scratch.
class PagedPooledCache {
 public:
  PagedPooledCache();
  ~PagedPooledCache();
  PagedPooledCache(const PagedPooledCache&) = delete;
  PagedPooledCache& operator=(const PagedPooledCache&) = delete;

  /// Allocates for batch sequences of up to max_pages 64-token pages; every length becomes 0.
  /// block: a positive multiple of 64; d: 64 or 128.
  Status reset(int64_t batch, int64_t max_pages, int block, int d, PooledForm form = PooledForm::kQuantized);
  /// Device-pointer update: sequence b grows from its pooled length to context_lens[b] (host
  /// vector [batch]); only the blocks holding new tokens are re-pooled (the block that held the
  /// old last token and every later one). A shorter length re-pools only its new last block.
  /// cache [num_pages, 64 (d + 4)] and block_table [batch, max_pages] are device pointers.
  Status update(const uint8_t* cache, const int32_t* block_table, int64_t num_pages,
                const std::vector<int32_t>& context_lens, void* stream = nullptr);
  /// Host convenience: uploads in.cache and in.block_table, then update(in.context_lens).
  Status update(const ref::PagedInputs& in);
  /// Copies the pooled codes [batch * blocks_per_seq, d] and scales [batch * blocks_per_seq] out
  /// (an error for PooledForm::kMeans).
  Status download(std::vector<uint8_t>* codes, std::vector<float>* scales) const;
  /// Copies the fp32 means [batch * blocks_per_seq, d] out (an error for PooledForm::kQuantized).
  Status download_means(std::vector<float>* means) const;
  /// Blocks re-pooled by the last update.
  int64_t last_repooled() const;

  int64_t blocks_per_seq() const;
  int64_t batch() const;
  int block() const;
  int d() const;
  const std::vector<int32_t>& lengths() const;
  PooledForm form() const;
  const uint8_t* codes() const;   // device [batch * blocks_per_seq, d]; null for kMeans
  const float* scales() const;    // device [batch * blocks_per_seq]; null for kMeans
  const float* means() const;     // device [batch * blocks_per_seq, d]; null for kQuantized

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace indexlab::cuda
