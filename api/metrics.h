#pragma once
// The figures /metrics exposes, in the Prometheus text exposition format (version 0.0.4).
// Counters are lock-free on the hot path (verification outcomes, latency buckets); the
// per-route request counter takes a short lock.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "api/verifier.h"

namespace keyledger::api {

// A counter many threads bump without sharing a cache line: each thread has its slot (threads
// past kSlots share), and reading sums them. On the verification path a shared atomic would
// bounce between the cores on every request.
class ShardedCounter {
 public:
  void add(std::uint64_t n = 1) { slots_[slot_index()].value.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const;

 private:
  static constexpr std::size_t kSlots = 16;
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> value{0};
  };
  static std::size_t slot_index();
  std::array<Slot, kSlots> slots_{};
};

class Metrics {
 public:
  Metrics();

  // `route` is the route pattern (/v1/keys/{key_id}), never the raw path, and a method outside
  // GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS is counted as OTHER: no unbounded labels.
  void count_request(std::string_view method, std::string_view route, unsigned status);
  void observe_verification(VerifyCode code, std::chrono::nanoseconds latency);
  void count_events_appended(std::uint64_t n) { events_appended_.add(n); }
  // One flush of key usage into the store (api/openapi.yaml Usage).
  void observe_usage_flush(bool ok, std::chrono::nanoseconds took);

  // Gauges read at scrape time (projection lag, Kafka publication lag, …).
  void add_gauge(std::string name, std::string help, std::function<double()> read);
  // Counters kept elsewhere (the store's fsyncs), read at scrape time.
  void add_counter(std::string name, std::string help, std::function<double()> read);
  // One WebhookDeliveryRecorded event: outcome delivered, retrying or failed.
  void count_webhook_delivery(std::string_view outcome);

  std::string render() const;

 private:
  static constexpr std::array<double, 12> kLatencyBuckets = {
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25};
  static constexpr std::size_t kCodes = 7;

  ShardedCounter& request_counter(std::string_view method, std::string_view route, unsigned status);

  // Distinguishes this instance in the threads' lookup caches (addresses get reused).
  const std::uint64_t id_;
  mutable std::mutex mutex_;  // gauges
  // Request counters by label set; found through a per-thread cache, so the shared lock is
  // taken only the first time a thread sees a label set.
  mutable std::shared_mutex requests_mutex_;
  std::map<std::tuple<std::string, std::string, unsigned>, std::unique_ptr<ShardedCounter>> requests_;
  struct Gauge {
    std::string help;
    std::function<double()> read;
  };
  std::map<std::string, Gauge> gauges_;
  std::map<std::string, Gauge> counters_;
  std::array<ShardedCounter, 3> webhook_deliveries_{};  // delivered, retrying, failed

  std::array<ShardedCounter, kCodes> outcomes_{};
  std::array<ShardedCounter, kLatencyBuckets.size()> latency_buckets_{};
  ShardedCounter latency_count_;
  ShardedCounter latency_sum_ns_;
  ShardedCounter events_appended_;
  ShardedCounter usage_flushes_;
  ShardedCounter usage_flush_errors_;
  ShardedCounter usage_flush_ns_;
};

}  // namespace keyledger::api
