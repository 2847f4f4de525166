// Revocation propagation from the primary to a verifier replica through Kafka, in one process:
// event store (fsync'd) + projector + command service + outbox relay -> embedded broker ->
// replica feed -> replica's ActiveKeyTable, the same libraries `keyledger serve` and
// `keyledger serve --replica` run.
//
//   1. Creates --revocations keys (10 per agent) and waits until the replica knows them all.
//   2. Revokes them one at a time. For each: `ack` is when the revoke command returned (durable
//      and projected on the primary: the HTTP answer would go out now), `seen` is when the
//      replica's table first answers REVOKED. Reports ack->seen (propagation) and
//      command start->seen, p50/p99/max.
//   3. Publish throughput: appends --throughput-events KeyCreated events, then a fresh relay
//      republishes the whole log from position 1 (events + key-state snapshots); events/s.
//
//   bench_propagation [--revocations N] [--throughput-events M] [--dir BASE] [--linger-ms L]
//                     [--fetch-wait-ms W] [--no-sync]

#include <stdlib.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "eventstore/command_service.h"
#include "consumers/embedded_broker.h"
#include "consumers/outbox_relay.h"
#include "consumers/replica_feed.h"
#include "domain/ids.h"
#include "domain/pepper.h"
#include "domain/secret_box.h"

namespace {

using namespace keyledger;
using Steady = std::chrono::steady_clock;

struct Args {
  std::size_t revocations = 1000;
  std::size_t throughput_events = 20000;
  std::filesystem::path dir = std::filesystem::temp_directory_path();
  int linger_ms = 1;
  int fetch_wait_ms = 5;
  bool sync = true;
};

bool parse_number(const char* text, std::size_t& out) {
  const std::string_view s(text);
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool parse_args(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::size_t n = 0;
    if (a == "--no-sync") {
      args.sync = false;
    } else if (i + 1 >= argc) {
      return false;
    } else if (a == "--revocations" && parse_number(argv[i + 1], n) && n > 0) {
      args.revocations = n;
      ++i;
    } else if (a == "--throughput-events" && parse_number(argv[i + 1], n)) {
      args.throughput_events = n;
      ++i;
    } else if (a == "--linger-ms" && parse_number(argv[i + 1], n)) {
      args.linger_ms = static_cast<int>(n);
      ++i;
    } else if (a == "--fetch-wait-ms" && parse_number(argv[i + 1], n)) {
      args.fetch_wait_ms = static_cast<int>(n);
      ++i;
    } else if (a == "--dir") {
      args.dir = argv[++i];
    } else {
      return false;
    }
  }
  return true;
}

[[noreturn]] void die(const std::string& what, const Status& s) {
  std::cerr << "bench_propagation: " << what << ": " << s.ToString() << "\n";
  std::exit(1);
}

double ms(Steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void report(const char* name, std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1) + 0.5);
    return samples[std::min(i, samples.size() - 1)];
  };
  std::printf("%-28s n=%zu  p50=%.2f ms  p90=%.2f ms  p99=%.2f ms  max=%.2f ms\n", name, samples.size(),
              at(0.5), at(0.9), at(0.99), samples.back());
}

