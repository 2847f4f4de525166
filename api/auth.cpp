#include "api/auth.h"

#include "api/errors.h"
#include "api/verify_responses.h"
#include "domain/text.h"

namespace keyledger::api {

using http::Request;
using http::Response;

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
    // It goes into events: valid UTF-8 on one line, counted in characters (api/openapi.yaml).
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

std::variant<VerifyOutcome, Response> authenticate_agent_key(const Request& req, const Verifier& verifier,
                                                             Metrics& metrics,
                                                             const TrustedProxies& proxies) {
  const auto key = presented_api_key(req);
  const auto started = std::chrono::steady_clock::now();
  auto outcome = verifier.verify(key.value_or(""), 1, /*record_use=*/true, proxies.client_of(req));
  metrics.observe_verification(outcome.code, std::chrono::steady_clock::now() - started);
  if (outcome.code == VerifyCode::kRateLimited) {
    Response res = error_response(429, "rate_limited", "rate limit exceeded for this key", req.request_id);
    res.headers.set("Retry-After", retry_after_seconds(*outcome.ratelimit));
    set_ratelimit_headers(res, *outcome.tier, *outcome.ratelimit, outcome.at);
    return res;
  }
  if (!outcome.valid()) {
    return unauthorized_response(req, true);
  }
  return outcome;
}

}  // namespace keyledger::api
