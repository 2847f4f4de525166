#include "api/replica.h"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "api/rate_limiter.h"
#include "api/routes.h"
#include "projections/ledger_fixture.h"

namespace keyledger {
namespace {

using Json = nlohmann::json;

// A replica's API over tables folded from a ledger's log (no Kafka needed here).
struct ReplicaHttp {
  testing::Ledger ledger;
  ActiveKeyTable keys{testing::Ledger::kTiers};
  ServiceTokenTable tokens;
  api::Verifier verifier{keys, ledger.hasher, api::default_tiers(), ledger.clock};
  api::Metrics metrics;
  bool ready = false;
  api::ReplicaApi api{
      {tokens, verifier, ledger.hasher, metrics, [this] { return ready; }}};

  void sync() {
    for (const auto& e : ledger.all_events()) {
      keys.apply(e);
      tokens.apply(e);
    }
  }

  http::Response call(const std::string& method, const std::string& path, const std::string& body = "",
                      const std::string& bearer = "") {
    http::Request req;
    req.method = method;
    req.path = path;
    req.body = body;
    req.request_id = "req-1";
    if (!body.empty()) {
      req.headers.set("Content-Type", "application/json");
    }
    if (!bearer.empty()) {
      req.headers.set("Authorization", "Bearer " + bearer);
    }
    http::Response res = api.handle(req);
    api.on_response(req, res);
    return res;
  }
};

}  // namespace

TEST_CASE("a replica verifies keys like the primary", "[kafka]") {
  ReplicaHttp r;
  const auto verify_token = r.ledger.create_token("gateway", {"verify"});
  const auto audit_token = r.ledger.create_token("auditor", {"audit"});
  const std::string agent = r.ledger.register_agent();
  const auto key = r.ledger.create_key(agent);
  const auto revoked = r.ledger.create_key(agent);
  r.ledger.revoke_key(agent, revoked.key_id);
  r.sync();

  auto res = r.call("POST", "/v1/verify", Json{{"api_key", key.api_key}}.dump(), verify_token.second);
  REQUIRE(res.status == 200);
  Json body = Json::parse(res.body);
  CHECK(body["valid"] == true);
  CHECK(body["code"] == "VALID");
  CHECK(body["key_id"] == key.key_id);
  CHECK(body["agent_id"] == agent);
  CHECK(body["ratelimit"]["limit"] == 100);

  res = r.call("POST", "/v1/verify", Json{{"api_key", revoked.api_key}}.dump(), verify_token.second);
  CHECK(Json::parse(res.body)["code"] == "REVOKED");
  res = r.call("POST", "/v1/verify", Json{{"api_key", "cg_0123"}}.dump(), verify_token.second);
  CHECK(Json::parse(res.body)["code"] == "MALFORMED");

  // Credentials and body rules as on the primary.
  CHECK(r.call("POST", "/v1/verify", Json{{"api_key", key.api_key}}.dump()).status == 401);
  CHECK(r.call("POST", "/v1/verify", Json{{"api_key", key.api_key}}.dump(), audit_token.second).status ==
        403);
  CHECK(r.call("POST", "/v1/verify", Json{{"api_key", key.api_key}}.dump(), key.api_key).status == 403);
  CHECK(
      r.call("POST", "/v1/verify", Json{{"api_key", key.api_key}, {"cost", 5000}}.dump(), verify_token.second)
          .status == 422);
  CHECK(r.call("POST", "/v1/verify", "{", verify_token.second).status == 400);

  // Forward auth with the agent's own key.
  res = r.call("GET", "/v1/auth", "", key.api_key);
  CHECK(res.status == 200);
  CHECK(res.headers.get("x-key-id") == key.key_id);
  CHECK(res.headers.get("x-agent-id") == agent);
  CHECK(res.headers.get("ratelimit-policy") == "\"standard\";q=100;w=2");
  res = r.call("GET", "/v1/auth", "", revoked.api_key);
  CHECK(res.status == 401);
  CHECK(res.headers.get("www-authenticate") == "Bearer realm=\"keyledger\", error=\"invalid_token\"");
}

TEST_CASE("a replica answers every route it does not serve with 503 read_only_replica", "[kafka]") {
  ReplicaHttp r;
  r.ready = true;
  std::size_t primary_only = 0;
  for (const api::Route& route : api::contract_routes()) {
    // The pattern with each {parameter} filled in.
    std::string path;
    for (const auto part : http::path_segments(route.pattern)) {
      path += "/" + (part.front() == '{' ? std::string("x_1") : std::string(part));
    }
    INFO(route.method << " " << path);
    const auto res = r.call(std::string(route.method), path, route.method == "GET" ? "" : "{}");
    if (route.on_replica) {
      CHECK(res.status != 503);
      CHECK(res.status != 404);
      continue;
    }
    ++primary_only;
    CHECK(res.status == 503);
    CHECK(Json::parse(res.body)["error"]["code"] == "read_only_replica");
    CHECK(Json::parse(res.body)["error"]["request_id"] == "req-1");
    http::Request probe;
    probe.method = std::string(route.method);
    probe.path = path;
    CHECK(r.api.route_of(probe) == route.pattern);
  }
  CHECK(primary_only == api::contract_routes().size() - 5);  // all but health, readiness, metrics, verify, auth
  CHECK(r.call("GET", "/v1/nothing").status == 404);
  const auto wrong = r.call("GET", "/v1/verify");
  CHECK(wrong.status == 405);
  CHECK(wrong.headers.get("allow") == "POST");
  http::Request revoke;
  revoke.method = "POST";
  revoke.path = "/v1/keys/key_9/revoke";
  CHECK(r.api.route_of(revoke) == "/v1/keys/{key_id}/revoke");
}

TEST_CASE("a replica's readiness and operations routes", "[kafka]") {
  ReplicaHttp r;
  CHECK(r.call("GET", "/healthz").status == 200);
  auto res = r.call("GET", "/readyz");
  CHECK(res.status == 503);
  CHECK(Json::parse(res.body)["error"]["code"] == "not_ready");
  r.ready = true;
  CHECK(r.call("GET", "/readyz").status == 200);
  res = r.call("GET", "/metrics");
  CHECK(res.status == 200);
  CHECK(res.body.find("keyledger_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"503\"} 1") !=
        std::string::npos);
}

}  // namespace keyledger
