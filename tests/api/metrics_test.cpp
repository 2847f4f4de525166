// The figures /metrics exposes that are not tied to a route: webhook delivery outcomes and
// counters kept elsewhere (the store's fsyncs).
#include "api/metrics.h"

#include <catch2/catch.hpp>

namespace keyledger::api {
namespace {

TEST_CASE("metrics: webhook deliveries by outcome and counters read at scrape time", "[api][metrics]") {
  Metrics metrics;
  metrics.count_webhook_delivery("delivered");
  metrics.count_webhook_delivery("retrying");
  metrics.count_webhook_delivery("retrying");
  metrics.count_webhook_delivery("sideways");  // not an outcome: not a label either
  double syncs = 7;
  metrics.add_counter("keyledger_log_syncs_total", "WAL fsyncs.", [&] { return syncs; });
  syncs = 9;
  const std::string text = metrics.render();
  INFO(text);
  CHECK(text.find("# TYPE keyledger_webhook_deliveries_total counter\n") != std::string::npos);
  CHECK(text.find("keyledger_webhook_deliveries_total{outcome=\"delivered\"} 1\n") != std::string::npos);
  CHECK(text.find("keyledger_webhook_deliveries_total{outcome=\"retrying\"} 2\n") != std::string::npos);
  CHECK(text.find("keyledger_webhook_deliveries_total{outcome=\"failed\"} 0\n") != std::string::npos);
  CHECK(text.find("sideways") == std::string::npos);
  CHECK(text.find("# TYPE keyledger_log_syncs_total counter\nkeyledger_log_syncs_total 9\n") !=
        std::string::npos);
}

}  // namespace
}  // namespace keyledger::api
