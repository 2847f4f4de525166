#pragma once
// `--kafka-brokers embedded`: an in-process Kafka-protocol broker (librdkafka's mock cluster)
// on loopback, so one machine and the tests need no Kafka installation. Any Kafka client
// (kcat, librdkafka, Java) can connect to bootstrap_servers().
//
// Limits, from the librdkafka 2.0.2 source (rdkafka_mock.c), which is why production runs a
// real Kafka cluster:
//   - it lives in memory and is empty after every restart (the relay then republishes the
//     whole log), and its port changes with each start;
//   - it never compacts `keyledger.key-state`;
//   - each partition keeps only about 5 MiB or 100 000 message sets, evicting the oldest;
//   - a fetch that finds no data waits its whole fetch.wait.max.ms (a real broker answers as
//     soon as data arrives), so consumers should use a small fetch wait against it.

#include <memory>
#include <string>
#include <vector>

#include "domain/status.h"

struct rd_kafka_mock_cluster_s;
struct rd_kafka_s;

namespace keyledger::consumers {

// The topics of README, Operations: Kafka and the issue: every event, the latest state per key, and webhook
// delivery attempts.
inline constexpr const char* kEventsTopic = "keyledger.key-events";
inline constexpr const char* kStateTopic = "keyledger.key-state";
// Attempts made by `keyledger webhooks`, recorded by a server run with --webhooks external.
inline constexpr const char* kWebhookDeliveriesTopic = "keyledger.webhook-deliveries";
// Key usage counted by verifier replicas, summed by the primary (consumers/usage_relay.h).
inline constexpr const char* kUsageTopic = "keyledger.key-usage";

struct EmbeddedBrokerOptions {
  // Topics created at start-up. Default: keyledger.key-events, keyledger.key-state,
  // keyledger.webhook-deliveries and keyledger.key-usage.
  std::vector<std::string> topics = {kEventsTopic, kStateTopic, kWebhookDeliveriesTopic, kUsageTopic};
  // Partitions per topic. Default 3.
  int partitions = 3;
};

class EmbeddedBroker {
 public:
  // Starts one mock broker on 127.0.0.1 (an ephemeral port) and creates the topics.
  // Unavailable if librdkafka cannot create the cluster or a topic.
  static Result<std::unique_ptr<EmbeddedBroker>> start(const EmbeddedBrokerOptions& options = {});
  ~EmbeddedBroker();  // stops the broker; connected clients see it disappear
  EmbeddedBroker(const EmbeddedBroker&) = delete;
  EmbeddedBroker& operator=(const EmbeddedBroker&) = delete;

  // "127.0.0.1:PORT", for bootstrap.servers.
  const std::string& bootstrap_servers() const { return bootstrap_; }

  // Simulated outages (tests, drills): the broker drops its connections and refuses new ones
  // until brought up again. InvalidArgument/Unavailable if librdkafka refuses.
  Status set_down();
  Status set_up();

  // The mock cluster, for fault injection in tests (rd_kafka_mock_push_request_errors, …).
  rd_kafka_mock_cluster_s* cluster() const { return cluster_; }

 private:
  EmbeddedBroker() = default;

  rd_kafka_s* handle_ = nullptr;  // the dummy client handle that owns the mock cluster
  rd_kafka_mock_cluster_s* cluster_ = nullptr;
  std::string bootstrap_;
};

}  // namespace keyledger::consumers
