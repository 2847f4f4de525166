#include "api/replica.h"

#include "api/auth.h"
#include "api/errors.h"
#include "api/json_body.h"
#include "api/operations.h"
#include "api/verify_responses.h"

namespace keyledger::api {

using http::Request;
using http::Response;

ReplicaApi::ReplicaApi(ReplicaApiContext context) : ctx_(std::move(context)) {}

Response ReplicaApi::handle(Request& req) {
  const Route* route = router_.route_for(req);
  Response res;
  if (route == nullptr) {
    res = router_.no_route(req);
  } else if (!route->on_replica) {
    res = error_response(503, "read_only_replica",
                         "this verifier replica only verifies keys; send commands and reads to the primary",
                         req.request_id);
  } else {
    switch (route->id) {
      case RouteId::kHealthz:
        res = healthz_response();
        break;
      case RouteId::kReadyz:
        res = readyz_response(req, ctx_.ready && ctx_.ready(), "the replica is catching up with Kafka");
        break;
      case RouteId::kMetrics:
        res = metrics_response(ctx_.metrics);
        break;
      case RouteId::kVerify:
        res = verify(req);
        break;
      case RouteId::kForwardAuth: {
        static const TrustedProxies nobody;
        auto outcome = authenticate_agent_key(req, ctx_.verifier, ctx_.metrics,
                                              ctx_.proxies != nullptr ? *ctx_.proxies : nobody);
        if (auto* refused = std::get_if<Response>(&outcome)) {
          res = std::move(*refused);
        } else {
          res = forward_auth_response(std::get<VerifyOutcome>(outcome));
        }
        break;
      }
      default:  // a route marked on_replica that this dispatcher does not know
        res = error_response(503, "read_only_replica", "this verifier replica does not serve this route",
                             req.request_id);
        break;
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
      return too_many_failed_authentications(req, *wait);
    }
  }
  auto caller = authenticate_service_token(req, {"verify"}, ctx_.tokens, ctx_.hasher, ctx_.verifier);
  if (auto* refused = std::get_if<Response>(&caller)) {
    if (refused->status == 401 && ctx_.auth_failures != nullptr) {
      ctx_.auth_failures->failed(req.remote_address);
    }
    return std::move(*refused);
  }
  return verify_response(req, ctx_.verifier, ctx_.metrics);
}

void ReplicaApi::on_response(const Request& request, const Response& response) {
  ctx_.metrics.count_request(request.method, route_of(request), response.status);
}

std::string_view ReplicaApi::route_of(const Request& request) const {
  const Route* route = router_.route_for(request);
  return route == nullptr ? std::string_view("unmatched") : route->pattern;
}

}  // namespace keyledger::api
