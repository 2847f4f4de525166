#include "consumers/webhook_dispatcher.h"

#include <sodium.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "consumers/webhook_receiver.h"
#include "domain/agent.h"
#include "domain/ids.h"
#include "projections/ledger_fixture.h"

namespace keyledger::consumers {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

// A store with the webhook column family, agents made by the domain commands, and a recorder
// appending WebhookDeliveryRecorded events straight to the agent's stream.
struct Hooks {
  struct Agent {
    std::string id;
    std::string secret;
  };

  Hooks() { open(); }

  void open() {
    auto opened =
        EventStore::open({.path = dir.path() / "store", .extra_column_families = webhook_column_families()});
    REQUIRE(opened.ok());
    store = std::move(opened).value();
  }

  DeliveryRecorder recorder() {
    return [this](const std::string& agent_id, const v1::WebhookDeliveryRecorded& record) -> Status {
      std::lock_guard lock(record_mu);
      v1::Event e;
      e.set_event_id(new_event_id(record_random));
      *e.mutable_occurred_at() = to_timestamp(std::chrono::system_clock::now());
      e.set_actor("system:webhooks");
      e.set_type("webhook.delivery_recorded");
      *e.mutable_webhook_delivery_recorded() = record;
      auto appended = store->append(agent_stream(agent_id), kAnyVersion, {e});
      return appended.ok() ? Status::Ok() : appended.status();
    };
  }

  std::unique_ptr<WebhookDispatcher> dispatcher(WebhookDispatcherOptions options, const Clock& clock) {
    auto d = std::make_unique<WebhookDispatcher>(*store, secrets, clock, recorder(), std::move(options));
    const Status started = d->start();
    INFO(started.ToString());
    REQUIRE(started.ok());
    return d;
  }

  Agent register_agent(const std::string& url) {
    AgentProfile profile;
    profile.name = "Invoice Parser";
    profile.description = "Extracts line items from PDF invoices.";
    profile.skills = {"pdf"};
    profile.languages = {"en"};
    profile.webhook_url = url;
    auto ctx = context();
    auto decision = keyledger::register_agent(profile, {.allow_insecure_webhooks = true}, ctx);
    INFO(decision.status().ToString());
    REQUIRE(decision.ok());
    REQUIRE(store->append(agent_stream(decision->agent_id), kNoStream, decision->events).ok());
    return {decision->agent_id, decision->webhook_secret};
  }

  AgentState agent(const std::string& id) {
    auto events = store->read_stream(agent_stream(id));
    REQUIRE(events.ok());
    return fold_agent(*events);
  }

  // Creates a key; returns the KeyCreated event. Retried on a version conflict, as the
  // dispatcher records deliveries in the same stream meanwhile.
  v1::Event create_key(const std::string& agent_id) {
    while (true) {
      auto ctx = context();
      const AgentState state = agent(agent_id);
      auto decision =
          keyledger::create_key(state, {.label = "test", .expires_in_seconds = std::nullopt}, ctx);
      REQUIRE(decision.ok());
      auto appended =
          store->append(agent_stream(agent_id), static_cast<std::int64_t>(state.version), decision->events);
      if (!appended.ok() && appended.status().IsVersionConflict()) {
        continue;
      }
      REQUIRE(appended.ok());
      return appended->events.front();
    }
  }

  std::vector<v1::WebhookDeliveryRecorded> deliveries(const std::string& agent_id) {
    std::vector<v1::WebhookDeliveryRecorded> out;
    for (const auto& e : agent_events(agent_id)) {
      if (e.payload_case() == v1::Event::kWebhookDeliveryRecorded) {
        out.push_back(e.webhook_delivery_recorded());
      }
    }
    return out;
  }

  std::vector<v1::Event> agent_events(const std::string& agent_id) {
    auto events = store->read_stream(agent_stream(agent_id));
    REQUIRE(events.ok());
    return std::move(events).value();
  }

  CommandContext context() {
    command_clock.advance(1s);
    return CommandContext{command_clock, random, hasher, secrets, "dashboard"};
  }

  testing::TempDir dir;
  ManualClock command_clock{testing::test_epoch()};
  SeededRandom random{11};
  Pepper pepper = testing::test_pepper();
  KeyHasher hasher{pepper};
  SecretBox secrets{pepper};
  std::mutex record_mu;
  SystemRandom record_random;
  std::unique_ptr<EventStore> store;
};

// Fast retries, loopback receivers allowed, plain http allowed.
WebhookDispatcherOptions test_options() {
  WebhookDispatcherOptions o = testing::fast_dispatcher_options();
  o.workers = 4;
  return o;
}

std::string hmac_hex(const std::string& key, const std::string& message) {
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_state st;
  REQUIRE(crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size()) ==
          0);
  REQUIRE(crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(message.data()),
                                        message.size()) == 0);
  REQUIRE(crypto_auth_hmacsha256_final(&st, mac.data()) == 0);
  std::array<char, crypto_auth_hmacsha256_BYTES * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), mac.data(), mac.size());
  return hex.data();
}

