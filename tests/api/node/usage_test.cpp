// Key usage through the composed node (api/openapi.yaml Usage): verifications with known outcomes
// across two minutes of an injected clock, read back exactly over loopback HTTP.
#include "api/node/primary.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <string>

#include "api/api_fixture.h"
#include "api/node/node_client.h"
#include "domain/clock.h"
#include "support/temp_dir.h"

namespace keyledger::api {
namespace {

namespace bhttp = boost::beast::http;
using Json = nlohmann::json;
using Headers = std::map<std::string, std::string>;

using test::Answer;

Json counts(std::uint64_t valid, std::uint64_t rate_limited, std::uint64_t revoked, std::uint64_t expired,
            std::uint64_t compromised) {
  return {{"VALID", valid},
          {"RATE_LIMITED", rate_limited},
          {"REVOKED", revoked},
          {"EXPIRED", expired},
          {"COMPROMISED", compromised}};
}

struct Node {
  Node() {
    config = test::node_config(dir.path() / "data");
    config.trusted_proxies = "127.0.0.1";  // the test plays the gateway
    auto opened = Primary::open(config, NodeEnvironment{.clock = &clock, .random = &random});
    INFO(opened.status().ToString());
    REQUIRE(opened.ok());
    primary = std::move(opened).value();
    REQUIRE(primary->start().ok());
    port = primary->port();
    admin = {{"Authorization", "Bearer " + test::read_token(config.data_dir / "bootstrap-token")}};
  }

  Answer get(const std::string& target, const Headers& headers) {
    return test::call(port, bhttp::verb::get, target, headers);
  }
  Answer post(const std::string& target, const Json& body, const Headers& headers) {
    return test::call(port, bhttp::verb::post, target, headers, body);
  }
  // An agent and a key of it: {agent_id, key_id, api_key}.
  std::array<std::string, 3> agent_with_key() {
    const Answer agent = post("/v1/agents", test::agent_body(), admin);
    REQUIRE(agent.status == 201);
    const std::string agent_id = agent.body["agent_id"];
    const Answer key = post("/v1/agents/" + agent_id + "/keys", Json::object(), admin);
    REQUIRE(key.status == 201);
    return {agent_id, key.body["key"]["key_id"], key.body["api_key"]};
  }

