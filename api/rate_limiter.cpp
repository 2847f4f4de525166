#include "api/rate_limiter.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace keyledger::api {

std::vector<RateLimitTier> default_tiers() { return {{"standard", 50, 100}, {"elevated", 500, 1000}}; }

Result<std::vector<RateLimitTier>> parse_tiers(std::string_view spec) {
  std::vector<RateLimitTier> tiers;
  while (!spec.empty()) {
    const auto comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    const auto c1 = item.find(':');
    const auto c2 = c1 == std::string_view::npos ? c1 : item.find(':', c1 + 1);
    if (c2 == std::string_view::npos) {
      return Status::InvalidArgument("rate-limit tier '" + std::string(item) + "' is not name:rate:burst");
    }
    RateLimitTier tier;
    tier.name = std::string(item.substr(0, c1));
    const std::string rate(item.substr(c1 + 1, c2 - c1 - 1));
    const std::string_view burst = item.substr(c2 + 1);
    char* end = nullptr;
    tier.rate_per_second = std::strtod(rate.c_str(), &end);
    const bool rate_ok = end != rate.c_str() && *end == '\0' && tier.rate_per_second > 0;
    const auto [ptr, ec] = std::from_chars(burst.data(), burst.data() + burst.size(), tier.burst);
    if (tier.name.empty() || !rate_ok || ec != std::errc() || ptr != burst.data() + burst.size() ||
        tier.burst == 0) {
      return Status::InvalidArgument("rate-limit tier '" + std::string(item) + "' is not name:rate:burst");
    }
    tiers.push_back(std::move(tier));
  }
  if (tiers.empty()) {
    return Status::InvalidArgument("no rate-limit tiers configured");
  }
  return tiers;
}

namespace {

// Milliseconds until `missing` tokens are refilled at `rate` a second, rounded up. A tier may
// be configured with any positive rate, so a tiny one must not overflow the answer: it is capped
// at about 292 years (int64 nanoseconds), which a client reads as "not in this lifetime".
std::int64_t refill_ms(double missing, double rate) {
  constexpr double kMaxMs = 9.2e15;
  const double ms = std::ceil(missing / rate * 1000.0);
  return static_cast<std::int64_t>(std::clamp(ms, 0.0, kMaxMs));
}

}  // namespace

RateLimitDecision take_tokens(TokenBucket& bucket, const RateLimitTier& tier, std::uint32_t cost,
                              std::int64_t now_ns) {
  const double burst = tier.burst;
  const double rate = tier.rate_per_second;
  RateLimitDecision d;
  d.limit = tier.burst;
  double tokens = burst;
  if (bucket.updated_ns != 0) {
    const double elapsed_s = static_cast<double>(std::max<std::int64_t>(0, now_ns - bucket.updated_ns)) / 1e9;
    tokens = std::min(
        burst, static_cast<double>(bucket.tokens) + elapsed_s * rate);  // a tier change may lower the burst
  }
  if (tokens >= cost) {
    tokens -= cost;
  } else {
    d.allowed = false;
    d.retry_after_ms = refill_ms(cost - tokens, rate);
    if (cost > burst) {
      // Never satisfiable under this tier; say when the bucket is full, the best it gets.
      d.retry_after_ms = refill_ms(burst - tokens, rate);
    }
  }
  bucket.tokens = static_cast<float>(tokens);
  bucket.updated_ns = std::max<std::int64_t>(1, now_ns);
  d.remaining = static_cast<std::uint32_t>(std::floor(tokens));
  d.reset_ms = refill_ms(burst - tokens, rate);
  return d;
}

}  // namespace keyledger::api
