#include "consumers/kafka_client.h"

#include <spdlog/spdlog.h>

#include <array>

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

std::string kafka_error_text(rd_kafka_resp_err_t err) {
  return std::string(rd_kafka_err2str(err)) + " (" + rd_kafka_err2name(err) + ")";
}

}  // namespace keyledger::consumers
