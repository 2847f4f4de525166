#pragma once
// Key verification (api/openapi.yaml), shared by POST /v1/verify, GET /v1/auth and /v1/self…:
// format check, keyed digest, table lookup, state at the current second, rate limit.
// Never blocks; safe from any thread.

#include <optional>
#include <string_view>

#include "api/rate_limiter.h"
#include "projections/active_key_table.h"

namespace keyledger::api {

enum class VerifyCode { kValid, kMalformed, kNotFound, kRevoked, kExpired, kCompromised, kRateLimited };
std::string_view verify_code_name(VerifyCode code);  // "VALID", "MALFORMED", …

struct VerifyOutcome {
  VerifyCode code = VerifyCode::kMalformed;
  std::optional<KeyEntry> entry;               // set from kRevoked on (the key is known)
  std::optional<RateLimitDecision> ratelimit;  // set for kValid and kRateLimited
  const RateLimitTier* tier = nullptr;         // the key's tier, when known
  TimePoint at{};                              // the time it was verified at (rate-limit headers)
  bool valid() const { return code == VerifyCode::kValid; }
};

class Verifier {
 public:
  // `tiers` must list every tier name the table may hold (unknown ones fall back to the first).
  // The table keeps each key's rate-limit bucket and last use, hence not const.
  // With `count_usage`, every outcome for a known key is counted in the table, beside its slot
  // (ActiveKeyTable::visit; drained by KeyUsage or a replica's UsagePublisher).
  Verifier(ActiveKeyTable& table, const KeyHasher& hasher, std::vector<RateLimitTier> tiers,
           const Clock& clock, bool count_usage = false);

  // `cost` tokens are taken from a valid key's bucket (0 only reads it). Records the key's
  // last use on success and counts the outcome of a known key (with `source`, the client's
  // address, when known), unless `record_use` is false (a key presented where agent keys are
  // refused is not a use of it).
  VerifyOutcome verify(std::string_view api_key, std::uint32_t cost, bool record_use = true,
                       std::string_view source = {}) const;

  const std::vector<RateLimitTier>& tiers() const { return tiers_; }

 private:
  const RateLimitTier& tier_of(const KeyEntry& entry) const;

  ActiveKeyTable& table_;
  const KeyHasher& hasher_;
  std::vector<RateLimitTier> tiers_;
  const Clock& clock_;
  bool count_usage_;
  bool aligned_ = false;
};

}  // namespace keyledger::api
