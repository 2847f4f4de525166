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
#include <string_view>
#include <tuple>
#include <string>

#include "api/verifier.h"

namespace keyledger::api {

class Metrics {
 public:
  // `route` is the route pattern (/v1/keys/{key_id}), never the raw path (no unbounded labels).
  void count_request(std::string_view method, std::string_view route, unsigned status);
  void observe_verification(VerifyCode code, std::chrono::nanoseconds latency);
  void count_events_appended(std::uint64_t n) { events_appended_ += n; }

  // Gauges read at scrape time (projection lag, Kafka publication lag, …).
  void add_gauge(std::string name, std::string help, std::function<double()> read);

  std::string render() const;

 private:
  static constexpr std::array<double, 12> kLatencyBuckets = {
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25};
  static constexpr std::size_t kCodes = 7;

  mutable std::mutex mutex_;  // gauges
  // Request counters: found under a shared lock and bumped atomically; a new label set takes
  // the exclusive lock once.
  mutable std::shared_mutex requests_mutex_;
  std::map<std::tuple<std::string, std::string, unsigned>, std::unique_ptr<std::atomic<std::uint64_t>>, std::less<>>
      requests_;
  struct Gauge {
    std::string help;
    std::function<double()> read;
  };
  std::map<std::string, Gauge> gauges_;

  std::array<std::atomic<std::uint64_t>, kCodes> outcomes_{};
  std::array<std::atomic<std::uint64_t>, kLatencyBuckets.size()> latency_buckets_{};
  std::atomic<std::uint64_t> latency_count_{0};
  std::atomic<std::uint64_t> latency_sum_ns_{0};
  std::atomic<std::uint64_t> events_appended_{0};
};

}  // namespace keyledger::api
