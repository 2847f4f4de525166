#include "api/metrics.h"

#include <algorithm>
#include <array>
#include <sstream>

#include "api/http.h"

namespace keyledger::api {

std::uint64_t ShardedCounter::value() const {
  std::uint64_t total = 0;
  for (const Slot& slot : slots_) {
    total += slot.value.load(std::memory_order_relaxed);
  }
  return total;
}

std::size_t ShardedCounter::slot_index() {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t index = next.fetch_add(1, std::memory_order_relaxed) % kSlots;
  return index;
}

namespace {

std::atomic<std::uint64_t> g_next_metrics_id{1};

// A thread's recent request-counter lookups: (metrics instance, labels) -> counter.
struct CachedCounter {
  std::uint64_t metrics_id = 0;
  std::string method;
  std::string route;
  unsigned status = 0;
  ShardedCounter* counter = nullptr;
};
constexpr std::size_t kCachedCounters = 64;

}  // namespace

Metrics::Metrics() : id_(g_next_metrics_id.fetch_add(1)) {}

ShardedCounter& Metrics::request_counter(std::string_view method, std::string_view route, unsigned status) {
  // Only on a miss of the caller's thread-local cache: building the owned key costs nothing
  // that matters.
  std::tuple<std::string, std::string, unsigned> labels{method, route, status};
  {
    std::shared_lock lock(requests_mutex_);
    if (auto it = requests_.find(labels); it != requests_.end()) {
      return *it->second;
    }
  }
  std::unique_lock lock(requests_mutex_);
  auto [it, fresh] = requests_.try_emplace(std::move(labels), nullptr);
  if (fresh) {
    it->second = std::make_unique<ShardedCounter>();
  }
  return *it->second;
}

void Metrics::count_request(std::string_view raw_method, std::string_view route, unsigned status) {
  // A known method or OTHER: a raw method from the request line would let unauthenticated
  // clients grow /metrics (and memory) without bound.
  const std::string_view method = http::known_method_or_other(raw_method);
  thread_local std::array<CachedCounter, kCachedCounters> cache;
  const std::size_t h =
      (std::hash<std::string_view>{}(route)*31 + std::hash<std::string_view>{}(method)) * 31 + status + id_;
  CachedCounter& slot = cache[h % kCachedCounters];
  if (slot.metrics_id != id_ || slot.status != status || slot.route != route || slot.method != method) {
    slot.counter = &request_counter(method, route, status);  // counters live as long as `this`
    slot.metrics_id = id_;
    slot.method.assign(method);
    slot.route.assign(route);
    slot.status = status;
  }
  slot.counter->add();
}

void Metrics::observe_verification(VerifyCode code, std::chrono::nanoseconds latency) {
  outcomes_[static_cast<std::size_t>(code)].add();
  const double seconds = static_cast<double>(latency.count()) / 1e9;
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    if (seconds <= kLatencyBuckets[i]) {
      latency_buckets_[i].add();
      break;
    }
  }
  latency_count_.add();
  latency_sum_ns_.add(static_cast<std::uint64_t>(latency.count()));
}

void Metrics::add_gauge(std::string name, std::string help, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  gauges_[std::move(name)] = Gauge{std::move(help), std::move(read)};
}

namespace {
constexpr std::array<std::string_view, 3> kDeliveryOutcomes = {"delivered", "retrying", "failed"};
}  // namespace

void Metrics::add_counter(std::string name, std::string help, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  counters_[std::move(name)] = Gauge{std::move(help), std::move(read)};
}

void Metrics::count_webhook_delivery(std::string_view outcome) {
  for (std::size_t i = 0; i < kDeliveryOutcomes.size(); ++i) {
    if (outcome == kDeliveryOutcomes[i]) {
      webhook_deliveries_[i].add();
    }
  }
}

void Metrics::observe_usage_flush(bool ok, std::chrono::nanoseconds took) {
  (ok ? usage_flushes_ : usage_flush_errors_).add();
  usage_flush_ns_.add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, took.count())));
}

