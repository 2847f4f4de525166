#pragma once
// Key usage across the fleet (api/openapi.yaml Usage): a verifier replica counts its own
// verifications (a UsageRecorder beside its Verifier) and a UsagePublisher sends them to
// topic `keyledger.key-usage` every interval, one v1::UsageReport per message (key: the
// replica's id). The primary's UsageFeed merges every report into its own recorder, so its
// usage answers sum the whole fleet, a publish interval plus the primary's flush interval
// late (a few seconds).
//
// What can be lost: a replica killed between two publishes loses its last interval; a report
// the producer cannot queue is counted back into the recorder and sent with the next one; a
// report Kafka does not acknowledge in time is lost and counted (lost_cells). The feed stores a
// report's offset once it is merged into the primary's recorder, and librdkafka commits the
// stored offsets every second; the primary journals its recorder every 2 s (KeyUsage::flush).
// So a primary killed or crashed loses the reports it merged since its last flush whose
// offsets were committed (up to 2 s of them; they are not read again), and counts twice, after
// its restart, the reports it had flushed whose offsets were not committed yet (up to about a
// second of them). With the embedded broker, which starts empty, nothing is read again: what
// the replicas published and the feed had not merged is lost too. A clean stop stops the feed
// (committing its offsets) before the last flush, and loses nothing.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "consumers/consumer_loop.h"
#include "consumers/embedded_broker.h"
#include "consumers/kafka_client.h"
#include "domain/status.h"
#include "projections/usage.h"

namespace keyledger::consumers {

struct UsagePublisherOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Default keyledger.key-usage.
  std::string topic = kUsageTopic;
  // The message key: which replica counted. Required.
  std::string replica_id;
  // How often the recorder is drained and published. Default 2 s.
  std::chrono::milliseconds interval{2000};
  // Extra librdkafka producer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> producer_config = {};
};

class UsagePublisher {
 public:
  // `recorder` and `table` (may be null; what its visits counted is published too) must
  // outlive the publisher.
  UsagePublisher(UsageRecorder& recorder, ActiveKeyTable* table, UsagePublisherOptions options);
  ~UsagePublisher();  // stop()
  UsagePublisher(const UsagePublisher&) = delete;
  UsagePublisher& operator=(const UsagePublisher&) = delete;

  // Creates the producer and starts publishing. InvalidArgument for bad options.
  Status start();
  // Publishes what is left and waits (a few seconds at most) for Kafka to take it. Idempotent.
  void stop();

  // Cells Kafka acknowledged, and cells it refused or timed out on (lost), since start.
  std::uint64_t published_cells() const { return published_; }
  std::uint64_t lost_cells() const { return lost_; }

 private:
  void run();
  void publish();  // drains the recorder into messages
  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque);

  UsageRecorder& recorder_;
  ActiveKeyTable* table_;
  const UsagePublisherOptions options_;
  KafkaHandle producer_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // under mutex_
  std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> lost_{0};
};

struct UsageFeedOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Default keyledger.key-usage.
  std::string topic = kUsageTopic;
  // Consumer group whose committed offsets say what was merged. Default keyledger-server-usage.
  std::string group = "keyledger-server-usage";
  int fetch_wait_ms = 10;
  std::chrono::milliseconds retry_backoff{200};
  std::map<std::string, std::string> consumer_config = {};
};

class UsageFeed {
 public:
  // `recorder` (the primary's) must outlive the feed.
  UsageFeed(UsageRecorder& recorder, UsageFeedOptions options);
  ~UsageFeed();  // stop()
  UsageFeed(const UsageFeed&) = delete;
  UsageFeed& operator=(const UsageFeed&) = delete;

  // Creates the consumer and starts the thread; an unreachable broker or a missing topic is
  // not an error (it keeps trying). InvalidArgument for bad options.
  Status start();
  void stop();

  std::uint64_t merged_reports() const { return merged_; }
  std::uint64_t rejected_reports() const { return rejected_; }

 private:
  void run();

  UsageRecorder& recorder_;
  const UsageFeedOptions options_;
  ConsumerLoop loop_{"usage"};
  std::atomic<std::uint64_t> merged_{0};
  std::atomic<std::uint64_t> rejected_{0};
};

}  // namespace keyledger::consumers