std::vector<std::string> outcomes(const std::vector<v1::WebhookDeliveryRecorded>& ds) {
  std::vector<std::string> out;
  for (const auto& d : ds) {
    out.push_back(d.outcome());
  }
  return out;
}

}  // namespace

TEST_CASE("a key event is posted, signed with the agent's webhook secret", "[webhooks]") {
  Hooks h;
  testing::TestCa ca;
  testing::TestReceiver receiver([](int) { return 200u; }, &ca);
  const auto agent = h.register_agent(receiver.url("localhost"));
  WebhookDispatcherOptions options = test_options();
  options.client.allow_insecure = false;
  options.client.ca_file = ca.ca_file();
  SystemClock clock;
  auto dispatcher = h.dispatcher(options, clock);
  const v1::Event created = h.create_key(agent.id);

  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 1; }));
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 1);
  const auto& r = requests.front();
  CHECK(r.content_type == "application/json");
  CHECK(r.event_id == created.event_id());

  const Json body = Json::parse(r.body);
  CHECK(body["id"] == created.event_id());
  CHECK(body["type"] == "key.created");
  CHECK(body["created_at"] == format_rfc3339(from_timestamp(created.occurred_at())));
  CHECK(body["data"]["key_id"] == created.key_created().key_id());
  CHECK(body["data"]["agent_id"] == agent.id);
  CHECK_FALSE(body["data"].contains("digest"));

  // t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>"> with the secret from registration.
  const std::string& sig = r.signature;
  REQUIRE(sig.starts_with("t="));
  const std::size_t comma = sig.find(",v1=");
  REQUIRE(comma != std::string::npos);
  const std::string t = sig.substr(2, comma - 2);
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  CHECK(std::abs(std::stoll(t) - now.count()) < 60);
  CHECK(sig.substr(comma + 4) == hmac_hex(agent.secret, t + "." + r.body));
  CHECK(sig.substr(comma + 4) != hmac_hex(agent.secret + "x", t + "." + r.body));

  const auto d = h.deliveries(agent.id).front();
  CHECK(d.agent_id() == agent.id);
  CHECK(d.event_id() == created.event_id());
  CHECK(d.attempt() == 1);
  CHECK(d.status_code() == 200);
  CHECK(d.outcome() == "delivered");
  CHECK(d.event_type() == "key.created");
  CHECK(d.error().empty());
  CHECK(testing::eventually([&] { return dispatcher->pending() == 0; }));
}

TEST_CASE("a receiver failing twice then succeeding gets three recorded attempts", "[webhooks]") {
  Hooks h;
  testing::TestReceiver receiver([](int n) { return n <= 2 ? 503u : 200u; });
  const auto agent = h.register_agent(receiver.url());
  SystemClock clock;
  auto dispatcher = h.dispatcher(test_options(), clock);
  const v1::Event created = h.create_key(agent.id);

  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 3; }));
  const auto ds = h.deliveries(agent.id);
  CHECK(outcomes(ds) == std::vector<std::string>{"retrying", "retrying", "delivered"});
  for (std::size_t i = 0; i < ds.size(); ++i) {
    CHECK(ds[i].attempt() == i + 1);
    CHECK(ds[i].event_id() == created.event_id());
  }
  CHECK(ds[0].status_code() == 503);
  CHECK(ds[0].error() == "http_status: 503");
  CHECK(ds[2].status_code() == 200);
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 3);
  for (const auto& r : requests) {
    CHECK(r.event_id == created.event_id());
  }
  std::this_thread::sleep_for(100ms);
  CHECK(receiver.requests().size() == 3);
  CHECK(testing::eventually([&] { return dispatcher->pending() == 0; }));
}

