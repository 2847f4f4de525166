// Key usage: bucketing in memory, flushing into RocksDB by merges, dense answers, retention.
#include "projections/usage.h"

#include <catch2/catch.hpp>
#include <rocksdb/iterator.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/faulty_file_system.h"
#include "support/temp_dir.h"

namespace keyledger {
namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kT0 = 1'795'000'040;  // 2026-11-18T07:07:20Z, 20 s into a minute

TimePoint at(std::int64_t unix_seconds) { return TimePoint(std::chrono::seconds(unix_seconds)); }

std::uint64_t count(const UsageBucket& bucket, UsageOutcome outcome) {
  return bucket.counts.by_outcome[static_cast<std::size_t>(outcome)];
}

// A store with the usage family, as the node opens it.
struct UsageFixture {
  explicit UsageFixture(UsageRetention retention = {}) : retention(retention) { open(); }

  void open() {
    EventStoreOptions options{.path = dir.path() / "store",
                              .extra_column_families = {std::string(kUsageColumnFamily)},
                              .file_system = fs};
    options.tuning.emplace(kUsageColumnFamily, usage_family_tuning(clock, retention));
    auto opened = EventStore::open(options);
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    usage = std::make_unique<KeyUsage>(*store, clock, retention);
    REQUIRE(usage->open_status().ok());
  }
  void reopen() {
    usage.reset();
    store.reset();
    open();
  }
  std::vector<UsageBucket> read(const std::vector<std::string>& keys, UsageGranularity g, std::int64_t since,
                                std::int64_t until) {
    auto buckets = usage->buckets(keys, g, since, until);
    REQUIRE(buckets.ok());
    return *buckets;
  }

  testing::TempDir dir;
  std::shared_ptr<testing::FaultyFileSystem> fs = std::make_shared<testing::FaultyFileSystem>();
  ManualClock clock{at(kT0)};
  UsageRetention retention;
  std::unique_ptr<EventStore> store;
  std::unique_ptr<KeyUsage> usage;
};

// A UsageFixture whose KeyUsage also reads a key table holding key_a, counted the way
// GET /v1/auth counts it.
struct TableUsageFixture : UsageFixture {
  TableUsageFixture() {
    KeyEntry entry;
    entry.key_id = InlineId("key_a");
    table.put(digest, entry);
    usage = std::make_unique<KeyUsage>(*store, clock, retention, &table);
  }
  ~TableUsageFixture() { usage.reset(); }  // before the table it reads

  // One verification of key_a at kT0, counted as `outcome` from `source`.
  void verify(int outcome, std::string_view source) {
    REQUIRE(table.visit(
        digest, kT0,
        [&](const KeyEntry&, TokenBucket&) {
          return ActiveKeyTable::Visited{.used = false, .counted = outcome};
        },
        source));
  }

  ActiveKeyTable table{{"standard"}};
  Digest digest = [] {
    Digest d{};
    d[8] = 3;
    return d;
  }();
};

TEST_CASE("bucket starts round down to the minute and the hour", "[projections][usage]") {
  CHECK(bucket_start(UsageGranularity::kMinute, 120) == 120);
  CHECK(bucket_start(UsageGranularity::kMinute, 179) == 120);
  CHECK(bucket_start(UsageGranularity::kHour, 7199) == 3600);
  CHECK(bucket_start(UsageGranularity::kMinute, -1) == -60);
}

TEST_CASE("counts add up and keep the most frequent sources", "[projections][usage]") {
  UsageCounts a;
  a.by_outcome = {1, 2, 3, 4, 5};
  for (int i = 0; i < 15; ++i) {
    a.sources.emplace_back("10.0.0." + std::to_string(i), 1);
  }
  UsageCounts b;
  b.by_outcome = {10, 0, 0, 0, 1};
  for (int i = 10; i < 25; ++i) {
    b.sources.emplace_back("10.0.0." + std::to_string(i), 2);
  }
  a.add(b);
  CHECK(a.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{11, 2, 3, 4, 6});
  REQUIRE(a.sources.size() == kMaxUsageSources);
  // 10.0.0.10-14 were seen by both (3 each), then 15-24 (2 each), then the rest by address.
  CHECK(a.sources[0] == std::pair<std::string, std::uint64_t>{"10.0.0.10", 3});
  CHECK(a.sources[4].second == 3);
  CHECK(a.sources[5].second == 2);
  CHECK(a.sources[19].second == 1);
  CHECK(from_proto(to_proto(a)) == a);
}

TEST_CASE("the recorder counts per key and minute until drained", "[projections][usage]") {
  UsageRecorder recorder;
  recorder.record("key_a", UsageOutcome::kValid, kT0, "192.0.2.1");
  recorder.record("key_a", UsageOutcome::kValid, kT0 + 39, "192.0.2.1");    // same minute
  recorder.record("key_a", UsageOutcome::kRevoked, kT0 + 40, "192.0.2.9");  // the next one
  recorder.record("key_b", UsageOutcome::kRateLimited, kT0);
  CHECK(recorder.pending() == 3);
  const auto peeked = recorder.peek("key_a", kT0 - 20, kT0 + 60);
  REQUIRE(peeked.size() == 2);
  CHECK(peeked[0].counts.by_outcome[0] == 2);
  CHECK(peeked[0].counts.sources == std::vector<std::pair<std::string, std::uint64_t>>{{"192.0.2.1", 2}});

  auto cells = recorder.take();
  CHECK(cells.size() == 3);
  CHECK(recorder.pending() == 0);
  CHECK(recorder.take().empty());
  std::uint64_t total = 0;
  for (const auto& cell : cells) {
    CHECK(cell.minute % 60 == 0);
    total += cell.counts.total();
  }
  CHECK(total == 4);
}

TEST_CASE("the recorder takes records from many threads without losing one", "[projections][usage]") {
  UsageRecorder recorder;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&recorder, t] {
      for (int i = 0; i < 5000; ++i) {
        recorder.record("key_" + std::to_string(i % 7), static_cast<UsageOutcome>((i + t) % kUsageOutcomes),
                        kT0 + i % 120);
      }
    });
  }
  std::uint64_t drained = 0;
  for (int i = 0; i < 20; ++i) {  // drains while they record
    for (const auto& cell : recorder.take()) {
      drained += cell.counts.total();
    }
  }
  for (auto& t : threads) {
    t.join();
  }
  for (const auto& cell : recorder.take()) {
    drained += cell.counts.total();
  }
  CHECK(drained == 20000);
}

