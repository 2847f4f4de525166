#include "consumers/revocation_feed.h"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "kafka_fixture.h"

namespace keyledger {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

std::vector<Json> lines_of(const std::string& text) {
  std::vector<Json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(Json::parse(line));
  }
  return out;
}

// Runs a group member until it wrote `lines` lines (or a watchdog stops it after a while).
std::vector<Json> consume(const testing::KafkaLedger& k, const std::string& group, std::size_t lines) {
  consumers::RevocationFeedOptions options;
  options.brokers = k.broker->bootstrap_servers();
  options.group = group;
  // The smallest a real broker accepts: the embedded broker holds a rejoin that long.
  options.consumer_config["session.timeout.ms"] = "6000";
  auto feed = consumers::RevocationFeed::create(options);
  REQUIRE(feed.ok());
  std::atomic<bool> stop{false};
  std::ostringstream out;
  std::thread watchdog([&] {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    stop = true;
  });
  auto written = (*feed)->run(out, stop, lines);
  stop = true;
  watchdog.join();
  REQUIRE(written.ok());
  CHECK(*written == lines);
  return lines_of(out.str());
}

}  // namespace

TEST_CASE("revocation lines carry key, agent, reason, position and time", "[kafka]") {
  v1::Event e;
  e.set_event_id("e1");
  e.set_position(42);
  e.set_type("key.revoked");
  *e.mutable_occurred_at() = to_timestamp(testing::test_epoch());
  auto* revoked = e.mutable_key_revoked();
  revoked->set_agent_id("agt_1");
  revoked->set_key_id("key_1");
  revoked->set_reason(v1::REVOCATION_REASON_ROTATED);
  const auto line = consumers::revocation_line(e);
  REQUIRE(line);
  const Json j = Json::parse(*line);
  CHECK(j["type"] == "key.revoked");
  CHECK(j["event_id"] == "e1");
  CHECK(j["key_id"] == "key_1");
  CHECK(j["agent_id"] == "agt_1");
  CHECK(j["reason"] == "rotated");
  CHECK(j["position"] == 42);
  CHECK(j["occurred_at"] == "2026-11-26T10:00:00Z");
  CHECK(line->find('\n') == std::string::npos);

  v1::Event created;
  created.mutable_key_created()->set_key_id("key_2");
  CHECK_FALSE(consumers::revocation_line(created));
}

TEST_CASE("a consumer group member prints revocations and resumes after its commits", "[kafka]") {
  testing::KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);  // revoked (+ rotated? no), expired, compromised
  k.require_published();
  std::size_t expected = 0;
  for (const auto& e : k.ledger.all_events()) {
    expected += consumers::revocation_line(e) ? 1 : 0;
  }
  REQUIRE(expected >= 3);

  const auto first = consume(k, "ops-script", expected);
  std::set<std::string> types;
  for (const auto& j : first) {
    types.insert(j["type"].get<std::string>());
    CHECK(j["key_id"].get<std::string>().rfind("key_", 0) == 0);
    CHECK(j["agent_id"].get<std::string>().rfind("agt_", 0) == 0);
  }
  CHECK(types == std::set<std::string>{"key.revoked", "key.expired", "key.compromised"});

  // A restarted member of the same group starts after what was printed.
  const std::string agent = k.ledger.register_agent();
  const auto key = k.ledger.create_key(agent);
  k.ledger.revoke_key(agent, key.key_id);
  k.require_published();
  const auto second = consume(k, "ops-script", 1);
  REQUIRE(second.size() == 1);
  CHECK(second[0]["key_id"] == key.key_id);
  CHECK(second[0]["reason"] == "manual");
}

TEST_CASE("revocation feed options are checked", "[kafka]") {
  consumers::RevocationFeedOptions options;
  options.brokers = "127.0.0.1:1";
  CHECK(consumers::RevocationFeed::create(options).status().IsInvalidArgument());  // no group
  options.group = "g";
  options.start_from = "middle";
  CHECK(consumers::RevocationFeed::create(options).status().IsInvalidArgument());
}

}  // namespace keyledger
