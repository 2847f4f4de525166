#pragma once
// The start/stop/thread piece every Kafka feed shares (ReplicaFeed, EventMirror,
// DeliveryRecordFeed): a consumer made at start, one thread running the feed's loop until
// stop(), then the consumer closed, committing the offsets it stored. The feed keeps what is
// its own (its options, its loop body, its counters) and asks this for the consumer and for
// whether to stop.
#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "consumers/kafka_client.h"
#include "domain/status.h"

namespace keyledger::consumers {

class ConsumerLoop {
 public:
  explicit ConsumerLoop(std::string what);  // names the consumer in logs ("replica")
  ~ConsumerLoop();                          // stop()

  ConsumerLoop(const ConsumerLoop&) = delete;
  ConsumerLoop& operator=(const ConsumerLoop&) = delete;

  // Runs `body` on a thread of its own, with `consumer` held until stop(). Once only.
  Status start(KafkaHandle consumer, std::function<void()> body);
  // Sets stopping(), waits for the body to return and closes the consumer. Idempotent; the
  // owner calls it before the members the body uses are destroyed.
  void stop();

  // The next record or partition EOF within `timeout_ms`; nullptr when none came. A consumer
  // error is logged under the loop's name (once, until a record arrives or the error
  // changes) and also answers nullptr. For the loop's own thread only.
  KafkaMessage poll(int timeout_ms);

  bool started() const { return static_cast<bool>(consumer_); }
  rd_kafka_t* consumer() const { return consumer_.get(); }
  // True once stop() was called: the body returns soon after (it polls with short timeouts).
  const std::atomic<bool>& stopping() const { return stopping_; }

 private:
  const std::string what_;
  KafkaHandle consumer_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  rd_kafka_resp_err_t last_error_ = RD_KAFKA_RESP_ERR_NO_ERROR;  // the last one poll() logged
};

}  // namespace keyledger::consumers
