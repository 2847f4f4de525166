#include "consumers/kafka_client.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <random>
#include <thread>

namespace keyledger::consumers {

namespace {

// librdkafka's syslog levels mapped onto spdlog's; its lines never carry message payloads.
void log_to_spdlog(const rd_kafka_t* rk, int level, const char* facility, const char* text) {
  spdlog::level::level_enum spd = spdlog::level::debug;
  if (level <= 3) {
    spd = spdlog::level::err;
  } else if (level == 4) {
    spd = spdlog::level::warn;
  } else if (level <= 6) {
    spd = spdlog::level::info;
  }
  spdlog::log(spd, "kafka {} {}: {}", rk != nullptr ? rd_kafka_name(rk) : "-", facility, text);
}

// `base`, then `settings`, then `overrides` on top: later layers win.
std::map<std::string, std::string> layered(std::map<std::string, std::string> base,
                                           const std::map<std::string, std::string>& settings,
                                           const std::map<std::string, std::string>& overrides) {
  for (const auto* layer : {&settings, &overrides}) {
    for (const auto& [name, value] : *layer) {
      base[name] = value;
    }
  }
  return base;
}

}  // namespace

Result<KafkaConf> make_kafka_conf(const std::map<std::string, std::string>& properties) {
  KafkaConf conf(rd_kafka_conf_new());
  std::array<char, 512> error{};
  for (const auto& [name, value] : properties) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), error.data(), error.size()) !=
        RD_KAFKA_CONF_OK) {
      return Status::InvalidArgument("Kafka property " + name + ": " + error.data(),
                                     {{name, std::string(error.data())}});
    }
  }
  rd_kafka_conf_set_log_cb(conf.get(), log_to_spdlog);
  return conf;
}

Result<KafkaHandle> make_kafka_client(rd_kafka_type_t type, KafkaConf conf) {
  std::array<char, 512> error{};
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), error.data(), error.size());
  if (rk == nullptr) {
    return Status::Unavailable(std::string("cannot create a Kafka client: ") + error.data());
  }
  (void)conf.release();  // rd_kafka_new took ownership
  return KafkaHandle(rk);
}

Result<std::vector<PartitionWatermarks>> topic_partitions(rd_kafka_t* rk, const std::string& topic,
                                                          int timeout_ms) {
  std::unique_ptr<rd_kafka_topic_t, void (*)(rd_kafka_topic_t*)> handle(
      rd_kafka_topic_new(rk, topic.c_str(), nullptr), &rd_kafka_topic_destroy);
  if (!handle) {
    return Status::Unavailable("topic " + topic + ": " + kafka_error_text(rd_kafka_last_error()));
  }
  const rd_kafka_metadata_t* raw = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, handle.get(), &raw, timeout_ms);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("metadata of " + topic + ": " + kafka_error_text(err));
  }
  KafkaMetadata metadata(raw);
  if (metadata->topic_cnt != 1) {
    return Status::Unavailable("no such topic " + topic);
  }
  if (metadata->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("topic " + topic + ": " + kafka_error_text(metadata->topics[0].err));
  }
  if (metadata->topics[0].partition_cnt == 0) {
    return Status::Unavailable("topic " + topic + " has no partitions yet");
  }
  std::vector<PartitionWatermarks> out;
  for (int i = 0; i < metadata->topics[0].partition_cnt; ++i) {
    PartitionWatermarks p;
    p.id = metadata->topics[0].partitions[i].id;
    err = rd_kafka_query_watermark_offsets(rk, topic.c_str(), p.id, &p.low, &p.high, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::Unavailable("end offsets of " + topic + ": " + kafka_error_text(err));
    }
    out.push_back(p);
  }
  std::sort(out.begin(), out.end(),
            [](const PartitionWatermarks& a, const PartitionWatermarks& b) { return a.id < b.id; });
  return out;
}

