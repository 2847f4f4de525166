// keyledger: wires the layers together. Subcommands:
//   serve                 the HTTP API over the event store, publishing to Kafka (API.md §7)
//   serve --replica       a verifier replica fed from Kafka alone
//   token create          a service token, offline, while the server is stopped
//   rebuild-projections   wipe and rebuild every projection from the log
//   consume revocations   print revocation events from Kafka as JSON lines (a consumer group)
//   webhooks              deliver webhooks on its own, fed from Kafka (serve --webhooks external)
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <fstream>
#include <iostream>
#include <thread>

#include "eventstore/command_service.h"
#include "api/handlers.h"
#include "api/idempotency.h"
#include "api/metrics.h"
#include "api/rate_limiter.h"
#include "api/server.h"
#include "api/verifier.h"
#include "consumers/delivery_publisher.h"
#include "consumers/delivery_record_feed.h"
#include "consumers/embedded_broker.h"
#include "consumers/event_mirror.h"
#include "consumers/outbox_relay.h"
#include "api/replica.h"
#include "consumers/replica_feed.h"
#include "consumers/revocation_feed.h"
#include "consumers/webhook_dispatcher.h"
#include "domain/key_material.h"
#include "domain/pepper.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace keyledger;

namespace {

constexpr std::string_view kBootstrapTokenFile = "bootstrap-token";
constexpr auto kExpiryInterval = std::chrono::seconds(1);
constexpr auto kUsageFlushInterval = std::chrono::seconds(10);
constexpr std::string_view kWebhooksInProcess = "in-process";
constexpr std::string_view kWebhooksExternal = "external";
// The mirror's database inside `keyledger webhooks --data-dir`.
constexpr std::string_view kMirrorDir = "mirror";
// How often `keyledger webhooks` looks whether the mirror caught up, while waiting for signals.
constexpr auto kCatchUpCheckInterval = std::chrono::milliseconds(50);

struct Config {
  fs::path data_dir = "keyledger-data";
  std::string listen = "127.0.0.1:8080";
  std::string kafka_brokers = "embedded";
  std::string kafka_topic = consumers::kEventsTopic;
  std::string kafka_state_topic = consumers::kStateTopic;
  std::optional<fs::path> pepper_file;
  std::string tiers = "standard:50:100,elevated:500:1000";
  bool allow_insecure_webhooks = false;
  bool allow_private_webhooks = false;
  bool disable_webhooks = false;
  std::string webhooks = std::string(kWebhooksInProcess);
  std::string webhook_deliveries_topic = consumers::kWebhookDeliveriesTopic;
  std::string webhook_ca_file;
  bool replica = false;
  std::size_t io_threads = 2;
  std::size_t max_connections = 10'000;
  std::uint32_t auth_failure_limit = 100;
  std::size_t worker_threads = 8;
  std::string log_level = "info";
  bool help = false;  // --help was given: the options were printed, nothing is to run
};

// Options shared by every subcommand; --config FILE and KEYLEDGER_* environment variables
// supply the same names (KEYLEDGER_DATA_DIR, KEYLEDGER_KAFKA_BROKERS, …).
po::options_description common_options(Config& c, std::string& pepper_file, std::string& config_file) {
  po::options_description o("options");
  o.add_options()("data-dir",
                  po::value<std::string>()->notifier([&](const std::string& v) { c.data_dir = v; }),
                  "data directory (RocksDB log, pepper, bootstrap token)")(
      "listen", po::value(&c.listen), "host:port to serve on (port 0 picks a free one)")(
      "kafka-brokers", po::value(&c.kafka_brokers), "embedded | none | host:port,...")(
      "kafka-topic", po::value(&c.kafka_topic), "topic of every event (default keyledger.key-events)")(
      "kafka-state-topic", po::value(&c.kafka_state_topic), "compacted topic of the latest key states")(
      "pepper-file", po::value(&pepper_file), "file holding the 32-byte pepper (hex)")(
      "config", po::value(&config_file), "configuration file (name = value lines)")(
      "rate-limit-tiers", po::value(&c.tiers), "tiers as name:rate_per_second:burst,...")(
      "allow-insecure-webhooks", po::bool_switch(&c.allow_insecure_webhooks),
      "accept plain http webhook URLs")("allow-private-webhooks", po::bool_switch(&c.allow_private_webhooks),
                                        "allow webhooks to private addresses")(
      "disable-webhooks", po::bool_switch(&c.disable_webhooks), "do not deliver webhooks from this process")(
      "webhooks", po::value(&c.webhooks),
      "in-process (deliver from serve) | external (keyledger webhooks delivers; serve records its attempts)")(
      "webhook-deliveries-topic", po::value(&c.webhook_deliveries_topic),
      "topic of attempts made by keyledger webhooks (default keyledger.webhook-deliveries)")(
      "webhook-ca-file", po::value(&c.webhook_ca_file), "extra trusted CAs (PEM) for webhook TLS")(
      "replica", po::bool_switch(&c.replica), "run as a verifier replica fed from Kafka")(
      "io-threads", po::value(&c.io_threads), "threads serving connections")(
      "max-connections", po::value(&c.max_connections),
      "open connections at most; more are closed on accept (default 10000)")(
      "auth-failure-limit", po::value(&c.auth_failure_limit),
      "failed authentications a client address may have per minute before it gets 429 (0: no limit; "
      "loopback is never limited; default 100)")(
      "worker-threads", po::value(&c.worker_threads), "threads running commands")(
      "log-level", po::value(&c.log_level), "trace | debug | info | warn | error");
  return o;
}

// Parses argv (after the subcommand), then the config file, then KEYLEDGER_* variables.
bool parse(int argc, char** argv, po::options_description& extra, Config& c, std::string& error) {
  std::string pepper_file;
  std::string config_file;
  po::options_description all = common_options(c, pepper_file, config_file);
  all.add(extra);
  all.add_options()("help,h", "print these options and exit");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, all), vm);
    if (vm.count("help")) {
      std::cout << all << std::endl;
      c.help = true;
      return true;
    }
    if (vm.count("config")) {
      std::ifstream in(vm["config"].as<std::string>());
      if (!in) {
        error = "cannot read config file " + vm["config"].as<std::string>();
        return false;
      }
      po::store(po::parse_config_file(in, all), vm);
    }
    po::store(po::parse_environment(all,
                                    [&](const std::string& env) -> std::string {
                                      if (env.rfind("KEYLEDGER_", 0) != 0) {
                                        return "";
                                      }
                                      std::string name = env.substr(10);
                                      for (auto& ch : name) {
                                        ch = ch == '_' ? '-' : static_cast<char>(std::tolower(ch));
                                      }
                                      return all.find_nothrow(name, false) != nullptr ? name : "";
                                    }),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    error = e.what();
    return false;
  }
  if (!pepper_file.empty()) {
    c.pepper_file = pepper_file;
  }
  return true;
}

