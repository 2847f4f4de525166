#include "consumers/embedded_broker.h"

#include "consumers/kafka_client.h"  // rdkafka.h must come before rdkafka_mock.h

#include <librdkafka/rdkafka_mock.h>

namespace keyledger::consumers {

namespace {
constexpr int kBrokerCount = 1;
constexpr int kBrokerId = 1;  // mock brokers are numbered from 1
constexpr int kReplicationFactor = 1;
}  // namespace

Result<std::unique_ptr<EmbeddedBroker>> EmbeddedBroker::start(const EmbeddedBrokerOptions& options) {
  if (options.partitions < 1) {
    return Status::InvalidArgument("the embedded broker needs at least one partition per topic");
  }
  // The mock cluster is owned by a client handle; a producer that never produces will do.
  // log_level 4: warnings and errors only (no notice that this handle has no bootstrap.servers).
  auto conf = make_kafka_conf({{"client.id", "keyledger-embedded-broker"}, {"log_level", "4"}});
  if (!conf.ok()) {
    return conf.status();
  }
  auto handle = make_kafka_client(RD_KAFKA_PRODUCER, std::move(conf).value());
  if (!handle.ok()) {
    return handle.status();
  }
  std::unique_ptr<EmbeddedBroker> broker(new EmbeddedBroker());
  broker->handle_ = handle->release();
  broker->cluster_ = rd_kafka_mock_cluster_new(broker->handle_, kBrokerCount);
  if (broker->cluster_ == nullptr) {
    return Status::Unavailable("librdkafka could not start the embedded broker");
  }
  const char* bootstraps = rd_kafka_mock_cluster_bootstraps(broker->cluster_);
  if (bootstraps == nullptr) {
    return Status::Unavailable("the embedded broker has no bootstrap address");
  }
  broker->bootstrap_ = bootstraps;
  for (const auto& topic : options.topics) {
    const rd_kafka_resp_err_t err =
        rd_kafka_mock_topic_create(broker->cluster_, topic.c_str(), options.partitions, kReplicationFactor);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::Unavailable("cannot create topic " + topic +
                                 " on the embedded broker: " + kafka_error_text(err));
    }
  }
  return broker;
}

EmbeddedBroker::~EmbeddedBroker() {
  // The cluster must go before the handle that owns it.
  if (cluster_ != nullptr) {
    rd_kafka_mock_cluster_destroy(cluster_);
  }
  if (handle_ != nullptr) {
    rd_kafka_destroy(handle_);
  }
}

Status EmbeddedBroker::set_down() {
  const rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_down(cluster_, kBrokerId);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("cannot take the embedded broker down: " + kafka_error_text(err));
  }
  return Status::Ok();
}

Status EmbeddedBroker::set_up() {
  const rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_up(cluster_, kBrokerId);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("cannot bring the embedded broker up: " + kafka_error_text(err));
  }
  return Status::Ok();
}

}  // namespace keyledger::consumers
