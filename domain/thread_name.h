#pragma once
// Names the calling thread, as `top -H`, `perf` and /proc/PID/task/*/comm show it, so an
// operator sees which of the process's threads is busy (kl-io, kl-log-syncer, …). Linux
// keeps at most 15 bytes; a longer name is cut.
#include <pthread.h>

#include <string>
#include <string_view>

namespace keyledger {

inline void name_this_thread(std::string_view name) {
  constexpr std::size_t kMaxNameBytes = 15;
  const std::string cut(name.substr(0, kMaxNameBytes));
  pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace keyledger
