#pragma once
// The outbox relay: publishes every acknowledged event of the log to Kafka (README, Operations: Kafka).
//
// - `keyledger.key-events`: one message per event, in position order; key = agent_id (the
//   `tokens` stream: "tokens"), value = the serialized v1::Event envelope, headers
//   `event-id`, `event-type`, `position`. The producer is idempotent (acks=all), so with one
//   key per agent every agent's events stay in order on their partition.
// - `keyledger.key-state` (compacted in production): after each event that changes a key, an
//   agent's settings or the service-token registry, the latest state of that subject as a
//   v1::StateSnapshot; key = key_id, agent_id or "tokens". A replica starts from it without
//   the whole history.
//
// Delivery is at least once: the published position (persisted in column family
// `kafka_relay` of the store's database) moves only over positions whose messages the
// broker confirmed, contiguously, so after a crash or a failed delivery publication resumes
// after it; duplicates carry the same event id and position. Kafka down or slow never blocks
// or fails a command: the relay runs on its own thread, reads the log, keeps at most
// `max_in_flight` events unconfirmed, and backs off after errors.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "consumers/embedded_broker.h"
#include "domain/status.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"

namespace keyledger::consumers {

// The column families to add to EventStoreOptions::extra_column_families.
std::vector<std::string> consumer_column_families();

struct PublisherOptions {
  // bootstrap.servers of the Kafka cluster ("host:port,…"). Required.
  std::string brokers;
  // Topic of every event. Default keyledger.key-events.
  std::string events_topic = kEventsTopic;
  // Compacted topic of the latest state per key/agent/token registry; "" publishes none.
  // Default keyledger.key-state.
  std::string state_topic = kStateTopic;
  // How long the producer waits to batch messages (linger.ms); small for low latency. Default 1.
  int linger_ms = 1;
  // Start from position 1 instead of after the persisted position (the embedded broker is
  // empty after a restart). Default false.
  bool republish_from_start = false;
  // Most events published but not yet confirmed by the broker. Default 10 000.
  std::size_t max_in_flight = 10'000;
  // Events read from the log at a time. Default 512.
  std::size_t read_batch = 512;
  // First wait after a failed delivery; doubles up to max_backoff. Defaults 100 ms and 5 s.
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5'000};
  // How long stop() waits for outstanding deliveries. Default 5 s.
  std::chrono::milliseconds flush_timeout{5'000};
  // Extra librdkafka producer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> producer_config;
};

class OutboxRelay {
 public:
  // `store` must have been opened with consumer_column_families() (and the projections'),
  // and `projector` started; both must outlive the relay. InvalidArgument for bad options,
  // IoError if the persisted position cannot be read, Unavailable if the producer cannot be
  // created (an unreachable broker is not an error: the relay keeps trying).
  static Result<std::unique_ptr<OutboxRelay>> create(EventStore& store, const Projector& projector,
                                                     PublisherOptions options);
  ~OutboxRelay();  // stop()
  OutboxRelay(const OutboxRelay&) = delete;
  OutboxRelay& operator=(const OutboxRelay&) = delete;

  // Starts the publishing thread and subscribes to the store: every committed group wakes it
  // (EventStore::subscribe). Call once.
  void start();
  // Wakes the thread, as a commit does. Never blocks.
  void notify();
  // Publishes what it can within flush_timeout, persists the published position, stops the
  // thread and the producer. Idempotent.
  void stop();

  // Last position up to which every event is confirmed published (persisted shortly after).
  std::uint64_t published_position() const;
  // Events acknowledged by the store but not yet confirmed published.
  std::uint64_t lag() const;
  // Messages confirmed by the broker since start (events and snapshots), and failed deliveries.
  std::uint64_t messages_delivered() const;
  std::uint64_t delivery_failures() const;

 private:
  struct Impl;
  explicit OutboxRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The key of an event on keyledger.key-events: its agent_id, "tokens" for the token stream.
std::string event_message_key(const v1::Event& event);

}  // namespace keyledger::consumers
