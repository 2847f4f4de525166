// Key usage against the real binary: counts survive a kill -9 once flushed, and what a kill
// loses is at most what was recorded since the last flush.
#include <catch2/catch.hpp>

#include <chrono>
#include <regex>
#include <thread>

#include "harness.h"

namespace keyledger::e2e {
namespace {

Json agent_body() {
  return {{"name", "Usage Probe"},
          {"description", "Counts how often its key is presented."},
          {"skills", {"usage"}},
          {"languages", {"en"}},
          {"webhook_url", "https://agent.example.com/hooks/clawgig"}};
}

// A gauge or counter sample of /metrics ("name{labels}" as written there).
double metric(const ServerProcess& server, const std::string& sample) {
  const std::string text = server.get("/metrics", "").body;
  const std::size_t at = text.find("\n" + sample + " ");
  REQUIRE(at != std::string::npos);
  return std::stod(text.substr(at + sample.size() + 2));
}

// Waits (polling, at most 20 s) until the node has flushed everything it counted.
void wait_until_flushed(const ServerProcess& server) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (metric(server, "keyledger_usage_pending_cells") != 0) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// The key's counts over the last 24 hours, summed over the buckets.
std::map<std::string, std::uint64_t> totals(const ServerProcess& server, const std::string& token,
                                            const std::string& key_id) {
  const HttpResult res = server.get("/v1/keys/" + key_id + "/usage", token);
  REQUIRE(res.status == 200);
  std::map<std::string, std::uint64_t> sum;
  const Json body = res.json();
  for (const Json& bucket : body["buckets"]) {
    for (const auto& [code, n] : bucket["counts"].items()) {
      sum[code] += n.get<std::uint64_t>();
    }
  }
  return sum;
}

}  // namespace

TEST_CASE("usage flushed before a kill -9 is all there after the restart", "[e2e][usage]") {
  testing::TempDir dir;
  auto server = std::make_unique<ServerProcess>(dir.path() / "data");
  const std::string admin = server->bootstrap_token();
  const HttpResult agent = server->request("POST", "/v1/agents", agent_body(), admin);
  REQUIRE(agent.status == 201);
  const HttpResult key = server->request(
      "POST", "/v1/agents/" + agent.json()["agent_id"].get<std::string>() + "/keys", Json::object(), admin);
  REQUIRE(key.status == 201);
  const std::string api_key = key.json()["api_key"];
  const std::string key_id = key.json()["key"]["key_id"];

  for (int i = 0; i < 25; ++i) {
    REQUIRE(server->request("POST", "/v1/verify", {{"api_key", api_key}}, admin).json()["code"] == "VALID");
  }
  REQUIRE(server->request("POST", "/v1/keys/" + key_id + "/revoke", Json::object(), admin).status == 200);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(server->get("/v1/auth", "", {{"X-Api-Key", api_key}}).status == 401);
  }
  // Answers include what is not flushed yet.
  CHECK(totals(*server, admin, key_id) ==
        std::map<std::string, std::uint64_t>{
            {"VALID", 25}, {"RATE_LIMITED", 0}, {"REVOKED", 5}, {"EXPIRED", 0}, {"COMPROMISED", 0}});
  wait_until_flushed(*server);
  // Counted after the last flush: a kill may lose these, and only these.
  for (int i = 0; i < 3; ++i) {
    REQUIRE(server->get("/v1/auth", "", {{"X-Api-Key", api_key}}).status == 401);
  }
  server->kill_hard();
  server.reset();

  server = std::make_unique<ServerProcess>(dir.path() / "data");
  const auto after = totals(*server, admin, key_id);
  CHECK(after.at("VALID") == 25);
  CHECK(after.at("REVOKED") >= 5);
  CHECK(after.at("REVOKED") <= 8);
  // A clean stop flushes everything.
  for (int i = 0; i < 2; ++i) {
    REQUIRE(server->get("/v1/auth", "", {{"X-Api-Key", api_key}}).status == 401);
  }
  const std::uint64_t revoked_before_stop = after.at("REVOKED") + 2;
  CHECK(server->stop() == 0);
  server = std::make_unique<ServerProcess>(dir.path() / "data");
  CHECK(totals(*server, admin, key_id).at("REVOKED") == revoked_before_stop);
}

}  // namespace keyledger::e2e
