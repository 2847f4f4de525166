#pragma once
// `keyledger webhooks`: delivers webhooks beside a server run with --webhooks external. The
// server holds the log's lock, so this process mirrors the agent events from Kafka into its
// own store (<data-dir>/mirror), runs the webhook dispatcher over the mirror, and produces
// every attempt to the deliveries topic, from which the server records it.

#include <chrono>
#include <memory>
#include <string>

#include "api/node/config.h"
#include "consumers/delivery_publisher.h"
#include "consumers/event_mirror.h"
#include "consumers/webhook_dispatcher.h"
#include "domain/clock.h"
#include "domain/secret_box.h"
#include "eventstore/event_store.h"

namespace keyledger::api {

class WebhookWorker {
 public:
  // Checks the configuration (a Kafka cluster, the server's pepper, `from` earliest or
  // latest: InvalidArgument), opens the mirror and starts filling it from Kafka.
  static Result<std::unique_ptr<WebhookWorker>> open(const Config& config, const std::string& from);
  ~WebhookWorker();  // stop()
  WebhookWorker(const WebhookWorker&) = delete;
  WebhookWorker& operator=(const WebhookWorker&) = delete;

  // Whether the mirror holds the history Kafka had when it started. Deliveries start once it
  // does, so attempts already recorded for that history are known.
  bool caught_up() const;
  // Starts producing delivery records and delivering.
  Status start();
  void stop();  // lets attempts in flight finish; pending retries stay in the mirror

 private:
  WebhookWorker(const Config& config, const Pepper& pepper, bool from_beginning);

  Config config_;
  bool from_beginning_;
  SystemClock clock_;
  SecretBox secrets_;
  std::unique_ptr<EventStore> mirror_store_;
  std::unique_ptr<consumers::EventMirror> mirror_;
  std::unique_ptr<consumers::DeliveryPublisher> publisher_;
  std::unique_ptr<consumers::WebhookDispatcher> webhooks_;
  bool stopped_ = false;
};

}  // namespace keyledger::api
