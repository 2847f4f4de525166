#pragma once
// Key usage (api/openapi.yaml Usage): how often each key was presented, with which outcome and from
// which client addresses, per minute and per hour.
//
// Every verification path counts into the active-key table's cells (ActiveKeyTable::visit:
// one 32-byte cell per key, its counts so far in its current minute) or, for what reaches a
// node from elsewhere (a replica's report), into a UsageRecorder. Every few seconds KeyUsage
// flushes into the `usage` column family one journal record of each: the table's cells that
// changed since the last flush, each with its minute's counts so far (a compact binary record,
// about 20 bytes a key: the latest record of a key and minute supersedes the earlier ones), and
// the recorder's counts since the last flush (a v1::UsageReport: these add up). About once a
// minute a fold merges what the journal holds into the keys' minute buckets (merges, no read
// before a write, in key order), takes the minutes that are over out of the table and drops
// the journal in the same writes, journalling again the table's minutes under way. So a key
// verified all minute long costs one bucket write a minute, not one per flush. Hour buckets
// are rolled up: a few minutes after an hour ends, the flushes walk the family key by key
// (kRollSliceKeys keys a flush), sum each key's minute buckets of the hours not rolled up yet
// and put its hour buckets, one write per key and hour instead of sixty merges that RocksDB
// would merge again in its compactions. A count folded after its key's hour was rolled up (a
// replica's late report) merges into the hour bucket as well. Queries answer from the buckets
// plus what is not folded yet, an hour not rolled up from its minute buckets (which the
// retention filter keeps until it is). Start-up reads the journal back and,
// in one synced write, replaces it (and an unfinished fold's progress) with one record of the
// counts not folded yet, which add up: a new process counts a minute again from zero, so its
// records of counts so far must not meet the last process's. Usage
// is data, not events: never appended to the log, left alone by a rebuild of the projections.
// Each flush's journal record is fsync'd (one sync per flush), so neither a killed process nor
// a crash of the machine loses what was flushed: they lose what was counted since the last
// flush. The folds' writes are not synced: until a later sync covers them, the journal they
// drop is still on disk (the WAL recovers a prefix), and recover() reads it back.
//
// The family's layout: key_id '\0' 'm'|'h' BE64(bucket start, Unix seconds) -> v1::UsageCounts;
// '\0' 'j' BE64(sequence) -> v1::UsageReport and '\0' 'k' BE64(sequence) -> the table's cells
// (the journal, one sequence per flush); '\0' 'g' -> how far an unfinished fold got (BE64
// journal end, BE64 minute before which the table's cells were folded, BE64 minute, key id):
// its journal records up to that cell are in the buckets already; '\0' 'r' -> the rollup's
// progress (BE64 first hour not rolled up for every key, BE64 end of the hours being rolled
// up, the last key id rolled up; the two hours equal when no rollup runs).
// Buckets older than their granularity's retention are never answered and are dropped by a
// compaction filter (usage_family_tuning) in RocksDB's background compactions, off every
// request's path, and by the periodic full compactions of start_compactions(), on a thread of
// their own.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <rocksdb/write_batch.h>

#include "domain/clock.h"
#include "eventstore/event_store.h"
#include "keyledger/v1/usage.pb.h"
#include "projections/active_key_table.h"
#include "projections/huge_pages.h"

namespace keyledger {

// The outcomes counted against a key (MALFORMED and NOT_FOUND belong to no key).
enum class UsageOutcome : std::uint8_t { kValid, kRateLimited, kRevoked, kExpired, kCompromised };
inline constexpr std::size_t kUsageOutcomes = 5;
std::string_view usage_outcome_name(UsageOutcome outcome);  // "VALID", "RATE_LIMITED", …

// Distinct client addresses kept per bucket, the most frequent first, bounded by the
// Space-Saving rule of merge_sources (active_key_table.h): counts of a full list are upper
// bounds, over by at most its smallest count.
inline constexpr std::size_t kMaxUsageSources = 20;

struct UsageCounts {
  std::array<std::uint64_t, kUsageOutcomes> by_outcome{};
  std::vector<std::pair<std::string, std::uint64_t>> sources;  // address, count; most seen first

