#pragma once
// What every librdkafka client of this layer shares: configuration from name/value pairs with
// every return code checked, librdkafka's log lines routed to spdlog, and owning handles.

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "domain/status.h"

namespace keyledger::consumers {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
  void operator()(rd_kafka_conf_t* conf) const { rd_kafka_conf_destroy(conf); }
  void operator()(rd_kafka_topic_partition_list_t* list) const {
    rd_kafka_topic_partition_list_destroy(list);
  }
  void operator()(rd_kafka_message_t* message) const { rd_kafka_message_destroy(message); }
  void operator()(rd_kafka_headers_t* headers) const { rd_kafka_headers_destroy(headers); }
  void operator()(rd_kafka_queue_t* queue) const { rd_kafka_queue_destroy(queue); }
  void operator()(const rd_kafka_metadata_t* metadata) const { rd_kafka_metadata_destroy(metadata); }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaDeleter>;
using KafkaConf = std::unique_ptr<rd_kafka_conf_t, KafkaDeleter>;
using KafkaPartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t, KafkaDeleter>;
using KafkaMessage = std::unique_ptr<rd_kafka_message_t, KafkaDeleter>;
using KafkaMetadata = std::unique_ptr<const rd_kafka_metadata_t, KafkaDeleter>;

// A configuration with every one of `properties` set and librdkafka's log lines going to
// spdlog. InvalidArgument naming the property librdkafka refused.
Result<KafkaConf> make_kafka_conf(const std::map<std::string, std::string>& properties);

// A client of `type` from `conf` (consumed on success). Unavailable with librdkafka's reason.
Result<KafkaHandle> make_kafka_client(rd_kafka_type_t type, KafkaConf conf);

// The configuration every producer here shares (idempotent, acks from all replicas, the Java
// client's partitioner so that producers keyed by agent_id agree, no Nagle), then `settings`
// (client id, linger, timeouts), then `overrides` (from the caller's options) on top.
Result<KafkaConf> make_kafka_producer_conf(const std::string& brokers,
                                           const std::map<std::string, std::string>& settings,
                                           const std::map<std::string, std::string>& overrides);

// "<prefix>-<pid>-<random>": a consumer group of its own, for a client that assigns partitions
// itself and commits nothing (librdkafka still wants a group id for assign()).
std::string unique_group_id(const std::string& prefix);

// A consumer of `brokers` with the settings every consumer here shares (fetch wait, back-offs,
// no Nagle, earliest offsets when none is committed), then `settings` (client id, group,
// offset handling), then `overrides` (from the caller's options) on top, its main queue
// forwarded to the consumer queue. `what` names it in errors ("the replica consumer").
Result<KafkaHandle> make_kafka_consumer(const std::string& brokers, int fetch_wait_ms,
                                        const std::map<std::string, std::string>& settings,
                                        const std::map<std::string, std::string>& overrides,
                                        const std::string& what);

// Closes `consumer` (committing stored offsets, if it stores any) and releases it; a failure
// is logged under `what`. Nothing happens for an empty handle.
void close_kafka_consumer(KafkaHandle& consumer, const std::string& what);

// One partition of a topic and its watermarks: the first offset kept and the next one written.
struct PartitionWatermarks {
  std::int32_t id = 0;
  std::int64_t low = 0;
  std::int64_t high = 0;
};

// The partitions of `topic`, sorted by id, with their watermarks. Unavailable naming the
// problem (broker unreachable, no such topic, no partitions yet) so the caller can retry.
Result<std::vector<PartitionWatermarks>> topic_partitions(rd_kafka_t* rk, const std::string& topic,
                                                          int timeout_ms);

// topic_partitions, asked again every `backoff` until it answers; each new problem is logged
// once as "<what>: waiting for topic <topic> (…)". nullopt once `stopping` is set.
std::optional<std::vector<PartitionWatermarks>> wait_for_topic_partitions(
    rd_kafka_t* rk, const std::string& topic, int timeout_ms, std::chrono::milliseconds backoff,
    const std::atomic<bool>& stopping, const std::string& what);

// Assigns every one of `partitions` of `topic` to `consumer`, each from its group's committed
// offset (auto.offset.reset without one). False, logged under `what`, when assign fails.
bool assign_from_committed(rd_kafka_t* consumer, const std::string& topic,
                           const std::vector<PartitionWatermarks>& partitions, const std::string& what);

// Stores the offset after `message` for the consumer's next commit (enable.auto.offset.store
// off: a record counts as read once its consumer says it is done with it). A failure is
// logged under `what`.
void store_offset_after(rd_kafka_t* consumer, const std::string& topic, const rd_kafka_message_t& message,
                        const std::string& what);

// Sleeps `d` in short steps; false (at once) when `stopping` is or becomes set.
bool sleep_unless(const std::atomic<bool>& stopping, std::chrono::milliseconds d);

// "Broker: Leader not available (LEADER_NOT_AVAILABLE)" style text for logs.
std::string kafka_error_text(rd_kafka_resp_err_t err);

}  // namespace keyledger::consumers
