// Webhooks from the real binary to a TLS receiver on loopback, and the delivery-log routes.
#include <sodium.h>

#include <catch2/catch.hpp>

#include "consumers/webhook_receiver.h"
#include "harness.h"

namespace keyledger::e2e {
namespace {

// hex HMAC-SHA256 of "<t>.<body>" with the agent's webhook secret.
std::string expected_signature(const std::string& secret, const std::string& t, const std::string& body) {
  const std::string signed_text = t + "." + body;
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(signed_text.data()),
                                signed_text.size());
  crypto_auth_hmacsha256_final(&state, mac);
  char hex[sizeof mac * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
  return hex;
}

}  // namespace

TEST_CASE("key events reach the agent's webhook, signed, and the delivery log shows them", "[e2e][webhooks]") {
  testing::TestCa ca;
  testing::TestReceiver ok([](int) { return 200u; }, &ca);
  testing::TestReceiver failing([](int) { return 500u; }, &ca);
  testing::TempDir dir;
  ServerProcess server(dir.path() / "data", {"--allow-private-webhooks", "--webhook-ca-file", ca.ca_file()});
  const std::string admin = server.bootstrap_token();
  const std::string manage = server.request("POST", "/v1/tokens", {{"name", "dash"}, {"scopes", {"manage"}}}, admin)
                                 .json()["token"];
  const std::string audit = server.request("POST", "/v1/tokens", {{"name", "aud"}, {"scopes", {"audit"}}}, admin)
                                .json()["token"];
  auto register_agent = [&](const std::string& url) {
    const Json body = {{"name", "Hooked"},
                       {"description", "An agent that receives webhooks on loopback."},
                       {"skills", {"test"}},
                       {"languages", {"en"}},
                       {"webhook_url", url}};
    auto res = server.request("POST", "/v1/agents", body, manage);
    REQUIRE(res.status == 201);
    return res.json();
  };
  const Json agent = register_agent(ok.url("localhost"));
  const std::string agent_id = agent["agent_id"];
  const std::string secret = agent["webhook_secret"];
  const Json other = register_agent(failing.url("localhost"));

  auto created = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage);
  REQUIRE(created.status == 201);
  const std::string key = created.json()["api_key"];
  const std::string key_id = created.json()["key"]["key_id"];
  REQUIRE(server.request("POST", "/v1/keys/" + key_id + "/rotate", Json::object(), manage).status == 201);
  REQUIRE(server.request("POST", "/v1/agents/" + other["agent_id"].get<std::string>() + "/keys", Json::object(),
                         manage).status == 201);

  REQUIRE(testing::eventually([&] { return ok.requests().size() >= 3; }));
  const auto requests = ok.requests();
  const Json first = Json::parse(requests[0].body);
  CHECK(first["type"] == "key.created");
  CHECK(first["data"]["key_id"] == key_id);
  CHECK(requests[0].event_id == first["id"]);
  CHECK(requests[0].body.find(key) == std::string::npos);
  CHECK(requests[0].body.find("digest") == std::string::npos);
  // ClawGig-Signature: t=<unix seconds>,v1=<hex HMAC>
  const std::string& sig = requests[0].signature;
  REQUIRE(sig.rfind("t=", 0) == 0);
  const auto comma = sig.find(",v1=");
  REQUIRE(comma != std::string::npos);
  CHECK(sig.substr(comma + 4) == expected_signature(secret, sig.substr(2, comma - 2), requests[0].body));

  // The delivery log: manage and audit tokens, and the agent's own key.
  auto delivered = [&](const Json& log) {
    int n = 0;
    for (const auto& d : log["deliveries"]) {
      n += d["outcome"] == "delivered" ? 1 : 0;
    }
    return n;
  };
  REQUIRE(testing::eventually(
      [&] { return delivered(server.get("/v1/agents/" + agent_id + "/webhook-deliveries", audit).json()) >= 3; }));
  CHECK(delivered(server.get("/v1/agents/" + agent_id + "/webhook-deliveries", manage).json()) >= 3);
  auto self_log = server.get("/v1/self/webhook-deliveries?limit=1", key);
  REQUIRE(self_log.status == 200);
  CHECK(self_log.json()["deliveries"].size() == 1);
  CHECK(self_log.json().contains("next_cursor"));
  CHECK(server.get("/v1/agents/" + agent_id + "/webhook-deliveries", "").status == 401);

  // The failing receiver's first attempt is recorded as retrying; a manual retry of a pending
  // delivery is refused.
  const std::string other_id = other["agent_id"];
  REQUIRE(testing::eventually([&] {
    const Json log = server.get("/v1/agents/" + other_id + "/webhook-deliveries", audit).json();
    return !log["deliveries"].empty() && log["deliveries"][0]["outcome"] == "retrying";
  }));
  const Json log = server.get("/v1/agents/" + other_id + "/webhook-deliveries", audit).json();
  CHECK(log["deliveries"][0]["status_code"] == 500);
  const std::string pending_event = log["deliveries"][0]["event_id"];
  auto retry = server.request("POST", "/v1/agents/" + other_id + "/webhook-deliveries/" + pending_event + "/retry",
                              Json::object(), manage);
  CHECK(retry.status == 409);
}

}  // namespace keyledger::e2e
