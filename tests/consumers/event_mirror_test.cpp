// `keyledger webhooks` wired as main does, against a real ledger publishing to the embedded
// broker: EventMirror (Kafka -> local store), the unchanged WebhookDispatcher over the mirror,
// DeliveryPublisher producing each attempt, and the server's DeliveryRecordFeed appending it.
#include "consumers/event_mirror.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>

#include "eventstore/command_service.h"
#include "consumers/delivery_publisher.h"
#include "consumers/delivery_record_feed.h"
#include "consumers/kafka_fixture.h"
#include "consumers/webhook_dispatcher.h"
#include "consumers/webhook_receiver.h"
#include "domain/ids.h"

namespace keyledger::consumers {
namespace {

using namespace std::chrono_literals;

// The server's side: the ledger, its relay to the embedded broker, commands, and the feed
// recording the attempts `keyledger webhooks` produces.
struct Server {
  Server() {
    kafka.start_relay();
    CommandServiceOptions options;
    options.registration.allow_insecure_webhooks = true;
    options.tiers = testing::Ledger::kTiers;
    commands =
        std::make_unique<CommandService>(*kafka.ledger.store, *kafka.ledger.projector, clock, random,
                                              kafka.ledger.hasher, kafka.ledger.secrets, options);
    DeliveryRecordFeedOptions records;
    records.brokers = brokers();
    feed = std::make_unique<DeliveryRecordFeed>(*commands, *kafka.ledger.store, records);
    REQUIRE(feed->start().ok());
  }
  ~Server() { feed->stop(); }

  std::string brokers() const { return kafka.broker->bootstrap_servers(); }

  // Registers an agent with `url`; returns its id and webhook secret.
  std::pair<std::string, std::string> register_agent(const std::string& url) {
    AgentProfile profile;
    profile.name = "Hooked";
    profile.description = "An agent that receives webhooks on loopback.";
    profile.skills = {"test"};
    profile.languages = {"en"};
    profile.webhook_url = url;
    auto decision = commands->register_agent(profile, "dashboard");
    INFO(decision.status().ToString());
    REQUIRE(decision.ok());
    return {decision->agent_id, decision->webhook_secret};
  }

  // Creates a key; returns its KeyCreated event.
  v1::Event create_key(const std::string& agent_id) {
    auto decision =
        commands->on_agent(agent_id, "dashboard", [](const AgentState& state, CommandContext& ctx) {
          CreateKey request;
          request.label = "test";
          return keyledger::create_key(state, request, ctx);
        });
    INFO(decision.status().ToString());
    REQUIRE(decision.ok());
    return decision->events.front();
  }

