#pragma once
// What keeps a verifier replica's tables current (`keyledger serve --replica`): a Kafka
// consumer (no consumer group: it reads every partition itself) that
//   1. reads `keyledger.key-state` from the beginning to the end offsets seen at start-up
//      (the latest state of every key, agent and of the token registry), then
//   2. reads `keyledger.key-events` — from the beginning, or only from the end offsets seen
//      at start-up — and keeps following it.
// It is ready once both reached the end offsets seen at start-up.
//
// Applying is idempotent and tolerates events seen again or out of order (at-least-once
// delivery, snapshots newer than the events that follow): a key never becomes active again
// once revoked, expired or compromised (ActiveKeyTable), token events at or below the
// registry's version are ignored (ServiceTokenTable), and an agent's settings change only for
// an event at a higher position than the last one applied.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "consumers/consumer_loop.h"
#include "consumers/embedded_broker.h"
#include "consumers/kafka_client.h"
#include "domain/status.h"
#include "projections/active_key_table.h"
#include "projections/service_token_table.h"

namespace keyledger::consumers {

struct ReplicaOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Topic of every event. Default keyledger.key-events.
  std::string events_topic = kEventsTopic;
  // Compacted state topic read first; "" starts from the events alone. Default keyledger.key-state.
  std::string state_topic = kStateTopic;
  // Read the events topic from its beginning (true) or only what follows the end offsets at
  // start-up, trusting the state topic for the past (false). Default true.
  bool replay_event_history = true;
  // fetch.wait.max.ms: how long the broker may hold a fetch that finds nothing. Small, since
  // the embedded broker always waits it out even when data arrives. Default 5.
  int fetch_wait_ms = 5;
  // Wait before retrying when the topics are missing or the broker unreachable. Default 200 ms.
  std::chrono::milliseconds retry_backoff{200};
  // Extra librdkafka consumer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> consumer_config;
};

class ReplicaFeed {
 public:
  // The tables must outlive the feed; only the feed writes them (readers may run concurrently).
  ReplicaFeed(ActiveKeyTable& keys, ServiceTokenTable& tokens, ReplicaOptions options);
  ~ReplicaFeed();  // stop()
  ReplicaFeed(const ReplicaFeed&) = delete;
  ReplicaFeed& operator=(const ReplicaFeed&) = delete;

  // Creates the consumer and starts the thread. InvalidArgument for bad options or properties,
  // Unavailable if librdkafka cannot create the client. An unreachable broker is not an error:
  // the feed keeps trying and stays not ready.
  Status start();
  // Stops the thread and closes the consumer. Idempotent.
  void stop();

  // True once the state and events topics were read up to their end offsets at start-up.
  bool ready() const { return ready_; }
  // Highest event position applied so far (0 before the first).
  std::uint64_t last_position() const { return last_position_; }
  // Kafka messages applied (events and snapshots), and messages that could not be parsed.
  std::uint64_t messages_applied() const { return messages_applied_; }
  std::uint64_t messages_rejected() const { return messages_rejected_; }

  // Applies one event as the feed does (the feed's thread; tests). Thread-safe.
  void apply(const v1::Event& event);

 private:
  struct Partition {
    std::int32_t id = 0;
    std::int64_t low = 0;
    std::int64_t end = 0;  // high watermark at start-up
    bool caught_up = false;
  };
  void run();
  bool wait_for_partitions(const std::string& topic, std::vector<Partition>& out);
  bool assign(const std::string& topic, std::vector<Partition>& partitions, bool from_beginning);
  bool consume_until_caught_up(std::vector<Partition>& partitions, bool is_state);
  void handle(const rd_kafka_message_t* message, bool is_state);

  ActiveKeyTable& keys_;
  ServiceTokenTable& tokens_;
  const ReplicaOptions options_;
  std::atomic<bool> ready_{false};
  std::atomic<std::uint64_t> last_position_{0};
  std::atomic<std::uint64_t> messages_applied_{0};
  std::atomic<std::uint64_t> messages_rejected_{0};
  // Position of the last agent-settings event applied, per agent.
  std::mutex agent_settings_mutex_;
  std::unordered_map<std::string, std::uint64_t> agent_settings_position_;
  ConsumerLoop loop_{"replica"};  // last: stopped (its thread joined) before the members above go
};

}  // namespace keyledger::consumers