TEST_CASE("flushed usage reads back in dense minute and hour buckets, across a restart",
          "[projections][usage]") {
  UsageFixture f;
  UsageRecorder& r = f.usage->recorder();
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  for (int i = 0; i < 3; ++i) {
    r.record("key_a", UsageOutcome::kValid, kT0, "198.51.100.7");
  }
  r.record("key_a", UsageOutcome::kRateLimited, kT0 + 1);
  REQUIRE(f.usage->flush().ok());
  // A second flush of the same minute adds to it (a merge, not an overwrite).
  r.record("key_a", UsageOutcome::kValid, kT0 + 2, "198.51.100.8");
  r.record("key_a", UsageOutcome::kRevoked, kT0 + 60);  // the next minute
  r.record("key_b", UsageOutcome::kCompromised, kT0);
  REQUIRE(f.usage->flush().ok());
  f.reopen();

  const auto minutes = f.read({"key_a"}, UsageGranularity::kMinute, m0 - 60, m0 + 180);
  REQUIRE(minutes.size() == 4);
  CHECK(minutes[0].start == m0 - 60);
  CHECK(minutes[0].counts.total() == 0);
  CHECK(minutes[1].start == m0);
  CHECK(count(minutes[1], UsageOutcome::kValid) == 4);
  CHECK(count(minutes[1], UsageOutcome::kRateLimited) == 1);
  CHECK(minutes[1].counts.sources ==
        std::vector<std::pair<std::string, std::uint64_t>>{{"198.51.100.7", 3}, {"198.51.100.8", 1}});
  CHECK(count(minutes[2], UsageOutcome::kRevoked) == 1);
  CHECK(minutes[3].counts.total() == 0);

  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  const auto hours = f.read({"key_a", "key_b"}, UsageGranularity::kHour, h0, h0 + 3600);
  REQUIRE(hours.size() == 1);
  CHECK(hours[0].start == h0);
  CHECK(hours[0].counts.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{4, 1, 1, 0, 1});

  // Another key's buckets never leak into a key's answer (key_a is a prefix of key_ab).
  f.usage->recorder().record("key_ab", UsageOutcome::kValid, kT0);
  REQUIRE(f.usage->flush().ok());
  CHECK(f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 6);
}

TEST_CASE("answers include what is not flushed yet", "[projections][usage]") {
  UsageFixture f;
  f.usage->recorder().record("key_a", UsageOutcome::kExpired, kT0);
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const auto buckets = f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60);
  REQUIRE(buckets.size() == 1);
  CHECK(count(buckets[0], UsageOutcome::kExpired) == 1);
  REQUIRE(f.usage->flush().ok());
  CHECK(count(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60)[0], UsageOutcome::kExpired) == 1);
}