// Creates the data directory (and its parents) owner-only, and tightens an existing one that
// group or others could read: the log holds agent profiles, key digests and encrypted webhook
// secrets. Files created in it are owner-only too (main sets the umask to 077).
Status prepare_data_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Status::IoError("cannot create data directory " + dir.string() + ": " + ec.message());
  }
  const fs::perms perms = fs::status(dir, ec).permissions();
  if (ec) {
    return Status::IoError("cannot read the permissions of " + dir.string() + ": " + ec.message());
  }
  const fs::perms open_to_others = fs::perms::group_all | fs::perms::others_all;
  if ((perms & open_to_others) != fs::perms::none) {
    fs::permissions(dir, open_to_others, fs::perm_options::remove, ec);
    if (ec) {
      return Status::IoError("data directory " + dir.string() +
                             " is readable by other users and cannot be made private: " + ec.message());
    }
    spdlog::warn("data directory {} was accessible to other users; it is now owner-only (0700)", dir.string());
  }
  return Status::Ok();
}

Result<std::unique_ptr<EventStore>> open_store(const Config& c) {
  EventStoreOptions options;
  options.path = c.data_dir / "log";
  options.extra_column_families = projection_column_families();
  options.extra_column_families.emplace_back(api::kIdempotencyColumnFamily);
  for (auto& name : consumers::consumer_column_families()) {
    options.extra_column_families.push_back(std::move(name));
  }
  for (auto& name : consumers::webhook_column_families()) {
    options.extra_column_families.push_back(std::move(name));
  }
  return EventStore::open(options);
}