TEST_CASE("a hanging receiver is cut at the timeout while other agents' deliveries flow", "[webhooks]") {
  Hooks h;
  testing::TestReceiver hanging([](int) { return 0u; });
  testing::TestReceiver fast([](int) { return 200u; });
  const auto slow_agent = h.register_agent(hanging.url());
  const auto fast_agent = h.register_agent(fast.url());
  WebhookDispatcherOptions options = test_options();
  options.client.timeout = 1s;
  options.workers = 2;
  options.max_attempts = 1;
  SystemClock clock;
  auto dispatcher = h.dispatcher(options, clock);

  for (int i = 0; i < 3; ++i) {
    h.create_key(slow_agent.id);
  }
  REQUIRE(testing::eventually([&] { return hanging.connections() == 1; }));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    h.create_key(fast_agent.id);
  }
  REQUIRE(testing::eventually([&] { return h.deliveries(fast_agent.id).size() == 5; }));
  // All five went out while the hanging receiver still held its first attempt.
  CHECK(h.deliveries(slow_agent.id).empty());
  CHECK(std::chrono::steady_clock::now() - start < 1s);

  REQUIRE(testing::eventually([&] { return h.deliveries(slow_agent.id).size() == 3; }));
  for (const auto& d : h.deliveries(slow_agent.id)) {
    CHECK(d.outcome() == "failed");
    CHECK(d.status_code() == 0);
    CHECK(d.error() == "timeout: read");
    CHECK(d.duration_ms() >= 950);
    CHECK(d.duration_ms() < 2000);
  }
  for (const auto& d : h.deliveries(fast_agent.id)) {
    CHECK(d.outcome() == "delivered");
  }
}

TEST_CASE("a restart mid-retry resumes the schedule and never re-sends a delivered event", "[webhooks]") {
  Hooks h;
  std::atomic<unsigned> answer{500};
  testing::TestReceiver receiver([&](int) { return answer.load(); });
  const auto agent = h.register_agent(receiver.url());
  WebhookDispatcherOptions options = test_options();
  options.base_delay = 10min;  // the manual clock decides when the retry is due
  options.max_delay = 1h;
  ManualClock clock{testing::test_epoch()};
  auto dispatcher = h.dispatcher(options, clock);
  const v1::Event created = h.create_key(agent.id);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 1; }));
  CHECK(h.deliveries(agent.id).front().outcome() == "retrying");
  std::this_thread::sleep_for(100ms);
  CHECK(receiver.requests().size() == 1);  // not due yet
  CHECK(dispatcher->pending() == 1);

  // Restart: the pending retry comes back from the column family.
  dispatcher.reset();
  h.store.reset();
  h.open();
  answer = 200;
  dispatcher = h.dispatcher(options, clock);
  CHECK(dispatcher->pending() == 1);
  std::this_thread::sleep_for(100ms);
  CHECK(receiver.requests().size() == 1);
  clock.advance(13min);  // past 10 min × (1 + 0.2 jitter)
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 2; }));
  const auto ds = h.deliveries(agent.id);
  CHECK(ds[1].attempt() == 2);
  CHECK(ds[1].event_id() == created.event_id());
  CHECK(ds[1].outcome() == "delivered");
  CHECK(receiver.requests().size() == 2);
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }));

  // Another restart sends nothing again.
  dispatcher.reset();
  h.store.reset();
  h.open();
  dispatcher = h.dispatcher(options, clock);
  clock.advance(2h);
  std::this_thread::sleep_for(200ms);
  CHECK(dispatcher->pending() == 0);
  CHECK(receiver.requests().size() == 2);
  CHECK(h.deliveries(agent.id).size() == 2);
}

TEST_CASE("a restart reconciles pending deliveries with the recorded attempts", "[webhooks]") {
  Hooks h;
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto agent = h.register_agent(receiver.url());
  const WebhookDispatcherOptions options = test_options();
  SystemClock clock;
  auto dispatcher = h.dispatcher(options, clock);
  const v1::Event first = h.create_key(agent.id);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 1; }));
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }));
  dispatcher.reset();

  // As if the process died (1) after recording `first` delivered but before dropping its
  // schedule entry, and (2) after recording attempt 1 of `second` as retrying but before
  // moving its schedule to attempt 2.
  const v1::Event second = h.create_key(agent.id);
  v1::WebhookDeliveryRecorded retrying;
  retrying.set_agent_id(agent.id);
  retrying.set_event_id(second.event_id());
  retrying.set_attempt(1);
  retrying.set_status_code(503);
  retrying.set_outcome("retrying");
  retrying.set_event_type("key.created");
  REQUIRE(h.recorder()(agent.id, retrying).ok());
  auto cf = h.store->extra_column_family(webhook_column_families().front());
  REQUIRE(cf.ok());
  const auto entry = [&](const v1::Event& e) {
    return Json{{"agent_id", agent.id},
                {"position", e.position()},
                {"attempt", 1},
                {"first_attempt", 1},
                {"due_ms", 0}}
        .dump();
  };
  REQUIRE(cf->put("p" + first.event_id(), entry(first)).ok());
  REQUIRE(cf->put("p" + second.event_id(), entry(second)).ok());

  dispatcher = h.dispatcher(options, clock);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 3; }));
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }));
  std::this_thread::sleep_for(100ms);
  const auto ds = h.deliveries(agent.id);
  REQUIRE(ds.size() == 3);
  CHECK(ds[2].event_id() == second.event_id());
  CHECK(ds[2].attempt() == 2);
  CHECK(ds[2].outcome() == "delivered");
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 2);  // `first` once, `second` once: nothing recorded delivered is re-sent
  CHECK(requests[0].event_id == first.event_id());
  CHECK(requests[1].event_id == second.event_id());
}