TEST_CASE("a flush sums what the key table counted and what the recorder holds for the same minute",
          "[projections][usage]") {
  TableUsageFixture f;
  f.verify(0, "198.51.100.7");
  f.verify(0, "198.51.100.7");
  f.verify(2, "");
  // A replica's report of the same key and minute: the same cell, written beside the table's.
  UsageCell reported{InlineId("key_a"), bucket_start(UsageGranularity::kMinute, kT0), {}};
  reported.counts.by_outcome = {5, 1, 0, 0, 0};
  reported.counts.sources = {{"203.0.113.9", 6}};
  f.usage->recorder().merge(reported);
  REQUIRE(f.usage->flush().ok());
  CHECK(f.table.pending_counts() == 0);
  CHECK(f.usage->pending() == 0);

  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const auto minutes = f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60);
  REQUIRE(minutes.size() == 1);
  CHECK(minutes[0].counts.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{7, 1, 1, 0, 0});
  CHECK(minutes[0].counts.sources ==
        std::vector<std::pair<std::string, std::uint64_t>>{{"203.0.113.9", 6}, {"198.51.100.7", 2}});
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  CHECK(f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 9);

  // The first flush folded; the next ones only journal, and the table keeps the sums until the
  // next fold: answers include them, and so does the journal read back after a kill.
  f.verify(1, "198.51.100.7");
  REQUIRE(f.usage->flush().ok());
  f.verify(1, "");
  REQUIRE(f.usage->flush().ok());
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.by_outcome ==
        std::array<std::uint64_t, kUsageOutcomes>{7, 3, 1, 0, 0});
  f.usage.reset();  // before the table it reads
  f.reopen();
  const auto after_kill = f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60);
  CHECK(after_kill[0].counts.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{7, 3, 1, 0, 0});
  CHECK(after_kill[0].counts.sources ==
        std::vector<std::pair<std::string, std::uint64_t>>{{"203.0.113.9", 6}, {"198.51.100.7", 3}});
}

TEST_CASE("buckets past retention are not answered and compaction drops them", "[projections][usage]") {
  UsageFixture f(UsageRetention{.minutes = 2h, .hours = 48h});
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  f.usage->recorder().record("key_a", UsageOutcome::kValid, kT0);
  REQUIRE(f.usage->flush().ok());

  f.clock.advance(3h);  // minute buckets are gone, hour buckets are kept
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 0);
  CHECK(f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 1);
  // The minutes of an hour not rolled up yet are its only record: compaction keeps them.
  REQUIRE(f.usage->compact().ok());
  f.clock.set(at(kT0));
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 1);
  f.clock.advance(3h);
  REQUIRE(f.usage->flush().ok());  // rolls the hours over up (one key: one slice)
  CHECK(f.usage->rolled_before() == h0 + 3 * 3600);
  REQUIRE(f.usage->compact().ok());
  f.clock.set(at(kT0));  // back in time: what compaction dropped stays dropped
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 0);
  CHECK(f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 1);

  f.clock.advance(50h);
  REQUIRE(f.usage->compact().ok());
  f.clock.set(at(kT0));
  CHECK(f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 0);
}

TEST_CASE("an empty or reversed range has no buckets", "[projections][usage]") {
  UsageFixture f;
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0).empty());
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, kT0 + 60, kT0).empty());
  CHECK(f.read({}, UsageGranularity::kMinute, kT0, kT0 + 120).size() == 3);  // 20 s in: three starts
}

// Keys key_00000 … in key order, each verified once (VALID) at kT0.
std::vector<std::string> record_keys(UsageRecorder& recorder, int n) {
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "key_%05d", i);
    keys.emplace_back(id);
    recorder.record(keys.back(), UsageOutcome::kValid, kT0);
  }
  return keys;
}

// The sum of `keys`' counts in the hour starting at `hour`.
std::uint64_t hour_total(UsageFixture& f, const std::vector<std::string>& keys, std::int64_t hour) {
  return f.read(keys, UsageGranularity::kHour, hour, hour + 3600)[0].counts.total();
}

