/// Status: the error type every public entry point returns; its message names the field and index.
#pragma once
#include <sstream>
#include <string>
#include <utility>

namespace indexlab {

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) {
    Status s;
    s.ok_ = false;
    s.message_ = std::move(message);
    return s;
  }
  bool ok() const { return ok_; }
  const std::string& message() const { return message_; }
  /// Prefixes context ("while reading x.npz: ") to an error; no-op on success.
  Status with_context(const std::string& ctx) const {
    if (ok_) return *this;
    return Error(ctx + message_);
  }

 private:
  bool ok_ = true;
  std::string message_;
};

/// Builds an error message from streamable parts: `error("ks[", i, "] = ", v, " is negative")`.
template <typename... Args>
Status error(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return Status::Error(os.str());
}

}  // namespace indexlab

#define INDEXLAB_RETURN_IF_ERROR(expr)       \
  do {                                       \
    ::indexlab::Status _il_status = (expr);  \
    if (!_il_status.ok()) return _il_status; \
  } while (0)
