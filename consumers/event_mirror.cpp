#include "consumers/event_mirror.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace keyledger::consumers {

namespace {

constexpr int kPollTimeoutMs = 100;
constexpr int kMetadataTimeoutMs = 5000;
constexpr std::string_view kAgentStreamPrefix = "agent-";

}  // namespace

EventMirror::EventMirror(EventStore& mirror, EventMirrorOptions options)
    : store_(mirror), options_(std::move(options)) {}

EventMirror::~EventMirror() { stop(); }

Status EventMirror::start() {
  if (loop_.started()) {
    return Status::Conflict("feed_started", "the event mirror is already running");
  }
  if (options_.brokers.empty() || options_.topic.empty() || options_.batch_size == 0) {
    return Status::InvalidArgument("the event mirror needs Kafka brokers, a topic and a positive batch size");
  }
  auto consumer = make_kafka_consumer(options_.brokers, options_.fetch_wait_ms,
                                      {
                                          {"client.id", "keyledger-webhooks-mirror"},
                                          // Reads every partition itself (assign) and commits
                                          // nothing; assign() still wants a group.
                                          {"group.id", unique_group_id("keyledger-webhooks-mirror")},
                                          {"enable.auto.commit", "false"},
                                          {"enable.auto.offset.store", "false"},
                                          {"enable.partition.eof", "true"},
                                      },
                                      options_.consumer_config, "the mirror's consumer");
  if (!consumer.ok()) {
    return consumer.status();
  }
  return loop_.start(std::move(consumer).value(), [this] { run(); });
}

void EventMirror::stop() { loop_.stop(); }

Result<std::size_t> EventMirror::mirror(const std::vector<v1::Event>& events) {
  // Streams in order of first appearance, each with its new events in the order given.
  std::vector<std::pair<std::string, std::vector<v1::Event>>> streams;
  std::map<std::string, std::size_t, std::less<>> stream_index;
  std::set<std::string, std::less<>> batch_ids;
  for (const auto& e : events) {
    if (e.event_id().empty() || !e.stream().starts_with(kAgentStreamPrefix)) {
      continue;
    }
    if (batch_ids.contains(e.event_id())) {
      ++duplicates_;
      continue;
    }
    auto held = store_.read_event(e.event_id());
    if (held.ok()) {
      ++duplicates_;
      continue;
    }
    if (!held.status().IsNotFound()) {
      return held.status();
    }
    batch_ids.insert(e.event_id());
    auto [it, inserted] = stream_index.try_emplace(e.stream(), streams.size());
    if (inserted) {
      streams.emplace_back(e.stream(), std::vector<v1::Event>{});
    }
    streams[it->second].second.push_back(e);
  }
  std::size_t appended = 0;
  for (auto& [stream, fresh] : streams) {
    const std::size_t count = fresh.size();
    auto stored = store_.append(stream, kAnyVersion, fresh);
    if (stored.ok()) {
      appended += count;
      continue;
    }
    if (!stored.status().IsInvalidArgument()) {
      return stored.status();
    }
    // A duplicate id after all (a delivery recorder appended the same record meanwhile): one
    // by one, skipping what is held now.
    for (const auto& e : fresh) {
      auto one = store_.append(stream, kAnyVersion, {e});
      if (one.ok()) {
        ++appended;
      } else if (store_.read_event(e.event_id()).ok()) {
        ++duplicates_;
      } else if (one.status().IsInvalidArgument()) {
        ++rejected_;
        spdlog::warn("webhooks mirror: event {} refused: {}", e.event_id(), one.status().ToString());
      } else {
        return one.status();
      }
    }
  }
  mirrored_ += appended;
  return appended;
}

void EventMirror::poll_batch(std::vector<v1::Event>& batch,
                             std::map<std::int32_t, std::int64_t>& next_offsets) {
  batch.clear();
  next_offsets.clear();
  int timeout = kPollTimeoutMs;
  while (batch.size() < options_.batch_size) {
    KafkaMessage message = loop_.poll(timeout);
    timeout = 0;  // take what is already fetched, without waiting for more
    if (!message) {
      return;
    }
    if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      next_offsets[message->partition] = std::max(next_offsets[message->partition], message->offset);
      continue;
    }
    next_offsets[message->partition] = std::max(next_offsets[message->partition], message->offset + 1);
    v1::Event event;
    if (!event.ParseFromArray(message->payload, static_cast<int>(message->len))) {
      ++rejected_;
      continue;
    }
    batch.push_back(std::move(event));
  }
}

void EventMirror::run() {
  const auto found = wait_for_topic_partitions(loop_.consumer(), options_.topic, kMetadataTimeoutMs,
                                               options_.retry_backoff, loop_.stopping(), "webhooks mirror");
  if (!found) {
    return;
  }
  const std::vector<PartitionWatermarks>& partitions = *found;
  // Partitions not yet read up to their end offset at start-up.
  std::map<std::int32_t, std::int64_t> behind;
  KafkaPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(partitions.size())));
  for (const auto& p : partitions) {
    rd_kafka_topic_partition_list_add(list.get(), options_.topic.c_str(), p.id)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    if (p.high > p.low) {
      behind[p.id] = p.high;
    }
  }
  if (const rd_kafka_resp_err_t err = rd_kafka_assign(loop_.consumer(), list.get());
      err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::error("webhooks mirror: cannot assign the partitions of {}: {}", options_.topic,
                  kafka_error_text(err));
    return;
  }
  const auto check_caught_up = [&] {
    if (!caught_up_ && behind.empty()) {
      caught_up_ = true;
      spdlog::info("webhooks mirror: caught up with {} ({} events mirrored, {} already held)", options_.topic,
                   mirrored_.load(), duplicates_.load());
    }
  };
  check_caught_up();
  std::vector<v1::Event> batch;
  std::map<std::int32_t, std::int64_t> next_offsets;  // of this batch, per partition
  while (!loop_.stopping()) {
    poll_batch(batch, next_offsets);
    while (!batch.empty() && !loop_.stopping()) {
      auto appended = mirror(batch);
      if (appended.ok()) {
        break;
      }
      spdlog::warn("webhooks mirror: appending to the mirror: {}; retrying", appended.status().ToString());
      sleep_unless(loop_.stopping(), options_.retry_backoff);
    }
    if (loop_.stopping()) {
      return;
    }
    // Durable now: partitions read up to their start-up end offsets count as caught up.
    for (const auto& [partition, next] : next_offsets) {
      if (auto it = behind.find(partition); it != behind.end() && next >= it->second) {
        behind.erase(it);
      }
    }
    check_caught_up();
  }
}

}  // namespace keyledger::consumers
