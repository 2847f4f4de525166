#include "api/verify_responses.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>

#include "api/errors.h"
#include "domain/text.h"

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

std::string retry_after(const RateLimitDecision& d) {
  return std::to_string(std::max<std::int64_t>(1, seconds_ceil(d.retry_after_ms)));
}

bool is_json_media_type(std::optional<std::string_view> content_type) {
  if (!content_type) {
    return false;
  }
  std::string_view v = *content_type;
  const auto semi = v.find(';');
  v = v.substr(0, semi);
  while (!v.empty() && v.back() == ' ') {
    v.remove_suffix(1);
  }
  std::string lower(v);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return lower == "application/json";
}

}  // namespace

Response json_response(unsigned status, const Json& body) {
  Response res;
  res.status = status;
  res.body = body.dump();
  return res;
}

std::optional<Response> read_json_body(const Request& req, Json& body, bool array) {
  if (req.body.empty()) {
    body = array ? Json::array() : Json::object();
    return std::nullopt;
  }
  if (!is_json_media_type(req.headers.get("content-type"))) {
    return error_response(415, "unsupported_media_type", "POST bodies must be application/json",
                          req.request_id);
  }
  body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    return error_response(400, "invalid_json", "the body is not valid JSON", req.request_id);
  }
  if (array ? !body.is_array() : !body.is_object()) {
    return error_response(400, "invalid_json",
                          array ? "the body must be a JSON array" : "the body must be a JSON object",
                          req.request_id);
  }
  return std::nullopt;
}

FieldReader::FieldReader(const Json& object, std::initializer_list<std::string_view> allowed)
    : object_(object) {
  for (const auto& [name, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      unknown_.push_back({name, "unknown field"});
    }
  }
}

std::optional<std::string> FieldReader::text(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_string()) {
    return type_error(name, "a string");
  }
  return v->get<std::string>();
}

std::optional<std::int64_t> FieldReader::integer(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_number_integer()) {
    if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
        std::abs(v->get<double>()) < 9e15) {
      return static_cast<std::int64_t>(v->get<double>());
    }
    return type_error(name, "an integer");
  }
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    return INT64_MAX;
  }
  return v->get<std::int64_t>();
}

std::optional<bool> FieldReader::boolean(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_boolean()) {
    return type_error(name, "a boolean");
  }
  return v->get<bool>();
}

std::optional<std::vector<std::string>> FieldReader::strings(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_array() || !std::all_of(v->begin(), v->end(), [](const Json& e) { return e.is_string(); })) {
    return type_error(name, "an array of strings");
  }
  return v->get<std::vector<std::string>>();
}

std::optional<Response> FieldReader::problem(const std::string& request_id) const {
  if (!type_error_.empty()) {
    return error_response(400, "invalid_json", type_error_, request_id);
  }
  if (!unknown_.empty()) {
    return error_response(422, "validation_failed", "the request has unknown fields", request_id, unknown_);
  }
  return std::nullopt;
}

const Json* FieldReader::find(const char* name) const {
  auto it = object_.find(name);
  return it == object_.end() || it->is_null() ? nullptr : &*it;
}

std::nullopt_t FieldReader::type_error(const char* name, const char* expected) {
  if (type_error_.empty()) {
    type_error_ = std::string("field '") + name + "' must be " + expected;
  }
  return std::nullopt;
}

std::optional<std::string_view> bearer_credential(const Request& req) {
  auto auth = req.headers.get("authorization");
  if (!auth) {
    return std::nullopt;
  }
  std::string_view v = *auth;
  if (v.size() < 7 || !(v.substr(0, 7) == "Bearer " || v.substr(0, 7) == "bearer ")) {
    return std::nullopt;
  }
  v.remove_prefix(7);
  while (!v.empty() && v.front() == ' ') {
    v.remove_prefix(1);
  }
  while (!v.empty() && v.back() == ' ') {
    v.remove_suffix(1);
  }
  return v;
}

std::optional<std::string_view> presented_api_key(const Request& req) {
  const auto bearer = bearer_credential(req);
  const auto header = req.headers.get("x-api-key");
  if (bearer && header && *bearer != *header) {
    return std::nullopt;
  }
  return bearer ? bearer : header;
}

Response unauthorized_response(const Request& req, bool invalid_token) {
  Response res = error_response(401, "unauthorized", "a valid credential is required", req.request_id);
  res.headers.set("WWW-Authenticate", invalid_token ? "Bearer realm=\"keyledger\", error=\"invalid_token\""
                                                    : "Bearer realm=\"keyledger\"");
  return res;
}

