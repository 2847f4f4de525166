#pragma once
// Per-key token buckets (API.md §4). A bucket holds up to `burst` tokens and refills at
// `rate_per_second`; a request takes `cost` tokens or is refused with the time until it
// could pass. State lives in memory on this node only (replicas limit per node).

#include <array>
#include <functional>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "domain/clock.h"
#include "domain/status.h"

namespace keyledger::api {

struct RateLimitTier {
  std::string name;
  double rate_per_second = 50;
  std::uint32_t burst = 100;
};

// The contract's defaults: standard 50/s burst 100, elevated 500/s burst 1000.
std::vector<RateLimitTier> default_tiers();
// Parses "name:rate:burst,name:rate:burst" (configuration). InvalidArgument on bad input.
Result<std::vector<RateLimitTier>> parse_tiers(std::string_view spec);

struct RateLimitDecision {
  bool allowed = true;
  std::uint32_t limit = 0;           // the burst
  std::uint32_t remaining = 0;       // whole tokens left after this request
  std::int64_t reset_ms = 0;         // until the bucket is full again
  std::int64_t retry_after_ms = 0;   // when refused: until `cost` tokens are there
};

class RateLimiter {
 public:
  explicit RateLimiter(const Clock& clock) : clock_(clock) {}

  // Takes `cost` tokens from the bucket of `key_id` under `tier`. Cost 0 only reads.
  RateLimitDecision take(std::string_view key_id, const RateLimitTier& tier, std::uint32_t cost);

 private:
  struct Bucket {
    double tokens = 0;
    std::int64_t updated_ns = 0;
  };
  // Looks buckets up by string_view: no allocation for a key seen before.
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, Bucket, KeyHash, std::equal_to<>> buckets;
  };
  static constexpr std::size_t kShards = 64;

  const Clock& clock_;
  std::array<Shard, kShards> shards_;
};

}  // namespace keyledger::api
