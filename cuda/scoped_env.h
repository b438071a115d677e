/// Sets an environment variable for one scope and restores it: how tests and benchmarks switch
/// the kernels' INDEXLAB_* selections (INDEXLAB_LOGITS, INDEXLAB_TOPK, ...), which the launchers
/// read at launch time.
#pragma once
#include <cstdlib>
#include <string>

namespace indexlab::cuda {

class ScopedEnv {
 public:
  /// value == nullptr leaves the variable as it is.
  ScopedEnv(const char* name, const char* value) : name_(name), active_(value != nullptr) {
    if (!active_) return;
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (!active_) return;
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool active_ = false, had_ = false;
};

}  // namespace indexlab::cuda