bool write_secret_file(const fs::path& path, const std::string& secret) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) {
      return false;
    }
    fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write);
    out << secret << "\n";
    if (!out.flush()) {
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

std::vector<std::string> all_scopes() { return {kScopes.begin(), kScopes.end()}; }

// Everything `serve` and the offline commands share: store, pepper, projections, commands.
struct Node {
  Config config;
  SystemClock clock;
  SystemRandom random;
  std::unique_ptr<EventStore> store;
  std::optional<Pepper> pepper;
  std::unique_ptr<KeyHasher> hasher;
  std::unique_ptr<SecretBox> secrets;
  std::vector<api::RateLimitTier> tiers;
  std::unique_ptr<Projector> projector;
  std::unique_ptr<CommandService> commands;

  // Opens the store and loads the pepper; `start_projections` replays the tail.
  Status open(bool start_projections) {
    auto parsed_tiers = api::parse_tiers(config.tiers);
    if (!parsed_tiers.ok()) {
      return parsed_tiers.status();
    }
    tiers = *parsed_tiers;
    if (Status s = prepare_data_dir(config.data_dir); !s.ok()) {
      return s;
    }
    auto opened = open_store(config);
    if (!opened.ok()) {
      return opened.status();
    }
    store = std::move(opened).value();
    auto loaded =
        load_or_create_pepper(config.data_dir, config.pepper_file, store->last_position() > 0, random);
    if (!loaded.ok()) {
      return loaded.status();
    }
    pepper = *loaded;
    hasher = std::make_unique<KeyHasher>(*pepper);
    secrets = std::make_unique<SecretBox>(*pepper);
    std::vector<std::string> tier_names;
    for (const auto& t : tiers) {
      tier_names.push_back(t.name);
    }
    projector = std::make_unique<Projector>(*store, tier_names);
    CommandServiceOptions options;
    options.registration.allow_insecure_webhooks = config.allow_insecure_webhooks;
    options.registration.default_tier = tier_names.front();
    options.tiers = tier_names;
    commands =
        std::make_unique<CommandService>(*store, *projector, clock, random, *hasher, *secrets, options);
    return start_projections ? projector->start() : Status::Ok();
  }
};

// Blocks SIGINT and SIGTERM in this thread and every thread it starts from now on, so a signal
// sent while the server starts is kept pending (Server::run_until_signal takes it) instead of
// killing the process by default before the handler exists.
void hold_termination_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

int fail(const Status& s, std::string_view what) {
  spdlog::error("{}: {}", what, s.ToString());
  return 1;
}

// `serve --replica`: verification from tables fed by Kafka; no event store of record.
int serve_replica(const Config& config) {
  if (config.kafka_brokers == "none" || config.kafka_brokers == "embedded") {
    spdlog::error("--replica needs --kafka-brokers with the primary's Kafka bootstrap address");
    return 2;
  }
  std::optional<fs::path> pepper_file = config.pepper_file;
  if (!pepper_file && fs::exists(config.data_dir / "pepper")) {
    pepper_file = config.data_dir / "pepper";
  }
  if (!pepper_file) {
    spdlog::error("--replica needs --pepper-file with the primary's pepper");
    return 2;
  }
  auto pepper = read_pepper_file(*pepper_file);
  if (!pepper.ok()) {
    return fail(pepper.status(), "cannot read the pepper");
  }
  auto tiers = api::parse_tiers(config.tiers);
  if (!tiers.ok()) {
    return fail(tiers.status(), "bad --rate-limit-tiers");
  }
  std::vector<std::string> tier_names;
  for (const auto& t : *tiers) {
    tier_names.push_back(t.name);
  }
  SystemClock clock;
  KeyHasher hasher(*pepper);
  ActiveKeyTable keys(tier_names);
  ServiceTokenTable tokens;
  consumers::ReplicaOptions options;
  options.brokers = config.kafka_brokers;
  options.events_topic = config.kafka_topic;
  options.state_topic = config.kafka_state_topic;
  consumers::ReplicaFeed feed(keys, tokens, options);
  if (Status s = feed.start(); !s.ok()) {
    return fail(s, "cannot start the Kafka consumer");
  }
  // Rate limits are per node: each replica keeps its own buckets (in its table).
  api::Verifier verifier(keys, hasher, *tiers, clock);
  api::Metrics metrics;
  metrics.add_gauge("keyledger_replica_position", "Highest log position applied from Kafka.",
                    [&] { return static_cast<double>(feed.last_position()); });
  metrics.add_gauge("keyledger_replica_ready", "1 once caught up with Kafka at start-up.",
                    [&] { return feed.ready() ? 1.0 : 0.0; });
  metrics.add_gauge("keyledger_keys", "Keys in the verification table.",
                    [&] { return static_cast<double>(keys.size()); });
  api::AuthFailureLimiter auth_failures(clock, {.max_failures = config.auth_failure_limit});
  api::ReplicaApi api({tokens, verifier, hasher, metrics, [&] { return feed.ready(); }, &auth_failures});
  api::ServerOptions server_options;
  server_options.listen = config.listen;
  server_options.io_threads = config.io_threads;
  server_options.max_connections = config.max_connections;
  server_options.worker_threads = 1;
  api::Server server(server_options, api);
  if (Status s = server.start(); !s.ok()) {
    return fail(s, "cannot listen on " + config.listen);
  }
  const auto colon = config.listen.rfind(':');
  const std::string host = config.listen.substr(0, colon);
  std::cout << "keyledger listening on " << host << ":" << server.port() << std::endl;
  spdlog::info("verifier replica serving on {}:{}, following {} at {}", host, server.port(),
               config.kafka_topic, config.kafka_brokers);
  server.run_until_signal();
  spdlog::info("shutting down");
  feed.stop();
  return 0;
}

std::atomic<bool> g_stop_consuming{false};

void request_stop(int) { g_stop_consuming = true; }

// `consume revocations`: one JSON line per revocation on stdout; logs go to stderr.
int consume_revocations(const Config& config, const std::string& group, const std::string& from) {
  if (config.kafka_brokers == "none" || config.kafka_brokers == "embedded") {
    std::cerr << "keyledger: consume needs --kafka-brokers with the Kafka bootstrap address\n";
    return 2;
  }
  consumers::RevocationFeedOptions options;
  options.brokers = config.kafka_brokers;
  options.group = group;
  options.topic = config.kafka_topic;
  options.start_from = from;
  auto feed = consumers::RevocationFeed::create(options);
  if (!feed.ok()) {
    return fail(feed.status(), "cannot consume");
  }
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  spdlog::info("consuming revocations from {} as group {}", config.kafka_topic, group);
  auto lines = (*feed)->run(std::cout, g_stop_consuming);
  if (!lines.ok()) {
    return fail(lines.status(), "consume");
  }
  return 0;
}

// `webhooks`: delivers webhooks beside a server run with --webhooks external. The server holds
// the log's lock, so this process mirrors the agent events from Kafka into its own store
// (<data-dir>/mirror), runs the webhook dispatcher over the mirror, and produces every attempt
// to the deliveries topic, from which the server records it.
int run_webhooks(const Config& config, const std::string& from) {
  if (config.kafka_brokers == "none" || config.kafka_brokers == "embedded") {
    std::cerr
        << "keyledger: webhooks needs --kafka-brokers with the server's Kafka bootstrap address (it reads "
           "the events from Kafka and records its attempts there); without Kafka, run serve with the "
           "default --webhooks in-process, which reads the log directly\n";
    return 2;
  }
  if (from != "earliest" && from != "latest") {
    std::cerr << "keyledger: --from must be earliest or latest\n";
    return 2;
  }
  std::optional<fs::path> pepper_file = config.pepper_file;
  if (!pepper_file && fs::exists(config.data_dir / "pepper")) {
    pepper_file = config.data_dir / "pepper";
  }
  if (!pepper_file) {
    std::cerr << "keyledger: webhooks needs --pepper-file with the server's pepper (it decrypts the webhook "
                 "secrets)\n";
    return 2;
  }
  auto pepper = read_pepper_file(*pepper_file);
  if (!pepper.ok()) {
    return fail(pepper.status(), "cannot read the pepper");
  }
  // Every thread started from here on inherits the blocked signals; this one waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const auto signalled = [&](std::chrono::milliseconds wait) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    const timespec timeout{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    return sigtimedwait(&signals, nullptr, &timeout) > 0;
  };

  if (Status s = prepare_data_dir(config.data_dir); !s.ok()) {
    return fail(s, "cannot use the data directory");
  }
  EventStoreOptions store_options;
  store_options.path = config.data_dir / kMirrorDir;
  store_options.extra_column_families = consumers::webhook_column_families();
  auto opened = EventStore::open(store_options);
  if (!opened.ok()) {
    return fail(opened.status(), "cannot open the mirror in " + config.data_dir.string());
  }
  std::unique_ptr<EventStore> store = std::move(opened).value();
  SystemClock clock;
  SecretBox secrets(*pepper);

  consumers::EventMirrorOptions mirror_options;
  mirror_options.brokers = config.kafka_brokers;
  mirror_options.topic = config.kafka_topic;
  consumers::EventMirror mirror(*store, mirror_options);
  if (Status s = mirror.start(); !s.ok()) {
    return fail(s, "cannot start the Kafka consumer");
  }
  spdlog::info("webhooks: mirroring {} from {} into {}", config.kafka_topic, config.kafka_brokers,
               store_options.path.string());
  // Deliveries start once the history is mirrored, so attempts already recorded for it are known.
  while (!mirror.caught_up()) {
    if (signalled(kCatchUpCheckInterval)) {
      spdlog::info("shutting down");
      return 0;
    }
  }
  consumers::DeliveryPublisherOptions publisher_options;
  publisher_options.brokers = config.kafka_brokers;
  publisher_options.topic = config.webhook_deliveries_topic;
  auto publisher = consumers::DeliveryPublisher::create(publisher_options, clock, store.get());
  if (!publisher.ok()) {
    return fail(publisher.status(), "cannot start producing delivery records");
  }
  consumers::WebhookDispatcherOptions hooks;
  hooks.client.allow_insecure = config.allow_insecure_webhooks;
  hooks.client.allow_private = config.allow_private_webhooks;
  hooks.client.ca_file = config.webhook_ca_file;
  hooks.from_beginning = from == "earliest";
  consumers::WebhookDispatcher webhooks(*store, secrets, clock, (*publisher)->recorder(), hooks);
  if (Status s = webhooks.start(); !s.ok()) {
    return fail(s, "cannot start webhook delivery");
  }
  // The line tests and scripts wait for.
  std::cout << "keyledger webhooks ready" << std::endl;
  spdlog::info("webhooks: delivering; attempts recorded to {}", config.webhook_deliveries_topic);
  int signal = 0;
  if (sigwait(&signals, &signal) != 0) {
    spdlog::warn("webhooks: sigwait failed; shutting down");
  }
  spdlog::info("shutting down");
  webhooks.stop();  // lets attempts in flight finish; pending retries stay in the mirror
  mirror.stop();
  return 0;
}

