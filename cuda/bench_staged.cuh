/// Stage timing for the benchmark fixtures: CUDA events recorded between the kernels of one run,
/// summed per stage name after the run's final synchronization.
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <utility>
#include <vector>

#include "cuda/api.h"
#include "cuda/sm90_common.cuh"

namespace indexlab::cuda::detail {

class StageTimer {
 public:
  StageTimer() = default;
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;
  ~StageTimer() {
    for (auto e : events_) cudaEventDestroy(e);
  }
  /// Starts a run: the first mark.
  Status begin(cudaStream_t s = nullptr) {
    used_ = 0;
    names_.clear();
    return record("", s);
  }
  /// Ends the stage `name` that began at the previous mark.
  Status mark(const std::string& name, cudaStream_t s = nullptr) { return record(name, s); }
  /// Waits for the last mark; *total_ms = first to last mark; stages summed by name in order of
  /// first appearance.
  Status finish(float* total_ms, std::vector<std::pair<std::string, float>>* stages) {
    if (used_ < 1) return error("StageTimer: finish without begin");
    INDEXLAB_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
    INDEXLAB_CUDA_CHECK(cudaGetLastError());
    INDEXLAB_CUDA_CHECK(cudaEventElapsedTime(total_ms, events_[0], events_[used_ - 1]));
    stages->clear();
    for (size_t i = 1; i < used_; ++i) {
      float ms = 0.0f;
      INDEXLAB_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i - 1], events_[i]));
      bool found = false;
      for (auto& st : *stages) {
        if (st.first == names_[i]) {
          st.second += ms;
          found = true;
        }
      }
      if (!found) stages->emplace_back(names_[i], ms);
    }
    return Status::Ok();
  }

 private:
  Status record(const std::string& name, cudaStream_t s) {
    if (used_ == events_.size()) {
      cudaEvent_t e;
      INDEXLAB_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    INDEXLAB_CUDA_CHECK(cudaEventRecord(events_[used_], s));
    names_.push_back(name);
    ++used_;
    return Status::Ok();
  }
  std::vector<cudaEvent_t> events_;
  std::vector<std::string> names_;
  size_t used_ = 0;
};

}  // namespace indexlab::cuda::detail