TEST_CASE("a failed delivery can be retried by hand", "[webhooks]") {
  Hooks h;
  std::atomic<unsigned> answer{500};
  testing::TestReceiver receiver([&](int) { return answer.load(); });
  const auto agent = h.register_agent(receiver.url());
  const auto other = h.register_agent(receiver.url());
  WebhookDispatcherOptions options = test_options();
  options.max_attempts = 2;
  SystemClock clock;
  auto dispatcher = h.dispatcher(options, clock);
  const v1::Event created = h.create_key(agent.id);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 2; }));
  CHECK(outcomes(h.deliveries(agent.id)) == std::vector<std::string>{"retrying", "failed"});
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }));

  CHECK(dispatcher->retry(agent.id, "no-such-event").IsNotFound());
  CHECK(dispatcher->retry(other.id, created.event_id()).IsNotFound());
  answer = 200;
  REQUIRE(dispatcher->retry(agent.id, created.event_id()).ok());
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 3; }));
  const auto last = h.deliveries(agent.id).back();
  CHECK(last.attempt() == 3);
  CHECK(last.outcome() == "delivered");
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }));
  const Status again = dispatcher->retry(agent.id, created.event_id());
  CHECK(again.IsConflict());
  CHECK(again.reason() == "delivery_not_failed");
}

TEST_CASE("refused targets are recorded as failed without a connection", "[webhooks]") {
  Hooks h;
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto agent = h.register_agent(receiver.url("localhost"));
  WebhookDispatcherOptions options = test_options();
  options.client.allow_private = false;
  SystemClock clock;
  auto dispatcher = h.dispatcher(options, clock);
  h.create_key(agent.id);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 1; }));
  const auto d = h.deliveries(agent.id).front();
  CHECK(d.outcome() == "failed");
  CHECK(d.status_code() == 0);
  CHECK(d.error().starts_with("address_refused: localhost is "));
  CHECK(receiver.connections() == 0);
}

TEST_CASE("only key events are delivered, from where the dispatcher started", "[webhooks]") {
  Hooks h;
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto agent = h.register_agent(receiver.url());
  h.create_key(agent.id);  // before the dispatcher's first start: history is not replayed
  SystemClock clock;
  auto dispatcher = h.dispatcher(test_options(), clock);
  const v1::Event created = h.create_key(agent.id);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 1; }));
  std::this_thread::sleep_for(100ms);
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests.front().event_id == created.event_id());
  CHECK(testing::eventually([&] { return dispatcher->cursor() == h.store->last_position(); }));
}

TEST_CASE(
    "events that schedule nothing leave the stored cursor; a restart re-reads them and sends nothing twice",
    "[webhooks]") {
  Hooks h;
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto agent = h.register_agent(receiver.url());
  SystemClock clock;
  auto dispatcher = h.dispatcher(test_options(), clock);
  const auto stored_cursor = [&] {
    auto value = (*h.store->extra_column_family(webhook_column_families().front())).get("cursor");
    REQUIRE(value.ok());
    REQUIRE(value->has_value());
    return decode_be64(**value);
  };
  const std::uint64_t start = stored_cursor();
  for (int i = 0; i < 5; ++i) {
    h.register_agent(receiver.url());  // no key events: nothing to schedule
  }
  REQUIRE(testing::eventually([&] { return dispatcher->cursor() == h.store->last_position(); }));
  CHECK(stored_cursor() == start);

  const v1::Event created = h.create_key(agent.id);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 1; }));
  CHECK(stored_cursor() >= created.position());  // written with the delivery it scheduled

  dispatcher.reset();
  h.store.reset();
  h.open();
  dispatcher = h.dispatcher(test_options(), clock);
  REQUIRE(testing::eventually([&] { return dispatcher->cursor() == h.store->last_position(); }));
  std::this_thread::sleep_for(100ms);
  CHECK(dispatcher->pending() == 0);
  CHECK(receiver.requests().size() == 1);
  CHECK(h.deliveries(agent.id).size() == 1);
}

