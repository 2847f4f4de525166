// The composed node: a Primary built in-process, as `keyledger serve` builds it, with the
// machine's clock and randomness replaced (NodeEnvironment), talked to over loopback HTTP.
#include "api/node/primary.h"

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <string>

#include "api/api_fixture.h"
#include "api/node/node_client.h"
#include "domain/clock.h"
#include "domain/key_material.h"
#include "support/temp_dir.h"

namespace keyledger::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using Json = nlohmann::json;

using test::Answer;

Answer request(std::uint16_t port, bhttp::verb verb, const std::string& target,
               const std::map<std::string, std::string>& headers, const Json& body = nullptr) {
  return test::call(port, verb, target, headers, body);
}

using test::read_token;

using test::node_config;

TEST_CASE("a Primary built in-process serves the contract and keeps its state across a restart",
          "[api][node]") {
  testing::TempDir dir;
  ManualClock clock(test::test_epoch());
  SeededRandom random(20261205);
  const Config config = node_config(dir.path() / "data");
  std::string token;
  std::string lasting;
  std::string expiring;
  {
    auto primary = Primary::open(config, NodeEnvironment{.clock = &clock, .random = &random});
    INFO(primary.status().ToString());
    REQUIRE(primary.ok());
    REQUIRE((*primary)->start().ok());
    const std::uint16_t port = (*primary)->port();
    REQUIRE(port != 0);
    token = read_token(config.data_dir / "bootstrap-token");
    REQUIRE(token.starts_with(kServiceTokenPrefix));
    const std::map<std::string, std::string> admin = {{"Authorization", "Bearer " + token}};

    CHECK(request(port, bhttp::verb::get, "/readyz", {}).status == 200);
    const Answer agent = request(port, bhttp::verb::post, "/v1/agents", admin, test::agent_body());
    REQUIRE(agent.status == 201);
    const std::string agent_id = agent.body["agent_id"].get<std::string>();
    const Answer first =
        request(port, bhttp::verb::post, "/v1/agents/" + agent_id + "/keys", admin, Json::object());
    REQUIRE(first.status == 201);
    lasting = first.body["api_key"].get<std::string>();
    const Answer second = request(port, bhttp::verb::post, "/v1/agents/" + agent_id + "/keys", admin,
                                  Json{{"expires_in_seconds", 3600}});
    REQUIRE(second.status == 201);
    expiring = second.body["api_key"].get<std::string>();
    // The key's expiry comes from the injected clock, not the machine's.
    CHECK(second.body["key"]["expires_at"] == "2026-11-26T11:00:00Z");

    CHECK(request(port, bhttp::verb::get, "/v1/auth", {{"X-Api-Key", lasting}}).status == 200);
    CHECK(request(port, bhttp::verb::get, "/v1/auth", {{"X-Api-Key", expiring}}).status == 200);
    clock.advance(std::chrono::hours(2));
    CHECK(request(port, bhttp::verb::get, "/v1/auth", {{"X-Api-Key", expiring}}).status == 401);
    (*primary)->stop();
  }
  // The same data directory, a new node: the log and the pepper make the same keys verify.
  auto reopened = Primary::open(config, NodeEnvironment{.clock = &clock, .random = &random});
  INFO(reopened.status().ToString());
  REQUIRE(reopened.ok());
  REQUIRE((*reopened)->start().ok());
  const std::uint16_t port = (*reopened)->port();
  CHECK(read_token(config.data_dir / "bootstrap-token") == token);  // not minted again
  CHECK(request(port, bhttp::verb::get, "/v1/auth", {{"X-Api-Key", lasting}}).status == 200);
  CHECK(request(port, bhttp::verb::get, "/v1/auth", {{"X-Api-Key", expiring}}).status == 401);
  const Answer verified = request(port, bhttp::verb::post, "/v1/verify",
                                  {{"Authorization", "Bearer " + token}}, Json{{"api_key", expiring}});
  REQUIRE(verified.status == 200);
  CHECK(verified.body["code"] == "EXPIRED");
}

TEST_CASE("Primary::open refuses a configuration it cannot run, before touching the data directory",
          "[api][node]") {
  testing::TempDir dir;
  Config config = node_config(dir.path() / "data");
  config.webhooks = "sideways";
  CHECK(Primary::open(config).status().IsInvalidArgument());
  config.webhooks = std::string(kWebhooksExternal);  // needs Kafka, and there is none
  CHECK(Primary::open(config).status().IsInvalidArgument());
  config.webhooks = std::string(kWebhooksInProcess);
  config.usage_minute_retention_hours = -5;  // --usage-minute-retention-hours -5
  CHECK(Primary::open(config).status().IsInvalidArgument());
  config.usage_minute_retention_hours = 48;
  config.usage_hour_retention_days = 0;
  CHECK(Primary::open(config).status().IsInvalidArgument());
  CHECK_FALSE(std::filesystem::exists(config.data_dir));
}

}  // namespace
}  // namespace keyledger::api
