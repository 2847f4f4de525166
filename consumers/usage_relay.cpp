#include "consumers/usage_relay.h"

#include <spdlog/spdlog.h>

#include "domain/thread_name.h"

namespace keyledger::consumers {

namespace {

constexpr int kPollTimeoutMs = 100;
constexpr int kMetadataTimeoutMs = 5000;
constexpr int kStopFlushMs = 5000;
// Cells per message: a report stays far below Kafka's default 1 MB message limit.
constexpr std::size_t kCellsPerReport = 4096;

v1::UsageCell to_proto(const UsageCell& cell) {
  v1::UsageCell proto;
  proto.set_key_id(std::string(cell.key_id.view()));
  proto.set_minute_start(cell.minute);
  *proto.mutable_counts() = keyledger::to_proto(cell.counts);
  return proto;
}

}  // namespace

// --- UsagePublisher

UsagePublisher::UsagePublisher(UsageRecorder& recorder, ActiveKeyTable* table, UsagePublisherOptions options)
    : recorder_(recorder), table_(table), options_(std::move(options)) {}

UsagePublisher::~UsagePublisher() { stop(); }

Status UsagePublisher::start() {
  if (options_.brokers.empty() || options_.topic.empty() || options_.replica_id.empty()) {
    return Status::InvalidArgument("the usage publisher needs Kafka brokers, a topic and a replica id");
  }
  if (options_.interval.count() <= 0) {
    return Status::InvalidArgument("the usage publish interval must be positive");
  }
  auto conf = make_kafka_producer_conf(
      options_.brokers, {{"client.id", "keyledger-usage"}, {"linger.ms", "5"}}, options_.producer_config);
  if (!conf.ok()) {
    return conf.status();
  }
  rd_kafka_conf_set_dr_msg_cb(conf->get(), &UsagePublisher::on_delivery);
  rd_kafka_conf_set_opaque(conf->get(), this);
  auto client = make_kafka_client(RD_KAFKA_PRODUCER, std::move(conf).value());
  if (!client.ok()) {
    return client.status();
  }
  producer_ = std::move(client).value();
  thread_ = std::thread([this] {
    name_this_thread("kl-usage-relay");
    run();
  });
  return Status::Ok();
}

void UsagePublisher::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
  if (producer_) {
    publish();  // what was counted since the last interval
    if (rd_kafka_flush(producer_.get(), kStopFlushMs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::warn("usage: {} reports unacknowledged at shutdown", rd_kafka_outq_len(producer_.get()));
    }
  }
}

void UsagePublisher::run() {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, options_.interval, [&] { return stopping_; })) {
    lock.unlock();
    publish();
    rd_kafka_poll(producer_.get(), 0);  // delivery reports
    lock.lock();
  }
}

void UsagePublisher::publish() {
  if (table_ != nullptr) {
    drain_counts(*table_, recorder_);
  }
  std::vector<UsageCell> cells = recorder_.take();
  for (std::size_t first = 0; first < cells.size(); first += kCellsPerReport) {
    const std::size_t last = std::min(cells.size(), first + kCellsPerReport);
    v1::UsageReport report;
    report.set_replica(options_.replica_id);
    for (std::size_t i = first; i < last; ++i) {
      *report.add_cells() = to_proto(cells[i]);
    }
    const std::string value = report.SerializeAsString();
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        producer_.get(), RD_KAFKA_V_TOPIC(options_.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(options_.replica_id.data(), options_.replica_id.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(last - first))),
        RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Not queued (a full queue, most likely): counted again, sent with the next report.
      spdlog::warn("usage: cannot publish {} cells to {}: {}; keeping them", last - first, options_.topic,
                   kafka_error_text(err));
      for (std::size_t i = first; i < cells.size(); ++i) {
        recorder_.merge(cells[i]);
      }
      return;
    }
  }
}

void UsagePublisher::on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
  auto* self = static_cast<UsagePublisher*>(opaque);
  const auto cells = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(message->_private));
  if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    self->published_ += cells;
  } else {
    self->lost_ += cells;
    spdlog::warn("usage: a report of {} cells was not acknowledged: {}", cells,
                 kafka_error_text(message->err));
  }
}

// --- UsageFeed

UsageFeed::UsageFeed(UsageRecorder& recorder, UsageFeedOptions options)
    : recorder_(recorder), options_(std::move(options)) {}

UsageFeed::~UsageFeed() { stop(); }

Status UsageFeed::start() {
  if (options_.brokers.empty() || options_.topic.empty() || options_.group.empty()) {
    return Status::InvalidArgument("the usage feed needs Kafka brokers, a topic and a group");
  }
  auto consumer = make_kafka_consumer(options_.brokers, options_.fetch_wait_ms,
                                      {
                                          {"client.id", "keyledger-usage-feed"},
                                          {"group.id", options_.group},
                                          // Offsets are stored once a report is merged.
                                          {"enable.auto.commit", "true"},
                                          {"enable.auto.offset.store", "false"},
                                          {"auto.commit.interval.ms", "1000"},
                                      },
                                      options_.consumer_config, "the usage consumer");
  if (!consumer.ok()) {
    return consumer.status();
  }
  return loop_.start(std::move(consumer).value(), [this] { run(); });
}

void UsageFeed::stop() { loop_.stop(); }

void UsageFeed::run() {
  const auto found = wait_for_topic_partitions(loop_.consumer(), options_.topic, kMetadataTimeoutMs,
                                               options_.retry_backoff, loop_.stopping(), "usage");
  if (!found) {
    return;
  }
  if (!assign_from_committed(loop_.consumer(), options_.topic, *found, "usage")) {
    return;
  }
  spdlog::info("usage: summing replicas' usage from {}", options_.topic);
  while (!loop_.stopping()) {
    KafkaMessage message = loop_.poll(kPollTimeoutMs);
    if (!message || message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      continue;
    }
    v1::UsageReport report;
    if (!report.ParseFromArray(message->payload, static_cast<int>(message->len))) {
      ++rejected_;
      spdlog::warn("usage: unreadable report at {} [{}] offset {}; skipped", options_.topic,
                   message->partition, message->offset);
    } else {
      for (const v1::UsageCell& proto : report.cells()) {
        if (proto.key_id().empty() || proto.key_id().size() > InlineId::kCapacity) {
          continue;  // names no key this node could hold
        }
        recorder_.merge({InlineId(proto.key_id()), proto.minute_start(), from_proto(proto.counts())});
      }
      ++merged_;
    }
    store_offset_after(loop_.consumer(), options_.topic, *message, "usage");
  }
}

}  // namespace keyledger::consumers
