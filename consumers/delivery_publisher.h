#pragma once
// `keyledger webhooks` cannot append to the server's log, so it records each delivery attempt
// by producing it to Kafka topic `keyledger.webhook-deliveries`: key = agent_id, value = a
// serialized v1::Event envelope (type webhook.delivery_recorded, actor system:webhooks)
// carrying the WebhookDeliveryRecorded payload, headers `event-id` and `event-type`. The
// server (`serve --webhooks external`, DeliveryRecordFeed) appends each to the agent's stream
// as the event it carries.
//
// The envelope's event id is derived from (delivered event id, attempt), so an attempt
// produced twice (a retried produce, a crash before the dispatcher moved on) is one event in
// the log. record() returns OK only once the broker acknowledged the message (acks=all); the
// dispatcher keeps the delivery pending otherwise.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "consumers/embedded_broker.h"
#include "consumers/kafka_client.h"
#include "consumers/webhook_dispatcher.h"
#include "domain/clock.h"
#include "domain/events.h"
#include "domain/status.h"
#include "eventstore/event_store.h"

namespace keyledger::consumers {

// The actor of recorded attempts.
inline constexpr std::string_view kWebhooksActor = "system:webhooks";

// The envelope recording `record` (an attempt to deliver to `agent_id`) at `now`: stream
// agent-<agent_id>, event id derived from the delivered event's id and the attempt number.
v1::Event delivery_record_event(const std::string& agent_id, const v1::WebhookDeliveryRecorded& record,
                                TimePoint now);

struct DeliveryPublisherOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Topic of delivery attempts. Default keyledger.webhook-deliveries.
  std::string topic = kWebhookDeliveriesTopic;
  // How long one record waits for the broker's acknowledgement (message.timeout.ms) before
  // record() fails. Default 10 s.
  std::chrono::milliseconds ack_timeout{10'000};
  // Extra librdkafka producer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> producer_config;
};

class DeliveryPublisher {
 public:
  // `mirror` (may be null) also receives each acknowledged record, so the local mirror knows
  // about the attempt before it comes back through the server; `clock` stamps occurred_at.
  // Both must outlive the publisher. InvalidArgument for bad options, Unavailable if the
  // producer cannot be created (an unreachable broker is not an error here: record() fails).
  static Result<std::unique_ptr<DeliveryPublisher>> create(DeliveryPublisherOptions options,
                                                           const Clock& clock, EventStore* mirror);
  ~DeliveryPublisher();  // flushes for at most ack_timeout, stops the poller
  DeliveryPublisher(const DeliveryPublisher&) = delete;
  DeliveryPublisher& operator=(const DeliveryPublisher&) = delete;

  // Produces the record and waits for the broker's acknowledgement: OK once acknowledged,
  // Unavailable with librdkafka's reason otherwise. Thread-safe (the dispatcher's workers call
  // it concurrently).
  Status record(const std::string& agent_id, const v1::WebhookDeliveryRecorded& record);
  // record() as a DeliveryRecorder; the publisher must outlive it.
  DeliveryRecorder recorder();

  // Records acknowledged by the broker since start.
  std::uint64_t acknowledged() const { return acknowledged_; }

 private:
  DeliveryPublisher(DeliveryPublisherOptions options, const Clock& clock, EventStore* mirror);
  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque);

  const DeliveryPublisherOptions options_;
  const Clock& clock_;
  EventStore* mirror_;
  KafkaHandle producer_;
  std::thread poller_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> acknowledged_{0};
};

}  // namespace keyledger::consumers