template <typename Done>
bool wait_until(Done done, std::chrono::seconds timeout) {
  const auto deadline = Steady::now() + timeout;
  while (!done()) {
    if (Steady::now() > deadline) {
      return false;
    }
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse_args(argc, argv, args)) {
    std::cerr << "usage: bench_propagation [--revocations N] [--throughput-events M] [--dir BASE] "
                 "[--linger-ms L] [--fetch-wait-ms W] [--no-sync]\n";
    return 2;
  }
  if (!crypto_init()) {
    std::cerr << "bench_propagation: libsodium failed to initialise\n";
    return 1;
  }
  std::string pattern = (args.dir / "keyledger-propagation-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::cerr << "bench_propagation: cannot create a directory under " << args.dir << "\n";
    return 1;
  }
  const std::filesystem::path dir = pattern;

  SystemClock clock;
  SystemRandom random;
  std::array<std::uint8_t, Pepper::kSize> pepper_bytes{};
  random.fill(pepper_bytes);
  const Pepper pepper(pepper_bytes);
  const KeyHasher hasher(pepper);
  const SecretBox secrets(pepper);
  const std::vector<std::string> tiers = {"standard", "elevated"};

  std::vector<std::string> families = projection_column_families();
  for (auto& f : consumers::consumer_column_families()) {
    families.push_back(f);
  }
  auto opened = EventStore::open({.path = dir / "log", .sync = args.sync, .extra_column_families = families});
  if (!opened.ok()) {
    die("open", opened.status());
  }
  std::unique_ptr<EventStore> store = std::move(opened).value();
  {
    Projector projector(*store, tiers);
    if (Status s = projector.start(); !s.ok()) {
      die("projector", s);
    }
    CommandService commands(*store, projector, clock, random, hasher, secrets, {});

    auto started = consumers::EmbeddedBroker::start();
    if (!started.ok()) {
      die("embedded broker", started.status());
    }
    std::unique_ptr<consumers::EmbeddedBroker> broker = std::move(started).value();
    consumers::PublisherOptions publisher;
    publisher.brokers = broker->bootstrap_servers();
    publisher.linger_ms = args.linger_ms;
    auto created = consumers::OutboxRelay::create(*store, projector, publisher);
    if (!created.ok()) {
      die("relay", created.status());
    }
    std::unique_ptr<consumers::OutboxRelay> relay = std::move(created).value();
    relay->start();  // the relay subscribes to the store, as the projector did in start()

    ActiveKeyTable replica_keys(tiers);
    ServiceTokenTable replica_tokens;
    consumers::ReplicaOptions replica_options;
    replica_options.brokers = broker->bootstrap_servers();
    replica_options.fetch_wait_ms = args.fetch_wait_ms;
    consumers::ReplicaFeed feed(replica_keys, replica_tokens, replica_options);
    if (Status s = feed.start(); !s.ok()) {
      die("replica feed", s);
    }

    // 1. Keys, 10 per agent (the contract's limit of active keys).
    struct Key {
      std::string key_id;
      Digest digest;
    };
    std::vector<Key> keys;
    std::string agent_id;
    for (std::size_t i = 0; i < args.revocations; ++i) {
      if (i % 10 == 0) {
        AgentProfile profile;
        profile.name = "Bench agent";
        profile.description = "Measures revocation propagation to replicas.";
        profile.skills = {"bench"};
        profile.languages = {"en"};
        profile.webhook_url = "https://bench.example.com/hooks";
        auto registered = commands.register_agent(profile, "bench");
        if (!registered.ok()) {
          die("register", registered.status());
        }
        agent_id = registered->agent_id;
      }
      auto key = commands.on_agent(agent_id, "bench", [](const AgentState& s, CommandContext& c) {
        return create_key(s, CreateKey{}, c);
      });
      if (!key.ok()) {
        die("create key", key.status());
      }
      keys.push_back({key->key_id, hasher.digest(key->api_key)});
    }
    if (!wait_until([&] { return feed.ready() && replica_keys.size() == keys.size(); },
                    std::chrono::seconds(120))) {
      std::cerr << "bench_propagation: the replica did not learn every key\n";
      return 1;
    }

    // 2. Revocations, one at a time.
    std::vector<double> from_ack;
    std::vector<double> from_start;
    for (const Key& key : keys) {
      const auto start = Steady::now();
      auto revoked = commands.on_key(key.key_id, "bench", [&](const AgentState& s, CommandContext& c) {
        return revoke_key(s, RevokeKey{key.key_id, "bench"}, c);
      });
      const auto ack = Steady::now();
      if (!revoked.ok()) {
        die("revoke", revoked.status());
      }
      if (!wait_until(
              [&] {
                const auto entry = replica_keys.find(key.digest);
                return entry && entry->condition != KeyCondition::kActive;
              },
              std::chrono::seconds(30))) {
        std::cerr << "bench_propagation: revocation of " << key.key_id << " never reached the replica\n";
        return 1;
      }
      const auto seen = Steady::now();
      from_ack.push_back(ms(seen - ack));
      from_start.push_back(ms(seen - start));
    }
    std::printf("revocation propagation (embedded broker, linger.ms=%d, fetch.wait.max.ms=%d, fsync %s)\n",
                args.linger_ms, args.fetch_wait_ms, args.sync ? "on" : "off");
    report("ack -> replica REVOKED", from_ack);
    report("command start -> replica", from_start);

    // 3. Publish throughput: more events, then republish the whole log with a fresh relay.
    relay->stop();
    feed.stop();
    std::size_t appended = 0;
    while (appended < args.throughput_events) {
      std::vector<v1::Event> batch;
      const std::string agent = new_agent_id(random);
      for (std::size_t i = 0; i < 100 && appended < args.throughput_events; ++i, ++appended) {
        v1::Event e;
        e.set_event_id(new_event_id(random));
        *e.mutable_occurred_at() = to_timestamp(clock.now());
        e.set_actor("bench");
        e.set_type("key.created");
        auto* k = e.mutable_key_created();
        k->set_agent_id(agent);
        k->set_key_id(new_key_id(random));
        const Digest d = hasher.digest(new_key_id(random));
        k->set_digest(std::string(d.begin(), d.end()));
        k->set_hint("cg_0000…0000");
        k->set_environment(v1::ENVIRONMENT_PRODUCTION);
        batch.push_back(std::move(e));
      }
      auto done = store->append(agent_stream(agent), kAnyVersion, std::move(batch));
      if (!done.ok()) {
        die("append", done.status());
      }
    }
    publisher.republish_from_start = true;
    publisher.max_in_flight = 50'000;
    auto again = consumers::OutboxRelay::create(*store, projector, publisher);
    if (!again.ok()) {
      die("relay", again.status());
    }
    relay = std::move(again).value();
    const std::uint64_t total = store->last_position();
    const auto t0 = Steady::now();
    relay->start();
    if (!wait_until([&] { return relay->published_position() == total; }, std::chrono::seconds(600))) {
      std::cerr << "bench_propagation: republication did not finish\n";
      return 1;
    }
    const double seconds = std::chrono::duration<double>(Steady::now() - t0).count();
    std::printf(
        "relay publish throughput       %llu events (+ key-state snapshots) in %.2f s = %.0f events/s "
        "(%llu Kafka messages)\n",
        static_cast<unsigned long long>(total), seconds, static_cast<double>(total) / seconds,
        static_cast<unsigned long long>(relay->messages_delivered()));
    relay->stop();
  }
  store.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return 0;
}
