#include "consumers/replica_feed.h"

#include <catch2/catch.hpp>

#include "kafka_fixture.h"

namespace keyledger {
namespace {

using namespace std::chrono_literals;
using testing::dump;
using testing::KafkaLedger;

// The tables of one replica and the feed filling them.
struct Replica {
  ActiveKeyTable keys{testing::Ledger::kTiers};
  ServiceTokenTable tokens;
  std::unique_ptr<consumers::ReplicaFeed> feed;

  explicit Replica(const KafkaLedger& k, bool replay_event_history = true) {
    consumers::ReplicaOptions options;
    options.brokers = k.broker->bootstrap_servers();
    options.replay_event_history = replay_event_history;
    options.retry_backoff = 20ms;
    feed = std::make_unique<consumers::ReplicaFeed>(keys, tokens, options);
    REQUIRE(feed->start().ok());
  }
};

std::vector<std::string> token_rows(const ServiceTokenTable& tokens) {
  std::vector<std::string> out;
  for (const auto& t : tokens.list()) {
    out.push_back(t.token_id + "|" + t.name + "|" + (t.active() ? "active" : "revoked"));
  }
  return out;
}

void require_same_tables(const KafkaLedger& k, const Replica& r) {
  CHECK(dump(r.keys) == dump(k.ledger.projector->key_table()));
  CHECK(token_rows(r.tokens) == token_rows(k.ledger.projector->tokens()));
}

}  // namespace

TEST_CASE("a replica's tables equal the primary's after catch-up, and follow it", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);
  k.require_published();

  Replica r(k);
  REQUIRE(testing::eventually([&] { return r.feed->ready(); }));
  require_same_tables(k, r);
  CHECK(r.feed->last_position() == k.ledger.store->last_position());
  CHECK(r.feed->messages_rejected() == 0);

  // Live: a new key becomes known, then its revocation reaches the replica.
  const std::string agent = k.ledger.register_agent();
  const auto key = k.ledger.create_key(agent);
  REQUIRE(testing::eventually([&] { return r.keys.find(key.digest).has_value(); }));
  k.ledger.revoke_key(agent, key.key_id);
  REQUIRE(testing::eventually([&] { return r.keys.find(key.digest)->condition == KeyCondition::kRevoked; }));
  const auto token = k.ledger.create_token("late", {"verify"});
  REQUIRE(testing::eventually(
      [&] { return r.tokens.find_active(k.ledger.hasher.digest(token.second)).has_value(); }));
  k.ledger.set_tier(agent, "elevated");
  k.require_published();
  REQUIRE(testing::eventually([&] { return r.feed->last_position() == k.ledger.store->last_position(); }));
  require_same_tables(k, r);
}

TEST_CASE("a replica started late catches up from the state topic alone", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);
  k.require_published();

  Replica r(k, /*replay_event_history=*/false);
  REQUIRE(testing::eventually([&] { return r.feed->ready(); }));
  require_same_tables(k, r);

  const std::string agent = k.ledger.register_agent();
  const auto key = k.ledger.create_key(agent);
  REQUIRE(testing::eventually([&] { return r.keys.find(key.digest).has_value(); }));
}

TEST_CASE("duplicates are harmless: everything published twice gives the same tables", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);
  k.require_published();
  auto again = k.publisher();
  again.republish_from_start = true;
  k.start_relay(again);
  k.require_published();

  Replica r(k);
  REQUIRE(testing::eventually([&] { return r.feed->ready(); }));
  require_same_tables(k, r);

  // And applying the whole log once more by hand changes nothing either.
  for (const auto& e : k.ledger.all_events()) {
    r.feed->apply(e);
  }
  require_same_tables(k, r);
}

TEST_CASE("an older tier change seen again does not undo a newer one", "[kafka]") {
  ActiveKeyTable keys(testing::Ledger::kTiers);
  ServiceTokenTable tokens;
  consumers::ReplicaFeed feed(keys, tokens, {});
  testing::Ledger l;
  const std::string agent = l.register_agent();
  const auto key = l.create_key(agent);
  l.set_tier(agent, "elevated");
  l.set_tier(agent, "standard");
  const auto log = l.all_events();
  for (const auto& e : log) {
    feed.apply(e);
  }
  CHECK(keys.tier_name(keys.find(key.digest)->tier) == "standard");
  feed.apply(log[log.size() - 2]);  // the change to elevated, redelivered
  CHECK(keys.tier_name(keys.find(key.digest)->tier) == "standard");
}

TEST_CASE("a replica restarted mid-stream ends with the same tables", "[kafka]") {
  KafkaLedger k;
  k.start_relay();
  testing::run_lifecycle(k.ledger);
  {
    Replica first(k);
    REQUIRE(testing::eventually([&] { return first.feed->ready(); }));
  }
  const std::string agent = k.ledger.register_agent();
  k.ledger.create_key(agent);
  Replica second(k);
  k.ledger.create_key(agent);
  k.require_published();
  REQUIRE(testing::eventually([&] { return second.feed->ready(); }));
  REQUIRE(
      testing::eventually([&] { return second.feed->last_position() == k.ledger.store->last_position(); }));
  require_same_tables(k, second);
}

TEST_CASE("a replica waits for missing topics and is not ready meanwhile", "[kafka]") {
  consumers::EmbeddedBrokerOptions none;
  none.topics = {};
  auto broker = consumers::EmbeddedBroker::start(none);
  REQUIRE(broker.ok());
  ActiveKeyTable keys(testing::Ledger::kTiers);
  ServiceTokenTable tokens;
  consumers::ReplicaOptions options;
  options.brokers = (*broker)->bootstrap_servers();
  options.retry_backoff = 20ms;
  consumers::ReplicaFeed feed(keys, tokens, options);
  REQUIRE(feed.start().ok());
  CHECK_FALSE(feed.ready());
  feed.stop();  // returns although the topics never appeared
  CHECK_FALSE(feed.ready());
}

}  // namespace keyledger