TEST_CASE("hours are rolled up from their minutes a slice of keys at a time, and late counts land once",
          "[projections][usage]") {
  UsageFixture f(UsageRetention{.minutes = 2h, .hours = 48h});
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  const std::vector<std::string> keys = record_keys(f.usage->recorder(), KeyUsage::kRollSliceKeys + 1000);
  REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());  // minute buckets; the hour from them
  CHECK(f.usage->rolled_before() == h0);
  CHECK(hour_total(f, {keys.front()}, h0) == 1);
  CHECK(hour_total(f, keys, h0) == keys.size());

  f.clock.set(at(h0 + 3600 + 60));  // the hour is over, its last fold maybe not yet: no rollup
  REQUIRE(f.usage->flush().ok());
  f.clock.set(at(h0 + 3600 + 200));
  REQUIRE(f.usage->flush().ok());  // the first slice of keys
  CHECK(f.usage->rolled_before() == h0);
  CHECK(hour_total(f, keys, h0) == keys.size());
  f.reopen();  // the rollup goes on where it was

  // Late counts of h0 (a replica's report, say): for a key rolled up, one after it that is
  // not, and keys never seen before on either side of where the rollup is.
  const std::vector<std::string> late = {keys.front(), keys.back(), "key_00000a", "key_late"};
  for (const std::string& key : late) {
    f.usage->recorder().record(key, UsageOutcome::kRevoked, kT0);
  }
  f.clock.advance(2min);
  REQUIRE(f.usage->flush().ok());  // folds them, then the second slice ends the rollup
  CHECK(f.usage->rolled_before() == h0 + 3600);
  for (const std::string& key : late) {
    CAPTURE(key);
    CHECK(f.read({key}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.by_outcome[2] == 1);
  }
  CHECK(hour_total(f, {keys.front()}, h0) == 2);
  CHECK(hour_total(f, {keys.back()}, h0) == 2);
  CHECK(hour_total(f, keys, h0) == keys.size() + 2);
  CHECK(hour_total(f, {keys[100]}, h0 + 3600) == 0);

  // Past their retention, the minutes go and the hours hold what they had.
  f.clock.set(at(h0 + 3 * 3600 + 200));
  REQUIRE(f.usage->compact().ok());
  f.clock.set(at(h0 + 3600 + 300));  // back in time: what compaction dropped stays dropped
  CHECK(f.read({keys.front()}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 0);
  f.reopen();
  CHECK(f.usage->rolled_before() == h0 + 3600);
  CHECK(hour_total(f, keys, h0) == keys.size() + 2);
  CHECK(hour_total(f, {"key_00000a"}, h0) == 1);
}

TEST_CASE("an hour is answered whole when the range ends inside it, rolled up or not", "[projections][usage]") {
  UsageFixture f;
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  f.usage->recorder().record("key_a", UsageOutcome::kValid, h0 + 600);
  f.usage->recorder().record("key_a", UsageOutcome::kValid, h0 + 2400);
  REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());
  const auto half = [&] { return f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 1800); };
  REQUIRE(half().size() == 1);
  CHECK(half()[0].counts.total() == 2);  // from its minutes
  f.clock.set(at(h0 + 3600 + 200));
  REQUIRE(f.usage->flush().ok());
  REQUIRE(f.usage->rolled_before() == h0 + 3600);
  CHECK(half()[0].counts.total() == 2);  // from its hour bucket
  // Minute buckets end at `until` as ever.
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, h0, h0 + 1800)[10].counts.total() == 1);
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, h0, h0 + 1800).size() == 30);
}

TEST_CASE("a rollup cut short by a failing disk, then a crash, neither loses nor doubles a count",
          "[projections][usage]") {
  const std::size_t n = 2 * KeyUsage::kRollSliceKeys + 10;  // three slices
  for (long appends = 0; appends < 5; ++appends) {
    CAPTURE(appends);
    UsageFixture f;
    const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
    const std::vector<std::string> keys = record_keys(f.usage->recorder(), static_cast<int>(n));
    REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());
    f.clock.set(at(h0 + 3600 + 200));
    f.fs->appends_left = appends;
    for (int i = 0; i < 3; ++i) {
      (void)f.usage->flush();  // the slices, failing from somewhere on (or not at all)
    }
    f.fs->appends_left = -1;
    f.reopen();
    CHECK(hour_total(f, keys, h0) == n);
    for (int i = 0; i < 3 && f.usage->rolled_before() == h0; ++i) {
      REQUIRE(f.usage->flush().ok());
    }
    CHECK(f.usage->rolled_before() == h0 + 3600);
    CHECK(hour_total(f, keys, h0) == n);
    CHECK(hour_total(f, {keys[KeyUsage::kRollSliceKeys]}, h0) == 1);
  }
}

