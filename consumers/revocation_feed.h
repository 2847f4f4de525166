#pragma once
// `keyledger consume revocations`: a consumer-group member of `keyledger.key-events` that
// writes one JSON line per key.revoked, key.compromised and key.expired event
//   {"type","event_id","key_id","agent_id","reason","position","occurred_at"}
// and commits a message's offset only after its line was written and flushed, so a restarted
// member resumes where it stopped (at least once: a crash between writing and committing
// repeats a line; `event_id` and `position` identify it).

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "consumers/embedded_broker.h"
#include "consumers/kafka_client.h"
#include "domain/events.h"
#include "domain/status.h"

namespace keyledger::consumers {

struct RevocationFeedOptions {
  // bootstrap.servers of the Kafka cluster. Required.
  std::string brokers;
  // Consumer group; members of one group share the partitions. Required.
  std::string group;
  // Topic of every event. Default keyledger.key-events.
  std::string topic = kEventsTopic;
  // Where a group with no committed offset starts: "earliest" or "latest". Default earliest.
  std::string start_from = "earliest";
  // Offsets of messages that print nothing are committed after this many. Default 500.
  std::size_t commit_every = 500;
  // Extra librdkafka consumer properties (security settings, tests); they override ours.
  std::map<std::string, std::string> consumer_config;
};

// The JSON line (without newline) for a revocation event; nullopt for any other event.
std::optional<std::string> revocation_line(const v1::Event& event);

class RevocationFeed {
 public:
  // Creates the consumer and subscribes. InvalidArgument for bad options or properties,
  // Unavailable if librdkafka refuses.
  static Result<std::unique_ptr<RevocationFeed>> create(RevocationFeedOptions options);
  ~RevocationFeed();  // commits what was written and leaves the group
  RevocationFeed(const RevocationFeed&) = delete;
  RevocationFeed& operator=(const RevocationFeed&) = delete;

  // Consumes until `stop` becomes true or `max_lines` lines were written (0: no limit); then
  // commits. Returns the number of lines written, or IoError if `out` failed.
  Result<std::size_t> run(std::ostream& out, const std::atomic<bool>& stop, std::size_t max_lines = 0);

 private:
  explicit RevocationFeed(RevocationFeedOptions options);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyledger::consumers
