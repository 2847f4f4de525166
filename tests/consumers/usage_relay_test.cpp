// Replicas' usage through Kafka: a UsagePublisher drains one recorder into the topic, a
// UsageFeed merges it into another, over the embedded broker (librdkafka's mock cluster).
#include "consumers/usage_relay.h"

#include <catch2/catch.hpp>

#include "consumers/embedded_broker.h"
#include "consumers/kafka_reader.h"

namespace keyledger::consumers {
namespace {

using namespace std::chrono_literals;

std::uint64_t total(const std::vector<UsageCell>& cells, UsageOutcome outcome) {
  std::uint64_t sum = 0;
  for (const auto& cell : cells) {
    sum += cell.counts.by_outcome[static_cast<std::size_t>(outcome)];
  }
  return sum;
}

TEST_CASE("a replica's counts reach the primary's recorder through the usage topic", "[consumers][usage]") {
  auto broker = EmbeddedBroker::start();
  REQUIRE(broker.ok());
  const std::string brokers = (*broker)->bootstrap_servers();

  UsageRecorder replica;
  UsageRecorder primary;
  UsagePublisher publisher(replica, nullptr,
                           {.brokers = brokers, .replica_id = "replica-1", .interval = 50ms});
  UsageFeed feed(primary, {.brokers = brokers});
  REQUIRE(publisher.start().ok());
  REQUIRE(feed.start().ok());

  constexpr std::int64_t kMinute = 1'795'000'020;
  for (int i = 0; i < 5000; ++i) {  // more keys than one report holds
    replica.record("key_" + std::to_string(i), UsageOutcome::kValid, kMinute, "203.0.113.9");
  }
  replica.record("key_0", UsageOutcome::kCompromised, kMinute + 60);

  std::vector<UsageCell> arrived;
  REQUIRE(testing::eventually(
      [&] {
        for (auto& cell : primary.take()) {
          arrived.push_back(std::move(cell));
        }
        return total(arrived, UsageOutcome::kValid) == 5000 &&
               total(arrived, UsageOutcome::kCompromised) == 1;
      },
      20s));
  CHECK(arrived.size() == 5001);
  for (const auto& cell : arrived) {
    REQUIRE(cell.counts.sources.size() <= 1);
  }
  CHECK(replica.pending() == 0);
  // Kafka's acknowledgements are served by the publisher's next interval.
  CHECK(testing::eventually([&] { return publisher.published_cells() == 5001; }, 10s));
  CHECK(feed.merged_reports() == 2);

  // What the replica counts after its last interval goes out when it stops.
  replica.record("key_1", UsageOutcome::kRevoked, kMinute);
  publisher.stop();
  REQUIRE(testing::eventually([&] { return total(primary.take(), UsageOutcome::kRevoked) == 1; }, 20s));
  feed.stop();
}

TEST_CASE("the usage publisher and feed refuse incomplete options", "[consumers][usage]") {
  UsageRecorder recorder;
  CHECK(UsagePublisher(recorder, nullptr, {.brokers = "127.0.0.1:1", .replica_id = ""})
            .start()
            .IsInvalidArgument());
  CHECK(UsageFeed(recorder, {.brokers = ""}).start().IsInvalidArgument());
}

}  // namespace
}  // namespace keyledger::consumers
