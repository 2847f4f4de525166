#include "api/verifier.h"

#include "projections/usage.h"

namespace keyledger::api {

std::string_view verify_code_name(VerifyCode code) {
  switch (code) {
    case VerifyCode::kValid:
      return "VALID";
    case VerifyCode::kMalformed:
      return "MALFORMED";
    case VerifyCode::kNotFound:
      return "NOT_FOUND";
    case VerifyCode::kRevoked:
      return "REVOKED";
    case VerifyCode::kExpired:
      return "EXPIRED";
    case VerifyCode::kCompromised:
      return "COMPROMISED";
    case VerifyCode::kRateLimited:
      return "RATE_LIMITED";
  }
  return "MALFORMED";
}

namespace {

// The outcome of a verification of a known key.
UsageOutcome usage_outcome(VerifyCode code) {
  switch (code) {
    case VerifyCode::kRateLimited:
      return UsageOutcome::kRateLimited;
    case VerifyCode::kRevoked:
      return UsageOutcome::kRevoked;
    case VerifyCode::kExpired:
      return UsageOutcome::kExpired;
    case VerifyCode::kCompromised:
      return UsageOutcome::kCompromised;
    default:
      return UsageOutcome::kValid;
  }
}

}  // namespace

Verifier::Verifier(ActiveKeyTable& table, const KeyHasher& hasher, std::vector<RateLimitTier> tiers,
                   const Clock& clock, bool count_usage)
    : table_(table), hasher_(hasher), tiers_(std::move(tiers)), clock_(clock), count_usage_(count_usage) {
  // The table numbers tiers in configuration order; when it agrees with ours, an entry's tier
  // index picks the tier with no lookup by name on the hot path.
  aligned_ = true;
  for (std::size_t i = 0; i < tiers_.size(); ++i) {
    aligned_ = aligned_ && table_.tier_name(static_cast<std::uint8_t>(i)) == tiers_[i].name;
  }
}

const RateLimitTier& Verifier::tier_of(const KeyEntry& entry) const {
  if (aligned_ && entry.tier < tiers_.size()) {
    return tiers_[entry.tier];
  }
  const std::string name = table_.tier_name(entry.tier);
  for (const auto& t : tiers_) {
    if (t.name == name) {
      return t;
    }
  }
  return tiers_.front();
}

VerifyOutcome Verifier::verify(std::string_view api_key, std::uint32_t cost, bool record_use,
                               std::string_view source) const {
  VerifyOutcome out;
  if (!is_well_formed_api_key(api_key)) {
    out.code = VerifyCode::kMalformed;
    return out;
  }
  const Digest digest = hasher_.digest(api_key);
  out.at = clock_.now();
  const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(out.at.time_since_epoch()).count();
  const std::int64_t now_ms = now_ns / 1'000'000;
  // One visit of the key's slot: state, expiry, bucket, last use and usage count under one
  // shard lock.
  const int counted_as = count_usage_ && record_use ? 0 : -1;  // counted at all?
  const bool known = table_.visit(
      digest, now_ns / 1'000'000'000,
      [&](const KeyEntry& entry, TokenBucket& bucket) -> ActiveKeyTable::Visited {
        out.entry = entry;
        switch (entry.condition_at(now_ms)) {
          case KeyCondition::kRevoked:
            out.code = VerifyCode::kRevoked;
            break;
          case KeyCondition::kExpired:
            out.code = VerifyCode::kExpired;
            break;
          case KeyCondition::kCompromised:
            out.code = VerifyCode::kCompromised;
            break;
          case KeyCondition::kActive: {
            out.tier = &tier_of(entry);
            out.ratelimit = take_tokens(bucket, *out.tier, cost, now_ns);
            out.code = out.ratelimit->allowed ? VerifyCode::kValid : VerifyCode::kRateLimited;
            break;
          }
        }
        // A cost above the burst is refused (422) before any bucket could say yes: not a use.
        const bool refused =
            out.code == VerifyCode::kRateLimited && cost > static_cast<std::uint32_t>(out.tier->burst);
        return {.used = out.code == VerifyCode::kValid && record_use,
                .counted = counted_as < 0 || refused ? -1 : static_cast<int>(usage_outcome(out.code))};
      },
      source);
  if (!known) {
    out.code = VerifyCode::kNotFound;
  }
  return out;
}

}  // namespace keyledger::api
