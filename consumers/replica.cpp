#include "consumers/replica.h"

#include <algorithm>
#include <array>
#include <string_view>
#include <vector>

#include "api/errors.h"
#include "api/verify_responses.h"

namespace keyledger::consumers {

namespace {

using http::Request;
using http::Response;

struct RoutePattern {
  std::string_view method;
  std::string_view pattern;
};

// What a replica serves itself.
constexpr std::array<RoutePattern, 5> kServed = {{
    {"GET", "/healthz"},
    {"GET", "/readyz"},
    {"GET", "/metrics"},
    {"POST", "/v1/verify"},
    {"GET", "/v1/auth"},
}};

// The routes of the contract only the primary serves (API.md §2–§4).
constexpr std::array<RoutePattern, 19> kPrimaryOnly = {{
    {"POST", "/v1/tokens"},
    {"GET", "/v1/tokens"},
    {"POST", "/v1/tokens/{token_id}/revoke"},
    {"POST", "/v1/agents"},
    {"GET", "/v1/agents/{agent_id}"},
    {"PUT", "/v1/agents/{agent_id}/rate-limit"},
    {"POST", "/v1/agents/{agent_id}/keys"},
    {"GET", "/v1/agents/{agent_id}/keys"},
    {"GET", "/v1/agents/{agent_id}/webhook-deliveries"},
    {"POST", "/v1/agents/{agent_id}/webhook-deliveries/{event_id}/retry"},
    {"GET", "/v1/keys/due-for-rotation"},
    {"GET", "/v1/keys/{key_id}"},
    {"POST", "/v1/keys/{key_id}/rotate"},
    {"POST", "/v1/keys/{key_id}/revoke"},
    {"POST", "/v1/keys/{key_id}/compromise"},
    {"GET", "/v1/self"},
    {"GET", "/v1/self/webhook-deliveries"},
    {"GET", "/v1/audit"},
    {"POST", "/v1/leaks"},
}};


bool path_matches(std::string_view pattern, const std::vector<std::string_view>& parts) {
  const auto want = http::path_segments(pattern);
  if (want.size() != parts.size()) {
    return false;
  }
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (want[i].front() != '{' && want[i] != parts[i]) {
      return false;
    }
  }
  return true;
}

bool method_matches(std::string_view route_method, std::string_view method) {
  return route_method == method || (method == "HEAD" && route_method == "GET");
}

}  // namespace

ReplicaApi::ReplicaApi(ReplicaApiContext context) : ctx_(std::move(context)) {}

Response ReplicaApi::handle(Request& req) {
  const auto parts = http::path_segments(req.path);
  const RoutePattern* served = nullptr;
  std::vector<std::string> allowed;
  for (const auto& route : kServed) {
    if (!path_matches(route.pattern, parts)) {
      continue;
    }
    if (method_matches(route.method, req.method)) {
      served = &route;
      break;
    }
    allowed.emplace_back(route.method);
  }
  Response res;
  if (served == nullptr) {
    const bool primary_only =
        std::any_of(kPrimaryOnly.begin(), kPrimaryOnly.end(),
                    [&](const RoutePattern& r) { return path_matches(r.pattern, parts); });
    if (primary_only) {
      res = api::error_response(
          503, "read_only_replica",
          "this verifier replica only verifies keys; send commands and reads to the primary", req.request_id);
    } else if (!allowed.empty()) {
      std::string allow;
      for (const auto& m : allowed) {
        allow += (allow.empty() ? "" : ", ") + m;
      }
      res = api::error_response(
          405, "method_not_allowed",
          "this route does not take " + std::string(http::known_method_or_other(req.method)), req.request_id);
      res.headers.set("Allow", allow);
    } else {
      res = api::error_response(404, "not_found", "no such route", req.request_id);
    }
  } else if (served->pattern == "/healthz") {
    res = api::healthz_response();
  } else if (served->pattern == "/readyz") {
    res = api::readyz_response(req, ctx_.ready && ctx_.ready(), "the replica is catching up with Kafka");
  } else if (served->pattern == "/metrics") {
    res = api::metrics_response(ctx_.metrics);
  } else if (served->pattern == "/v1/verify") {
    res = verify(req);
  } else {
    auto outcome = api::authenticate_agent_key(req, ctx_.verifier, ctx_.metrics);
    if (auto* refused = std::get_if<Response>(&outcome)) {
      res = std::move(*refused);
    } else {
      res = api::forward_auth_response(std::get<api::VerifyOutcome>(outcome));
    }
  }
  if (req.method == "HEAD") {
    res.body.clear();
  }
  return res;
}

Response ReplicaApi::verify(Request& req) {
  if (ctx_.auth_failures != nullptr) {
    if (const auto wait = ctx_.auth_failures->retry_after(req.remote_address)) {
      return api::too_many_failed_authentications(req, *wait);
    }
  }
  auto caller = api::authenticate_service_token(req, {"verify"}, ctx_.tokens, ctx_.hasher, ctx_.verifier);
  if (auto* refused = std::get_if<Response>(&caller)) {
    if (refused->status == 401 && ctx_.auth_failures != nullptr) {
      ctx_.auth_failures->failed(req.remote_address);
    }
    return std::move(*refused);
  }
  return api::verify_response(req, ctx_.verifier, ctx_.metrics);
}

void ReplicaApi::on_response(const Request& request, const Response& response) {
  ctx_.metrics.count_request(request.method, route_of(request), response.status);
}

std::string ReplicaApi::route_of(const Request& request) const {
  const auto parts = http::path_segments(request.path);
  for (const auto& route : kServed) {
    if (path_matches(route.pattern, parts)) {
      return std::string(route.pattern);
    }
  }
  for (const auto& route : kPrimaryOnly) {
    if (path_matches(route.pattern, parts)) {
      return std::string(route.pattern);
    }
  }
  return "unmatched";
}

}  // namespace keyledger::consumers