  std::vector<v1::Event> deliveries(const std::string& agent_id) {
    auto events = kafka.ledger.store->read_stream(agent_stream(agent_id));
    REQUIRE(events.ok());
    std::vector<v1::Event> out;
    for (auto& e : *events) {
      if (e.payload_case() == v1::Event::kWebhookDeliveryRecorded) {
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  testing::KafkaLedger kafka;
  SystemClock clock;
  SystemRandom random;
  std::unique_ptr<CommandService> commands;
  std::unique_ptr<DeliveryRecordFeed> feed;
};

// `keyledger webhooks`: its state directory, mirror, publisher and dispatcher, in main's order.
struct Standalone {
  Standalone(const std::filesystem::path& dir, const std::string& brokers, const SecretBox& secrets) {
    EventStoreOptions options;
    options.path = dir / "mirror";
    options.extra_column_families = webhook_column_families();
    auto opened = EventStore::open(options);
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    EventMirrorOptions mirror_options;
    mirror_options.brokers = brokers;
    mirror = std::make_unique<EventMirror>(*store, mirror_options);
    REQUIRE(mirror->start().ok());
    REQUIRE(testing::eventually([&] { return mirror->caught_up(); }, 20s));
    DeliveryPublisherOptions publisher_options;
    publisher_options.brokers = brokers;
    auto created = DeliveryPublisher::create(publisher_options, clock, store.get());
    REQUIRE(created.ok());
    publisher = std::move(created).value();
    WebhookDispatcherOptions hooks = testing::fast_dispatcher_options();
    hooks.from_beginning = true;
    dispatcher = std::make_unique<WebhookDispatcher>(*store, secrets, clock, publisher->recorder(), hooks);
    const Status started = dispatcher->start();
    INFO(started.ToString());
    REQUIRE(started.ok());
  }
  ~Standalone() {
    dispatcher->stop();
    mirror->stop();
  }

  SystemClock clock;
  std::unique_ptr<EventStore> store;
  std::unique_ptr<EventMirror> mirror;
  std::unique_ptr<DeliveryPublisher> publisher;
  std::unique_ptr<WebhookDispatcher> dispatcher;
};

bool signed_with(const std::string& secret, const testing::ReceivedRequest& r) {
  const auto comma = r.signature.find(",v1=");
  if (!r.signature.starts_with("t=") || comma == std::string::npos) {
    return false;
  }
  return r.signature == webhook_signature(secret, std::stoll(r.signature.substr(2, comma - 2)), r.body);
}

}  // namespace

TEST_CASE(
    "keyledger webhooks delivers from Kafka, the server records each attempt, a restart re-sends nothing",
    "[kafka][webhooks]") {
  testing::TestReceiver receiver([](int) { return 200u; });
  Server server;
  const auto [agent_id, secret] = server.register_agent(receiver.url());
  // Delivered by the in-process dispatcher before the switch: recorded, so never sent again.
  const v1::Event before = server.create_key(agent_id);
  server.kafka.ledger.record_delivery(agent_id, before.event_id(), 3);  // attempt 3: delivered
  const v1::Event first = server.create_key(agent_id);
  server.kafka.require_published();

  testing::TempDir state;
  {
    Standalone webhooks(state.path(), server.brokers(), server.kafka.ledger.secrets);
    REQUIRE(testing::eventually([&] { return receiver.requests().size() == 1; }));
    const auto requests = receiver.requests();
    CHECK(requests[0].event_id == first.event_id());
    CHECK(signed_with(secret, requests[0]));

    // The server records the attempt, under the id derived from (event, attempt 1).
    REQUIRE(testing::eventually([&] { return server.deliveries(agent_id).size() == 2; }));
    const v1::Event recorded = server.deliveries(agent_id).back();
    CHECK(recorded.event_id() == derived_event_id("keyledger.webhook-delivery/" + first.event_id() + "/1"));
    CHECK(recorded.actor() == "system:webhooks");
    CHECK(recorded.webhook_delivery_recorded().outcome() == "delivered");
    CHECK(recorded.webhook_delivery_recorded().attempt() == 1);
    // It comes back through key-events; the mirror already holds it.
    CHECK(testing::eventually([&] { return webhooks.mirror->duplicates_skipped() >= 1; }));
    CHECK(webhooks.dispatcher->pending() == 0);
  }

  // Restart on the same state directory: only the new event goes out.
  const v1::Event second = server.create_key(agent_id);
  Standalone webhooks(state.path(), server.brokers(), server.kafka.ledger.secrets);
  REQUIRE(testing::eventually([&] { return receiver.requests().size() == 2; }));
  CHECK(receiver.requests()[1].event_id == second.event_id());
  REQUIRE(testing::eventually([&] { return server.deliveries(agent_id).size() == 3; }));
  REQUIRE(testing::eventually([&] {
    return webhooks.dispatcher->pending() == 0 &&
           webhooks.dispatcher->cursor() == webhooks.store->last_position();
  }));
  CHECK(receiver.requests().size() == 2);
  // The feed counts a record just after its append is visible: wait for the count too.
  CHECK(testing::eventually([&] { return server.feed->recorded() == 2; }));
}

TEST_CASE("the server records a delivery record produced twice once, and skips records of unknown agents",
          "[kafka][webhooks]") {
  Server server;
  const auto [agent_id, secret] = server.register_agent("http://127.0.0.1:9/hooks");
  const v1::Event key = server.create_key(agent_id);
  DeliveryPublisherOptions options;
  options.brokers = server.brokers();
  SystemClock clock;
  auto publisher = DeliveryPublisher::create(options, clock, nullptr);
  REQUIRE(publisher.ok());

  v1::WebhookDeliveryRecorded attempt;
  attempt.set_agent_id(agent_id);
  attempt.set_event_id(key.event_id());
  attempt.set_attempt(1);
  attempt.set_status_code(503);
  attempt.set_outcome("retrying");
  attempt.set_event_type("key.created");
  REQUIRE((*publisher)->record(agent_id, attempt).ok());
  REQUIRE((*publisher)->record(agent_id, attempt).ok());  // a retried produce: same attempt again
  v1::WebhookDeliveryRecorded stranger = attempt;
  stranger.set_agent_id("agt_000000000000000000000000");
  stranger.set_event_id("00000000-0000-4000-8000-000000000000");
  REQUIRE((*publisher)->record(stranger.agent_id(), stranger).ok());
  attempt.set_attempt(2);
  attempt.set_status_code(200);
  attempt.set_outcome("delivered");
  REQUIRE((*publisher)->record(agent_id, attempt).ok());

  REQUIRE(testing::eventually(
      [&] { return server.feed->recorded() + server.feed->duplicates() + server.feed->rejected() == 4; }));
  const auto recorded = server.deliveries(agent_id);
  REQUIRE(recorded.size() == 2);
  CHECK(recorded[0].webhook_delivery_recorded().attempt() == 1);
  CHECK(recorded[1].webhook_delivery_recorded().outcome() == "delivered");
  CHECK(server.feed->duplicates() == 1);
  CHECK(server.feed->rejected() == 1);

  // A restarted feed resumes after the committed offsets; a record read again is skipped by id.
  server.feed->stop();
  DeliveryRecordFeedOptions records;
  records.brokers = server.brokers();
  DeliveryRecordFeed again(*server.commands, *server.kafka.ledger.store, records);
  REQUIRE(again.start().ok());
  attempt.set_attempt(3);
  REQUIRE((*publisher)->record(agent_id, attempt).ok());
  REQUIRE(testing::eventually([&] { return again.recorded() == 1; }));
  CHECK(again.duplicates() == 0);
  CHECK(server.deliveries(agent_id).size() == 3);
}

// Not a correctness test: the standalone path's figures, comparable with the in-process
// "webhook delivery throughput and latency": a backlog of 1000 key events of 20 agents
// delivered by a fresh `keyledger webhooks` (mirror catch-up included), then the latency from
// the server's append of a key event to its first attempt (relay -> Kafka -> mirror ->
// dispatcher). Run with: keyledger_unit_tests "[.webhooks-bench]"
TEST_CASE("standalone webhook delivery throughput and latency", "[.webhooks-bench]") {
  using SteadyTime = std::chrono::steady_clock::time_point;
  testing::TestReceiver receiver([](int) { return 200u; });
  Server server;
  constexpr int kAgents = 20;
  std::vector<std::string> agents;
  for (int i = 0; i < kAgents; ++i) {
    agents.push_back(server.register_agent(receiver.url()).first);
  }
  // Key events alternate create and revoke (an agent holds at most 10 active keys).
  const auto key_events = [&](int rounds, std::map<std::string, SteadyTime>* appended) {
    for (int n = 0; n < rounds; ++n) {
      for (const auto& a : agents) {
        const v1::Event created = server.create_key(a);
        const auto created_at = std::chrono::steady_clock::now();
        auto revoked =
            server.commands->on_agent(a, "dashboard", [&](const AgentState& state, CommandContext& ctx) {
              RevokeKey request;
              request.key_id = created.key_created().key_id();
              request.reason = "bench";
              return keyledger::revoke_key(state, request, ctx);
            });
        REQUIRE(revoked.ok());
        if (appended != nullptr) {
          (*appended)[created.event_id()] = created_at;
          (*appended)[revoked->events.front().event_id()] = std::chrono::steady_clock::now();
          std::this_thread::sleep_for(5ms);
        }
      }
    }
  };
  key_events(25, nullptr);
  const std::size_t backlog = 25 * 2 * kAgents;
  server.kafka.require_published(60s);

  testing::TempDir state;
  const auto start = std::chrono::steady_clock::now();
  Standalone webhooks(state.path(), server.brokers(), server.kafka.ledger.secrets);
  REQUIRE(testing::eventually([&] { return receiver.requests().size() >= backlog; }, 300s));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(testing::eventually([&] { return webhooks.dispatcher->pending() == 0; }, 60s));

  std::map<std::string, SteadyTime> appended;
  key_events(5, &appended);
  REQUIRE(testing::eventually([&] { return receiver.requests().size() >= backlog + appended.size(); }, 60s));
  const auto latencies = testing::first_attempt_latencies_ms(receiver.requests(), appended);
  REQUIRE(latencies.size() == appended.size());
  WARN("standalone throughput: " << backlog << " deliveries in " << seconds
                                 << " s = " << static_cast<double>(backlog) / seconds << "/s; "
                                 << testing::latency_summary(latencies));
}

}  // namespace keyledger::consumers
