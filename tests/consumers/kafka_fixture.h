#pragma once
// A ledger (real RocksDB store, projector, domain commands) publishing through a real outbox
// relay to a real embedded broker (librdkafka's mock cluster).

#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "consumers/embedded_broker.h"
#include "consumers/kafka_reader.h"
#include "consumers/outbox_relay.h"
#include "projections/ledger_fixture.h"

namespace keyledger::testing {

using namespace std::chrono_literals;

class KafkaLedger {
 public:
  KafkaLedger() {
    open_store();
    auto started = consumers::EmbeddedBroker::start();
    REQUIRE(started.ok());
    broker = std::move(started).value();
  }
  ~KafkaLedger() { stop_relay(); }

  void open_store() {
    ledger.close();
    std::vector<std::string> families = projection_column_families();
    for (auto& f : consumers::consumer_column_families()) {
      families.push_back(f);
    }
    auto opened = EventStore::open({.path = ledger.dir.path() / "store", .extra_column_families = families});
    REQUIRE(opened.ok());
    ledger.store = std::move(opened).value();
    ledger.projector = std::make_unique<Projector>(*ledger.store, Ledger::kTiers);
    REQUIRE(ledger.projector->start().ok());
  }

  consumers::PublisherOptions publisher() const {
    consumers::PublisherOptions options;
    options.brokers = broker->bootstrap_servers();
    options.min_backoff = 20ms;
    options.max_backoff = 200ms;
    options.flush_timeout = 2s;
    return options;
  }

  void start_relay(consumers::PublisherOptions options) {
    stop_relay();
    auto created = consumers::OutboxRelay::create(*ledger.store, *ledger.projector, std::move(options));
    INFO(created.status().ToString());
    REQUIRE(created.ok());
    relay = std::move(created).value();
    relay->start();
  }
  void start_relay() { start_relay(publisher()); }

  void stop_relay() {
    if (!relay) {
      return;
    }
    relay->stop();
    relay.reset();
  }

  // Waits until every event of the log is confirmed published.
  void require_published(std::chrono::milliseconds timeout = 30s) {
    REQUIRE(
        eventually([&] { return relay->published_position() == ledger.store->last_position(); }, timeout));
  }

  std::vector<KafkaRecord> topic(const std::string& name = consumers::kEventsTopic) const {
    return read_topic(broker->bootstrap_servers(), name);
  }

  Ledger ledger;
  std::unique_ptr<consumers::EmbeddedBroker> broker;
  std::unique_ptr<consumers::OutboxRelay> relay;
};

// A small history touching every kind of event: two agents, keys created, rotated, revoked,
// expired, compromised with a replacement, a tier change, tokens created and revoked, a
// webhook delivery.
inline void run_lifecycle(Ledger& l) {
  const std::string a = l.register_agent();
  const std::string b = l.register_agent(v1::ENVIRONMENT_STAGING);
  const IssuedKey k1 = l.create_key(a);
  const IssuedKey k2 = l.create_key(a, 1);
  const IssuedKey k3 = l.create_key(b);
  l.set_tier(a, "elevated");
  const IssuedKey k4 = l.rotate_key(a, k1.key_id);
  l.revoke_key(b, k3.key_id);
  l.expire_key(a, k2.key_id);
  l.report_compromise(a, k4.key_id, true);
  const auto token = l.create_token("gateway", {"verify"});
  l.revoke_token(token.first);
  l.create_token("gateway-2", {"verify"});
  const auto events = l.all_events();
  l.record_delivery(a, events.front().event_id(), 1);
}

}  // namespace keyledger::testing
