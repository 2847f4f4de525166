#include "api/metrics.h"

#include <sstream>

namespace keyledger::api {

void Metrics::count_request(std::string_view method, std::string_view route, unsigned status) {
  const std::tuple<std::string_view, std::string_view, unsigned> labels{method, route, status};
  {
    std::shared_lock lock(requests_mutex_);
    if (auto it = requests_.find(labels); it != requests_.end()) {
      it->second->fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  std::unique_lock lock(requests_mutex_);
  auto [it, fresh] = requests_.try_emplace({std::string(method), std::string(route), status}, nullptr);
  if (fresh) {
    it->second = std::make_unique<std::atomic<std::uint64_t>>(0);
  }
  it->second->fetch_add(1, std::memory_order_relaxed);
}

void Metrics::observe_verification(VerifyCode code, std::chrono::nanoseconds latency) {
  outcomes_[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  const double seconds = static_cast<double>(latency.count()) / 1e9;
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    if (seconds <= kLatencyBuckets[i]) {
      latency_buckets_[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  latency_count_.fetch_add(1, std::memory_order_relaxed);
  latency_sum_ns_.fetch_add(static_cast<std::uint64_t>(latency.count()), std::memory_order_relaxed);
}

void Metrics::add_gauge(std::string name, std::string help, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  gauges_[std::move(name)] = Gauge{std::move(help), std::move(read)};
}

std::string Metrics::render() const {
  std::ostringstream out;
  out << "# HELP keyledger_http_requests_total HTTP requests by route and status.\n"
      << "# TYPE keyledger_http_requests_total counter\n";
  {
    std::shared_lock lock(requests_mutex_);
    for (const auto& [labels, n] : requests_) {
      const auto& [method, route, status] = labels;
      out << "keyledger_http_requests_total{method=\"" << method << "\",route=\"" << route
          << "\",status=\"" << status << "\"} " << n->load(std::memory_order_relaxed) << "\n";
    }
  }
  out << "# HELP keyledger_verifications_total Key verifications by outcome code.\n"
      << "# TYPE keyledger_verifications_total counter\n";
  for (std::size_t i = 0; i < kCodes; ++i) {
    out << "keyledger_verifications_total{code=\"" << verify_code_name(static_cast<VerifyCode>(i)) << "\"} "
        << outcomes_[i].load(std::memory_order_relaxed) << "\n";
  }
  out << "# HELP keyledger_verification_duration_seconds In-process verification latency.\n"
      << "# TYPE keyledger_verification_duration_seconds histogram\n";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    cumulative += latency_buckets_[i].load(std::memory_order_relaxed);
    out << "keyledger_verification_duration_seconds_bucket{le=\"" << kLatencyBuckets[i] << "\"} " << cumulative
        << "\n";
  }
  const std::uint64_t count = latency_count_.load(std::memory_order_relaxed);
  out << "keyledger_verification_duration_seconds_bucket{le=\"+Inf\"} " << count << "\n"
      << "keyledger_verification_duration_seconds_sum "
      << static_cast<double>(latency_sum_ns_.load(std::memory_order_relaxed)) / 1e9 << "\n"
      << "keyledger_verification_duration_seconds_count " << count << "\n";
  out << "# HELP keyledger_events_appended_total Events durably appended to the log.\n"
      << "# TYPE keyledger_events_appended_total counter\n"
      << "keyledger_events_appended_total " << events_appended_.load(std::memory_order_relaxed) << "\n";
  std::lock_guard lock(mutex_);
  for (const auto& [name, gauge] : gauges_) {
    out << "# HELP " << name << " " << gauge.help << "\n# TYPE " << name << " gauge\n"
        << name << " " << gauge.read() << "\n";
  }
  return out.str();
}

}  // namespace keyledger::api
