#include "api/node/primary.h"

#include <spdlog/spdlog.h>

#include "domain/thread_name.h"

namespace keyledger::api {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kBootstrapTokenFile = "bootstrap-token";
constexpr auto kExpiryInterval = std::chrono::seconds(1);
// Last use is answered from memory; its flush keeps it across a restart, so a crash may set
// it back this far (api/openapi.yaml: may lag 60 s). Usage counts: "a few seconds".
constexpr auto kLastUseFlushInterval = std::chrono::seconds(30);
constexpr auto kUsageFlushInterval = std::chrono::seconds(2);
// Dropping usage buckets past retention: RocksDB's compactions do it as they go; a full
// compaction of the family this often (KeyUsage::start_compactions, on its own thread: it
// takes minutes at scale) bounds how long dropped buckets stay on disk.
constexpr auto kUsageCompactionInterval = std::chrono::hours(1);

}  // namespace

Result<std::unique_ptr<Primary>> Primary::open(Config config, NodeEnvironment environment) {
  const bool external_webhooks = config.webhooks == kWebhooksExternal;
  if (!external_webhooks && config.webhooks != kWebhooksInProcess) {
    return Status::InvalidArgument("--webhooks must be in-process or external, not " + config.webhooks);
  }
  if (external_webhooks && config.kafka_brokers == "none") {
    return Status::InvalidArgument(
        "--webhooks external needs Kafka (keyledger webhooks reads the events from it and records its "
        "attempts through it); use --kafka-brokers embedded or a cluster, or the default --webhooks "
        "in-process");
  }
  auto ledger = Ledger::open(config, Ledger::Use::kServing, std::move(environment));
  if (!ledger.ok()) {
    return ledger.status();
  }
  std::unique_ptr<Primary> primary(new Primary(std::move(ledger).value()));
  if (Status s = primary->start_kafka(); !s.ok()) {
    return s;
  }
  if (Status s = primary->ensure_bootstrap_token(); !s.ok()) {
    return s;
  }
  return primary;
}

// Kafka: the embedded broker (default), a real cluster, or none.
Status Primary::start_kafka() {
  const Config& config = ledger_->config();
  if (config.kafka_brokers == "none") {
    return Status::Ok();
  }
  consumers::PublisherOptions publisher;
  publisher.brokers = config.kafka_brokers;
  publisher.events_topic = config.kafka_topic;
  publisher.state_topic = config.kafka_state_topic;
  if (config.kafka_brokers == "embedded") {
    consumers::EmbeddedBrokerOptions embedded;
    embedded.topics = {config.kafka_topic, config.kafka_state_topic, config.webhook_deliveries_topic,
                       consumers::kUsageTopic};
    auto started = consumers::EmbeddedBroker::start(embedded);
    if (!started.ok()) {
      return started.status().Annotate("cannot start the embedded Kafka broker");
    }
    broker_ = std::move(started).value();
    publisher.brokers = broker_->bootstrap_servers();
    // The embedded broker starts empty: publish the whole log again.
    publisher.republish_from_start = true;
    spdlog::info("embedded Kafka broker on {} (one machine and tests only; try kcat -b {} -t {} -C)",
                 broker_->bootstrap_servers(), broker_->bootstrap_servers(), config.kafka_topic);
  }
  auto created = consumers::OutboxRelay::create(ledger_->store(), ledger_->projector(), publisher);
  if (!created.ok()) {
    return created.status().Annotate("cannot start publishing to Kafka");
  }
  relay_ = std::move(created).value();
  return Status::Ok();
}

Status Primary::ensure_bootstrap_token() {
  if (!ledger_->projector().tokens().empty()) {
    return Status::Ok();
  }
  const std::vector<std::string> all_scopes(kScopes.begin(), kScopes.end());
  auto created = ledger_->commands().create_token("bootstrap", all_scopes, "system:bootstrap");
  if (!created.ok()) {
    return created.status().Annotate("cannot create the bootstrap token");
  }
  const fs::path file = ledger_->config().data_dir / kBootstrapTokenFile;
  if (!write_secret_file(file, created->token)) {
    return Status::IoError("cannot write " + file.string());
  }
  spdlog::info("bootstrap token (every scope) written to {}", fs::absolute(file).string());
  return Status::Ok();
}

