#pragma once
// Every route of the contract (api/openapi.yaml) in one table, which the primary's dispatcher
// (api/handlers.h) and the replica's (api/replica.h) both match requests against, so the two
// cannot drift apart: a replica serves the routes marked `on_replica` and answers every other
// one 503 read_only_replica.

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "api/http.h"

namespace keyledger::api {

// What a route asks of its caller.
enum class Access { kPublic, kToken, kAgentKey };

enum class RouteId : std::uint8_t {
  kHealthz,
  kReadyz,
  kMetrics,
  kCreateToken,
  kListTokens,
  kTokenSelf,
  kRevokeToken,
  kRegisterAgent,
  kGetAgent,
  kSetTier,
  kCreateKey,
  kListKeys,
  kAgentDeliveries,
  kRetryDelivery,
  kDueForRotation,
  kGetKey,
  kRotateKey,
  kRevokeKey,
  kCompromiseKey,
  kVerify,
  kForwardAuth,
  kSelf,
  kSelfDeliveries,
  kAudit,
  kLeaks,
  kGithubLeaks,
  kKeyUsage,
  kAgentUsage,
  kSelfUsage,
  kOpenApi,
  kDashboard,
  kCount,
};

struct Route {
  RouteId id;
  std::string_view method;
  std::string_view pattern;  // "/v1/keys/{key_id}": a {name} matches one segment
  Access access;
  std::vector<std::string_view> scopes;  // any one of them (Access::kToken)
  bool inline_ok;                        // answers from memory (Dispatcher::Execution::kInline)
  bool on_replica;                       // a verifier replica serves it too
};

// The routes, in matching order (the first route whose method and pattern match wins).
const std::vector<Route>& contract_routes();

// The dashboard's pages (`/`, `/ui/…`): every answer under them, a 404 or 405 included,
// carries the dashboard's security headers (Content-Security-Policy, nosniff, no-referrer, no
// framing, no caching).
bool is_dashboard_path(std::string_view path);
void set_dashboard_headers(http::Response& response);

// Matches requests against a route table.
class Router {
 public:
  explicit Router(const std::vector<Route>& routes = contract_routes());

  // The request's route, or null; matched once and remembered in the request, with the
  // route's {parameters} in request.route_params. HEAD matches GET routes.
  const Route* route_for(const http::Request& request) const;
  // The answer to a request without a route: 405 with Allow when other methods take its
  // path, else 404.
  http::Response no_route(const http::Request& request) const;

 private:
  http::Response no_route_of(const http::Request& request) const;  // no_route() but the headers
  struct Compiled {
    const Route* route;
    std::vector<std::string> parts;
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  static bool matches(const Compiled& route, const std::vector<std::string_view>& parts);
  // The index of the first route taking method + path (filling `params`), or -1; and the
  // methods of the routes taking the path.
  int find(const http::Request& request, std::vector<std::string>& params,
           std::vector<std::string>& allowed) const;

  std::vector<Compiled> routes_;
  // Routes without parameters by exact path, so most requests (verification above all) find
  // their route without splitting the path or trying every pattern.
  std::unordered_map<std::string, std::vector<std::size_t>, StringHash, std::equal_to<>> literal_;
};

}  // namespace keyledger::api