Result<KafkaConf> make_kafka_producer_conf(const std::string& brokers,
                                           const std::map<std::string, std::string>& settings,
                                           const std::map<std::string, std::string>& overrides) {
  return make_kafka_conf(layered(
      {
          {"bootstrap.servers", brokers},
          {"enable.idempotence", "true"},
          {"acks", "all"},
          {"partitioner", "murmur2_random"},
          {"socket.nagle.disable", "true"},
      },
      settings, overrides));
}

std::string unique_group_id(const std::string& prefix) {
  std::random_device random;
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(random());
}

Result<KafkaHandle> make_kafka_consumer(const std::string& brokers, int fetch_wait_ms,
                                        const std::map<std::string, std::string>& settings,
                                        const std::map<std::string, std::string>& overrides,
                                        const std::string& what) {
  auto conf = make_kafka_conf(layered(
      {
          {"bootstrap.servers", brokers},
          {"auto.offset.reset", "earliest"},
          {"fetch.wait.max.ms", std::to_string(fetch_wait_ms)},
          {"fetch.error.backoff.ms", "50"},
          {"reconnect.backoff.max.ms", "1000"},
          {"socket.nagle.disable", "true"},
      },
      settings, overrides));
  if (!conf.ok()) {
    return conf.status();
  }
  auto client = make_kafka_client(RD_KAFKA_CONSUMER, std::move(conf).value());
  if (!client.ok()) {
    return client.status();
  }
  KafkaHandle consumer = std::move(client).value();
  const rd_kafka_resp_err_t err = rd_kafka_poll_set_consumer(consumer.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("cannot set up " + what + ": " + kafka_error_text(err));
  }
  return consumer;
}

void close_kafka_consumer(KafkaHandle& consumer, const std::string& what) {
  if (!consumer) {
    return;
  }
  const rd_kafka_resp_err_t err = rd_kafka_consumer_close(consumer.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::warn("{}: closing the consumer: {}", what, kafka_error_text(err));
  }
  consumer.reset();
}

std::optional<std::vector<PartitionWatermarks>> wait_for_topic_partitions(
    rd_kafka_t* rk, const std::string& topic, int timeout_ms, std::chrono::milliseconds backoff,
    const std::atomic<bool>& stopping, const std::string& what) {
  std::string last_problem;
  while (!stopping) {
    auto found = topic_partitions(rk, topic, timeout_ms);
    if (found.ok()) {
      return std::move(found).value();
    }
    if (found.status().message() != last_problem) {
      last_problem = found.status().message();
      spdlog::warn("{}: waiting for topic {} ({})", what, topic, last_problem);
    }
    if (!sleep_unless(stopping, backoff)) {
      break;
    }
  }
  return std::nullopt;
}

bool sleep_unless(const std::atomic<bool>& stopping, std::chrono::milliseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stopping && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(d, std::chrono::milliseconds(20)));
  }
  return !stopping;
}

std::string kafka_error_text(rd_kafka_resp_err_t err) {
  return std::string(rd_kafka_err2str(err)) + " (" + rd_kafka_err2name(err) + ")";
}

bool assign_from_committed(rd_kafka_t* consumer, const std::string& topic,
                           const std::vector<PartitionWatermarks>& partitions, const std::string& what) {
  KafkaPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(partitions.size())));
  for (const auto& p : partitions) {
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), p.id)->offset = RD_KAFKA_OFFSET_STORED;
  }
  if (const rd_kafka_resp_err_t err = rd_kafka_assign(consumer, list.get());
      err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::error("{}: cannot assign the partitions of {}: {}", what, topic, kafka_error_text(err));
    return false;
  }
  return true;
}

void store_offset_after(rd_kafka_t* consumer, const std::string& topic, const rd_kafka_message_t& message,
                        const std::string& what) {
  KafkaPartitionList done(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(done.get(), topic.c_str(), message.partition)->offset =
      message.offset + 1;
  if (const rd_kafka_resp_err_t err = rd_kafka_offsets_store(consumer, done.get());
      err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::warn("{}: storing offset {}: {}", what, message.offset + 1, kafka_error_text(err));
  }
}

}  // namespace keyledger::consumers
