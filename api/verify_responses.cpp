#include "api/verify_responses.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>

#include "api/errors.h"
#include "api/json_body.h"

namespace keyledger::api {

namespace {

using http::Request;
using http::Response;

constexpr std::uint32_t kMaxVerifyCost = 1000;

std::int64_t seconds_ceil(std::int64_t ms) { return (ms + 999) / 1000; }

// A header value built in place: text and decimal numbers appended to a fixed buffer (what
// does not fit is cut, which the short values built here never are).
class HeaderValue {
 public:
  HeaderValue& text(std::string_view s) {
    const std::size_t n = std::min(s.size(), buf_.size() - size_);
    std::copy_n(s.data(), n, buf_.data() + size_);
    size_ += n;
    return *this;
  }
  HeaderValue& quoted(std::string_view s) { return text("\"").text(s).text("\""); }
  HeaderValue& number(std::int64_t v) {
    const auto [end, ec] = std::to_chars(buf_.data() + size_, buf_.data() + buf_.size(), v);
    if (ec == std::errc()) {
      size_ = static_cast<std::size_t>(end - buf_.data());
    }
    return *this;
  }
  // The value so far; the buffer starts over for the next one.
  std::string_view take() {
    const std::string_view out(buf_.data(), size_);
    size_ = 0;
    return out;
  }

 private:
  std::array<char, 160> buf_{};
  std::size_t size_ = 0;
};

}  // namespace

std::string retry_after_seconds(const RateLimitDecision& d) {
  return std::to_string(std::max<std::int64_t>(1, seconds_ceil(d.retry_after_ms)));
}

void set_ratelimit_headers(Response& res, const RateLimitTier& tier, const RateLimitDecision& d,
                           TimePoint now) {
  // On the verification hot path: values are built in a stack buffer, not concatenated.
  // A tier may have any positive rate: a tiny one is capped, as in take_tokens, not overflowed.
  const auto window =
      static_cast<std::int64_t>(std::clamp(std::ceil(tier.burst / tier.rate_per_second), 0.0, 9.2e12));
  const std::int64_t until_full_s = seconds_ceil(d.reset_ms);
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  HeaderValue v;
  res.headers.add("RateLimit-Policy",
                  v.quoted(tier.name).text(";q=").number(tier.burst).text(";w=").number(window).take());
  res.headers.add(
      "RateLimit",
      v.quoted(tier.name).text(";r=").number(d.remaining).text(";t=").number(until_full_s).take());
  res.headers.add("X-RateLimit-Limit", v.number(d.limit).take());
  res.headers.add("X-RateLimit-Remaining", v.number(d.remaining).take());
  res.headers.add("X-RateLimit-Reset", v.number(now_s + until_full_s).take());
}

Response verify_response(const Request& req, const Verifier& verifier, Metrics& metrics) {
  Json body;
  if (auto bad = read_json_body(req, body)) {
    return *bad;
  }
  FieldReader f(body, {"api_key", "cost"});
  const auto api_key = f.text("api_key");
  const auto cost = f.integer("cost");
  if (auto bad = f.problem(req.request_id)) {
    return *bad;
  }
  if (cost && (*cost < 0 || *cost > kMaxVerifyCost)) {
    return error_response(422, "validation_failed", "cost is out of range", req.request_id,
                          {{"cost", "must be an integer from 0 to 1000"}});
  }
  const auto started = std::chrono::steady_clock::now();
  const auto outcome = verifier.verify(api_key.value_or(""), static_cast<std::uint32_t>(cost.value_or(1)));
  if (outcome.code == VerifyCode::kRateLimited && outcome.tier != nullptr && cost &&
      *cost > static_cast<std::int64_t>(outcome.tier->burst)) {
    // Waiting would not help: a bucket never holds more than the burst.
    return error_response(422, "validation_failed",
                          "cost exceeds what the key's rate-limit tier can ever admit", req.request_id,
                          {{"cost", "must be at most the burst of the key's tier (" +
                                        std::to_string(outcome.tier->burst) + ")"}});
  }
  metrics.observe_verification(outcome.code, std::chrono::steady_clock::now() - started);
  Json out = {{"valid", outcome.valid()}, {"code", verify_code_name(outcome.code)}};
  if (outcome.valid()) {
    const KeyEntry& e = *outcome.entry;
    out["agent_id"] = e.agent_id.view();
    out["key_id"] = e.key_id.view();
    out["environment"] = environment_name(e.environment);
    out["expires_at"] = e.expires_at_ms == 0
                            ? Json(nullptr)
                            : Json(format_rfc3339(TimePoint(std::chrono::milliseconds(e.expires_at_ms))));
  }
  if (outcome.ratelimit) {
    out["ratelimit"] = {{"limit", outcome.ratelimit->limit},
                        {"remaining", outcome.ratelimit->remaining},
                        {"reset_ms", outcome.ratelimit->reset_ms}};
  }
  if (outcome.code == VerifyCode::kRateLimited) {
    out["retry_after_seconds"] = std::max<std::int64_t>(1, seconds_ceil(outcome.ratelimit->retry_after_ms));
  }
  return json_response(200, out);
}

Response forward_auth_response(const VerifyOutcome& outcome) {
  Response res;
  res.status = 200;
  res.content_type = {};
  const KeyEntry& e = *outcome.entry;
  res.headers.add("X-Agent-Id", e.agent_id.view());
  res.headers.add("X-Key-Id", e.key_id.view());
  res.headers.add("X-Agent-Environment", environment_name(e.environment));
  set_ratelimit_headers(res, *outcome.tier, *outcome.ratelimit, outcome.at);
  return res;
}

}  // namespace keyledger::api