  // Sums `other` in; the addresses merge by merge_sources (the most seen stay) and are sorted.
  void add(const UsageCounts& other);
  std::uint64_t total() const;
  bool operator==(const UsageCounts&) const = default;
};

v1::UsageCounts to_proto(const UsageCounts& counts);
void to_proto(const UsageCounts& counts, v1::UsageCounts& proto);  // into an existing message
UsageCounts from_proto(const v1::UsageCounts& counts);

enum class UsageGranularity : std::uint8_t { kMinute, kHour };
std::int64_t bucket_seconds(UsageGranularity granularity);  // 60 or 3600
// The start of the bucket holding `unix_seconds`.
std::int64_t bucket_start(UsageGranularity granularity, std::int64_t unix_seconds);

struct UsageRetention {
  std::chrono::seconds minutes = std::chrono::hours(48);
  std::chrono::seconds hours = std::chrono::hours(90 * 24);
  std::chrono::seconds of(UsageGranularity granularity) const {
    return granularity == UsageGranularity::kMinute ? minutes : hours;
  }
  // The start of the first hour not rolled up for every key yet (KeyUsage sets it): the
  // retention filter keeps the minute buckets of that hour and later whatever their age, as
  // they are the only record of those hours. Copies share it, so the one UsageRetention given
  // to usage_family_tuning() and to KeyUsage ties the filter to the rollup. 0 until KeyUsage
  // has read it back: every minute bucket is kept.
  std::shared_ptr<std::atomic<std::int64_t>> minutes_needed_from = std::make_shared<std::atomic<std::int64_t>>(0);
};

// One key's usage in one minute.
struct UsageCell {
  InlineId key_id;
  std::int64_t minute = 0;  // Unix seconds, a multiple of 60
  UsageCounts counts;
};

// Usage recorded since the last drain, per key and minute. Thread-safe; record() holds one
// shard's lock for a hash and, nearly always, one cache line: each shard is an open-addressing
// table of 64-byte cells (key id, minute and counts inline, on huge pages once large), with
// the rare cell that has client addresses pointing into a side list. Drains swap the table
// out under the lock and read it outside, so verification never waits for a flush.
class UsageRecorder {
 public:
  UsageRecorder() = default;
  UsageRecorder(const UsageRecorder&) = delete;
  UsageRecorder& operator=(const UsageRecorder&) = delete;

  // One verification of `key_id` at `now_s` (Unix seconds); `source` is the client address,
  // empty when unknown (a gateway's POST /v1/verify).
  void record(std::string_view key_id, UsageOutcome outcome, std::int64_t now_s,
              std::string_view source = {});
  // Adds a cell recorded elsewhere (a replica's report).
  void merge(const UsageCell& cell);
  // Everything recorded since the last call. One caller at a time (the flusher).
  std::vector<UsageCell> take();
  // The undrained cells of `key_id` for the minutes in [first_minute, last_minute].
  std::vector<UsageCell> peek(std::string_view key_id, std::int64_t first_minute,
                              std::int64_t last_minute) const;
  // Cells waiting to be drained.
  std::size_t pending() const;

 private:
  struct Cell {               // one cache line
    InlineId key_id;          // empty: a free place
    std::int32_t minute = 0;  // Unix minutes
    std::array<std::uint32_t, kUsageOutcomes> counts{};
    std::uint32_t sources = 0;  // 1 + index into Table::sources; 0: none
    std::uint32_t spare = 0;
  };
  static_assert(sizeof(Cell) == 64, "a usage cell is one cache line");
  struct Table {
    std::vector<Cell, HugePageAllocator<Cell>> cells;  // size a power of two, or empty
    std::size_t used = 0;
    std::vector<std::vector<std::pair<std::string, std::uint64_t>>> sources;
  };
  static constexpr std::size_t kShards = 16;
  static constexpr std::size_t kInitialCells = 256;
  struct Shard {
    mutable std::mutex mutex;
    Table table;
  };