TEST_CASE("hour buckets merged minute by minute (before the rollup) are answered once", "[projections][usage]") {
  UsageFixture f;
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  // What an older version left: every minute merged into its minute and its hour bucket, up
  // to the minute under way, and no rollup's progress.
  auto family = f.store->extra_column_family(kUsageColumnFamily);
  REQUIRE(family.ok());
  UsageCounts one;
  one.by_outcome[0] = 1;
  const std::string value = to_proto(one).SerializeAsString();
  rocksdb::WriteBatch batch;
  for (const std::int64_t minute : {h0 - 120, h0 - 60, h0, h0 + 60}) {
    family->merge(batch, std::string("key_a\0m", 7) + encode_be64(static_cast<std::uint64_t>(minute)), value);
    family->merge(batch,
                  std::string("key_a\0h", 7) +
                      encode_be64(static_cast<std::uint64_t>(bucket_start(UsageGranularity::kHour, minute))),
                  value);
  }
  family->erase(batch, std::string("\0r", 2));
  REQUIRE(f.store->write(batch, true).ok());
  f.reopen();
  CHECK(f.usage->rolled_before() == h0);
  CHECK(hour_total(f, {"key_a"}, h0 - 3600) == 2);
  CHECK(hour_total(f, {"key_a"}, h0) == 2);
  f.usage->recorder().record("key_a", UsageOutcome::kValid, kT0);
  f.clock.set(at(h0 + 3600 + 200));
  REQUIRE(f.usage->flush().ok());  // the fold, and the rollup of h0 puts its hour over the old one
  CHECK(f.usage->rolled_before() == h0 + 3600);
  CHECK(hour_total(f, {"key_a"}, h0 - 3600) == 2);
  CHECK(hour_total(f, {"key_a"}, h0) == 3);
}

