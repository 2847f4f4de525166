#include "consumers/consumer_loop.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "domain/thread_name.h"

namespace keyledger::consumers {

ConsumerLoop::ConsumerLoop(std::string what) : what_(std::move(what)) {}

ConsumerLoop::~ConsumerLoop() { stop(); }

Status ConsumerLoop::start(KafkaHandle consumer, std::function<void()> body) {
  if (started() || thread_.joinable() || stopping_) {
    return Status::Conflict("feed_started", "the " + what_ + " consumer is already running");
  }
  if (!consumer) {
    return Status::InvalidArgument("the " + what_ + " consumer is missing");
  }
  consumer_ = std::move(consumer);
  thread_ = std::thread([body = std::move(body), name = "kl-" + what_]() mutable {
    name_this_thread(name);
    body();
  });
  return Status::Ok();
}

KafkaMessage ConsumerLoop::poll(int timeout_ms) {
  KafkaMessage message(rd_kafka_consumer_poll(consumer_.get(), timeout_ms));
  if (!message || message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    return message;
  }
  if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (message->err != last_error_) {
      spdlog::warn("{}: {}", what_, kafka_error_text(message->err));
      last_error_ = message->err;
    }
    return nullptr;
  }
  last_error_ = RD_KAFKA_RESP_ERR_NO_ERROR;
  return message;
}

void ConsumerLoop::stop() {
  stopping_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  close_kafka_consumer(consumer_, what_);
}

}  // namespace keyledger::consumers
