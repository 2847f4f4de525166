#pragma once
// Guarded<T>: a value reachable only with its mutex held. Where a comment would say "under
// mu", the type says it instead: with(f) locks, calls f(value) and unlocks, so code that
// forgets the lock does not compile.
//
//   Guarded<std::unordered_map<std::string, int>> counts;
//   counts.with([&](auto& map) { ++map[name]; });
#include <mutex>
#include <utility>

namespace keyledger {

template <typename T, typename Mutex = std::mutex>
class Guarded {
 public:
  template <typename... Args>
  explicit Guarded(Args&&... args) : value_(std::forward<Args>(args)...) {}

  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;

  template <typename F>
  decltype(auto) with(F&& f) {
    std::lock_guard lock(mutex_);
    return std::forward<F>(f)(value_);
  }

  template <typename F>
  decltype(auto) with(F&& f) const {
    std::lock_guard lock(mutex_);
    return std::forward<F>(f)(value_);
  }

 private:
  mutable Mutex mutex_;
  T value_;
};

}  // namespace keyledger
