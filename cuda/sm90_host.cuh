/// Host-side helpers shared by the CUDA entry points: owning device arrays, e4m3 packing,
/// output poisoning, launch checks. Compiled by nvcc only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "cuda/sm90_common.cuh"
#include "reference/numerics.h"

namespace indexlab::cuda::detail {

/// Owning device allocation (freed on scope exit).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_) cudaFree(ptr_);
  }
  Status alloc(size_t n) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    n_ = n;
    if (n == 0) return Status::Ok();
    INDEXLAB_CUDA_CHECK(cudaMalloc(&ptr_, n * sizeof(T)));
    return Status::Ok();
  }
  Status upload(const T* src, size_t n) {
    INDEXLAB_RETURN_IF_ERROR(alloc(n));
    if (n) INDEXLAB_CUDA_CHECK(cudaMemcpy(ptr_, src, n * sizeof(T), cudaMemcpyHostToDevice));
    return Status::Ok();
  }
  Status upload(const std::vector<T>& v) { return upload(v.data(), v.size()); }
  Status download(T* dst, size_t n, size_t offset = 0) const {
    if (n) INDEXLAB_CUDA_CHECK(cudaMemcpy(dst, ptr_ + offset, n * sizeof(T), cudaMemcpyDeviceToHost));
    return Status::Ok();
  }
  T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

inline std::vector<uint8_t> to_e4m3(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ref::float_to_e4m3_satfinite(v[i]);
  return out;
}

// Rows of logits materialized at once (bounded workspace).
inline int64_t chunk_rows(int64_t rows, int64_t cols) {
  const int64_t budget = int64_t{1} << 29;  // floats: 2 GiB
  return std::max<int64_t>(1, std::min<int64_t>(rows, budget / std::max<int64_t>(cols, 1)));
}

// Output buffers are poisoned before every launch (logits and scores 0xFF.. = a NaN pattern,
// indices 0x7F7F7F7F) so tests can prove every element was written.
template <typename T>
Status poison(const DeviceArray<T>& a, int byte) {
  if (a.size()) INDEXLAB_CUDA_CHECK(cudaMemset(a.get(), byte, a.size() * sizeof(T)));
  return Status::Ok();
}

inline Status sync_check() {
  INDEXLAB_CUDA_CHECK(cudaGetLastError());
  INDEXLAB_CUDA_CHECK(cudaDeviceSynchronize());
  return Status::Ok();
}


/// Ok when device_available(); otherwise "no usable GPU: <why>".
inline Status need_device() {
  std::string why;
  if (!device_available(&why)) return error("no usable GPU: ", why);
  return Status::Ok();
}

}  // namespace indexlab::cuda::detail
