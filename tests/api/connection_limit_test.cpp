#include "api/connection_limit.h"

#include <catch2/catch.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace keyledger::api {
namespace {

// Runs `body` in a forked child (a hard limit, once lowered, cannot be raised again) and
// returns its exit status: 0 when every expectation held, else the number of the first that
// did not.
template <typename Body>
int in_child(Body body) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    _exit(body());
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("the connection limit fits the descriptor limit", "[server]") {
  rlimit original{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &original) == 0);

  SECTION("a soft limit too low is raised toward the hard one, and the limit kept") {
    // Within the hard limit this process has (lowering it needs no privilege).
    const rlim_t hard = original.rlim_max == RLIM_INFINITY ? 4000 : std::min<rlim_t>(original.rlim_max, 4000);
    REQUIRE(hard > 2 * kReservedDescriptors + 100);
    const std::size_t wanted = static_cast<std::size_t>(hard) - kReservedDescriptors - 100;
    CHECK(in_child([&] {
            rlimit limit{kReservedDescriptors, hard};
            if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
              return 10;
            }
            if (connection_limit_for(wanted) != wanted) {
              return 1;
            }
            getrlimit(RLIMIT_NOFILE, &limit);
            return limit.rlim_cur == wanted + kReservedDescriptors ? 0 : 2;
          }) == 0);
  }
  SECTION("a hard limit too low lowers the connection limit") {
    CHECK(in_child([] {
            rlimit limit{2000, 2000};
            if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
              return 10;
            }
            return connection_limit_for(50'000) == 2000 - kReservedDescriptors ? 0 : 1;
          }) == 0);
  }
  SECTION("a tiny limit keeps half of it for connections") {
    CHECK(in_child([] {
            rlimit limit{300, 300};
            if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
              return 10;
            }
            return connection_limit_for(10'000) == 150 ? 0 : 1;
          }) == 0);
  }
  // The parent's limits are untouched.
  rlimit after{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &after) == 0);
  CHECK(after.rlim_cur == original.rlim_cur);
  CHECK(after.rlim_max == original.rlim_max);
}

}  // namespace keyledger::api
