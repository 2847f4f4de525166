#include "consumers/delivery_record_feed.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "eventstore/command_service.h"

namespace keyledger::consumers {

namespace {

constexpr int kPollTimeoutMs = 100;
constexpr int kMetadataTimeoutMs = 5000;

}  // namespace

DeliveryRecordFeed::DeliveryRecordFeed(CommandService& commands, const EventStore& store,
                                       DeliveryRecordFeedOptions options)
    : commands_(commands), store_(store), options_(std::move(options)) {}

DeliveryRecordFeed::~DeliveryRecordFeed() { stop(); }

Status DeliveryRecordFeed::start() {
  if (loop_.started()) {
    return Status::Conflict("feed_started", "the delivery record feed is already running");
  }
  if (options_.brokers.empty() || options_.topic.empty() || options_.group.empty()) {
    return Status::InvalidArgument("the delivery record feed needs Kafka brokers, a topic and a group");
  }
  auto consumer = make_kafka_consumer(options_.brokers, options_.fetch_wait_ms,
                                      {
                                          {"client.id", "keyledger-delivery-records"},
                                          {"group.id", options_.group},
                                          // At least once: an offset is stored only after its
                                          // record is durable in the log, and only stored offsets
                                          // are committed (every second, and when it closes).
                                          {"enable.auto.commit", "true"},
                                          {"enable.auto.offset.store", "false"},
                                          {"auto.commit.interval.ms", "1000"},
                                      },
                                      options_.consumer_config, "the delivery record consumer");
  if (!consumer.ok()) {
    return consumer.status();
  }
  return loop_.start(std::move(consumer).value(), [this] { run(); });
}

void DeliveryRecordFeed::stop() { loop_.stop(); }

Status DeliveryRecordFeed::record(const v1::Event& envelope) {
  if (envelope.payload_case() != v1::Event::kWebhookDeliveryRecorded || envelope.event_id().empty() ||
      envelope.webhook_delivery_recorded().agent_id().empty()) {
    return Status::InvalidArgument("not a webhook delivery record of an agent");
  }
  auto held = store_.read_event(envelope.event_id());
  if (held.ok()) {
    ++duplicates_;
    return Status::Ok();
  }
  if (!held.status().IsNotFound()) {
    return held.status();
  }
  const std::string& agent_id = envelope.webhook_delivery_recorded().agent_id();
  const std::string actor = envelope.actor().empty() ? std::string(kWebhooksActor) : envelope.actor();
  // As carried: its event id (a repeat is detected by it), occurred_at and actor.
  const RecordWebhookDelivery command{.record = envelope.webhook_delivery_recorded(),
                                      .event_id = envelope.event_id(),
                                      .occurred_at = from_timestamp(envelope.occurred_at())};
  auto decision = commands_.on_agent(agent_id, actor, [&](const AgentState& state, CommandContext& ctx) {
    return record_webhook_delivery(state, command, ctx);
  });
  if (decision.ok()) {
    ++recorded_;
    return Status::Ok();
  }
  if (store_.read_event(envelope.event_id()).ok()) {
    ++duplicates_;  // recorded meanwhile: the store refused the duplicate id
    return Status::Ok();
  }
  return decision.status();
}

void DeliveryRecordFeed::run() {
  const auto found = wait_for_topic_partitions(loop_.consumer(), options_.topic, kMetadataTimeoutMs,
                                               options_.retry_backoff, loop_.stopping(), "delivery records");
  if (!found) {
    return;
  }
  if (!assign_from_committed(loop_.consumer(), options_.topic, *found, "delivery records")) {
    return;
  }
  spdlog::info("delivery records: recording attempts from {}", options_.topic);
  while (!loop_.stopping()) {
    KafkaMessage message = loop_.poll(kPollTimeoutMs);
    if (!message || message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      continue;
    }
    v1::Event envelope;
    if (!envelope.ParseFromArray(message->payload, static_cast<int>(message->len))) {
      ++rejected_;
      spdlog::warn("delivery records: unreadable message at {} [{}] offset {}; skipped", options_.topic,
                   message->partition, message->offset);
    } else {
      while (true) {
        const Status s = record(envelope);
        if (s.ok()) {
          break;
        }
        if (s.IsInvalidArgument() || s.IsNotFound()) {
          ++rejected_;
          spdlog::warn("delivery records: record {} skipped: {}", envelope.event_id(), s.ToString());
          break;
        }
        spdlog::warn("delivery records: cannot record {}: {}; retrying", envelope.event_id(), s.ToString());
        if (!sleep_unless(loop_.stopping(), options_.retry_backoff)) {
          return;  // its offset is not stored: read again after a restart
        }
      }
    }
    store_offset_after(loop_.consumer(), options_.topic, *message, "delivery records");
  }
}

}  // namespace keyledger::consumers