  testing::TempDir dir;
  ManualClock clock{test::test_epoch()};  // 2026-11-26T10:00:00Z
  SeededRandom random{20261206};
  Config config;
  std::unique_ptr<Primary> primary;
  std::uint16_t port = 0;
  Headers admin;
};

TEST_CASE("usage counts every outcome of a key per minute, attempts after revocation included",
          "[api][node][usage]") {
  Node node;
  const auto [agent_id, key_id, api_key] = node.agent_with_key();
  const auto [other_agent, other_key, other_api_key] = node.agent_with_key();
  const Headers through_gateway = {{"X-Api-Key", api_key}, {"X-Forwarded-For", "203.0.113.5"}};

  // 10:00: three uses through the gateway, a verification that drains the rest of the bucket
  // (100 is the standard tier's burst; the clock stands still), one over the limit.
  for (int i = 0; i < 3; ++i) {
    CHECK(node.get("/v1/auth", through_gateway).status == 200);
  }
  CHECK(node.post("/v1/verify", {{"api_key", api_key}, {"cost", 97}}, node.admin).body["code"] == "VALID");
  CHECK(node.post("/v1/verify", {{"api_key", api_key}}, node.admin).body["code"] == "RATE_LIMITED");
  // Keys that belong to no one are counted nowhere.
  CHECK(node.post("/v1/verify", {{"api_key", "cg_00000000000000000000000000000000"}}, node.admin)
            .body["code"] == "NOT_FOUND");
  REQUIRE(node.primary->flush_usage().ok());

  // 10:01: the key is revoked and still tried, twice, from another address.
  node.clock.advance(std::chrono::seconds(65));
  REQUIRE(node.post("/v1/keys/" + key_id + "/revoke", {{"reason", "test"}}, node.admin).status == 200);
  for (int i = 0; i < 2; ++i) {
    CHECK(node.get("/v1/auth", {{"X-Api-Key", api_key}, {"X-Forwarded-For", "198.51.100.66"}}).status == 401);
  }
  // Not flushed yet: the answer includes what the node holds in memory.
  const Answer usage = node.get(
      "/v1/keys/" + key_id + "/usage?since=2026-11-26T10:00:00Z&until=2026-11-26T10:02:00Z", node.admin);
  REQUIRE(usage.status == 200);
  REQUIRE(usage.body["buckets"].size() == 2);
  const Json& first = usage.body["buckets"][0];
  CHECK(first["start"] == "2026-11-26T10:00:00Z");
  CHECK(first["counts"] == counts(4, 1, 0, 0, 0));
  CHECK(first["sources"] == Json::array({{{"address", "203.0.113.5"}, {"count", 3}}}));
  const Json& second = usage.body["buckets"][1];
  CHECK(second["start"] == "2026-11-26T10:01:00Z");
  CHECK(second["counts"] == counts(0, 0, 2, 0, 0));
  CHECK(second["sources"] == Json::array({{{"address", "198.51.100.66"}, {"count", 2}}}));

  // Hour buckets hold the same, summed.
  const Answer hourly = node.get(
      "/v1/keys/" + key_id + "/usage?granularity=hour&since=2026-11-26T10:00:00Z&until=2026-11-26T11:00:00Z",
      node.admin);
  REQUIRE(hourly.status == 200);
  REQUIRE(hourly.body["buckets"].size() == 1);
  CHECK(hourly.body["buckets"][0]["counts"] == counts(4, 1, 2, 0, 0));

  // The other agent reads its own usage with its key (that request is a use too), and an
  // agent's usage sums its keys only.
  const Answer self = node.get("/v1/self/usage?since=2026-11-26T10:01:00Z&until=2026-11-26T10:02:00Z",
                               {{"Authorization", "Bearer " + other_api_key}});
  REQUIRE(self.status == 200);
  REQUIRE(self.body["buckets"].size() == 1);
  CHECK(self.body["buckets"][0]["counts"] == counts(1, 0, 0, 0, 0));
  CHECK(self.body["buckets"][0]["sources"] == Json::array({{{"address", "127.0.0.1"}, {"count", 1}}}));
  const Answer agent =
      node.get("/v1/agents/" + agent_id + "/usage?granularity=hour&since=2026-11-26T10:00:00Z", node.admin);
  REQUIRE(agent.status == 200);
  REQUIRE(agent.body["buckets"].size() == 1);  // until defaults to now (10:01:05)
  CHECK(agent.body["buckets"][0]["counts"] == counts(4, 1, 2, 0, 0));

  // What an alert watches, without a per-key label; the store's fsyncs behind the commands.
  const std::string metrics = node.get("/metrics", {}).text;
  CHECK(metrics.find("keyledger_inactive_key_attempts_total{code=\"REVOKED\"} 2\n") != std::string::npos);
  CHECK(metrics.find("keyledger_usage_flushes_total{result=\"ok\"} 1\n") != std::string::npos);
  CHECK(metrics.find("# TYPE keyledger_log_syncs_total counter\n") != std::string::npos);
  CHECK(metrics.find("keyledger_log_syncs_total 0\n") == std::string::npos);
  CHECK(metrics.find(key_id) == std::string::npos);

  // A restart keeps what was flushed (stop() flushes the rest).
  node.primary->stop();
  node.primary.reset();
  auto reopened = Primary::open(node.config, NodeEnvironment{.clock = &node.clock, .random = &node.random});
  REQUIRE(reopened.ok());
  REQUIRE((*reopened)->start().ok());
  node.port = (*reopened)->port();
  const Answer again = node.get(
      "/v1/keys/" + key_id + "/usage?since=2026-11-26T10:00:00Z&until=2026-11-26T10:02:00Z", node.admin);
  REQUIRE(again.status == 200);
  CHECK(again.body["buckets"] == usage.body["buckets"]);
}

TEST_CASE("usage queries check their bounds, their granularity and the caller", "[api][node][usage]") {
  Node node;
  const auto [agent_id, key_id, api_key] = node.agent_with_key();
  const std::string base = "/v1/keys/" + key_id + "/usage";

  // A cost no bucket of the tier can ever hold is refused (422), not counted as a use.
  CHECK(node.post("/v1/verify", {{"api_key", api_key}, {"cost", 101}}, node.admin).status == 422);
  const Answer none = node.get(base + "?since=2026-11-26T10:00:00Z&until=2026-11-26T10:01:00Z", node.admin);
  REQUIRE(none.status == 200);
  CHECK(none.body["buckets"][0]["counts"] == counts(0, 0, 0, 0, 0));

  // Defaults: the last 24 hours in minute buckets, the current one included, oldest first.
  const Answer defaults = node.get(base, node.admin);
  REQUIRE(defaults.status == 200);
  REQUIRE(defaults.body["buckets"].size() == 1441);
  CHECK(defaults.body["buckets"][0]["start"] == "2026-11-25T10:00:00Z");
  CHECK(defaults.body["buckets"][1440]["start"] == "2026-11-26T10:00:00Z");

  for (const std::string query : {"?granularity=day", "?since=yesterday", "?until=2026-13-01T00:00:00Z",
                                  "?since=2026-11-26T10:00:00Z&until=2026-11-26T09:00:00Z",
                                  "?since=2026-11-01T00:00:00Z",  // 36 000 minute buckets
                                  "?granularity=hour&since=2025-01-01T00:00:00Z", "?limit=5"}) {
    INFO(query);
    const Answer bad = node.get(base + query, node.admin);
    CHECK(bad.status == 422);
    CHECK(bad.body["error"]["code"] == "validation_failed");
    CHECK(bad.body["error"]["details"].size() >= 1);
  }
  // As many hour buckets as fit is fine.
  CHECK(node.get(base + "?granularity=hour&since=2026-11-01T00:00:00Z", node.admin).status == 200);

  CHECK(node.get("/v1/keys/key_000000000000000000000000/usage", node.admin).body["error"]["code"] ==
        "key_not_found");
  CHECK(node.get("/v1/agents/agt_000000000000000000000000/usage", node.admin).body["error"]["code"] ==
        "agent_not_found");
  CHECK(node.get(base, {}).status == 401);
  CHECK(node.get(base, {{"Authorization", "Bearer " + api_key}}).status == 403);  // an agent key is no token
  const Answer manage = node.post("/v1/tokens", {{"name", "dash"}, {"scopes", {"manage"}}}, node.admin);
  REQUIRE(manage.status == 201);
  CHECK(node.get(base, {{"Authorization", "Bearer " + manage.body["token"].get<std::string>()}}).status ==
        403);
  CHECK(
      node.get("/v1/self/usage", {{"Authorization", "Bearer cg_00000000000000000000000000000000"}}).status ==
      401);
}

}  // namespace
}  // namespace keyledger::api