  static std::size_t hash_of(std::string_view key_id) { return std::hash<std::string_view>{}(key_id); }
  Shard& shard_for(std::size_t hash) { return shards_[(hash >> 56) % kShards]; }
  const Shard& shard_for(std::size_t hash) const { return shards_[(hash >> 56) % kShards]; }
  // The cell of (key_id, minute) in `table`, or null (find); created, growing the table if
  // needed (place).
  static const Cell* find(const Table& table, std::size_t hash, const InlineId& key_id, std::int32_t minute);
  static Cell& place(Table& table, std::size_t hash, const InlineId& key_id, std::int32_t minute);
  static void add_source(Table& table, Cell& cell, std::string_view address, std::uint64_t count);
  static void merge_sources(Table& table, Cell& cell,
                            const std::vector<std::pair<std::string, std::uint64_t>>& sources);
  static UsageCell to_cell(const Table& table, const Cell& cell);

  std::array<Shard, kShards> shards_;
};

// The table's journal records (usage.cpp has the format): UsageJournalWriter appends cells to
// a record, read_usage_journal() hands them back.
class UsageJournalWriter {
 public:
  // Starts a record in `out` whose cells' minutes lie within 2^31 minutes of `base_minute`
  // (Unix minutes, 1 to 2^31 - 1, like theirs).
  UsageJournalWriter(std::string& out, std::int64_t base_minute);
  void add(const ActiveKeyTable::CountedMinute& cell);

 private:
  void varint(std::uint32_t v);
  void text(std::string_view s);
  std::string& out_;
  std::int64_t base_;
};
// Calls sink for each cell of `record`, in order; false if the record is malformed (sink may
// have been called for the cells before the fault).
bool read_usage_journal(std::string_view record, const ActiveKeyTable::CountSink& sink);

// Moves what `table` counted (ActiveKeyTable::visit) into `recorder`.
void drain_counts(ActiveKeyTable& table, UsageRecorder& recorder);

struct UsageBucket {
  std::int64_t start = 0;  // Unix seconds
  UsageCounts counts;
};

// The usage column family's name, and its merge operator and retention filter for
// EventStoreOptions::tuning. `clock` must outlive the store.
inline constexpr std::string_view kUsageColumnFamily = "usage";
EventStoreOptions::FamilyTuning usage_family_tuning(const Clock& clock, UsageRetention retention);

class KeyUsage {
 public:
  // `store` must have the usage column family, opened with usage_family_tuning(), and
  // outlive this, like `table` (may be null), whose counts (ActiveKeyTable::visit) are
  // flushed and answered with the recorder's. Rewrites the journal read back (the file
  // comment says why; open_status() says if that failed).
  KeyUsage(const EventStore& store, const Clock& clock, UsageRetention retention,
           ActiveKeyTable* table = nullptr);

  // NotFound naming the family when the store lacks it, else Ok.
  const Status& open_status() const { return open_status_; }

  UsageRecorder& recorder() { return recorder_; }
  // Keys and minutes counted and not flushed yet (the table's and the recorder's).
  std::size_t pending() const;
  const UsageRetention& retention() const { return retention_; }

  // Writes what was counted since the last flush (the recorder's and the table's) into the
  // journal, fsync'd before it returns. When `fold` says kNow, or when the minute the last
  // fold ran in is over, merges everything journalled into the buckets and drops the journal
  // (those writes unsynced: the file comment says why that is safe); kNow folds the table's
  // minute under way too (at a clean stop). Then rolls up a slice of keys when a rollup is
  // due or under way.
  enum class Fold : std::uint8_t { kWhenDue, kNow };
  Status flush(Fold fold = Fold::kWhenDue);

  // Every bucket whose start lies in [since, until) (Unix seconds, since aligned down to the
  // bucket), oldest first, each whole (the last one too when `until` falls inside it), summed
  // over `key_ids`: stored counts plus the unflushed ones, zero
  // where there were none, and zero for buckets past retention.
  Result<std::vector<UsageBucket>> buckets(const std::vector<std::string>& key_ids,
                                           UsageGranularity granularity, std::int64_t since,
                                           std::int64_t until) const;

  // Keys a flush rolls up at most, one write each: a rollup of a million keys runs over about
  // 980 flushes (33 minutes at a flush every 2 s), its work spread thin and none holding the
  // flush (or a query) for long.
  static constexpr std::size_t kRollSliceKeys = 1024;
  // The start of the first hour not rolled up for every key yet.
  std::int64_t rolled_before() const;