TEST_CASE(
    "flushes journal the counts, a fold writes them into buckets once a minute, a restart reads the journal "
    "back",
    "[projections][usage]") {
  UsageFixture f;
  REQUIRE(f.usage->flush().ok());  // the first flush folds (nothing yet) and sets the next fold
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  const std::vector<std::string> keys = record_keys(f.usage->recorder(), 300);
  REQUIRE(f.usage->flush().ok());  // journalled, not folded: the minute is not over
  CHECK(f.usage->pending() == 0);
  CHECK(f.read(keys, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 300);

  // A kill now: the journal is read back at the next start, counted once.
  f.reopen();
  CHECK(f.read(keys, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 300);
  f.usage->recorder().record("key_00007", UsageOutcome::kRevoked, kT0 + 1);
  REQUIRE(f.usage->flush().ok());
  f.clock.advance(2min);  // the fold is due: the journal goes into the buckets and away
  REQUIRE(f.usage->flush().ok());
  f.reopen();
  const auto minutes = f.read({"key_00007"}, UsageGranularity::kMinute, kT0, kT0 + 1);
  REQUIRE(minutes.size() == 1);
  CHECK(minutes[0].counts.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{1, 0, 1, 0, 0});
  CHECK(f.read(keys, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 301);
}

TEST_CASE("a fold cut short by a failing disk, then a crash, neither loses nor doubles a count",
          "[projections][usage]") {
  // The fold writes in batches of a few thousand cells: cut after each number of appends in
  // turn, the store reopened as after a crash must answer every count exactly once.
  for (long appends = 0; appends < 8; ++appends) {
    CAPTURE(appends);
    UsageFixture f;
    REQUIRE(f.usage->flush().ok());
    const std::vector<std::string> keys = record_keys(f.usage->recorder(), 30000);
    REQUIRE(f.usage->flush().ok());  // the journal record
    f.clock.advance(2min);
    f.fs->appends_left = appends;
    (void)f.usage->flush();  // the fold, failing somewhere after `appends` appends (or not at all)
    f.fs->appends_left = -1;
    f.reopen();
    const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
    CHECK(f.read(keys, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 30000);
    // And once more after the next fold, now on a sound disk.
    REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());
    f.reopen();
    CHECK(f.read(keys, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 30000);
    CHECK(f.read({keys.back()}, UsageGranularity::kMinute, kT0, kT0 + 1)[0].counts.total() == 1);
  }
}

TEST_CASE("an address used more often than the kept ones is kept, through a flush and a fold",
          "[projections][usage]") {
  // 20 addresses once each, then a new one 10 times within one flush window: counted by the key
  // table (GET /v1/auth) and by the recorder (another path), and as a replica's report merged
  // into a full cell.
  TableUsageFixture f;
  UsageRecorder& r = f.usage->recorder();
  for (int i = 0; i < 20; ++i) {
    const std::string address = "192.0.2." + std::to_string(i);
    f.verify(0, address);
    r.record("key_b", UsageOutcome::kValid, kT0, address);
    r.record("key_c", UsageOutcome::kValid, kT0, address);
  }
  for (int i = 0; i < 10; ++i) {
    f.verify(0, "198.51.100.77");
    r.record("key_b", UsageOutcome::kValid, kT0, "198.51.100.77");
  }
  UsageCell reported{InlineId("key_c"), bucket_start(UsageGranularity::kMinute, kT0), {}};
  reported.counts.by_outcome = {10, 0, 0, 0, 0};
  reported.counts.sources = {{"198.51.100.77", 10}};
  r.merge(reported);
  REQUIRE(f.usage->flush().ok());  // the first flush folds

  // The next minute, the same again, journalled and then folded into the same hour.
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  for (const std::string key : {"key_a", "key_b", "key_c"}) {
    INFO(key);
    const auto minute = f.read({key}, UsageGranularity::kMinute, m0, m0 + 60);
    REQUIRE(minute[0].counts.sources.size() == kMaxUsageSources);
    CHECK(minute[0].counts.sources.front() == std::pair<std::string, std::uint64_t>{"198.51.100.77", 11});
    CHECK(minute[0].counts.total() == 30);
  }
  f.clock.advance(1min);
  for (int i = 0; i < 25; ++i) {
    r.record("key_b", UsageOutcome::kValid, kT0 + 60, "203.0.113." + std::to_string(i));
  }
  r.record("key_b", UsageOutcome::kValid, kT0 + 60, "198.51.100.77");
  REQUIRE(f.usage->flush().ok());
  REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());
  f.usage.reset();  // before the table it reads
  f.reopen();
  const auto hour = f.read({"key_b"}, UsageGranularity::kHour, h0, h0 + 3600);
  REQUIRE(hour[0].counts.sources.size() == kMaxUsageSources);
  CHECK(hour[0].counts.sources.front().first == "198.51.100.77");
  // Summed over keys at query time too.
  const auto summed = f.read({"key_a", "key_b", "key_c"}, UsageGranularity::kMinute, m0, m0 + 60);
  CHECK(summed[0].counts.sources.front().first == "198.51.100.77");
}

TEST_CASE("summing two full source lists keeps an address a list may have let go", "[projections][usage]") {
  // Each list of 20 at 2 uses may have dropped addresses used up to twice; one more address
  // with 2 uses has up to 4 in all, more than any of the others can have.
  UsageCounts a;
  for (int i = 0; i < 20; ++i) {
    a.sources.emplace_back("10.0.0." + std::to_string(i), 2);
  }
  UsageCounts b;
  b.sources.emplace_back("203.0.113.9", 2);
  a.add(b);
  REQUIRE(a.sources.size() == kMaxUsageSources);
  CHECK(a.sources.front() == std::pair<std::string, std::uint64_t>{"203.0.113.9", 4});
  CHECK(from_proto(to_proto(a)) == a);
}

TEST_CASE("a flush's journal record is synced, and a failed sync stops the log's appends too",
          "[projections][usage]") {
  UsageFixture f;
  f.usage->recorder().record("key_a", UsageOutcome::kValid, kT0);
  f.fs->fail_syncs = true;  // a disk whose fsync fails: an unsynced write would not notice
  CHECK_FALSE(f.usage->flush().ok());
  f.fs->fail_syncs = false;
  // The log shares the WAL: what it wrote before that fsync may be lost, and a later fsync
  // that succeeds would not prove otherwise (the kernel reports a lost writeback once).
  v1::Event event;
  event.set_event_id("e1");
  event.set_type("key.created");
  event.mutable_key_created()->set_key_id("key_a");
  const auto appended = f.store->append("agent-1", kAnyVersion, {event});
  REQUIRE_FALSE(appended.ok());
  CHECK(appended.status().ToString().find("restart") != std::string::npos);
  CHECK_FALSE(f.store->sync().ok());
}

TEST_CASE("periodic compactions drop buckets past retention on a thread of their own",
          "[projections][usage]") {
  UsageFixture f(UsageRetention{.minutes = 2h, .hours = 48h});
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  f.usage->recorder().record("key_a", UsageOutcome::kValid, kT0);
  REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());

  f.clock.advance(3h);
  f.usage->start_compactions(10ms);
  // Flushes go on meanwhile, and no one calls compact().
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (f.usage->compactions() < 2 && std::chrono::steady_clock::now() < deadline) {
    f.usage->recorder().record("key_b", UsageOutcome::kValid, kT0 + 3 * 3600);
    REQUIRE(f.usage->flush().ok());
    std::this_thread::sleep_for(5ms);
  }
  CHECK(f.usage->compactions() >= 2);
  f.usage->stop_compactions();
  f.usage->stop_compactions();  // idempotent
  f.clock.set(at(kT0));         // back in time: what compaction dropped stays dropped
  CHECK(f.read({"key_a"}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 0);
  CHECK(f.read({"key_a"}, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == 1);
}

}  // namespace

namespace {

// A key table of `keys` keys (CountingTable::key_id) for a KeyUsage: what one process counted.
struct CountingTable {
  explicit CountingTable(int keys) {
    for (int i = 0; i < keys; ++i) {
      KeyEntry entry;
      entry.key_id = InlineId(key_id(i));
      table.put(digest(i), entry);
    }
  }
  // Well-formed ids (24 hex digits, here decimal ones), in key order: key_000000000000000000000007.
  static std::string key_id(int i) {
    std::string id = std::to_string(i);
    return "key_" + std::string(24 - std::min<std::size_t>(24, id.size()), '0') + id;
  }
  static Digest digest(int i) {
    Digest d{};
    std::memcpy(d.data(), &i, sizeof i);
    d[8] = static_cast<std::uint8_t>(i);  // spread over the shards
    return d;
  }
  // One verification of key i at `at`, counted as `outcome`.
  void verify(int i, std::int64_t at, int outcome = 0, std::string_view source = {}) {
    REQUIRE(table.visit(
        digest(i), at,
        [&](const KeyEntry&, TokenBucket&) { return ActiveKeyTable::Visited{.used = false, .counted = outcome}; },
        source));
  }

  ActiveKeyTable table{{"standard"}};
};

std::vector<std::string> key_ids(int keys) {
  std::vector<std::string> out;
  for (int i = 0; i < keys; ++i) {
    out.push_back(CountingTable::key_id(i));
  }
  return out;
}

}  // namespace

TEST_CASE("the table's journal records hold counts so far: a kill, a restart and more uses in the same minute",
          "[projections][usage]") {
  UsageFixture f;
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  auto first = std::make_unique<CountingTable>(1);
  f.usage = std::make_unique<KeyUsage>(*f.store, f.clock, f.retention, &first->table);
  REQUIRE(f.usage->flush().ok());  // the first flush folds (nothing yet)
  first->verify(0, kT0, 0, "198.51.100.7");
  REQUIRE(f.usage->flush().ok());
  first->verify(0, kT0, 0, "198.51.100.7");
  first->verify(0, kT0, 2, "198.51.100.7");
  REQUIRE(f.usage->flush().ok());  // the cell again, whole: 3 uses, not 2 more
  CHECK(f.read({CountingTable::key_id(0)}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 3);
  first->verify(0, kT0);  // not flushed: lost with the process
  CHECK(f.usage->pending() == 1);

  // Killed: the new process starts counting the same minute from zero. Its journal records
  // must not hide the first process's, whose were folded at the start.
  f.usage.reset();
  f.reopen();
  CountingTable second(1);
  f.usage = std::make_unique<KeyUsage>(*f.store, f.clock, f.retention, &second.table);
  REQUIRE(f.usage->open_status().ok());
  CHECK(f.read({CountingTable::key_id(0)}, UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 3);
  second.verify(0, kT0, 0, "203.0.113.9");
  second.verify(0, kT0, 0, "203.0.113.9");
  REQUIRE(f.usage->flush().ok());
  f.usage.reset();
  f.reopen();
  const auto minute = f.read({CountingTable::key_id(0)}, UsageGranularity::kMinute, m0, m0 + 60);
  CHECK(minute[0].counts.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{4, 0, 1, 0, 0});
  CHECK(minute[0].counts.sources ==
        std::vector<std::pair<std::string, std::uint64_t>>{{"198.51.100.7", 3}, {"203.0.113.9", 2}});
}

TEST_CASE("a fold of the table's counts cut short by a failing disk, then a kill, neither loses nor doubles one",
          "[projections][usage]") {
  // 20 000 keys used in the first minute, half of them again in the second: the fold after the
  // first minute writes 20 000 cells in batches, keeps the second minute's in the table and
  // journals them again. Cut after each number of appends, then killed.
  constexpr int kKeys = 20000;
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  const std::int64_t h0 = bucket_start(UsageGranularity::kHour, kT0);
  const std::vector<std::string> keys = key_ids(kKeys);
  const std::vector<std::string> halves(keys.begin(), keys.begin() + kKeys / 2);
  for (long appends = 0; appends < 6; ++appends) {
    CAPTURE(appends);
    UsageFixture f;
    f.clock.set(at(m0));
    CountingTable counting(kKeys);
    f.usage = std::make_unique<KeyUsage>(*f.store, f.clock, f.retention, &counting.table);
    REQUIRE(f.usage->flush().ok());  // the first flush folds (nothing yet)
    for (int i = 0; i < kKeys; ++i) {
      counting.verify(i, m0 + 1);
    }
    REQUIRE(f.usage->flush().ok());
    f.clock.set(at(m0 + 61));
    for (int i = 0; i < kKeys / 2; ++i) {
      counting.verify(i, m0 + 61, 1);
    }
    REQUIRE(f.usage->flush().ok());  // the fold is not due before m0 + 65
    f.clock.set(at(m0 + 66));
    f.fs->appends_left = appends;
    const bool folded = f.usage->flush().ok();
    f.fs->appends_left = -1;
    if (folded) {
      // Answers right after the fold: the second minute from the table.
      CHECK(f.read(keys, UsageGranularity::kMinute, m0, m0 + 120)[1].counts.total() == kKeys / 2);
    }
    const auto check = [&] {
      const auto minutes = f.read(keys, UsageGranularity::kMinute, m0, m0 + 120);
      CHECK(minutes[0].counts.total() == kKeys);
      CHECK(minutes[1].counts.by_outcome == std::array<std::uint64_t, kUsageOutcomes>{0, kKeys / 2, 0, 0, 0});
      CHECK(f.read(keys, UsageGranularity::kHour, h0, h0 + 3600)[0].counts.total() == kKeys + kKeys / 2);
      CHECK(f.read(halves, UsageGranularity::kMinute, m0 + 60, m0 + 120)[0].counts.total() == kKeys / 2);
    };
    f.usage.reset();
    f.reopen();
    check();
    // The restarted process's first fold (everything read back, still in the second minute),
    // cut short too, then killed again.
    f.fs->appends_left = appends;
    (void)f.usage->flush();
    f.fs->appends_left = -1;
    f.reopen();
    check();
    REQUIRE(f.usage->flush(KeyUsage::Fold::kNow).ok());
    f.reopen();
    check();
  }
}

TEST_CASE("after a failed journal write the next flush journals every cell of the table again",
          "[projections][usage]") {
  UsageFixture f;
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  CountingTable counting(3);
  f.usage = std::make_unique<KeyUsage>(*f.store, f.clock, f.retention, &counting.table);
  REQUIRE(f.usage->flush().ok());
  counting.verify(0, kT0);
  counting.verify(1, kT0);
  f.fs->fail_writes = true;
  CHECK_FALSE(f.usage->flush().ok());
  f.fs->fail_writes = false;
  f.reopen();  // a store whose write failed stays failed: as a restart would
  f.usage = std::make_unique<KeyUsage>(*f.store, f.clock, f.retention, &counting.table);
  counting.verify(2, kT0);
  REQUIRE(f.usage->flush().ok());  // keys 0 and 1 were not marked changed since: journalled all the same
  f.usage.reset();
  f.reopen();
  CHECK(f.read(key_ids(3), UsageGranularity::kMinute, m0, m0 + 60)[0].counts.total() == 3);
}

TEST_CASE("an unreadable journal record of the table stops the start with Corruption", "[projections][usage]") {
  UsageFixture f;
  CountingTable counting(1);
  f.usage = std::make_unique<KeyUsage>(*f.store, f.clock, f.retention, &counting.table);
  REQUIRE(f.usage->flush().ok());
  counting.verify(0, kT0, 0, "2001:db8::1");
  REQUIRE(f.usage->flush().ok());
  f.usage.reset();
  auto family = f.store->extra_column_family(kUsageColumnFamily);
  REQUIRE(family.ok());
  std::string record;
  std::unique_ptr<rocksdb::Iterator> it = family->iterator();
  std::string key;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().ToStringView().starts_with(std::string_view("\0k", 2))) {
      key = it->key().ToString();
      record = it->value().ToString();
    }
  }
  REQUIRE(!key.empty());
  it.reset();
  // A record cut anywhere in its entry is refused, as is a record of another format. (Its first
  // 5 bytes, the format and the base minute's 4-byte varint, are a record of no entries.)
  constexpr std::size_t kHeader = 5;
  REQUIRE(record.size() == kHeader + 1 + 12 + 1 + 1 + 1 + 1 + 11 + 1);  // the id packed, one listed address
  for (std::size_t cut = 1; cut <= record.size(); ++cut) {
    if (cut == kHeader) {
      continue;
    }
    CAPTURE(cut);
    std::string bad = record.substr(0, cut);
    if (cut == record.size()) {
      bad[0] = 2;
    }
    rocksdb::WriteBatch batch;
    family->put(batch, key, bad);
    REQUIRE(f.store->write(batch).ok());
    KeyUsage reopened(*f.store, f.clock, f.retention);
    CHECK(reopened.open_status().code() == Status::Code::kCorruption);
  }
  rocksdb::WriteBatch batch;
  family->put(batch, key, record);
  REQUIRE(f.store->write(batch).ok());
  KeyUsage reopened(*f.store, f.clock, f.retention);
  REQUIRE(reopened.open_status().ok());
  const std::int64_t m0 = bucket_start(UsageGranularity::kMinute, kT0);
  auto minute = reopened.buckets({CountingTable::key_id(0)}, UsageGranularity::kMinute, m0, m0 + 60);
  REQUIRE(minute.ok());
  CHECK((*minute)[0].counts.sources == std::vector<std::pair<std::string, std::uint64_t>>{{"2001:db8::1", 1}});
}

}  // namespace keyledger
