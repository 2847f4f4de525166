#include "api/node/webhook_worker.h"

#include <spdlog/spdlog.h>

#include "api/node/replica.h"

namespace keyledger::api {

namespace {

// The mirror's database inside `keyledger webhooks --data-dir`.
constexpr std::string_view kMirrorDir = "mirror";

}  // namespace

Result<std::unique_ptr<WebhookWorker>> WebhookWorker::open(const Config& config, const std::string& from) {
  if (config.kafka_brokers == "none" || config.kafka_brokers == "embedded") {
    return Status::InvalidArgument(
        "webhooks needs --kafka-brokers with the server's Kafka bootstrap address (it reads the events from "
        "Kafka and records its attempts there); without Kafka, run serve with the default --webhooks "
        "in-process, which reads the log directly");
  }
  if (from != "earliest" && from != "latest") {
    return Status::InvalidArgument("--from must be earliest or latest");
  }
  auto pepper = pepper_for(config, "webhooks (it decrypts the webhook secrets)");
  if (!pepper.ok()) {
    return pepper.status();
  }
  if (Status s = prepare_data_dir(config.data_dir); !s.ok()) {
    return s.Annotate("cannot use the data directory");
  }
  std::unique_ptr<WebhookWorker> worker(new WebhookWorker(config, *pepper, from == "earliest"));
  EventStoreOptions store_options;
  store_options.path = config.data_dir / kMirrorDir;
  store_options.extra_column_families = consumers::webhook_column_families();
  auto opened = EventStore::open(store_options);
  if (!opened.ok()) {
    return opened.status().Annotate("cannot open the mirror in " + config.data_dir.string());
  }
  worker->mirror_store_ = std::move(opened).value();
  consumers::EventMirrorOptions mirror_options;
  mirror_options.brokers = config.kafka_brokers;
  mirror_options.topic = config.kafka_topic;
  worker->mirror_ = std::make_unique<consumers::EventMirror>(*worker->mirror_store_, mirror_options);
  if (Status s = worker->mirror_->start(); !s.ok()) {
    return s.Annotate("cannot start the Kafka consumer");
  }
  spdlog::info("webhooks: mirroring {} from {} into {}", config.kafka_topic, config.kafka_brokers,
               store_options.path.string());
  return worker;
}

WebhookWorker::WebhookWorker(const Config& config, const Pepper& pepper, bool from_beginning)
    : config_(config), from_beginning_(from_beginning), secrets_(pepper) {}

bool WebhookWorker::caught_up() const { return mirror_->caught_up(); }

Status WebhookWorker::start() {
  consumers::DeliveryPublisherOptions publisher_options;
  publisher_options.brokers = config_.kafka_brokers;
  publisher_options.topic = config_.webhook_deliveries_topic;
  auto publisher = consumers::DeliveryPublisher::create(publisher_options, clock_, mirror_store_.get());
  if (!publisher.ok()) {
    return publisher.status().Annotate("cannot start producing delivery records");
  }
  publisher_ = std::move(publisher).value();
  consumers::WebhookDispatcherOptions hooks;
  hooks.client.allow_insecure = config_.allow_insecure_webhooks;
  hooks.client.allow_private = config_.allow_private_webhooks;
  hooks.client.ca_file = config_.webhook_ca_file;
  hooks.from_beginning = from_beginning_;
  webhooks_ = std::make_unique<consumers::WebhookDispatcher>(*mirror_store_, secrets_, clock_,
                                                             publisher_->recorder(), hooks);
  if (Status s = webhooks_->start(); !s.ok()) {
    return s.Annotate("cannot start webhook delivery");
  }
  spdlog::info("webhooks: delivering; attempts recorded to {}", config_.webhook_deliveries_topic);
  return Status::Ok();
}

void WebhookWorker::stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  if (webhooks_) {
    webhooks_->stop();
  }
  if (mirror_) {
    mirror_->stop();
  }
}

WebhookWorker::~WebhookWorker() { stop(); }

}  // namespace keyledger::api
