#pragma once
// Per-key token buckets (api/openapi.yaml). A bucket holds up to `burst` tokens and refills at
// `rate_per_second`; a request takes `cost` tokens or is refused with the time until it
// could pass. State lives in memory on this node only (replicas limit per node), beside the
// key's entry in the ActiveKeyTable.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "domain/status.h"
#include "projections/active_key_table.h"

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

// Takes `cost` tokens from `bucket` at `now_ns` under `tier` (cost 0 only reads), or refuses
// with the time until they are there. A bucket never used (updated_ns 0) starts full. The
// bucket lives in the key's slot of the ActiveKeyTable, which serialises calls for one key.
RateLimitDecision take_tokens(TokenBucket& bucket, const RateLimitTier& tier, std::uint32_t cost,
                              std::int64_t now_ns);

}  // namespace keyledger::api
