// `serve --webhooks external` with `keyledger webhooks` beside it, both the real binary, over
// the server's embedded Kafka broker: signed deliveries, the server's delivery log, a restart
// of the standalone process, and what each refuses.
#include <catch2/catch.hpp>

#include "consumers/webhook_dispatcher.h"
#include "consumers/webhook_receiver.h"
#include "harness.h"

namespace keyledger::e2e {
namespace {

using namespace std::chrono_literals;

bool signed_with(const std::string& secret, const testing::ReceivedRequest& r) {
  const auto comma = r.signature.find(",v1=");
  if (!r.signature.starts_with("t=") || comma == std::string::npos) {
    return false;
  }
  return r.signature ==
         consumers::webhook_signature(secret, std::stoll(r.signature.substr(2, comma - 2)), r.body);
}

}  // namespace

TEST_CASE(
    "keyledger webhooks delivers for serve --webhooks external; the server's log shows it; a restart "
    "re-sends "
    "nothing",
    "[e2e][webhooks][kafka]") {
  testing::TestReceiver receiver([](int) { return 200u; });
  testing::TempDir dir;
  ServerProcess server(dir.path() / "data",
                       {"--webhooks", "external", "--allow-insecure-webhooks", "--allow-private-webhooks"},
                       "embedded");
  REQUIRE(!server.kafka_bootstrap().empty());
  const std::string admin = server.bootstrap_token();
  const std::string manage =
      server.request("POST", "/v1/tokens", {{"name", "dash"}, {"scopes", {"manage"}}}, admin).json()["token"];
  auto registered = server.request("POST", "/v1/agents",
                                   {{"name", "Hooked"},
                                    {"description", "An agent that receives webhooks on loopback."},
                                    {"skills", {"test"}},
                                    {"languages", {"en"}},
                                    {"webhook_url", receiver.url()}},
                                   manage);
  REQUIRE(registered.status == 201);
  const std::string agent_id = registered.json()["agent_id"];
  const std::string secret = registered.json()["webhook_secret"];
  const std::vector<std::string> args = {"--kafka-brokers",
                                         server.kafka_bootstrap(),
                                         "--pepper-file",
                                         (dir.path() / "data" / "pepper").string(),
                                         "--allow-insecure-webhooks",
                                         "--allow-private-webhooks"};
  auto webhooks = std::make_unique<WebhooksProcess>(dir.path() / "webhooks", args);

  auto create_key = [&] {
    auto res = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage);
    REQUIRE(res.status == 201);
    return res.json()["key"]["key_id"].get<std::string>();
  };
  const auto delivered_events = [&] {
    std::vector<std::string> out;
    const Json log = server.get("/v1/agents/" + agent_id + "/webhook-deliveries", manage).json();
    for (const auto& d : log["deliveries"]) {
      if (d["outcome"] == "delivered") {
        out.push_back(d["event_id"]);
      }
    }
    return out;
  };

  const std::string first_key = create_key();
  REQUIRE(testing::eventually([&] { return receiver.requests().size() == 1; }, 20s));
  const testing::ReceivedRequest first = receiver.requests()[0];
  const Json body = Json::parse(first.body);
  CHECK(body["type"] == "key.created");
  CHECK(body["data"]["key_id"] == first_key);
  CHECK(first.event_id == body["id"]);
  CHECK(signed_with(secret, first));
  REQUIRE(testing::eventually([&] { return delivered_events() == std::vector<std::string>{first.event_id}; },
                              20s));

  // Manual retries need the in-process dispatcher.
  auto retry =
      server.request("POST", "/v1/agents/" + agent_id + "/webhook-deliveries/" + first.event_id + "/retry",
                     Json::object(), manage);
  CHECK(retry.status == 503);
  CHECK(retry.json()["error"]["code"] == "webhooks_external");

  // A restart delivers what came meanwhile and nothing that was delivered.
  REQUIRE(webhooks->stop() == 0);
  create_key();
  webhooks = std::make_unique<WebhooksProcess>(dir.path() / "webhooks", args);
  REQUIRE(testing::eventually([&] { return receiver.requests().size() == 2; }, 20s));
  REQUIRE(testing::eventually([&] { return delivered_events().size() == 2; }, 20s));
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[1].event_id != first.event_id);
  INFO(webhooks->log());
  CHECK(webhooks->stop() == 0);
}

TEST_CASE("keyledger webhooks and serve --webhooks external refuse to run without Kafka", "[e2e][webhooks]") {
  testing::TempDir dir;
  const auto [code, log] =
      run_binary({"webhooks", "--kafka-brokers", "none", "--data-dir", dir.path().string()});
  CHECK(code == 2);
  CHECK(log.find("needs --kafka-brokers") != std::string::npos);
  const auto [serve_code, serve_log] = run_binary({"serve", "--kafka-brokers", "none", "--webhooks",
                                                   "external", "--data-dir", (dir.path() / "d").string()});
  CHECK(serve_code == 2);
  CHECK(serve_log.find("--webhooks external needs Kafka") != std::string::npos);
}

}  // namespace keyledger::e2e