std::string Metrics::render() const {
  std::ostringstream out;
  out << "# HELP keyledger_http_requests_total HTTP requests by route and status.\n"
      << "# TYPE keyledger_http_requests_total counter\n";
  {
    std::shared_lock lock(requests_mutex_);
    for (const auto& [labels, n] : requests_) {
      const auto& [method, route, status] = labels;
      out << "keyledger_http_requests_total{method=\"" << method << "\",route=\"" << route << "\",status=\""
          << status << "\"} " << n->value() << "\n";
    }
  }
  out << "# HELP keyledger_verifications_total Key verifications by outcome code.\n"
      << "# TYPE keyledger_verifications_total counter\n";
  for (std::size_t i = 0; i < kCodes; ++i) {
    out << "keyledger_verifications_total{code=\"" << verify_code_name(static_cast<VerifyCode>(i)) << "\"} "
        << outcomes_[i].value() << "\n";
  }
  // The same attempts, without the outcomes of usable keys: what an alert on a leaked or
  // retired key still in use watches (per-key detail is in the usage API, not in labels).
  out << "# HELP keyledger_inactive_key_attempts_total Verifications presenting a revoked, expired or "
         "compromised key.\n"
      << "# TYPE keyledger_inactive_key_attempts_total counter\n";
  for (const VerifyCode code : {VerifyCode::kRevoked, VerifyCode::kExpired, VerifyCode::kCompromised}) {
    out << "keyledger_inactive_key_attempts_total{code=\"" << verify_code_name(code) << "\"} "
        << outcomes_[static_cast<std::size_t>(code)].value() << "\n";
  }
  out << "# HELP keyledger_verification_duration_seconds In-process verification latency.\n"
      << "# TYPE keyledger_verification_duration_seconds histogram\n";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    cumulative += latency_buckets_[i].value();
    out << "keyledger_verification_duration_seconds_bucket{le=\"" << kLatencyBuckets[i] << "\"} "
        << cumulative << "\n";
  }
  const std::uint64_t count = latency_count_.value();
  out << "keyledger_verification_duration_seconds_bucket{le=\"+Inf\"} " << count << "\n"
      << "keyledger_verification_duration_seconds_sum " << static_cast<double>(latency_sum_ns_.value()) / 1e9
      << "\n"
      << "keyledger_verification_duration_seconds_count " << count << "\n";
  out << "# HELP keyledger_events_appended_total Events durably appended to the log.\n"
      << "# TYPE keyledger_events_appended_total counter\n"
      << "keyledger_events_appended_total " << events_appended_.value() << "\n";
  out << "# HELP keyledger_usage_flushes_total Flushes of key usage counts into the store, by result.\n"
      << "# TYPE keyledger_usage_flushes_total counter\n"
      << "keyledger_usage_flushes_total{result=\"ok\"} " << usage_flushes_.value() << "\n"
      << "keyledger_usage_flushes_total{result=\"error\"} " << usage_flush_errors_.value() << "\n"
      << "# HELP keyledger_usage_flush_seconds_total Time spent flushing key usage counts.\n"
      << "# TYPE keyledger_usage_flush_seconds_total counter\n"
      << "keyledger_usage_flush_seconds_total " << static_cast<double>(usage_flush_ns_.value()) / 1e9 << "\n";
  out << "# HELP keyledger_webhook_deliveries_total Webhook delivery attempts recorded, by outcome.\n"
      << "# TYPE keyledger_webhook_deliveries_total counter\n";
  for (std::size_t i = 0; i < kDeliveryOutcomes.size(); ++i) {
    out << "keyledger_webhook_deliveries_total{outcome=\"" << kDeliveryOutcomes[i] << "\"} "
        << webhook_deliveries_[i].value() << "\n";
  }
  std::lock_guard lock(mutex_);
  for (const auto& [name, counter] : counters_) {
    out << "# HELP " << name << " " << counter.help << "\n# TYPE " << name << " counter\n"
        << name << " " << counter.read() << "\n";
  }
  for (const auto& [name, gauge] : gauges_) {
    out << "# HELP " << name << " " << gauge.help << "\n# TYPE " << name << " gauge\n"
        << name << " " << gauge.read() << "\n";
  }
  return out.str();
}

}  // namespace keyledger::api
