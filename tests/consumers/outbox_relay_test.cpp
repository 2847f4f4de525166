#include "consumers/outbox_relay.h"

#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "consumers/state_snapshots.h"
#include "kafka_fixture.h"  // before rdkafka_mock.h, which needs rdkafka.h first

#include <librdkafka/rdkafka_mock.h>

namespace keyledger {

using namespace std::chrono_literals;
namespace {

using testing::KafkaLedger;
using testing::KafkaRecord;

// Per message key, the positions in the order they were read.
std::map<std::string, std::vector<std::uint64_t>> positions_by_key(const std::vector<KafkaRecord>& records) {
  std::map<std::string, std::vector<std::uint64_t>> out;
  for (const auto& r : records) {
    v1::Event e;
    REQUIRE(e.ParseFromString(r.value));
    out[r.key].push_back(e.position());
  }
  return out;
}

// Every position of the log is on the topic, and for each key the first time a position
// appears comes after the first appearance of every smaller position of that key
// (redeliveries may repeat a stretch, never reorder it).
void require_complete_and_ordered(const std::vector<v1::Event>& log,
                                  const std::vector<KafkaRecord>& records) {
  std::set<std::string> ids;
  for (const auto& r : records) {
    ids.insert(r.headers.at("event-id"));
  }
  for (const auto& e : log) {
    INFO("position " << e.position());
    CHECK(ids.count(e.event_id()) == 1);
  }
  for (const auto& [key, positions] : positions_by_key(records)) {
    INFO("key " << key);
    std::set<std::uint64_t> seen;
    std::uint64_t highest_first = 0;
    for (std::uint64_t p : positions) {
      if (seen.insert(p).second) {
        CHECK(p > highest_first);
        highest_first = p;
      }
    }
  }
}

}  // namespace

TEST_CASE("every event of a lifecycle reaches the topic, keyed by agent, in order", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);
  k.require_published();
  CHECK(k.relay->lag() == 0);

  const auto log = k.ledger.all_events();
  const auto records = k.topic();
  REQUIRE(records.size() == log.size());  // no failure: exactly once
  std::map<std::string, v1::Event> by_id;
  for (const auto& e : log) {
    by_id[e.event_id()] = e;
  }
  for (const auto& r : records) {
    v1::Event published;
    REQUIRE(published.ParseFromString(r.value));
    const v1::Event& stored = by_id.at(published.event_id());
    CHECK(published.SerializeAsString() == stored.SerializeAsString());
    CHECK(r.headers.at("event-id") == stored.event_id());
    CHECK(r.headers.at("event-type") == stored.type());
    CHECK(r.headers.at("position") == std::to_string(stored.position()));
    if (stored.stream() == kTokensStream) {
      CHECK(r.key == "tokens");
    } else {
      CHECK(r.key == event_agent_id(stored));
      CHECK(stored.stream() == agent_stream(r.key));
    }
  }
  // One key lands on one partition, in position order.
  std::map<std::string, std::int32_t> partition_of;
  for (const auto& r : records) {
    auto [it, inserted] = partition_of.emplace(r.key, r.partition);
    CHECK(it->second == r.partition);
  }
  for (const auto& [key, positions] : positions_by_key(records)) {
    INFO("key " << key);
    CHECK(std::is_sorted(positions.begin(), positions.end()));
    CHECK(std::adjacent_find(positions.begin(), positions.end()) == positions.end());
  }
}

TEST_CASE("the state topic holds the latest state of every key, agent and the token registry", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);
  k.require_published();

  std::map<std::string, v1::StateSnapshot> latest;  // what compaction would keep
  for (const auto& r : k.topic(consumers::kStateTopic)) {
    v1::StateSnapshot s;
    REQUIRE(s.ParseFromString(r.value));
    REQUIRE_FALSE(s.events().empty());
    latest[r.key] = s;
  }
  std::set<std::string> expected_keys = {"tokens"};
  for (const auto& e : k.ledger.all_events()) {
    if (!event_key_id(e).empty()) {
      expected_keys.insert(event_key_id(e));
    }
    if (e.has_agent_registered()) {
      expected_keys.insert(e.agent_registered().agent_id());
    }
  }
  std::set<std::string> keys;
  for (const auto& [key, s] : latest) {
    keys.insert(key);
    for (const auto& e : s.events()) {
      CHECK_FALSE(e.agent_registered().has_webhook_secret());
    }
  }
  CHECK(keys == expected_keys);
  // Replaying only the snapshots gives the primary's table.
  ActiveKeyTable table(testing::Ledger::kTiers);
  for (const auto& [key, s] : latest) {
    if (key.starts_with("agt_")) {
      for (const auto& e : s.events()) {
        table.apply(e);
      }
    }
  }
  for (const auto& [key, s] : latest) {
    for (const auto& e : s.events()) {
      table.apply(e);
    }
  }
  CHECK(testing::dump(table) == testing::dump(k.ledger.projector->key_table()));
  CHECK(latest.at("tokens").events_size() == 3);
}