TEST_CASE("attempts recorded by another dispatcher are not repeated; numbering continues after them",
          "[webhooks]") {
  Hooks h;
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto agent = h.register_agent(receiver.url());
  const v1::Event delivered = h.create_key(agent.id);
  const v1::Event retrying = h.create_key(agent.id);
  const auto record = h.recorder();
  v1::WebhookDeliveryRecorded d;
  d.set_agent_id(agent.id);
  d.set_event_id(delivered.event_id());
  d.set_attempt(1);
  d.set_outcome("delivered");
  REQUIRE(record(agent.id, d).ok());
  d.set_event_id(retrying.event_id());
  d.set_attempt(2);
  d.set_outcome("retrying");
  REQUIRE(record(agent.id, d).ok());

  WebhookDispatcherOptions options = test_options();
  options.from_beginning = true;  // a fresh cursor: both events become pending
  SystemClock clock;
  auto dispatcher = h.dispatcher(options, clock);
  REQUIRE(testing::eventually([&] { return h.deliveries(agent.id).size() == 3; }));
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }));
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].event_id == retrying.event_id());
  const auto last = h.deliveries(agent.id).back();
  CHECK(last.event_id() == retrying.event_id());
  CHECK(last.attempt() == 3);
  CHECK(last.outcome() == "delivered");
}

}  // namespace keyledger::consumers

namespace keyledger::consumers {

// Not a correctness test: prints delivery throughput to a fast local receiver (a backlog
// of key events, default options) and the latency from the append of a key event to its
// first attempt. Run with: keyledger_unit_tests "[.webhooks-bench]"
TEST_CASE("webhook delivery throughput and latency", "[.webhooks-bench]") {
  using SteadyTime = std::chrono::steady_clock::time_point;
  Hooks h;
  // The dispatcher subscribes to the store: every commit wakes it, so latency is not the poll interval.
  testing::TestReceiver receiver([](int) { return 200u; });
  constexpr int kAgents = 20;
  std::vector<Hooks::Agent> agents;
  for (int i = 0; i < kAgents; ++i) {
    agents.push_back(h.register_agent(receiver.url()));
  }
  // Key events alternate create and revoke (an agent holds at most 10 active keys).
  const auto key_events = [&](int rounds, std::map<std::string, SteadyTime>* appended) {
    for (int n = 0; n < rounds; ++n) {
      for (const auto& a : agents) {
        const v1::Event e = h.create_key(a.id);
        if (appended != nullptr) {
          (*appended)[e.event_id()] = std::chrono::steady_clock::now();
        }
        Result<AppendResult> stored = Status::VersionConflict("not yet");
        while (!stored.ok() && stored.status().IsVersionConflict()) {
          const AgentState state = h.agent(a.id);
          auto ctx = h.context();
          auto decision =
              keyledger::revoke_key(state, {.key_id = e.key_created().key_id(), .reason = "bench"}, ctx);
          REQUIRE(decision.ok());
          stored =
              h.store->append(agent_stream(a.id), static_cast<std::int64_t>(state.version), decision->events);
        }
        REQUIRE(stored.ok());
        if (appended != nullptr) {
          (*appended)[stored->events.front().event_id()] = std::chrono::steady_clock::now();
        }
        if (appended != nullptr) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
    }
  };

  // Throughput: a backlog of 1000 key events.
  key_events(25, nullptr);
  const std::size_t backlog = 25 * 2 * kAgents;
  WebhookDispatcherOptions options;  // defaults: 8 workers, 100 ms poll
  options.client.allow_private = true;
  options.client.allow_insecure = true;
  options.from_beginning = true;
  SystemClock clock;
  const auto start = std::chrono::steady_clock::now();
  auto dispatcher = h.dispatcher(options, clock);
  REQUIRE(
      testing::eventually([&] { return receiver.requests().size() >= backlog; }, std::chrono::seconds(300)));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(testing::eventually([&] { return dispatcher->pending() == 0; }, std::chrono::seconds(60)));

  // Latency: events appended one at a time while the dispatcher runs.
  std::map<std::string, SteadyTime> appended;
  key_events(5, &appended);
  REQUIRE(testing::eventually([&] { return receiver.requests().size() >= backlog + appended.size(); }));
  const auto latencies = testing::first_attempt_latencies_ms(receiver.requests(), appended);
  REQUIRE(latencies.size() == appended.size());
  WARN("throughput: " << backlog << " deliveries in " << seconds
                      << " s = " << static_cast<double>(backlog) / seconds << "/s; "
                      << testing::latency_summary(latencies));
}

}  // namespace keyledger::consumers