  // Drops the buckets past retention now, instead of at RocksDB's next compaction: compacts
  // the whole family and waits (minutes, for a large one). Ends early, not Ok, once `canceled`
  // (may be null) is true.
  Status compact(std::atomic<bool>* canceled = nullptr) const;

  // Runs compact() every `interval` on a thread of its own (kl-usage-compact) until
  // stop_compactions(), so that buckets past retention leave the disk within an interval
  // without anything else waiting for the compaction (the node's housekeeper flushes usage
  // every 2 s and appends expiries every second). A second call while it runs does nothing;
  // a call after stop_compactions() starts it again.
  void start_compactions(std::chrono::milliseconds interval);
  // Cancels a compaction under way and joins the thread. Idempotent; the destructor calls it.
  void stop_compactions();
  // Periodic compactions finished since start_compactions (Ok or not).
  std::uint64_t compactions() const { return compactions_.load(std::memory_order_acquire); }

  ~KeyUsage();
  KeyUsage(const KeyUsage&) = delete;
  KeyUsage& operator=(const KeyUsage&) = delete;

 private:
  const EventStore& store_;
  ActiveKeyTable* table_;
  ColumnFamily family_;
  Status open_status_;
  const Clock& clock_;
  UsageRetention retention_;
  // Reads the journal (and an unfinished fold's progress) back into journalled_.
  Status recover();
  // Folds the journal into the buckets; with `everything`, the table's minute under way too.
  Status fold(bool everything = false);
  // Adds the table's changed cells (all after a failed write) to `batch` as the journal record
  // `sequence`; false if there were none.
  bool journal_table(rocksdb::WriteBatch& batch, std::uint64_t sequence);
  // Adds to `batch` the deletion of the journal records before `end` and of a fold's progress.
  void drop_journal(rocksdb::WriteBatch& batch, std::uint64_t end) const;

  // The hour rollup (the file comment): hours before rolled_before_ are rolled up for every
  // key, those in [rolled_before_, rolling_to_) for the keys up to rolled_through_ too (none
  // when empty). Under flush_mutex_.
  std::int64_t rolled_before_ = 0;
  std::int64_t rolling_to_ = 0;
  std::string rolled_through_;
  // True once `hour` of `key_id` is in its hour bucket: later counts merge into it too.
  bool rolled(std::string_view key_id, std::int64_t hour) const;
  // Rolls up one slice of keys (kRollSliceKeys), starting a rollup of the hours over when none
  // runs and the last of them is folded.
  Status roll(std::int64_t now_s);
  // Adds to `batch` the rollup's progress record (the file comment has its fields).
  void put_rollup(rocksdb::WriteBatch& batch, std::int64_t before, std::int64_t to, std::string_view through) const;

  mutable UsageRecorder recorder_;   // queries move the table's counts into it first
  UsageRecorder journalled_;         // in the journal, not in the buckets yet
  std::uint64_t journal_first_ = 0;  // the journal's records: [journal_first_, next_journal_)
  std::uint64_t next_journal_ = 0;
  bool journal_written_ = false;  // some of them may exist
  bool rejournal_table_ = false;  // a journal write failed: the next journals every table cell
  std::int64_t next_fold_s_ = 0;  // Unix seconds; 0: at the next flush
  // A flush's journal record and batch, kept with their memory (megabytes at a million keys
  // in use) so that each flush does not map and fault fresh pages. Under flush_mutex_.
  std::string journal_record_;
  rocksdb::WriteBatch flush_batch_;
  // Held by flush() from drain to write, and by queries: a query sees each cell in the
  // recorder, the journal or the buckets, never in none and never in two.
  mutable std::mutex flush_mutex_;

  // start_compactions()' thread; compact() does not take flush_mutex_.
  void run_compactions(std::chrono::milliseconds interval);
  std::thread compactor_;
  std::mutex compactor_mutex_;
  std::condition_variable compactor_wake_;
  bool compactor_stopping_ = false;  // under compactor_mutex_
  std::atomic<bool> cancel_compaction_{false};
  std::atomic<std::uint64_t> compactions_{0};
};

}  // namespace keyledger