void set_ratelimit_headers(Response& res, const RateLimitTier& tier, const RateLimitDecision& d,
                           TimePoint now) {
  // On the verification hot path: values are built in a stack buffer, not concatenated.
  const auto window = static_cast<std::int64_t>(std::ceil(tier.burst / tier.rate_per_second));
  const std::int64_t until_full_s = seconds_ceil(d.reset_ms);
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  HeaderValue v;
  res.headers.add("RateLimit-Policy", v.quoted(tier.name).text(";q=").number(tier.burst).text(";w=").number(window).take());
  res.headers.add("RateLimit", v.quoted(tier.name).text(";r=").number(d.remaining).text(";t=").number(until_full_s).take());
  res.headers.add("X-RateLimit-Limit", v.number(d.limit).take());
  res.headers.add("X-RateLimit-Remaining", v.number(d.remaining).take());
  res.headers.add("X-RateLimit-Reset", v.number(now_s + until_full_s).take());
}

std::variant<TokenCaller, Response> authenticate_service_token(const Request& req,
                                                               const std::vector<std::string_view>& scopes,
                                                               const ServiceTokenTable& tokens,
                                                               const KeyHasher& hasher,
                                                               const Verifier& verifier) {
  const auto presented = bearer_credential(req);
  if (!presented || presented->empty()) {
    return unauthorized_response(req);
  }
  if (presented->starts_with(kApiKeyPrefix)) {
    // An agent key is never a service token: a working one lacks the scope, others are unknown.
    const auto outcome = verifier.verify(*presented, 0, /*record_use=*/false);
    if (outcome.code == VerifyCode::kValid || outcome.code == VerifyCode::kRateLimited) {
      return error_response(403, "forbidden", "agent keys cannot call this route", req.request_id);
    }
    return unauthorized_response(req);
  }
  if (!is_well_formed_service_token(*presented)) {
    return unauthorized_response(req);
  }
  auto token = tokens.find_active(hasher.digest(*presented));
  if (!token) {
    return unauthorized_response(req);
  }
  const bool allowed = std::any_of(scopes.begin(), scopes.end(), [&](auto s) { return token->has_scope(s); });
  if (!allowed) {
    return error_response(403, "forbidden", "this token lacks the scope for this route", req.request_id);
  }
  TokenCaller caller;
  if (auto x_actor = req.headers.get("x-actor"); x_actor && token->has_scope("manage")) {
    // It goes into events: valid UTF-8 on one line, counted in characters (API.md §3).
    const auto chars = count_text_characters(*x_actor, TextForm::kSingleLine);
    if (!chars || *chars > kMaxActorChars) {
      return error_response(422, "validation_failed", "X-Actor is not acceptable", req.request_id,
                            {{"X-Actor", "must be valid UTF-8 of at most " + std::to_string(kMaxActorChars) +
                                             " characters, without control characters"}});
    }
    caller.on_behalf_of = std::string(*x_actor);
  }
  caller.token = std::move(*token);
  return caller;
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
  metrics.observe_verification(outcome.code, std::chrono::steady_clock::now() - started);
  if (outcome.code == VerifyCode::kRateLimited && outcome.tier != nullptr && cost &&
      *cost > static_cast<std::int64_t>(outcome.tier->burst)) {
    // Waiting would not help: a bucket never holds more than the burst.
    return error_response(422, "validation_failed", "cost exceeds what the key's rate-limit tier can ever admit",
                          req.request_id,
                          {{"cost", "must be at most the burst of the key's tier (" +
                                        std::to_string(outcome.tier->burst) + ")"}});
  }
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

std::variant<VerifyOutcome, Response> authenticate_agent_key(const Request& req, const Verifier& verifier,
                                                             Metrics& metrics) {
  const auto key = presented_api_key(req);
  const auto started = std::chrono::steady_clock::now();
  auto outcome = verifier.verify(key.value_or(""), 1);
  metrics.observe_verification(outcome.code, std::chrono::steady_clock::now() - started);
  if (outcome.code == VerifyCode::kRateLimited) {
    Response res = error_response(429, "rate_limited", "rate limit exceeded for this key", req.request_id);
    res.headers.set("Retry-After", retry_after(*outcome.ratelimit));
    set_ratelimit_headers(res, *outcome.tier, *outcome.ratelimit, outcome.at);
    return res;
  }
  if (!outcome.valid()) {
    return unauthorized_response(req, true);
  }
  return outcome;
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

Response healthz_response() { return json_response(200, {{"status", "ok"}}); }

Response readyz_response(const Request& req, bool ready, std::string_view not_ready_message) {
  if (ready) {
    return json_response(200, {{"status", "ready"}});
  }
  return error_response(503, "not_ready", not_ready_message, req.request_id);
}

Response metrics_response(const Metrics& metrics) {
  Response res;
  res.body = metrics.render();
  res.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return res;
}

}  // namespace keyledger::api