TEST_CASE("a broker outage loses nothing and keeps per-agent order", "[kafka]") {
  KafkaLedger k;
  auto options = k.publisher();
  // Short delivery timeouts so the outage also fails deliveries and forces republication.
  options.producer_config["message.timeout.ms"] = "1500";
  k.start_relay(options);
  const std::string agent = k.ledger.register_agent();
  k.ledger.create_key(agent);
  k.require_published();

  REQUIRE(k.broker->set_down().ok());
  // Commands keep succeeding (the REQUIREs inside the ledger check every append).
  const std::string other = k.ledger.register_agent();
  std::vector<std::string> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(k.ledger.create_key(agent).key_id);
    k.ledger.create_key(other);
  }
  k.ledger.revoke_key(agent, keys.front());
  CHECK(k.relay->lag() > 0);
  // Let deliveries time out at least once while the broker is down.
  REQUIRE(testing::eventually([&] { return k.relay->delivery_failures() > 0; }, 20s));
  REQUIRE(k.broker->set_up().ok());
  k.require_published(60s);

  require_complete_and_ordered(k.ledger.all_events(), k.topic());
}

TEST_CASE("injected produce errors are retried without loss", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  rd_kafka_mock_push_request_errors(
      k.broker->cluster(), 0 /* Produce */, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
      RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
  testing::run_lifecycle(k.ledger);
  k.require_published(60s);
  require_complete_and_ordered(k.ledger.all_events(), k.topic());
}

TEST_CASE("a restarted relay resumes after the persisted position", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  const std::string agent = k.ledger.register_agent();
  k.ledger.create_key(agent);
  k.require_published();
  const std::uint64_t before = k.ledger.store->last_position();
  k.stop_relay();

  // Appended while no relay runs.
  k.ledger.create_key(agent);
  k.ledger.create_key(agent);
  k.start_relay();
  CHECK(k.relay->published_position() >= before);
  k.require_published();

  const auto records = k.topic();
  REQUIRE(records.size() == k.ledger.all_events().size());  // nothing republished
  require_complete_and_ordered(k.ledger.all_events(), records);
}

TEST_CASE("a relay stopped mid-backlog publishes the rest after a restart", "[kafka]") {
  KafkaLedger k;
  auto options = k.publisher();
  options.flush_timeout = 200ms;
  k.start_relay(options);
  const std::string agent = k.ledger.register_agent();
  k.require_published();
  REQUIRE(k.broker->set_down().ok());
  for (int i = 0; i < 4; ++i) {
    k.ledger.create_key(agent);
  }
  k.stop_relay();  // cannot deliver: the position stays behind
  REQUIRE(k.broker->set_up().ok());

  {
    auto resumed = consumers::OutboxRelay::create(*k.ledger.store, *k.ledger.projector, k.publisher());
    REQUIRE(resumed.ok());
    CHECK((*resumed)->published_position() < k.ledger.store->last_position());
  }
  k.start_relay(k.publisher());
  k.require_published(60s);
  require_complete_and_ordered(k.ledger.all_events(), k.topic());
}

TEST_CASE("republish_from_start publishes the whole log again", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  const std::string agent = k.ledger.register_agent();
  k.ledger.create_key(agent);
  k.require_published();
  auto options = k.publisher();
  options.republish_from_start = true;
  k.start_relay(options);
  k.require_published();
  const auto records = k.topic();
  CHECK(records.size() == 2 * k.ledger.all_events().size());
}

TEST_CASE("relay options are checked", "[kafka]") {
  KafkaLedger k;
  auto options = k.publisher();
  options.brokers.clear();
  CHECK(consumers::OutboxRelay::create(*k.ledger.store, *k.ledger.projector, options)
            .status()
            .IsInvalidArgument());
  options = k.publisher();
  options.producer_config["no.such.property"] = "1";
  CHECK(consumers::OutboxRelay::create(*k.ledger.store, *k.ledger.projector, options)
            .status()
            .IsInvalidArgument());
}

TEST_CASE("message keys: agent id, or tokens for the token stream", "[kafka]") {
  v1::Event e;
  e.set_stream("tokens");
  e.mutable_service_token_created()->set_token_id("tok_1");
  CHECK(consumers::event_message_key(e) == "tokens");
  e.set_stream("agent-agt_1");
  e.mutable_key_revoked()->set_agent_id("agt_1");
  CHECK(consumers::event_message_key(e) == "agt_1");
}

TEST_CASE("an event creating its subject is its own snapshot; later changes snapshot the whole state",
          "[kafka]") {
  testing::Ledger l;
  const std::string agent = l.register_agent();
  l.set_tier(agent, "elevated");
  const std::string key = l.create_key(agent).key_id;
  l.revoke_key(agent, key);

  std::map<std::string, std::vector<std::string>> types_by_event;  // event type -> snapshot's types
  for (const auto& e : l.all_events()) {
    auto snapshot = consumers::snapshot_after(e, *l.store, *l.projector);
    REQUIRE(snapshot.ok());
    if (!*snapshot) {
      continue;
    }
    std::vector<std::string> types;
    for (const auto& s : (*snapshot)->snapshot.events()) {
      CHECK_FALSE(s.agent_registered().has_webhook_secret());
      CHECK((*snapshot)->snapshot.position() >= s.position());
      types.push_back(s.type());
    }
    types_by_event[e.type()] = types;
  }
  CHECK(types_by_event.at("agent.registered") == std::vector<std::string>{"agent.registered"});
  CHECK(types_by_event.at("agent.rate_limit_changed") ==
        std::vector<std::string>{"agent.registered", "agent.rate_limit_changed"});
  CHECK(types_by_event.at("key.created") == std::vector<std::string>{"key.created"});
  CHECK(types_by_event.at("key.revoked") == std::vector<std::string>{"key.created", "key.revoked"});
}

}  // namespace keyledger
