#include "api/rate_limiter.h"

#include <catch2/catch.hpp>

namespace keyledger::api {
namespace {

constexpr std::int64_t kStart = 1'700'000'000'000'000'000;

TEST_CASE("a bucket starts full, refills at the tier's rate and refuses with the wait") {
  const RateLimitTier tier{"standard", 50, 100};
  TokenBucket bucket;
  RateLimitDecision d = take_tokens(bucket, tier, 100, kStart);
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  CHECK(d.reset_ms == 2000);  // 100 tokens at 50/s

  d = take_tokens(bucket, tier, 1, kStart);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_ms == 20);  // one token at 50/s

  d = take_tokens(bucket, tier, 1, kStart + 20'000'000);  // 20 ms later
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
}

TEST_CASE("a cost above the burst is refused with the time until the bucket is full") {
  const RateLimitTier tier{"standard", 50, 100};
  TokenBucket bucket;
  REQUIRE(take_tokens(bucket, tier, 50, kStart).allowed);
  const RateLimitDecision d = take_tokens(bucket, tier, 101, kStart);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_ms == 1000);  // 50 missing tokens at 50/s
}

TEST_CASE("a tiny configured rate caps the waits instead of overflowing them") {
  // Found by tests/fuzz/config_file: 5e-18 tokens a second made the wait ~2e20 ms.
  const auto tiers = parse_tiers("slow:0.000000000000000005:1");
  REQUIRE(tiers.ok());
  TokenBucket bucket;
  REQUIRE(take_tokens(bucket, tiers->front(), 1, kStart).allowed);
  const RateLimitDecision d = take_tokens(bucket, tiers->front(), 1, kStart + 1);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_ms > 0);
  CHECK(d.retry_after_ms <= 9'200'000'000'000'000);
  CHECK(d.reset_ms == d.retry_after_ms);
}

TEST_CASE("tier specifications: what parses and what is refused") {
  const auto tiers = parse_tiers("standard:50:100,elevated:500:1000");
  REQUIRE(tiers.ok());
  REQUIRE(tiers->size() == 2);
  CHECK(tiers->at(1).name == "elevated");
  CHECK(tiers->at(1).rate_per_second == 500);
  CHECK(tiers->at(1).burst == 1000);
  for (const char* bad : {"", "standard", "standard:50", ":50:100", "s:0:100", "s:-1:100", "s:nan:100",
                          "s:50:0", "s:50:x", "s:50x:100"}) {
    INFO(bad);
    const auto r = parse_tiers(bad);
    CHECK_FALSE(r.ok());
  }
}

}  // namespace
}  // namespace keyledger::api
