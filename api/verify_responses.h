#pragma once
// The HTTP side of verification and operations, shared by the primary's Api and the verifier
// replica (api/replica.h) so both answer byte for byte alike: request-body reading,
// service-token and agent-key authentication, POST /v1/verify, GET /v1/auth, the rate-limit
// headers, /healthz, /readyz and /metrics.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "api/http.h"
#include "api/metrics.h"
#include "api/verifier.h"
#include "api/views.h"
#include "domain/key_material.h"
#include "domain/service_tokens.h"
#include "projections/service_token_table.h"

namespace keyledger::api {

// A response with `body` serialized as JSON.
http::Response json_response(unsigned status, const Json& body);

// Parses the request body as a JSON object (or array): an empty body is an empty one. Returns
// the 415 (not application/json) or 400 (not JSON, wrong top-level type) to send, else nullopt.
std::optional<http::Response> read_json_body(const http::Request& req, Json& body, bool array = false);

// Reads typed fields of a JSON object, collecting unknown fields (422) and the first type
// error (400). A null field counts as absent.
class FieldReader {
 public:
  FieldReader(const Json& object, std::initializer_list<std::string_view> allowed);

  std::optional<std::string> text(const char* name);
  // Whole numbers also when written as floats; unsigned values past INT64_MAX clamp to it.
  std::optional<std::int64_t> integer(const char* name);
  std::optional<bool> boolean(const char* name);
  std::optional<std::vector<std::string>> strings(const char* name);

  // The response to send if the body broke a type or named unknown fields, else nullopt.
  std::optional<http::Response> problem(const std::string& request_id) const;

 private:
  const Json* find(const char* name) const;
  std::nullopt_t type_error(const char* name, const char* expected);

  const Json& object_;
  std::vector<FieldError> unknown_;
  std::string type_error_;
};

// The credential of `Authorization: Bearer …`, trimmed; nullopt without one.
std::optional<std::string_view> bearer_credential(const http::Request& req);
// An agent's own key: the bearer credential, else `X-Api-Key`; nullopt (no credential, so a
// 401) when both are given and differ: which one is meant cannot be told.
std::optional<std::string_view> presented_api_key(const http::Request& req);

// 401 with `WWW-Authenticate: Bearer realm="keyledger"` (plus `error="invalid_token"`).
http::Response unauthorized_response(const http::Request& req, bool invalid_token = false);

// RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers-10) and X-RateLimit-*.
void set_ratelimit_headers(http::Response& res, const RateLimitTier& tier, const RateLimitDecision& decision,
                           TimePoint now);

// A service token allowed to call a route.
struct TokenCaller {
  ServiceTokenState token;
  std::string on_behalf_of;  // X-Actor, from `manage` callers only
};

// Authenticates the bearer service token for a route needing any of `scopes`: the caller, or
// the 401 (missing/unknown/revoked), 403 (wrong scope, or a working agent key) or 422 (X-Actor
// over 128 characters) to send.
std::variant<TokenCaller, http::Response> authenticate_service_token(
    const http::Request& req, const std::vector<std::string_view>& scopes, const ServiceTokenTable& tokens,
    const KeyHasher& hasher, const Verifier& verifier);

// POST /v1/verify once the caller is authenticated: body rules (400/415/422), then always 200
// with the outcome. Counts the outcome in `metrics`.
http::Response verify_response(const http::Request& req, const Verifier& verifier, Metrics& metrics);

// Verifies the caller's own key (GET /v1/auth, /v1/self…) with cost 1: the outcome, or the
// 401 (`invalid_token`, the body does not say why) / 429 (Retry-After, rate-limit headers).
// Rate-limit headers are dated at the verification (VerifyOutcome::at).
std::variant<VerifyOutcome, http::Response> authenticate_agent_key(const http::Request& req,
                                                                   const Verifier& verifier, Metrics& metrics);

// GET /v1/auth's 200 for a valid key: X-Agent-Id, X-Key-Id, X-Agent-Environment, rate-limit
// headers, no body.
http::Response forward_auth_response(const VerifyOutcome& outcome);

// GET /healthz, GET /readyz (503 not_ready with `not_ready_message`), GET /metrics.
http::Response healthz_response();
http::Response readyz_response(const http::Request& req, bool ready, std::string_view not_ready_message);
http::Response metrics_response(const Metrics& metrics);

}  // namespace keyledger::api
