#pragma once
// A plain librdkafka reader for what landed on a topic (unit and end-to-end tests), and a
// bounded poll helper.

#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "consumers/kafka_client.h"
#include "domain/events.h"

namespace keyledger::testing {

using namespace std::chrono_literals;

// Polls `done` every few milliseconds until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

struct KafkaRecord {
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string key;
  std::string value;
  std::map<std::string, std::string> headers;
};

// Everything on `topic` now, partition by partition in offset order (reads until every
// partition reports its end).
inline std::vector<KafkaRecord> read_topic(const std::string& brokers, const std::string& topic) {
  using namespace consumers;
  auto conf = make_kafka_conf({{"bootstrap.servers", brokers},
                               {"group.id", "keyledger-test-reader"},
                               {"enable.auto.commit", "false"},
                               {"enable.partition.eof", "true"},
                               {"auto.offset.reset", "earliest"},
                               {"fetch.wait.max.ms", "5"}});
  REQUIRE(conf.ok());
  auto client = make_kafka_client(RD_KAFKA_CONSUMER, std::move(conf).value());
  REQUIRE(client.ok());
  KafkaHandle rk = std::move(client).value();
  rd_kafka_topic_t* handle = rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr);
  REQUIRE(handle != nullptr);
  const rd_kafka_metadata_t* raw = nullptr;
  REQUIRE(rd_kafka_metadata(rk.get(), 0, handle, &raw, 10'000) == RD_KAFKA_RESP_ERR_NO_ERROR);
  KafkaMetadata metadata(raw);
  rd_kafka_topic_destroy(handle);
  REQUIRE(metadata->topic_cnt == 1);
  REQUIRE(metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR);
  const int partitions = metadata->topics[0].partition_cnt;
  KafkaPartitionList list(rd_kafka_topic_partition_list_new(partitions));
  for (int i = 0; i < partitions; ++i) {
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), metadata->topics[0].partitions[i].id)
        ->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  REQUIRE(rd_kafka_assign(rk.get(), list.get()) == RD_KAFKA_RESP_ERR_NO_ERROR);
  std::vector<KafkaRecord> out;
  int at_end = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (at_end < partitions) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    KafkaMessage m(rd_kafka_consumer_poll(rk.get(), 100));
    if (!m) {
      continue;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ++at_end;
      continue;
    }
    REQUIRE(m->err == RD_KAFKA_RESP_ERR_NO_ERROR);
    KafkaRecord r;
    r.partition = m->partition;
    r.offset = m->offset;
    r.key.assign(static_cast<const char*>(m->key), m->key_len);
    r.value.assign(static_cast<const char*>(m->payload), m->len);
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(m.get(), &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      std::size_t size = 0;
      for (std::size_t i = 0;
           rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
        r.headers[name] = std::string(static_cast<const char*>(value), size);
      }
    }
    out.push_back(std::move(r));
  }
  (void)rd_kafka_consumer_close(rk.get());
  return out;
}

// The events on a topic of envelopes, in the order read.
inline std::vector<v1::Event> events_of(const std::vector<KafkaRecord>& records) {
  std::vector<v1::Event> out;
  for (const auto& r : records) {
    v1::Event e;
    REQUIRE(e.ParseFromString(r.value));
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace keyledger::testing