int serve(Config config) {
  hold_termination_signals();
  Node node;
  node.config = std::move(config);
  if (node.config.replica) {
    return serve_replica(node.config);
  }
  const bool external_webhooks = node.config.webhooks == kWebhooksExternal;
  if (!external_webhooks && node.config.webhooks != kWebhooksInProcess) {
    spdlog::error("--webhooks must be in-process or external, not {}", node.config.webhooks);
    return 2;
  }
  if (external_webhooks && node.config.kafka_brokers == "none") {
    spdlog::error(
        "--webhooks external needs Kafka (keyledger webhooks reads the events from it and records its "
        "attempts "
        "through it); use --kafka-brokers embedded or a cluster, or the default --webhooks in-process");
    return 2;
  }
  if (Status s = node.open(true); !s.ok()) {
    return fail(s, "cannot start");
  }

  // Kafka: the embedded broker (default), a real cluster, or none. Declared before the relay
  // so it outlives it; both go before the store (declared in `node`).
  std::unique_ptr<consumers::EmbeddedBroker> broker;
  std::unique_ptr<consumers::OutboxRelay> relay;
  if (node.config.kafka_brokers != "none") {
    consumers::PublisherOptions publisher;
    publisher.brokers = node.config.kafka_brokers;
    publisher.events_topic = node.config.kafka_topic;
    publisher.state_topic = node.config.kafka_state_topic;
    if (node.config.kafka_brokers == "embedded") {
      consumers::EmbeddedBrokerOptions embedded;
      embedded.topics = {node.config.kafka_topic, node.config.kafka_state_topic,
                         node.config.webhook_deliveries_topic};
      auto started = consumers::EmbeddedBroker::start(embedded);
      if (!started.ok()) {
        return fail(started.status(), "cannot start the embedded Kafka broker");
      }
      broker = std::move(started).value();
      publisher.brokers = broker->bootstrap_servers();
      // The embedded broker starts empty: publish the whole log again.
      publisher.republish_from_start = true;
      // The line tests and scripts read to find the broker.
      std::cout << "keyledger kafka bootstrap " << broker->bootstrap_servers() << std::endl;
      spdlog::info("embedded Kafka broker on {} (one machine and tests only; try kcat -b {} -t {} -C)",
                   broker->bootstrap_servers(), broker->bootstrap_servers(), node.config.kafka_topic);
    }
    auto created = consumers::OutboxRelay::create(*node.store, *node.projector, publisher);
    if (!created.ok()) {
      return fail(created.status(), "cannot start publishing to Kafka");
    }
    relay = std::move(created).value();
  }

  if (node.projector->tokens().empty()) {
    auto created = node.commands->create_token("bootstrap", all_scopes(), "system:bootstrap");
    if (!created.ok()) {
      return fail(created.status(), "cannot create the bootstrap token");
    }
    const fs::path file = node.config.data_dir / kBootstrapTokenFile;
    if (!write_secret_file(file, created->token)) {
      spdlog::error("cannot write {}", file.string());
      return 1;
    }
    spdlog::info("bootstrap token (every scope) written to {}", fs::absolute(file).string());
  }

  api::Verifier verifier(node.projector->key_table(), *node.hasher, node.tiers, node.clock);
  api::Metrics metrics;
  EventStore& store = *node.store;
  Projector& projector = *node.projector;
  metrics.add_gauge("keyledger_log_position", "Position of the last acknowledged event.",
                    [&] { return static_cast<double>(store.last_position()); });
  metrics.add_gauge("keyledger_log_writable",
                    "1 while the event log takes writes; 0 after a failed write (until it resumes) or fsync "
                    "(until a restart).",
                    [&] { return store.write_health().ok() ? 1.0 : 0.0; });
  metrics.add_gauge("keyledger_log_unreadable_events",
                    "Records of the log that do not decode, met since start (each reader passes over them).",
                    [&] { return static_cast<double>(store.unreadable_events()); });
  metrics.add_gauge("keyledger_projection_lag_events", "Events acknowledged but not yet projected.",
                    [&] { return static_cast<double>(store.last_position() - projector.checkpoint()); });
  metrics.add_gauge("keyledger_keys", "Keys in the verification table.",
                    [&] { return static_cast<double>(projector.key_table().size()); });
  if (relay) {
    metrics.add_gauge("keyledger_kafka_publication_lag_events",
                      "Events acknowledged but not yet confirmed published to Kafka.",
                      [&] { return static_cast<double>(relay->lag()); });
    metrics.add_gauge("keyledger_kafka_published_position", "Last position confirmed published to Kafka.",
                      [&] { return static_cast<double>(relay->published_position()); });
  }
  const CommitSubscription count_appends =
      store.subscribe([&](const std::vector<v1::Event>& events) { metrics.count_events_appended(events.size()); });
  if (relay) {
    relay->start();
  }
  api::IdempotencyStore idempotency(store.db(), store.column_family(api::kIdempotencyColumnFamily),
                                    node.clock);
  api::AuthFailureLimiter auth_failures(node.clock, {.max_failures = node.config.auth_failure_limit});
  api::Api api({projector, *node.commands, verifier, idempotency, metrics, node.clock, *node.hasher,
                [&] { return projector.checkpoint() >= store.last_position(); }, &auth_failures});

  // Webhooks to agents, straight from the log; attempts are recorded as events. With
  // --webhooks external, `keyledger webhooks` delivers and this process records its attempts.
  std::unique_ptr<consumers::WebhookDispatcher> webhooks;
  std::unique_ptr<consumers::DeliveryRecordFeed> delivery_records;
  if (external_webhooks) {
    consumers::DeliveryRecordFeedOptions records;
    records.brokers = broker ? broker->bootstrap_servers() : node.config.kafka_brokers;
    records.topic = node.config.webhook_deliveries_topic;
    delivery_records = std::make_unique<consumers::DeliveryRecordFeed>(*node.commands, store, records);
    if (Status s = delivery_records->start(); !s.ok()) {
      return fail(s, "cannot start recording webhook deliveries");
    }
    metrics.add_gauge("keyledger_webhook_records_appended", "Delivery attempts of keyledger webhooks recorded.",
                      [&] { return static_cast<double>(delivery_records->recorded()); });
    api.set_webhook_retry([](const std::string&, const std::string&) {
      return Status::Unavailable(
          "webhooks_external",
          "webhooks are delivered by keyledger webhooks (--webhooks external); a manual "
          "retry is not available on this node");
    });
  } else if (!node.config.disable_webhooks) {
    consumers::WebhookDispatcherOptions hooks;
    hooks.client.allow_insecure = node.config.allow_insecure_webhooks;
    hooks.client.allow_private = node.config.allow_private_webhooks;
    hooks.client.ca_file = node.config.webhook_ca_file;
    webhooks = std::make_unique<consumers::WebhookDispatcher>(store, *node.secrets, node.clock,
                                                              consumers::record_with(*node.commands), hooks);
    if (Status s = webhooks->start(); !s.ok()) {
      return fail(s, "cannot start webhook delivery");
    }
    api.set_webhook_retry([&](const std::string& agent_id, const std::string& event_id) {
      return webhooks->retry(agent_id, event_id);
    });
  }

  api::ServerOptions server_options;
  server_options.listen = node.config.listen;
  server_options.io_threads = node.config.io_threads;
  server_options.max_connections = node.config.max_connections;
  server_options.worker_threads = node.config.worker_threads;
  api::Server server(server_options, api);
  if (Status s = server.start(); !s.ok()) {
    return fail(s, "cannot listen on " + node.config.listen);
  }
  const auto colon = node.config.listen.rfind(':');
  const std::string host = node.config.listen.substr(0, colon);
  // The one line tests and scripts read to find the port.
  std::cout << "keyledger listening on " << host << ":" << server.port() << std::endl;
  spdlog::info("serving on {}:{}, data in {}", host, server.port(),
               fs::absolute(node.config.data_dir).string());

  // Housekeeping: expiry events and usage flushes, until shutdown.
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::thread housekeeper([&] {
    auto next_flush = std::chrono::steady_clock::now() + kUsageFlushInterval;
    std::unique_lock lock(mutex);
    while (!wake.wait_for(lock, kExpiryInterval, [&] { return stopping; })) {
      lock.unlock();
      if (auto expired = node.commands->expire_due(1000); !expired.ok()) {
        spdlog::warn("expiry scheduler: {}", expired.status().ToString());
      }
      if (std::chrono::steady_clock::now() >= next_flush) {
        if (Status s = projector.flush_usage(); !s.ok()) {
          spdlog::warn("usage flush: {}", s.ToString());
        }
        next_flush += kUsageFlushInterval;
      }
      lock.lock();
    }
  });

  server.run_until_signal();
  spdlog::info("shutting down");
  {
    std::lock_guard lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  housekeeper.join();
  if (webhooks) {
    webhooks->stop();  // lets attempts in flight finish; pending retries stay persisted
  }
  if (delivery_records) {
    delivery_records->stop();  // commits the offsets of what was recorded
  }
  if (relay) {
    relay->stop();  // flushes the producer and persists the published position
  }
  (void)projector.flush_usage();
  return 0;
}

int token_create(Config config, const std::string& name, const std::string& scopes_csv) {
  Node node;
  node.config = std::move(config);
  if (Status s = node.open(true); !s.ok()) {
    if (s.IsIoError() && s.message().find("lock") != std::string::npos) {
      std::cerr << "keyledger: the store in " << node.config.data_dir.string()
                << " is held by a running server; stop it first or use POST /v1/tokens\n";
      return 1;
    }
    return fail(s, "cannot open the store");
  }
  std::vector<std::string> scopes;
  std::string_view rest = scopes_csv;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    scopes.emplace_back(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  }
  auto created = node.commands->create_token(name, scopes, "system:cli");
  if (!created.ok()) {
    std::cerr << "keyledger: " << created.status().message() << "\n";
    for (const auto& d : created.status().details()) {
      std::cerr << "  " << d.field << ": " << d.message << "\n";
    }
    return 1;
  }
  std::cout << created->token << std::endl;
  std::cerr << "token " << created->token_id << " (" << name << ") created; it is shown only this once\n";
  return 0;
}

int rebuild(Config config) {
  Node node;
  node.config = std::move(config);
  if (Status s = node.open(false); !s.ok()) {
    return fail(s, "cannot open the store");
  }
  if (Status s = node.projector->rebuild(); !s.ok()) {
    return fail(s, "rebuild failed");
  }
  std::cout << "projections rebuilt up to position " << node.projector->checkpoint() << std::endl;
  return 0;
}

void usage(std::ostream& out) {
  out
      << "usage: keyledger serve [--data-dir DIR] [--listen HOST:PORT] [--kafka-brokers embedded|none|LIST]\n"
         "                       [--pepper-file FILE] [--config FILE] [--allow-insecure-webhooks] ...\n"
         "                       [--webhooks in-process|external] [--webhook-deliveries-topic T]\n"
         "       keyledger serve --replica --kafka-brokers HOST:PORT,... --pepper-file FILE [--listen "
         "HOST:PORT]\n"
         "       keyledger token create --data-dir DIR --scope manage,audit --name NAME\n"
         "       keyledger rebuild-projections --data-dir DIR\n"
         "       keyledger consume revocations --kafka-brokers HOST:PORT,... --group NAME [--from "
         "earliest|latest]\n"
         "       keyledger webhooks --kafka-brokers HOST:PORT,... --pepper-file FILE --data-dir STATE_DIR\n"
         "                       [--from earliest|latest] [--allow-insecure-webhooks] "
         "[--allow-private-webhooks]\n"
         "                       [--webhook-ca-file FILE] [--kafka-topic T] [--webhook-deliveries-topic T]\n"
         "                       (delivers for a server run with --webhooks external)\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (!crypto_init()) {
    std::cerr << "keyledger: libsodium failed to initialise\n";
    return 1;
  }
  // stdout carries only what scripts read (the listening line, a created token, JSON lines);
  // every log line goes to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("keyledger"));
  // Every file keyledger creates (RocksDB's, the pepper, the bootstrap token) is owner-only.
  umask(077);
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    usage(std::cout);
    return 0;
  }
  Config config;
  std::string error;
  if (command == "serve" || command == "rebuild-projections") {
    po::options_description none("");
    if (!parse(argc - 1, argv + 1, none, config, error)) {
      std::cerr << "keyledger: " << error << "\n";
      usage(std::cerr);
      return 2;
    }
    if (config.help) {
      return 0;
    }
    spdlog::set_level(spdlog::level::from_str(config.log_level));
    return command == "serve" ? serve(config) : rebuild(config);
  }
  if (command == "token" && argc >= 3 && std::string(argv[2]) == "create") {
    std::string name;
    std::string scopes;
    po::options_description extra("token create");
    extra.add_options()("name", po::value(&name)->required(), "token name")(
        "scope", po::value(&scopes)->required(), "comma-separated scopes");
    if (!parse(argc - 2, argv + 2, extra, config, error)) {
      std::cerr << "keyledger: " << error << "\n";
      usage(std::cerr);
      return 2;
    }
    if (config.help) {
      return 0;
    }
    return token_create(config, name, scopes);
  }
  if (command == "consume" && argc >= 3 && std::string(argv[2]) == "revocations") {
    std::string group;
    std::string from = "earliest";
    po::options_description extra("consume revocations");
    extra.add_options()("group", po::value(&group)->required(), "consumer group name")(
        "from", po::value(&from), "where a new group starts: earliest | latest");
    if (!parse(argc - 2, argv + 2, extra, config, error)) {
      std::cerr << "keyledger: " << error << "\n";
      usage(std::cerr);
      return 2;
    }
    if (config.help) {
      return 0;
    }
    spdlog::set_level(spdlog::level::from_str(config.log_level));
    return consume_revocations(config, group, from);
  }
  if (command == "webhooks") {
    std::string from = "earliest";
    po::options_description extra("webhooks");
    extra.add_options()("from", po::value(&from),
                        "where a new state directory starts: earliest (every key event not yet recorded "
                        "delivered or failed) | latest (only events after start)");
    if (!parse(argc - 1, argv + 1, extra, config, error)) {
      std::cerr << "keyledger: " << error << "\n";
      usage(std::cerr);
      return 2;
    }
    if (config.help) {
      return 0;
    }
    spdlog::set_level(spdlog::level::from_str(config.log_level));
    return run_webhooks(config, from);
  }
  usage(std::cerr);
  return 2;
}