void Primary::add_gauges() {
  EventStore& store = ledger_->store();
  Projector& projector = ledger_->projector();
  metrics_.add_gauge("keyledger_log_position", "Position of the last acknowledged event.",
                     [&store] { return static_cast<double>(store.last_position()); });
  metrics_.add_gauge("keyledger_log_writable",
                     "1 while the event log takes writes; 0 after a failed write (until it resumes) or fsync "
                     "(until a restart).",
                     [&store] { return store.write_health().ok() ? 1.0 : 0.0; });
  metrics_.add_gauge("keyledger_log_unreadable_events",
                     "Records of the log that do not decode, met since start (each reader passes over them).",
                     [&store] { return static_cast<double>(store.unreadable_events()); });
  metrics_.add_gauge("keyledger_projection_lag_events", "Events acknowledged but not yet projected.",
                     [&] { return static_cast<double>(store.last_position() - projector.checkpoint()); });
  metrics_.add_gauge("keyledger_keys", "Keys in the verification table.",
                     [&projector] { return static_cast<double>(projector.key_table().size()); });
  metrics_.add_gauge("keyledger_usage_pending_cells",
                     "Key usage counts (one per key and minute) recorded and not yet flushed to the store.",
                     [this] { return static_cast<double>(ledger_->usage().pending()); });
  if (relay_) {
    metrics_.add_gauge("keyledger_kafka_publication_lag_events",
                       "Events acknowledged but not yet confirmed published to Kafka.",
                       [this] { return static_cast<double>(relay_->lag()); });
    metrics_.add_gauge("keyledger_kafka_published_position", "Last position confirmed published to Kafka.",
                       [this] { return static_cast<double>(relay_->published_position()); });
  }
  metrics_.add_counter("keyledger_log_syncs_total", "WAL fsyncs that made appends durable.",
                       [&store] { return static_cast<double>(store.sync_stats().syncs); });
  metrics_.add_counter("keyledger_log_sync_seconds_total", "Time spent in those fsyncs.",
                       [&store] { return std::chrono::duration<double>(store.sync_stats().took).count(); });
  count_appends_ = store.subscribe([this](const std::vector<v1::Event>& events) {
    metrics_.count_events_appended(events.size());
    for (const v1::Event& event : events) {
      if (event.has_webhook_delivery_recorded()) {
        metrics_.count_webhook_delivery(event.webhook_delivery_recorded().outcome());
      }
    }
  });
}

// Webhooks to agents, straight from the log; attempts are recorded as events. With
// --webhooks external, `keyledger webhooks` delivers and this process records its attempts.
Status Primary::start_webhooks() {
  const Config& config = ledger_->config();
  if (config.webhooks == kWebhooksExternal) {
    consumers::DeliveryRecordFeedOptions records;
    records.brokers = broker_ ? broker_->bootstrap_servers() : config.kafka_brokers;
    records.topic = config.webhook_deliveries_topic;
    delivery_records_ =
        std::make_unique<consumers::DeliveryRecordFeed>(ledger_->commands(), ledger_->store(), records);
    if (Status s = delivery_records_->start(); !s.ok()) {
      return s.Annotate("cannot start recording webhook deliveries");
    }
    metrics_.add_gauge("keyledger_webhook_records_appended",
                       "Delivery attempts of keyledger webhooks recorded.",
                       [this] { return static_cast<double>(delivery_records_->recorded()); });
    api_->set_webhook_retry([](const std::string&, const std::string&) {
      return Status::Unavailable(
          "webhooks_external",
          "webhooks are delivered by keyledger webhooks (--webhooks external); a manual "
          "retry is not available on this node");
    });
    return Status::Ok();
  }
  if (config.disable_webhooks) {
    return Status::Ok();
  }
  consumers::WebhookDispatcherOptions hooks;
  hooks.client.allow_insecure = config.allow_insecure_webhooks;
  hooks.client.allow_private = config.allow_private_webhooks;
  hooks.client.ca_file = config.webhook_ca_file;
  webhooks_ =
      std::make_unique<consumers::WebhookDispatcher>(ledger_->store(), ledger_->secrets(), ledger_->clock(),
                                                     consumers::record_with(ledger_->commands()), hooks);
  if (Status s = webhooks_->start(); !s.ok()) {
    return s.Annotate("cannot start webhook delivery");
  }
  api_->set_webhook_retry([this](const std::string& agent_id, const std::string& event_id) {
    return webhooks_->retry(agent_id, event_id);
  });
  return Status::Ok();
}

Status Primary::start() {
  const Config& config = ledger_->config();
  EventStore& store = ledger_->store();
  Projector& projector = ledger_->projector();
  add_gauges();
  if (relay_) {
    relay_->start();
  }
  if (config.kafka_brokers != "none") {
    usage_feed_ = std::make_unique<consumers::UsageFeed>(
        ledger_->usage().recorder(),
        consumers::UsageFeedOptions{.brokers =
                                        broker_ ? broker_->bootstrap_servers() : config.kafka_brokers});
    if (Status s = usage_feed_->start(); !s.ok()) {
      return s.Annotate("cannot start the usage feed");
    }
  }
  auto proxies = TrustedProxies::parse(config.trusted_proxies);
  if (!proxies.ok()) {
    return proxies.status();
  }
  if (config.dashboard != "on" && config.dashboard != "off") {
    return Status::InvalidArgument("--dashboard must be on or off, not " + config.dashboard);
  }
  if (config.usage != "on" && config.usage != "off") {
    return Status::InvalidArgument("--usage must be on or off, not " + config.usage);
  }
  proxies_ = *proxies;
  github_keys_ = std::make_unique<GithubKeyring>(config.github_keys_file);
  if (Status s = reload_github_keys(); !s.ok()) {
    return s;
  }
  verifier_ = std::make_unique<Verifier>(projector.key_table(), ledger_->hasher(), ledger_->tiers(),
                                         ledger_->clock(), config.usage == "on");
  auto idempotency_records = store.extra_column_family(kIdempotencyColumnFamily);
  if (!idempotency_records.ok()) {
    return idempotency_records.status();
  }
  idempotency_ = std::make_unique<IdempotencyStore>(*idempotency_records, ledger_->clock());
  auth_failures_ = std::make_unique<AuthFailureLimiter>(
      ledger_->clock(), AuthFailureLimitOptions{.max_failures = config.auth_failure_limit});
  api_ = std::make_unique<Api>(ApiContext{
      projector, ledger_->commands(), *verifier_, *idempotency_, metrics_, ledger_->clock(),
      ledger_->hasher(), [&] { return projector.checkpoint() >= store.last_position(); },
      auth_failures_.get(), &proxies_, &ledger_->usage(), config.dashboard == "on", github_keys_.get()});
  if (Status s = start_webhooks(); !s.ok()) {
    return s;
  }
  server_ = std::make_unique<Server>(server_options_for(config), *api_);
  if (Status s = server_->start(); !s.ok()) {
    return s.Annotate("cannot listen on " + config.listen);
  }
  server_->on_hangup([this] { (void)reload_github_keys(); });
  housekeeper_ = std::thread([this] {
    name_this_thread("kl-housekeeper");
    housekeep();
  });
  ledger_->usage().start_compactions(kUsageCompactionInterval);
  return Status::Ok();
}

