#pragma once
// The HTTP API of a verifier replica (`keyledger serve --replica`, README, Configuration): verification
// from tables fed by Kafka (ReplicaFeed), nothing else.
//   POST /v1/verify, GET /v1/auth      as on the primary (api/verify_responses.h), same codes
//   GET /healthz, /readyz, /metrics    /readyz is 200 once the feed caught up at start-up
//   every other route of the contract  503 read_only_replica (commands go to the primary)
//   anything else                      404 not_found; 405 for a method no route takes
// The routes are the primary's (api/routes.h): those marked on_replica are served here.
// Rate limits are per node: each replica keeps its own token buckets, so a key spread over N
// replicas may get up to N times its tier's rate.

#include <functional>

#include "api/auth_failures.h"
#include "api/client_address.h"
#include "api/metrics.h"
#include "api/routes.h"
#include "api/server.h"
#include "api/verifier.h"
#include "projections/service_token_table.h"

namespace keyledger::api {

struct ReplicaApiContext {
  const ServiceTokenTable& tokens;
  const Verifier& verifier;
  const KeyHasher& hasher;
  Metrics& metrics;
  // True once the replica caught up with the topics at start-up (GET /readyz).
  std::function<bool()> ready;
  // Failed authentications per client address on POST /v1/verify (null: no limit), as on
  // the primary (ApiContext::auth_failures).
  AuthFailureLimiter* auth_failures = nullptr;
  // Whose X-Forwarded-For names the client counted in key usage (null: nobody's).
  const TrustedProxies* proxies = nullptr;
};

class ReplicaApi final : public Dispatcher {
 public:
  explicit ReplicaApi(ReplicaApiContext context);

  http::Response handle(http::Request& request) override;
  // Every route answers from memory.
  Execution execution(const http::Request&) const override { return Execution::kInline; }
  void on_response(const http::Request& request, const http::Response& response) override;

  // The route pattern a request matched ("/v1/keys/{key_id}"), or "unmatched" (metrics).
  std::string_view route_of(const http::Request& request) const;

 private:
  http::Response verify(http::Request& request);  // POST /v1/verify

  ReplicaApiContext ctx_;
  Router router_;
};

}  // namespace keyledger::api
