#pragma once
// The answers of verification, shared by the primary's Api and the verifier replica
// (api/replica.h) so both answer byte for byte alike: POST /v1/verify, GET /v1/auth and the
// rate-limit headers.

#include <string>

#include "api/http.h"
#include "api/metrics.h"
#include "api/verifier.h"

namespace keyledger::api {

// RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers-10) and X-RateLimit-*.
void set_ratelimit_headers(http::Response& res, const RateLimitTier& tier, const RateLimitDecision& decision,
                           TimePoint now);

// Retry-After for a refused request: whole seconds, at least 1.
std::string retry_after_seconds(const RateLimitDecision& decision);

// POST /v1/verify once the caller is authenticated: body rules (400/415/422), then always 200
// with the outcome. Counts the outcome in `metrics`.
http::Response verify_response(const http::Request& req, const Verifier& verifier, Metrics& metrics);

// GET /v1/auth's 200 for a valid key: X-Agent-Id, X-Key-Id, X-Agent-Environment, rate-limit
// headers, no body.
http::Response forward_auth_response(const VerifyOutcome& outcome);

}  // namespace keyledger::api
