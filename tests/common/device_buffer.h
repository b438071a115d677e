/// An owning device buffer for the GPU tests that call the kernels' device-pointer launchers.
/// Only with CUDA (INDEXLAB_HAVE_CUDA); every allocation is poisoned (0xFF bytes by default) so a
/// kernel that leaves an element unwritten is seen.
#pragma once
#if INDEXLAB_HAVE_CUDA
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace indexlab::testing {

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  Dev() = default;
  explicit Dev(const std::vector<T>& v) { up(v); }
  explicit Dev(size_t count) { alloc(count); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() {
    if (p) cudaFree(p);
  }
  void alloc(size_t m, int byte = 0xFF) {
    if (p) cudaFree(p);
    p = nullptr;
    n = m;
    ASSERT_EQ(cudaMalloc(&p, std::max<size_t>(1, m) * sizeof(T)), cudaSuccess);
    ASSERT_EQ(cudaMemset(p, byte, std::max<size_t>(1, m) * sizeof(T)), cudaSuccess);  // poison
  }
  void up(const std::vector<T>& v) {
    alloc(v.size());
    if (!v.empty()) {
      ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  std::vector<T> down() const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (n) {
      EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return v;
  }
};

}  // namespace indexlab::testing
#endif  // INDEXLAB_HAVE_CUDA
