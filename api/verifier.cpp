#include "api/verifier.h"

namespace keyledger::api {

std::string_view verify_code_name(VerifyCode code) {
  switch (code) {
    case VerifyCode::kValid: return "VALID";
    case VerifyCode::kMalformed: return "MALFORMED";
    case VerifyCode::kNotFound: return "NOT_FOUND";
    case VerifyCode::kRevoked: return "REVOKED";
    case VerifyCode::kExpired: return "EXPIRED";
    case VerifyCode::kCompromised: return "COMPROMISED";
    case VerifyCode::kRateLimited: return "RATE_LIMITED";
  }
  return "MALFORMED";
}

Verifier::Verifier(const ActiveKeyTable& table, const KeyHasher& hasher, RateLimiter& limiter,
                   std::vector<RateLimitTier> tiers, const Clock& clock, ActiveKeyTable* usage)
    : table_(table), hasher_(hasher), limiter_(limiter), tiers_(std::move(tiers)), clock_(clock), usage_(usage) {
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

VerifyOutcome Verifier::verify(std::string_view api_key, std::uint32_t cost) const {
  VerifyOutcome out;
  if (!is_well_formed_api_key(api_key)) {
    out.code = VerifyCode::kMalformed;
    return out;
  }
  const Digest digest = hasher_.digest(api_key);
  out.entry = table_.find(digest);
  if (!out.entry) {
    out.code = VerifyCode::kNotFound;
    return out;
  }
  const auto now = clock_.now();
  const std::int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  switch (out.entry->condition_at(now_ms)) {
    case KeyCondition::kRevoked: out.code = VerifyCode::kRevoked; return out;
    case KeyCondition::kExpired: out.code = VerifyCode::kExpired; return out;
    case KeyCondition::kCompromised: out.code = VerifyCode::kCompromised; return out;
    case KeyCondition::kActive: break;
  }
  out.tier = &tier_of(*out.entry);
  out.ratelimit = limiter_.take(out.entry->key_id.view(), *out.tier, cost);
  if (!out.ratelimit->allowed) {
    out.code = VerifyCode::kRateLimited;
    return out;
  }
  out.code = VerifyCode::kValid;
  if (usage_ != nullptr) {
    usage_->touch(digest, std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
  }
  return out;
}

}  // namespace keyledger::api
