#include "api/routes.h"

#include <algorithm>

#include "api/errors.h"
#include "domain/service_tokens.h"

namespace keyledger::api {

const std::vector<Route>& contract_routes() {
  using enum RouteId;
  using A = Access;
  static const std::vector<std::string_view> manage = {"manage"};
  static const std::vector<std::string_view> read = {"manage", "audit"};
  static const std::vector<std::string_view> admin = {"admin"};
  // Every token holds at least one scope, so a route open to all of them takes any token.
  static const std::vector<std::string_view> any_scope(kScopes.begin(), kScopes.end());
  static const std::vector<Route> routes = {
      {kHealthz, "GET", "/healthz", A::kPublic, {}, true, true},
      {kReadyz, "GET", "/readyz", A::kPublic, {}, true, true},
      {kMetrics, "GET", "/metrics", A::kPublic, {}, true, true},
      {kCreateToken, "POST", "/v1/tokens", A::kToken, admin, false, false},
      {kListTokens, "GET", "/v1/tokens", A::kToken, admin, true, false},
      {kTokenSelf, "GET", "/v1/tokens/self", A::kToken, any_scope, true, false},
      {kRevokeToken, "POST", "/v1/tokens/{token_id}/revoke", A::kToken, admin, false, false},
      {kRegisterAgent, "POST", "/v1/agents", A::kToken, manage, false, false},
      {kGetAgent, "GET", "/v1/agents/{agent_id}", A::kToken, read, false, false},
      {kSetTier, "PUT", "/v1/agents/{agent_id}/rate-limit", A::kToken, manage, false, false},
      {kCreateKey, "POST", "/v1/agents/{agent_id}/keys", A::kToken, manage, false, false},
      {kListKeys, "GET", "/v1/agents/{agent_id}/keys", A::kToken, read, false, false},
      {kAgentDeliveries, "GET", "/v1/agents/{agent_id}/webhook-deliveries", A::kToken, read, false, false},
      {kRetryDelivery, "POST", "/v1/agents/{agent_id}/webhook-deliveries/{event_id}/retry", A::kToken, manage,
       false, false},
      {kDueForRotation, "GET", "/v1/keys/due-for-rotation", A::kToken, read, false, false},
      {kGetKey, "GET", "/v1/keys/{key_id}", A::kToken, read, false, false},
      {kRotateKey, "POST", "/v1/keys/{key_id}/rotate", A::kToken, manage, false, false},
      {kRevokeKey, "POST", "/v1/keys/{key_id}/revoke", A::kToken, manage, false, false},
      {kCompromiseKey, "POST", "/v1/keys/{key_id}/compromise", A::kToken, manage, false, false},
      {kVerify, "POST", "/v1/verify", A::kToken, {"verify"}, true, true},
      {kForwardAuth, "GET", "/v1/auth", A::kAgentKey, {}, true, true},
      {kSelf, "GET", "/v1/self", A::kAgentKey, {}, false, false},
      {kSelfDeliveries, "GET", "/v1/self/webhook-deliveries", A::kAgentKey, {}, false, false},
      {kAudit, "GET", "/v1/audit", A::kToken, {"audit"}, false, false},
      {kLeaks, "POST", "/v1/leaks", A::kToken, {"report_leaks"}, false, false},
      {kGithubLeaks, "POST", "/v1/leaks/github", A::kPublic, {}, false, false},
      {kKeyUsage, "GET", "/v1/keys/{key_id}/usage", A::kToken, {"audit"}, false, false},
      {kAgentUsage, "GET", "/v1/agents/{agent_id}/usage", A::kToken, {"audit"}, false, false},
      {kSelfUsage, "GET", "/v1/self/usage", A::kAgentKey, {}, false, false},
      {kOpenApi, "GET", "/openapi.json", A::kPublic, {}, true, false},
      {kDashboard, "GET", "/", A::kPublic, {}, true, false},
      {kDashboard, "GET", "/ui/{file}", A::kPublic, {}, true, false},
      {kDashboard, "GET", "/ui/{dir}/{file}", A::kPublic, {}, true, false},
  };
  return routes;
}

Router::Router(const std::vector<Route>& routes) {
  for (const Route& route : routes) {
    Compiled compiled{&route, {}};
    for (auto part : http::path_segments(route.pattern)) {
      compiled.parts.emplace_back(part);
    }
    routes_.push_back(std::move(compiled));
  }
  // A literal route goes into the fast index unless an earlier pattern also matches its path
  // (that one wins in find, so the index must not answer for it).
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    const Route& route = *routes_[i].route;
    if (route.pattern.find('{') != std::string_view::npos) {
      continue;
    }
    const auto parts = http::path_segments(route.pattern);
    bool shadowed = false;
    for (std::size_t j = 0; j < i; ++j) {
      shadowed = shadowed || (routes_[j].route->method == route.method && matches(routes_[j], parts));
    }
    if (!shadowed) {
      literal_[std::string(route.pattern)].push_back(i);
    }
  }
}

