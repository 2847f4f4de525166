#pragma once
// `keyledger webhooks` runs beside the server, which holds the RocksDB lock of the log of
// record. It keeps a local mirror instead: this feed reads `keyledger.key-events` (every
// partition, no consumer group) from the beginning and appends each agent event to a local
// EventStore under the same stream name, so the unchanged WebhookDispatcher can tail it.
//
// Idempotent by event id: an event whose id the mirror already holds is skipped (Kafka
// redelivers, the relay republishes after a restart, and the standalone process appends its
// own delivery records before they come back through the server). No Kafka offsets are kept:
// every start reads the topic from its beginning again and skips what is already mirrored,
// which stays correct when the topic is recreated (the embedded broker starts empty with each
// server start) at the price of re-reading the retained topic on start-up. The mirror's
// positions and stream versions are its own; within a stream it keeps the topic's order
// (one agent = one partition).
//
// The `tokens` stream is not mirrored: webhooks need agent streams only.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "consumers/consumer_loop.h"
#include "consumers/embedded_broker.h"
#include "consumers/kafka_client.h"
#include "domain/status.h"
#include "eventstore/event_store.h"

namespace keyledger::consumers {

struct EventMirrorOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Topic of every event. Default keyledger.key-events.
  std::string topic = kEventsTopic;
  // Most messages appended in one go (one fsync per stream in the batch). Default 512.
  std::size_t batch_size = 512;
  // fetch.wait.max.ms; small because the embedded broker waits it out even when data arrives.
  // Default 5.
  int fetch_wait_ms = 5;
  // Wait before retrying when the topic is missing, the broker unreachable or an append
  // failed. Default 200 ms.
  std::chrono::milliseconds retry_backoff{200};
  // Extra librdkafka consumer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> consumer_config;
};

class EventMirror {
 public:
  // `mirror` must outlive the feed; the feed and delivery recorders are its only writers.
  EventMirror(EventStore& mirror, EventMirrorOptions options);
  ~EventMirror();  // stop()
  EventMirror(const EventMirror&) = delete;
  EventMirror& operator=(const EventMirror&) = delete;

  // Creates the consumer and starts the thread. InvalidArgument for bad options or
  // properties, Unavailable if librdkafka cannot create the client; an unreachable broker is
  // not an error (the feed keeps trying and does not catch up). Conflict on a second call.
  Status start();
  // Stops the thread and closes the consumer. Idempotent.
  void stop();

  // True once every partition was mirrored up to its end offset seen at start-up.
  bool caught_up() const { return caught_up_; }
  // Events appended to the mirror, and events skipped because the mirror already held them.
  std::uint64_t events_mirrored() const { return mirrored_; }
  std::uint64_t duplicates_skipped() const { return duplicates_; }

  // Appends the agent events of `events` the mirror does not hold yet, one append per stream,
  // in the order given; returns how many were appended. IoError when the store failed (the
  // caller tries the same batch again). Used by the feed's thread; thread-safe.
  Result<std::size_t> mirror(const std::vector<v1::Event>& events);

 private:
  void run();
  // Takes up to batch_size events that are already fetched (waiting for the first one at most
  // a poll interval) and the offset after each partition's last one.
  void poll_batch(std::vector<v1::Event>& batch, std::map<std::int32_t, std::int64_t>& next_offsets);

  EventStore& store_;
  const EventMirrorOptions options_;
  std::atomic<bool> caught_up_{false};
  std::atomic<std::uint64_t> mirrored_{0};
  std::atomic<std::uint64_t> duplicates_{0};
  std::atomic<std::uint64_t> rejected_{0};
  ConsumerLoop loop_{"webhooks mirror"};  // last: stopped (its thread joined) before the members above go
};

}  // namespace keyledger::consumers
