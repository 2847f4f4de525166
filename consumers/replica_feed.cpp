#include "consumers/replica_feed.h"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace keyledger::consumers {

namespace {

constexpr int kPollTimeoutMs = 100;
constexpr int kMetadataTimeoutMs = 5000;

}  // namespace

ReplicaFeed::ReplicaFeed(ActiveKeyTable& keys, ServiceTokenTable& tokens, ReplicaOptions options)
    : keys_(keys), tokens_(tokens), options_(std::move(options)) {}

ReplicaFeed::~ReplicaFeed() { stop(); }

Status ReplicaFeed::start() {
  if (loop_.started()) {
    return Status::Conflict("feed_started", "the replica feed is already running");
  }
  if (options_.brokers.empty() || options_.events_topic.empty()) {
    return Status::InvalidArgument("the replica needs Kafka brokers and an events topic");
  }
  auto consumer = make_kafka_consumer(options_.brokers, options_.fetch_wait_ms,
                                      {
                                          {"client.id", "keyledger-replica"},
                                          // Every replica reads every partition itself (assign,
                                          // never subscribe) and commits nothing; librdkafka
                                          // still wants a group id for assign(), so each gets its own.
                                          {"group.id", unique_group_id("keyledger-replica")},
                                          {"enable.auto.commit", "false"},
                                          {"enable.auto.offset.store", "false"},
                                          {"enable.partition.eof", "true"},
                                      },
                                      options_.consumer_config, "the replica consumer");
  if (!consumer.ok()) {
    return consumer.status();
  }
  return loop_.start(std::move(consumer).value(), [this] { run(); });
}

void ReplicaFeed::stop() { loop_.stop(); }

void ReplicaFeed::apply(const v1::Event& event) {
  switch (event.payload_case()) {
    case v1::Event::kAgentRegistered:
    case v1::Event::kRateLimitTierChanged: {
      // Settings are replaced, not folded monotonically: only a newer event may change them.
      std::lock_guard lock(agent_settings_mutex_);
      std::uint64_t& applied = agent_settings_position_[event_agent_id(event)];
      if (event.position() <= applied) {
        break;
      }
      applied = event.position();
      keys_.apply(event);
      break;
    }
    case v1::Event::kServiceTokenCreated:
    case v1::Event::kServiceTokenRevoked:
      tokens_.apply(event);
      break;
    default:
      keys_.apply(event);
      break;
  }
  std::uint64_t seen = last_position_.load();
  while (event.position() > seen && !last_position_.compare_exchange_weak(seen, event.position())) {
  }
}

bool ReplicaFeed::wait_for_partitions(const std::string& topic, std::vector<Partition>& out) {
  const auto found = wait_for_topic_partitions(loop_.consumer(), topic, kMetadataTimeoutMs,
                                               options_.retry_backoff, loop_.stopping(), "replica");
  if (!found) {
    return false;
  }
  out.clear();
  for (const auto& w : *found) {
    Partition p;
    p.id = w.id;
    p.low = w.low;
    p.end = w.high;
    out.push_back(p);
  }
  return true;
}

bool ReplicaFeed::assign(const std::string& topic, std::vector<Partition>& partitions, bool from_beginning) {
  KafkaPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(partitions.size())));
  for (auto& p : partitions) {
    rd_kafka_topic_partition_t* tp = rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p.id);
    tp->offset = from_beginning ? RD_KAFKA_OFFSET_BEGINNING : p.end;
    p.caught_up = !from_beginning || p.end <= p.low;
  }
  const rd_kafka_resp_err_t err = rd_kafka_assign(loop_.consumer(), list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::error("replica: cannot assign the partitions of {}: {}", topic, kafka_error_text(err));
    return false;
  }
  return true;
}

void ReplicaFeed::handle(const rd_kafka_message_t* message, bool is_state) {
  const void* data = message->payload;
  const int size = static_cast<int>(message->len);
  if (is_state) {
    v1::StateSnapshot snapshot;
    if (!snapshot.ParseFromArray(data, size)) {
      ++messages_rejected_;
      return;
    }
    for (const auto& event : snapshot.events()) {
      apply(event);
    }
  } else {
    v1::Event event;
    if (!event.ParseFromArray(data, size)) {
      ++messages_rejected_;
      return;
    }
    apply(event);
  }
  ++messages_applied_;
}

bool ReplicaFeed::consume_until_caught_up(std::vector<Partition>& partitions, bool is_state) {
  auto all_caught_up = [&] {
    return std::all_of(partitions.begin(), partitions.end(), [](const Partition& p) { return p.caught_up; });
  };
  auto find = [&](std::int32_t id) -> Partition* {
    for (auto& p : partitions) {
      if (p.id == id) {
        return &p;
      }
    }
    return nullptr;
  };
  while (!loop_.stopping() && !all_caught_up()) {
    KafkaMessage message = loop_.poll(kPollTimeoutMs);
    if (!message) {
      continue;
    }
    Partition* p = find(message->partition);
    if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (p != nullptr) {
        p->caught_up = true;
      }
      continue;
    }
    handle(message.get(), is_state);
    if (p != nullptr && message->offset + 1 >= p->end) {
      p->caught_up = true;
    }
  }
  return !loop_.stopping();
}

void ReplicaFeed::run() {
  std::vector<Partition> state_partitions;
  std::vector<Partition> event_partitions;
  // The events' end offsets are taken before the state is read, so that the state covers
  // everything before them (what replay_event_history = false relies on).
  if (!wait_for_partitions(options_.events_topic, event_partitions)) {
    return;
  }
  if (!options_.state_topic.empty()) {
    if (!wait_for_partitions(options_.state_topic, state_partitions) ||
        !assign(options_.state_topic, state_partitions, true) ||
        !consume_until_caught_up(state_partitions, true)) {
      return;
    }
    spdlog::info("replica: read {} state records of {}", messages_applied_.load(), options_.state_topic);
  }
  if (!assign(options_.events_topic, event_partitions, options_.replay_event_history) ||
      !consume_until_caught_up(event_partitions, false)) {
    return;
  }
  ready_ = true;
  spdlog::info("replica: caught up with {} at position {}; ready", options_.events_topic,
               last_position_.load());
  while (!loop_.stopping()) {
    KafkaMessage message = loop_.poll(kPollTimeoutMs);
    if (!message || message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      continue;
    }
    handle(message.get(), false);
  }
}

}  // namespace keyledger::consumers