bool Router::matches(const Compiled& route, const std::vector<std::string_view>& parts) {
  if (route.parts.size() != parts.size()) {
    return false;
  }
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = route.parts[i];
    if (p.front() != '{' && p != parts[i]) {
      return false;
    }
  }
  return true;
}

int Router::find(const http::Request& req, std::vector<std::string>& params,
                 std::vector<std::string>& allowed) const {
  const auto parts = http::path_segments(req.path);
  int hit = -1;
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    if (!matches(routes_[i], parts)) {
      continue;
    }
    const std::string_view method = routes_[i].route->method;
    if (method == req.method || (req.method == "HEAD" && method == "GET")) {
      if (hit < 0) {
        hit = static_cast<int>(i);
      }
    } else if (std::find(allowed.begin(), allowed.end(), method) == allowed.end()) {
      allowed.emplace_back(method);
    }
  }
  if (hit < 0) {
    return hit;
  }
  params.clear();
  const Compiled& route = routes_[static_cast<std::size_t>(hit)];
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (route.parts[i].front() == '{') {
      params.emplace_back(parts[i]);
    }
  }
  return hit;
}

const Route* Router::route_for(const http::Request& req) const {
  if (req.route_index == -2) {
    if (auto it = literal_.find(std::string_view(req.path)); it != literal_.end()) {
      const std::string_view method = req.method == "HEAD" ? "GET" : std::string_view(req.method);
      for (const std::size_t i : it->second) {
        if (routes_[i].route->method == method) {
          req.route_index = static_cast<int>(i);
          req.route_params.clear();
          return routes_[i].route;
        }
      }
    }
  }
  if (req.route_index == -2) {
    std::vector<std::string> allowed;
    req.route_index = find(req, req.route_params, allowed);
  }
  return req.route_index < 0 ? nullptr : routes_[static_cast<std::size_t>(req.route_index)].route;
}

namespace {

// Nothing but the files compiled in may run (no inline script or style, no other origin), no
// page may frame the dashboard, and no URL leaks out in a Referer.
constexpr std::string_view kDashboardPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

}  // namespace

bool is_dashboard_path(std::string_view path) { return path == "/" || path.starts_with("/ui/"); }

void set_dashboard_headers(http::Response& res) {
  res.headers.set("X-Content-Type-Options", "nosniff");
  res.headers.set("Content-Security-Policy", kDashboardPolicy);
  res.headers.set("Referrer-Policy", "no-referrer");
  res.headers.set("X-Frame-Options", "DENY");
  res.headers.set("Cache-Control", "no-cache");
}

http::Response Router::no_route(const http::Request& req) const {
  http::Response res = no_route_of(req);
  if (is_dashboard_path(req.path)) {
    set_dashboard_headers(res);
  }
  return res;
}

http::Response Router::no_route_of(const http::Request& req) const {
  std::vector<std::string> params;
  std::vector<std::string> allowed;
  find(req, params, allowed);
  if (allowed.empty()) {
    return error_response(404, "not_found", "no such route", req.request_id);
  }
  std::string allow;
  for (const auto& m : allowed) {
    allow += (allow.empty() ? "" : ", ") + m;
  }
  http::Response res = error_response(
      405, "method_not_allowed",
      "this route does not take " + std::string(http::known_method_or_other(req.method)), req.request_id);
  res.headers.set("Allow", allow);
  return res;
}

}  // namespace keyledger::api