// --github-keys-file, at start and on SIGHUP; a file that does not load leaves the keys as
// they were (none at start).
Status Primary::reload_github_keys() {
  if (github_keys_->path().empty()) {
    return Status::Ok();
  }
  auto loaded = github_keys_->reload();
  if (!loaded.ok()) {
    spdlog::error("GitHub secret-scanning keys: {}; keeping the {} loaded before", loaded.status().ToString(),
                  github_keys_->key_count());
    return loaded.status().Annotate("--github-keys-file");
  }
  for (const std::string& skipped : loaded->skipped) {
    spdlog::warn("GitHub secret-scanning keys: {}", skipped);
  }
  spdlog::info("GitHub secret-scanning keys: {} loaded from {}", loaded->keys, github_keys_->path().string());
  return Status::Ok();
}

// Expiry events and usage flushes, until stop(). Nothing here may take long: a flush is due
// every 2 s (usage compactions run on a thread of their own).
void Primary::housekeep() {
  const auto started = std::chrono::steady_clock::now();
  auto next_last_use = started + kLastUseFlushInterval;
  auto next_usage = started + kUsageFlushInterval;
  std::unique_lock lock(housekeeping_mutex_);
  while (!housekeeping_wake_.wait_for(lock, kExpiryInterval, [&] { return stopping_; })) {
    lock.unlock();
    if (auto expired = ledger_->commands().expire_due(1000); !expired.ok()) {
      spdlog::warn("expiry scheduler: {}", expired.status().ToString());
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_last_use) {
      if (Status s = ledger_->projector().flush_usage(); !s.ok()) {
        spdlog::warn("last-use flush: {}", s.ToString());
      }
      next_last_use += kLastUseFlushInterval;
    }
    if (now >= next_usage) {
      if (Status s = flush_usage(); !s.ok()) {
        spdlog::warn("usage flush: {}", s.ToString());
      }
      next_usage = now + kUsageFlushInterval;
    }
    lock.lock();
  }
}

Status Primary::flush_usage(KeyUsage::Fold fold) {
  const auto started = std::chrono::steady_clock::now();
  Status s = ledger_->usage().flush(fold);
  metrics_.observe_usage_flush(s.ok(), std::chrono::steady_clock::now() - started);
  return s;
}

std::uint16_t Primary::port() const { return server_ ? server_->port() : 0; }

std::string Primary::embedded_kafka() const { return broker_ ? broker_->bootstrap_servers() : std::string(); }

void Primary::run_until_signal() {
  if (server_) {
    server_->run_until_signal();
  }
  stop();
}

void Primary::stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  if (server_) {
    server_->stop();
  }
  // Commands the server handed to the store are answered (into closed connections, if the
  // drain gave up on them) before what their answers use, the API's renderers, goes away.
  ledger_->commands().wait_idle();
  {
    std::lock_guard lock(housekeeping_mutex_);
    stopping_ = true;
  }
  housekeeping_wake_.notify_all();
  if (housekeeper_.joinable()) {
    housekeeper_.join();
  }
  ledger_->usage().stop_compactions();  // cancels one under way
  if (webhooks_) {
    webhooks_->stop();  // lets attempts in flight finish; pending retries stay persisted
  }
  if (delivery_records_) {
    delivery_records_->stop();  // commits the offsets of what was recorded
  }
  if (relay_) {
    relay_->stop();  // flushes the producer and persists the published position
  }
  if (usage_feed_) {
    usage_feed_->stop();
  }
  (void)ledger_->projector().flush_usage();
  (void)flush_usage(KeyUsage::Fold::kNow);  // leaves no journal to read back at the next start
}

Primary::~Primary() { stop(); }

}  // namespace keyledger::api
