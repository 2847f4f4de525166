#include "api/node/replica.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "domain/pepper.h"

namespace keyledger::api {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> names_of(const std::vector<RateLimitTier>& tiers) {
  std::vector<std::string> names;
  for (const auto& t : tiers) {
    names.push_back(t.name);
  }
  return names;
}

}  // namespace

Result<Pepper> pepper_for(const Config& config, std::string_view who) {
  std::optional<fs::path> file = config.pepper_file;
  if (!file && fs::exists(config.data_dir / "pepper")) {
    file = config.data_dir / "pepper";
  }
  if (!file) {
    return Status::InvalidArgument(std::string(who) + " needs --pepper-file with the primary's pepper");
  }
  auto pepper = read_pepper_file(*file);
  if (!pepper.ok()) {
    return pepper.status().Annotate("cannot read the pepper");
  }
  return pepper;
}

Result<std::unique_ptr<Replica>> Replica::open(const Config& config) {
  if (config.kafka_brokers == "none" || config.kafka_brokers == "embedded") {
    return Status::InvalidArgument(
        "--replica needs --kafka-brokers with the primary's Kafka bootstrap address");
  }
  auto pepper = pepper_for(config, "--replica");
  if (!pepper.ok()) {
    return pepper.status();
  }
  auto tiers = parse_tiers(config.tiers);
  if (!tiers.ok()) {
    return tiers.status().Annotate("bad --rate-limit-tiers");
  }
  auto proxies = TrustedProxies::parse(config.trusted_proxies);
  if (!proxies.ok()) {
    return proxies.status();
  }
  std::unique_ptr<Replica> replica(new Replica(config, *pepper, *tiers));
  replica->proxies_ = *proxies;
  consumers::ReplicaOptions options;
  options.brokers = config.kafka_brokers;
  options.events_topic = config.kafka_topic;
  options.state_topic = config.kafka_state_topic;
  replica->feed_ = std::make_unique<consumers::ReplicaFeed>(replica->keys_, replica->tokens_, options);
  if (Status s = replica->feed_->start(); !s.ok()) {
    return s.Annotate("cannot start the Kafka consumer");
  }
  return replica;
}

Replica::Replica(const Config& config, const Pepper& pepper, std::vector<RateLimitTier> tiers)
    : config_(config),
      hasher_(pepper),
      tiers_(std::move(tiers)),
      keys_(names_of(tiers_)),
      verifier_(keys_, hasher_, tiers_, clock_, config.usage != "off"),
      auth_failures_(clock_, {.max_failures = config.auth_failure_limit}) {}

Status Replica::start() {
  metrics_.add_gauge("keyledger_replica_position", "Highest log position applied from Kafka.",
                     [this] { return static_cast<double>(feed_->last_position()); });
  metrics_.add_gauge("keyledger_replica_ready", "1 once caught up with Kafka at start-up.",
                     [this] { return feed_->ready() ? 1.0 : 0.0; });
  metrics_.add_gauge("keyledger_keys", "Keys in the verification table.",
                     [this] { return static_cast<double>(keys_.size()); });
  api_ = std::make_unique<ReplicaApi>(ReplicaApiContext{
      tokens_, verifier_, hasher_, metrics_, [this] { return feed_->ready(); }, &auth_failures_, &proxies_});
  ServerOptions server_options = server_options_for(config_);
  server_options.worker_threads = 1;  // every route answers from memory, on the io threads
  server_ = std::make_unique<Server>(server_options, *api_);
  if (Status s = server_->start(); !s.ok()) {
    return s.Annotate("cannot listen on " + config_.listen);
  }
  char host[256] = {};
  (void)gethostname(host, sizeof host - 1);
  usage_publisher_ = std::make_unique<consumers::UsagePublisher>(
      usage_, &keys_,
      consumers::UsagePublisherOptions{.brokers = config_.kafka_brokers,
                                       .replica_id = std::string(host) + ":" + std::to_string(port())});
  if (Status s = usage_publisher_->start(); !s.ok()) {
    return s.Annotate("cannot start publishing key usage");
  }
  spdlog::info("verifier replica following {} at {}", config_.kafka_topic, config_.kafka_brokers);
  return Status::Ok();
}

std::uint16_t Replica::port() const { return server_ ? server_->port() : 0; }

void Replica::run_until_signal() {
  if (server_) {
    server_->run_until_signal();
  }
  stop();
}

void Replica::stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  if (server_) {
    server_->stop();
  }
  if (usage_publisher_) {
    usage_publisher_->stop();  // publishes the last interval
  }
  if (feed_) {
    feed_->stop();
  }
}

Replica::~Replica() { stop(); }

}  // namespace keyledger::api
