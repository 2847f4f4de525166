#include "consumers/replica.h"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "api/rate_limiter.h"
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
  consumers::ReplicaApi api{
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

TEST_CASE("a replica answers command routes with 503 read_only_replica", "[kafka]") {
  ReplicaHttp r;
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"POST", "/v1/agents"},
                                                        {"GET", "/v1/agents/agt_1"},
                                                        {"POST", "/v1/keys/key_1/revoke"},
                                                        {"POST", "/v1/tokens"},
                                                        {"GET", "/v1/audit"},
                                                        {"POST", "/v1/leaks"},
                                                        {"GET", "/v1/self"},
                                                        {"PUT", "/v1/agents/agt_1/rate-limit"}}) {
    INFO(method << " " << path);
    const auto res = r.call(method, path, "{}");
    CHECK(res.status == 503);
    CHECK(Json::parse(res.body)["error"]["code"] == "read_only_replica");
    CHECK(Json::parse(res.body)["error"]["request_id"] == "req-1");
  }
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
