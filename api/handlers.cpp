#include "api/handlers.h"

#include "api/routes/impl.h"

namespace keyledger::api {

Api::Impl::Impl(ApiContext c) : ctx(std::move(c)) {
  using enum RouteId;
  const auto set = [&](RouteId id, Handler h) { handlers[static_cast<std::size_t>(id)] = h; };
  set(kHealthz, &Impl::healthz);
  set(kReadyz, &Impl::readyz);
  set(kMetrics, &Impl::metrics);
  set(kCreateToken, &Impl::create_token);
  set(kListTokens, &Impl::list_tokens);
  set(kTokenSelf, &Impl::token_self);
  set(kRevokeToken, &Impl::revoke_token);
  set(kRegisterAgent, &Impl::register_agent);
  set(kGetAgent, &Impl::get_agent);
  set(kSetTier, &Impl::set_tier);
  set(kCreateKey, &Impl::create_key);
  set(kListKeys, &Impl::list_keys);
  set(kAgentDeliveries, &Impl::agent_deliveries);
  set(kRetryDelivery, &Impl::retry_delivery);
  set(kDueForRotation, &Impl::due_for_rotation);
  set(kGetKey, &Impl::get_key);
  set(kRotateKey, &Impl::rotate_key);
  set(kRevokeKey, &Impl::revoke_key);
  set(kCompromiseKey, &Impl::compromise_key);
  set(kVerify, &Impl::verify);
  set(kForwardAuth, &Impl::forward_auth);
  set(kSelf, &Impl::self);
  set(kSelfDeliveries, &Impl::self_deliveries);
  set(kAudit, &Impl::audit);
  set(kLeaks, &Impl::leaks);
  set(kGithubLeaks, &Impl::github_leaks);
  set(kKeyUsage, &Impl::key_usage);
  set(kAgentUsage, &Impl::agent_usage);
  set(kSelfUsage, &Impl::self_usage);
  set(kOpenApi, &Impl::openapi);
  set(kDashboard, &Impl::dashboard);
  for (const Route& route : contract_routes()) {
    if (handlers[static_cast<std::size_t>(route.id)] == nullptr) {
      throw std::logic_error("no handler for " + std::string(route.pattern));
    }
  }
}

std::variant<Caller, Response> Api::Impl::admit(Request& req, const Route& route) {
  Caller caller;
  const bool limited =
      ctx.auth_failures != nullptr && route.access != Access::kPublic && route.id != RouteId::kForwardAuth;
  if (limited) {
    if (const auto wait = ctx.auth_failures->retry_after(req.remote_address)) {
      return too_many_failed_authentications(req, *wait);
    }
  }
  if (route.access == Access::kToken) {
    auto resolved = token_caller(req, route.scopes);
    if (auto* res = std::get_if<Response>(&resolved)) {
      if (limited && res->status == 401) {
        ctx.auth_failures->failed(req.remote_address);
      }
      return std::move(*res);
    }
    caller = std::move(std::get<Caller>(resolved));
  } else if (route.access == Access::kAgentKey) {
    auto resolved = agent_caller(req);
    if (auto* res = std::get_if<Response>(&resolved)) {
      if (limited && res->status == 401) {
        ctx.auth_failures->failed(req.remote_address);
      }
      return std::move(*res);
    }
    caller.agent = std::move(std::get<VerifyOutcome>(resolved));
    // Only a route that changes something records an actor or scopes an Idempotency-Key;
    // the reads (GET /v1/auth above all) skip building the two strings.
    if (route.method != "GET") {
      caller.id = caller.agent.entry->key_id.str();
      caller.actor = "key:" + caller.id;
    }
  }
  return caller;
}

Response Api::Impl::dispatch(Request& req) {
  const Route* route = router.route_for(req);
  if (route == nullptr) {
    return router.no_route(req);
  }
  auto admitted = admit(req, *route);
  if (auto* res = std::get_if<Response>(&admitted)) {
    return std::move(*res);
  }
  return (this->*handlers[static_cast<std::size_t>(route->id)])(req, std::get<Caller>(admitted),
                                                                req.route_params);
}

Api::Execution Api::Impl::execution(const Request& req) const {
  const Route* route = router.route_for(req);
  if (route == nullptr || route->inline_ok) {
    return Execution::kInline;
  }
  // A command under an Idempotency-Key holds the key's lock from its look-up to its append:
  // that one waits on a worker.
  const bool later = route->id == RouteId::kRegisterAgent || planner_of(route->id) != nullptr;
  return later && !req.headers.get("idempotency-key") ? Execution::kLater : Execution::kWorker;
}

void Api::Impl::dispatch_later(Request& req, const Reply& reply) {
  const Route* route = router.route_for(req);
  if (route == nullptr || execution(req) != Execution::kLater) {
    return reply(dispatch(req));
  }
  auto admitted = admit(req, *route);
  if (auto* res = std::get_if<Response>(&admitted)) {
    return reply(std::move(*res));
  }
  const Caller& caller = std::get<Caller>(admitted);
  if (route->id == RouteId::kRegisterAgent) {
    return register_agent_later(req, caller, reply);
  }
  run_plan_later(req, reply, (this->*planner_of(route->id))(req, caller, req.route_params));
}

Api::Api(ApiContext context) : impl_(std::make_unique<Impl>(std::move(context))) {}
Api::~Api() = default;

http::Response Api::handle(http::Request& request) {
  http::Response res = impl_->dispatch(request);
  if (request.method == "HEAD") {
    res.body.clear();
  }
  return res;
}

void Api::set_webhook_retry(WebhookRetry retry) { impl_->webhook_retry = std::move(retry); }

Api::Execution Api::execution(const http::Request& request) const { return impl_->execution(request); }

void Api::handle_later(http::Request& request, Reply reply) { impl_->dispatch_later(request, reply); }

void Api::on_response(const http::Request& request, const http::Response& response) {
  impl_->ctx.metrics.count_request(request.method, route_of(request), response.status);
}

std::string_view Api::route_of(const http::Request& request) const {
  const auto* route = impl_->router.route_for(request);
  return route == nullptr ? std::string_view("unmatched") : route->pattern;
}

}  // namespace keyledger::api
