#include "consumers/revocation_feed.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "domain/agent.h"
#include "domain/events.h"

namespace keyledger::consumers {

namespace {
constexpr int kPollTimeoutMs = 100;
}  // namespace

std::optional<std::string> revocation_line(const v1::Event& event) {
  std::string_view reason;
  switch (event.payload_case()) {
    case v1::Event::kKeyRevoked:
      reason = revocation_reason_name(event.key_revoked().reason());
      break;
    case v1::Event::kKeyCompromised:
      reason = "compromised";
      break;
    case v1::Event::kKeyExpired:
      reason = "expired";
      break;
    default:
      return std::nullopt;
  }
  const nlohmann::json line = {
      {"type", std::string(event_type_name(event.payload_case()))},
      {"event_id", event.event_id()},
      {"key_id", event_key_id(event)},
      {"agent_id", event_agent_id(event)},
      {"reason", std::string(reason.empty() ? "manual" : reason)},
      {"position", event.position()},
      {"occurred_at", format_rfc3339(from_timestamp(event.occurred_at()))},
  };
  return line.dump();
}

struct RevocationFeed::Impl {
  RevocationFeedOptions options;
  KafkaHandle consumer;
  std::map<std::int32_t, std::int64_t> pending;  // partition -> next offset, written not committed
  std::size_t pending_count = 0;

  // Commits the offsets of everything written so far. Failures are logged and retried with
  // the next commit: the lines were written, so at worst they are written again.
  void commit() {
    if (pending.empty()) {
      return;
    }
    KafkaPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(pending.size())));
    for (const auto& [partition, offset] : pending) {
      rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(), partition)->offset = offset;
    }
    const rd_kafka_resp_err_t err = rd_kafka_commit(consumer.get(), list.get(), 0 /* synchronous */);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::warn("revocations: committing offsets failed: {}", kafka_error_text(err));
      return;
    }
    pending.clear();
    pending_count = 0;
  }

  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      result = rd_kafka_assign(rk, partitions);
    } else {
      // Hand the partitions over with everything written so far committed.
      self->commit();
      self->pending.clear();
      self->pending_count = 0;
      result = rd_kafka_assign(rk, nullptr);
    }
    if (result != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::error("revocations: rebalance: {}", kafka_error_text(result));
    }
  }
};

RevocationFeed::RevocationFeed(RevocationFeedOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}

RevocationFeed::~RevocationFeed() {
  if (!impl_->consumer) {
    return;
  }
  impl_->commit();
  const rd_kafka_resp_err_t err = rd_kafka_consumer_close(impl_->consumer.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::warn("revocations: leaving the group: {}", kafka_error_text(err));
  }
}

Result<std::unique_ptr<RevocationFeed>> RevocationFeed::create(RevocationFeedOptions options) {
  if (options.brokers.empty() || options.group.empty() || options.topic.empty()) {
    return Status::InvalidArgument("brokers, group and topic are required");
  }
  if (options.start_from != "earliest" && options.start_from != "latest") {
    return Status::InvalidArgument("start_from must be earliest or latest");
  }
  std::unique_ptr<RevocationFeed> feed(new RevocationFeed(std::move(options)));
  Impl& impl = *feed->impl_;
  std::map<std::string, std::string> config = {
      {"bootstrap.servers", impl.options.brokers},
      {"group.id", impl.options.group},
      {"client.id", "keyledger-revocations"},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", impl.options.start_from},
      {"fetch.wait.max.ms", "100"},
      {"reconnect.backoff.max.ms", "1000"},
      // A restarted member rejoins within this (the embedded broker waits for it to pass
      // before rebalancing a group whose members left).
      {"session.timeout.ms", "10000"},
  };
  for (const auto& [name, value] : impl.options.consumer_config) {
    config[name] = value;
  }
  auto conf = make_kafka_conf(config);
  if (!conf.ok()) {
    return conf.status();
  }
  rd_kafka_conf_set_opaque(conf->get(), &impl);
  rd_kafka_conf_set_rebalance_cb(conf->get(), &Impl::on_rebalance);
  auto client = make_kafka_client(RD_KAFKA_CONSUMER, std::move(conf).value());
  if (!client.ok()) {
    return client.status();
  }
  impl.consumer = std::move(client).value();
  rd_kafka_resp_err_t err = rd_kafka_poll_set_consumer(impl.consumer.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("cannot set up the consumer: " + kafka_error_text(err));
  }
  KafkaPartitionList topics(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(topics.get(), impl.options.topic.c_str(), RD_KAFKA_PARTITION_UA);
  err = rd_kafka_subscribe(impl.consumer.get(), topics.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("cannot subscribe to " + impl.options.topic + ": " + kafka_error_text(err));
  }
  return feed;
}

Result<std::size_t> RevocationFeed::run(std::ostream& out, const std::atomic<bool>& stop,
                                        std::size_t max_lines) {
  Impl& impl = *impl_;
  std::size_t lines = 0;
  rd_kafka_resp_err_t last_error = RD_KAFKA_RESP_ERR_NO_ERROR;
  while (!stop && (max_lines == 0 || lines < max_lines)) {
    KafkaMessage message(rd_kafka_consumer_poll(impl.consumer.get(), kPollTimeoutMs));
    if (!message) {
      impl.commit();  // idle: commit what printed nothing
      continue;
    }
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (message->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && message->err != last_error) {
        spdlog::warn("revocations: {}", kafka_error_text(message->err));
        last_error = message->err;
      }
      continue;
    }
    last_error = RD_KAFKA_RESP_ERR_NO_ERROR;
    v1::Event event;
    std::optional<std::string> line;
    if (!event.ParseFromArray(message->payload, static_cast<int>(message->len))) {
      spdlog::warn("revocations: skipping an unreadable message at {} [{}] offset {}", impl.options.topic,
                   message->partition, message->offset);
    } else {
      line = revocation_line(event);
    }
    if (line) {
      out << *line << '\n';
      out.flush();
      if (!out) {
        return Status::IoError("cannot write the revocation line");
      }
      ++lines;
    }
    impl.pending[message->partition] = message->offset + 1;
    ++impl.pending_count;
    if (line || impl.pending_count >= impl.options.commit_every) {
      impl.commit();
    }
  }
  impl.commit();
  return lines;
}

}  // namespace keyledger::consumers
