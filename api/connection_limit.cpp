#include "api/connection_limit.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>

namespace keyledger::api {

std::size_t connection_limit_for(std::size_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return wanted;
  }
  const rlim_t needed = static_cast<rlim_t>(wanted + kReservedDescriptors);
  if (limit.rlim_cur < needed) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? needed : std::min(needed, limit.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
    }
  }
  if (limit.rlim_cur >= needed) {
    return wanted;
  }
  const std::size_t available = static_cast<std::size_t>(limit.rlim_cur);
  const std::size_t lowered =
      available > 2 * kReservedDescriptors ? available - kReservedDescriptors : available / 2;
  spdlog::warn("--max-connections {} needs {} file descriptors but the limit is {} (ulimit -n); "
               "taking at most {} connections",
               wanted, needed, available, lowered);
  return lowered;
}

}  // namespace keyledger::api
