#pragma once
// Who is calling: the credential a request presents (a service token, or an agent's own key)
// and the answer when it does not pass (401 with WWW-Authenticate, 403, 422, 429). Shared by
// the primary (api/handlers.h) and the replica (api/replica.h), which answer alike.

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "api/client_address.h"
#include "api/http.h"
#include "api/metrics.h"
#include "api/verifier.h"
#include "domain/key_material.h"
#include "domain/service_tokens.h"
#include "projections/service_token_table.h"

namespace keyledger::api {

// The credential of `Authorization: Bearer …`, trimmed; nullopt without one.
std::optional<std::string_view> bearer_credential(const http::Request& req);
// An agent's own key: the bearer credential, else `X-Api-Key`; nullopt (no credential, so a
// 401) when both are given and differ: which one is meant cannot be told.
std::optional<std::string_view> presented_api_key(const http::Request& req);

// 401 with `WWW-Authenticate: Bearer realm="keyledger"` (plus `error="invalid_token"`).
http::Response unauthorized_response(const http::Request& req, bool invalid_token = false);

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

// Verifies the caller's own key (GET /v1/auth, /v1/self…) with cost 1: the outcome, or the
// 401 (`invalid_token`, the body does not say why) / 429 (Retry-After, rate-limit headers).
// Rate-limit headers are dated at the verification (VerifyOutcome::at).
// The client's address (`proxies`) is counted as the key's usage source.
std::variant<VerifyOutcome, http::Response> authenticate_agent_key(const http::Request& req,
                                                                   const Verifier& verifier, Metrics& metrics,
                                                                   const TrustedProxies& proxies);

}  // namespace keyledger::api
