#include "consumers/consumer_loop.h"

#include <utility>

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
  thread_ = std::thread(std::move(body));
  return Status::Ok();
}

void ConsumerLoop::stop() {
  stopping_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  close_kafka_consumer(consumer_, what_);
}

}  // namespace keyledger::consumers
