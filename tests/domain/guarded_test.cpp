#include "domain/guarded.h"

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <thread>
#include <vector>

namespace keyledger {
namespace {

TEST_CASE("Guarded: every change made through with() under contention is kept", "[domain][guarded]") {
  Guarded<std::map<std::string, int>> counts;
  constexpr int kThreads = 4;
  constexpr int kIncrements = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&counts, t] {
      for (int i = 0; i < kIncrements; ++i) {
        // Two entries per call: a torn update would show as a difference between them.
        counts.with([&](auto& map) {
          ++map["total"];
          ++map["thread-" + std::to_string(t)];
        });
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  const Guarded<std::map<std::string, int>>& read_only = counts;
  read_only.with([&](const auto& map) {
    REQUIRE(map.at("total") == kThreads * kIncrements);
    for (int t = 0; t < kThreads; ++t) {
      CHECK(map.at("thread-" + std::to_string(t)) == kIncrements);
    }
  });
}

TEST_CASE("Guarded: with() returns what the function returns, and constructs the value in place",
          "[domain][guarded]") {
  Guarded<std::vector<int>> numbers(3, 7);
  const std::size_t size = numbers.with([](std::vector<int>& v) {
    v.push_back(8);
    return v.size();
  });
  CHECK(size == 4);
  const int sum = numbers.with([](const std::vector<int>& v) {
    int s = 0;
    for (int x : v) {
      s += x;
    }
    return s;
  });
  CHECK(sum == 3 * 7 + 8);
}

}  // namespace
}  // namespace keyledger
