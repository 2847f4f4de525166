#pragma once
// Every route of api/openapi.yaml as transport-free handlers behind one Dispatcher.
// Order of checks on each request: route (404/405) → credential (401/403) → media type (415)
// → JSON (400) → field rules (422) → existence (404) → state (409).

#include <functional>
#include <memory>

#include "api/auth_failures.h"
#include "api/client_address.h"
#include "api/github_keys.h"
#include "api/idempotency.h"
#include "api/metrics.h"
#include "api/server.h"
#include "api/verifier.h"
#include "eventstore/command_service.h"
#include "projections/projector.h"
#include "projections/usage.h"

namespace keyledger::api {

struct ApiContext {
  Projector& projector;
  CommandService& commands;
  Verifier& verifier;
  IdempotencyStore& idempotency;
  Metrics& metrics;
  const Clock& clock;
  const KeyHasher& hasher;
  // True once the store is open and projections have caught up (GET /readyz).
  std::function<bool()> ready;
  // Failed authentications per client address (null: no limit). Counts the 401s of every
  // route that needs a credential but GET /v1/auth, whose client is a gateway speaking for
  // many users; an address over its limit gets 429 there before its credential is checked.
  AuthFailureLimiter* auth_failures = nullptr;
  // Whose X-Forwarded-For names the client counted in key usage (null: nobody's).
  const TrustedProxies* proxies = nullptr;
  // Key usage, for GET /v1/keys/{id}/usage and the like (null: those routes answer 503).
  KeyUsage* usage = nullptr;
  // Serve the dashboard at / and /ui/… (--dashboard).
  bool dashboard = true;
  // GitHub's secret-scanning public keys, for POST /v1/leaks/github (null: every call is 401).
  const GithubKeyring* github_keys = nullptr;
};

class Api final : public Dispatcher {
 public:
  explicit Api(ApiContext context);
  ~Api() override;

  http::Response handle(http::Request& request) override;
  // Inline for the routes that answer from memory; later for the commands of registration
  // and the key routes (create, rotate, revoke, compromise) without an Idempotency-Key: they
  // wait for their stream's turn and their fsync holding no thread; the worker pool otherwise.
  Execution execution(const http::Request& request) const override;
  void handle_later(http::Request& request, Reply reply) override;
  void on_response(const http::Request& request, const http::Response& response) override;

  // Re-queues a failed webhook delivery (POST /v1/agents/{id}/webhook-deliveries/{event_id}/retry):
  // Ok, NotFound (event_not_found) or Conflict. Without it the route answers 503.
  using WebhookRetry = std::function<Status(const std::string& agent_id, const std::string& event_id)>;
  void set_webhook_retry(WebhookRetry retry);

  // The route pattern a request matched ("/v1/keys/{key_id}"), or "unmatched" (metrics).
  std::string_view route_of(const http::Request& request) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyledger::api
