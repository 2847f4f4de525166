#pragma once
// `keyledger serve --webhooks external`: the server does not deliver webhooks itself but
// records the attempts `keyledger webhooks` made. This feed consumes
// `keyledger.webhook-deliveries` (DeliveryPublisher's envelopes) and appends each to the
// agent's stream as the event it carries, through CommandService (so projections, the
// delivery log routes and Kafka publication see it like any other event).
//
// Each attempt is recorded once: the consumer group's offsets are committed only after the
// append is durable (at least once), and a record whose event id the log already holds is
// skipped. Partitions are assigned, not subscribed (one server reads them all, with no
// rebalance wait after a restart); the group only stores the committed offsets, and a group
// without offsets starts at the beginning of the topic.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>

#include "consumers/consumer_loop.h"
#include "consumers/delivery_publisher.h"
#include "consumers/kafka_client.h"
#include "domain/status.h"
#include "eventstore/event_store.h"

namespace keyledger {
class CommandService;
}

namespace keyledger::consumers {

struct DeliveryRecordFeedOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Topic of delivery attempts. Default keyledger.webhook-deliveries.
  std::string topic = kWebhookDeliveriesTopic;
  // Consumer group whose committed offsets say what was recorded. Default keyledger-server.
  std::string group = "keyledger-server";
  // fetch.wait.max.ms; small because the embedded broker waits it out even when data arrives.
  // Default 10.
  int fetch_wait_ms = 10;
  // Wait before retrying when the topic is missing, the broker unreachable or an append
  // failed. Default 200 ms.
  std::chrono::milliseconds retry_backoff{200};
  // Extra librdkafka consumer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> consumer_config;
};

class DeliveryRecordFeed {
 public:
  // `commands` and `store` (the log of record it appends to) must outlive the feed.
  DeliveryRecordFeed(CommandService& commands, const EventStore& store, DeliveryRecordFeedOptions options);
  ~DeliveryRecordFeed();  // stop()
  DeliveryRecordFeed(const DeliveryRecordFeed&) = delete;
  DeliveryRecordFeed& operator=(const DeliveryRecordFeed&) = delete;

  // Creates the consumer and starts the thread. InvalidArgument for bad options or
  // properties, Unavailable if librdkafka cannot create the client; an unreachable broker is
  // not an error (the feed keeps trying). Conflict on a second call.
  Status start();
  // Stops the thread, commits what was recorded and closes the consumer. Idempotent.
  void stop();

  // Records one message's envelope as the feed does (its thread; tests): OK when appended or
  // already in the log; InvalidArgument for an envelope that is not a delivery record of an
  // agent (skipped by the feed); NotFound agent_not_found (skipped); IoError/Unavailable when
  // the append failed (the feed tries again).
  Status record(const v1::Event& envelope);

  // Records appended, records skipped because the log held them, messages skipped as invalid.
  std::uint64_t recorded() const { return recorded_; }
  std::uint64_t duplicates() const { return duplicates_; }
  std::uint64_t rejected() const { return rejected_; }

 private:
  void run();

  CommandService& commands_;
  const EventStore& store_;
  const DeliveryRecordFeedOptions options_;
  std::atomic<std::uint64_t> recorded_{0};
  std::atomic<std::uint64_t> duplicates_{0};
  std::atomic<std::uint64_t> rejected_{0};
  ConsumerLoop loop_{"delivery records"};  // last: stopped (its thread joined) before the members above go
};

}  // namespace keyledger::consumers
