#include "projections/usage.h"

#include <rocksdb/compaction_filter.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "domain/thread_name.h"

namespace keyledger {
namespace {

constexpr char kMinuteTag = 'm';
constexpr char kHourTag = 'h';
constexpr std::size_t kSuffixBytes = 2 + 8;  // '\0', the granularity tag, BE64 start
// Unfolded cells are looked for this far back from now (a fold runs every minute).
constexpr std::int64_t kPeekBackSeconds = 15 * 60;
constexpr std::size_t kBatchCells = 8 * 1024;

char tag_of(UsageGranularity granularity) {
  return granularity == UsageGranularity::kMinute ? kMinuteTag : kHourTag;
}

std::string prefix_of(std::string_view key_id, UsageGranularity granularity) {
  std::string prefix(key_id);
  prefix.push_back('\0');
  prefix.push_back(tag_of(granularity));
  return prefix;
}

std::string bucket_key(std::string_view key_id, UsageGranularity granularity, std::int64_t start) {
  return prefix_of(key_id, granularity) +
         encode_be64(static_cast<std::uint64_t>(std::max<std::int64_t>(0, start)));
}

// True while a bucket is within its granularity's retention at `now_s`: the same rule for
// answers and for the compaction filter.
bool retained(UsageGranularity granularity, std::int64_t start, std::int64_t now_s,
              const UsageRetention& retention) {
  return start + bucket_seconds(granularity) > now_s - retention.of(granularity).count();
}

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Most seen first, then by address.
void sort_sources(std::vector<std::pair<std::string, std::uint64_t>>& sources) {
  std::sort(sources.begin(), sources.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
}

UsageCounts parse_counts(std::string_view bytes) {
  v1::UsageCounts proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return {};
  }
  return from_proto(proto);
}

// Buckets are sums: a flush merges its counts into the stored ones without reading them.
class UsageMerge final : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    UsageCounts sum = existing == nullptr ? UsageCounts{} : parse_counts(existing->ToStringView());
    sum.add(parse_counts(value.ToStringView()));
    return to_proto(sum).SerializeToString(new_value);
  }
  const char* Name() const override { return "keyledger.UsageMerge"; }
};

class UsageRetentionFilter final : public rocksdb::CompactionFilter {
 public:
  UsageRetentionFilter(std::int64_t now_s, UsageRetention retention) : now_s_(now_s), retention_(retention) {}

  bool Filter(int, const rocksdb::Slice& key, const rocksdb::Slice&, std::string*, bool*) const override {
    return expired(key.ToStringView());
  }
  // A bucket only ever merged into (never Put) reaches compactions as operands.
  bool FilterMergeOperand(int, const rocksdb::Slice& key, const rocksdb::Slice&) const override {
    return expired(key.ToStringView());
  }
  const char* Name() const override { return "keyledger.UsageRetention"; }

 private:
  bool expired(std::string_view k) const {
    if (k.size() < kSuffixBytes || k[k.size() - kSuffixBytes] != '\0') {
      return false;
    }
    const char tag = k[k.size() - kSuffixBytes + 1];
    if (tag != kMinuteTag && tag != kHourTag) {
      return false;
    }
    const auto start = static_cast<std::int64_t>(decode_be64(k.substr(k.size() - 8)));
    const UsageGranularity granularity =
        tag == kMinuteTag ? UsageGranularity::kMinute : UsageGranularity::kHour;
    return !retained(granularity, start, now_s_, retention_);
  }

  std::int64_t now_s_;
  UsageRetention retention_;
};

class UsageRetentionFilters final : public rocksdb::CompactionFilterFactory {
 public:
  UsageRetentionFilters(const Clock& clock, UsageRetention retention)
      : clock_(clock), retention_(retention) {}

  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context&) override {
    return std::make_unique<UsageRetentionFilter>(unix_seconds(clock_.now()), retention_);
  }
  const char* Name() const override { return "keyledger.UsageRetentionFilters"; }

 private:
  const Clock& clock_;
  UsageRetention retention_;
};

}  // namespace

std::string_view usage_outcome_name(UsageOutcome outcome) {
  switch (outcome) {
    case UsageOutcome::kValid:
      return "VALID";
    case UsageOutcome::kRateLimited:
      return "RATE_LIMITED";
    case UsageOutcome::kRevoked:
      return "REVOKED";
    case UsageOutcome::kExpired:
      return "EXPIRED";
    case UsageOutcome::kCompromised:
      return "COMPROMISED";
  }
  return "VALID";
}

void UsageCounts::add(const UsageCounts& other) {
  for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
    by_outcome[i] += other.by_outcome[i];
  }
  merge_sources(sources, other.sources, kMaxUsageSources);  // the Space-Saving rule (active_key_table.h)
  sort_sources(sources);
}

std::uint64_t UsageCounts::total() const {
  std::uint64_t sum = 0;
  for (const std::uint64_t n : by_outcome) {
    sum += n;
  }
  return sum;
}

void to_proto(const UsageCounts& counts, v1::UsageCounts& proto) {
  proto.set_valid(counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kValid)]);
  proto.set_rate_limited(counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kRateLimited)]);
  proto.set_revoked(counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kRevoked)]);
  proto.set_expired(counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kExpired)]);
  proto.set_compromised(counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kCompromised)]);
  for (const auto& [address, count] : counts.sources) {
    v1::UsageSource* source = proto.add_sources();
    source->set_address(address);
    source->set_count(count);
  }
}

v1::UsageCounts to_proto(const UsageCounts& counts) {
  v1::UsageCounts proto;
  to_proto(counts, proto);
  return proto;
}

UsageCounts from_proto(const v1::UsageCounts& proto) {
  UsageCounts counts;
  counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kValid)] = proto.valid();
  counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kRateLimited)] = proto.rate_limited();
  counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kRevoked)] = proto.revoked();
  counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kExpired)] = proto.expired();
  counts.by_outcome[static_cast<std::size_t>(UsageOutcome::kCompromised)] = proto.compromised();
  // Bounded (one entry at a time) and sorted, whatever the sender did.
  for (const auto& source : proto.sources()) {
    add_source(counts.sources, source.address(), source.count(), kMaxUsageSources);
  }
  sort_sources(counts.sources);
  return counts;
}

std::int64_t bucket_seconds(UsageGranularity granularity) {
  return granularity == UsageGranularity::kMinute ? 60 : 3600;
}

std::int64_t bucket_start(UsageGranularity granularity, std::int64_t unix_seconds) {
  const std::int64_t step = bucket_seconds(granularity);
  const std::int64_t floor = unix_seconds / step * step;
  return floor > unix_seconds ? floor - step : floor;  // rounds toward minus infinity
}

// --- UsageRecorder

namespace {

// An empty id marks a free cell, and ids starting with '\0' would sort among the journal's
// records (the file comment of usage.h has the family's layout).
bool storable(std::string_view key_id) { return !key_id.empty() && key_id.front() != '\0'; }

std::size_t cell_hash(std::size_t key_hash, std::int32_t minute) {
  return key_hash ^ (static_cast<std::size_t>(static_cast<std::uint32_t>(minute)) * 0x9E3779B97F4A7C15ULL);
}

}  // namespace

const UsageRecorder::Cell* UsageRecorder::find(const Table& table, std::size_t hash, const InlineId& key_id,
                                               std::int32_t minute) {
  if (table.cells.empty()) {
    return nullptr;
  }
  const std::size_t mask = table.cells.size() - 1;
  for (std::size_t i = cell_hash(hash, minute) & mask;; i = (i + 1) & mask) {
    const Cell& cell = table.cells[i];
    if (cell.key_id.view().empty()) {
      return nullptr;
    }
    if (cell.minute == minute && cell.key_id == key_id) {
      return &cell;
    }
  }
}

UsageRecorder::Cell& UsageRecorder::place(Table& table, std::size_t hash, const InlineId& key_id,
                                          std::int32_t minute) {
  if ((table.used + 1) * 10 > table.cells.size() * 7) {  // at most 70 % full
    std::vector<Cell, HugePageAllocator<Cell>> old;
    old.swap(table.cells);
    table.cells.resize(std::max(kInitialCells, old.size() * 2));
    const std::size_t mask = table.cells.size() - 1;
    for (const Cell& cell : old) {
      if (!cell.key_id.view().empty()) {
        std::size_t i = cell_hash(hash_of(cell.key_id.view()), cell.minute) & mask;
        while (!table.cells[i].key_id.view().empty()) {
          i = (i + 1) & mask;
        }
        table.cells[i] = cell;
      }
    }
  }
  const std::size_t mask = table.cells.size() - 1;
  for (std::size_t i = cell_hash(hash, minute) & mask;; i = (i + 1) & mask) {
    Cell& cell = table.cells[i];
    if (cell.key_id.view().empty()) {
      cell.key_id = key_id;
      cell.minute = minute;
      ++table.used;
      return cell;
    }
    if (cell.minute == minute && cell.key_id == key_id) {
      return cell;
    }
  }
}

void UsageRecorder::add_source(Table& table, Cell& cell, std::string_view address, std::uint64_t count) {
  if (cell.sources == 0) {
    table.sources.emplace_back();
    cell.sources = static_cast<std::uint32_t>(table.sources.size());
  }
  // Sorted when drained.
  keyledger::add_source(table.sources[cell.sources - 1], address, count, kMaxUsageSources);
}

void UsageRecorder::merge_sources(Table& table, Cell& cell,
                                  const std::vector<std::pair<std::string, std::uint64_t>>& sources) {
  if (sources.empty()) {
    return;
  }
  if (cell.sources == 0) {
    table.sources.emplace_back();
    cell.sources = static_cast<std::uint32_t>(table.sources.size());
  }
  keyledger::merge_sources(table.sources[cell.sources - 1], sources, kMaxUsageSources);
}

UsageCell UsageRecorder::to_cell(const Table& table, const Cell& cell) {
  UsageCell out{cell.key_id, static_cast<std::int64_t>(cell.minute) * 60, {}};
  UsageCounts counts;
  for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
    counts.by_outcome[i] = cell.counts[i];
  }
  if (cell.sources != 0) {
    counts.sources = table.sources[cell.sources - 1];
  }
  out.counts.add(counts);  // sorts and bounds the sources
  return out;
}

void UsageRecorder::record(std::string_view key_id, UsageOutcome outcome, std::int64_t now_s,
                           std::string_view source) {
  if (!storable(key_id)) {
    return;
  }
  const InlineId id(key_id);
  const std::size_t hash = hash_of(id.view());
  const auto minute = static_cast<std::int32_t>(bucket_start(UsageGranularity::kMinute, now_s) / 60);
  Shard& shard = shard_for(hash);
  std::lock_guard lock(shard.mutex);
  Cell& cell = place(shard.table, hash, id, minute);
  ++cell.counts[static_cast<std::size_t>(outcome)];
  if (!source.empty()) {
    add_source(shard.table, cell, source, 1);
  }
}

void UsageRecorder::merge(const UsageCell& in) {
  if (!storable(in.key_id.view())) {
    return;
  }
  const std::size_t hash = hash_of(in.key_id.view());
  const auto minute = static_cast<std::int32_t>(bucket_start(UsageGranularity::kMinute, in.minute) / 60);
  Shard& shard = shard_for(hash);
  std::lock_guard lock(shard.mutex);
  Cell& cell = place(shard.table, hash, in.key_id, minute);
  for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
    const std::uint64_t sum = cell.counts[i] + in.counts.by_outcome[i];
    cell.counts[i] = static_cast<std::uint32_t>(std::min<std::uint64_t>(sum, UINT32_MAX));
  }
  merge_sources(shard.table, cell, in.counts.sources);
}

std::vector<UsageCell> UsageRecorder::take() {
  std::vector<UsageCell> out;
  for (Shard& shard : shards_) {
    Table drained;
    {
      std::lock_guard lock(shard.mutex);
      if (shard.table.used == 0) {
        continue;
      }
      drained.cells.swap(shard.table.cells);
      drained.sources.swap(shard.table.sources);
      drained.used = shard.table.used;
      shard.table.used = 0;
    }
    out.reserve(out.size() + drained.used);
    for (const Cell& cell : drained.cells) {
      if (!cell.key_id.view().empty()) {
        out.push_back(to_cell(drained, cell));
      }
    }
  }
  return out;
}

std::vector<UsageCell> UsageRecorder::peek(std::string_view key_id, std::int64_t first_minute,
                                           std::int64_t last_minute) const {
  std::vector<UsageCell> out;
  const InlineId id(key_id);
  const std::size_t hash = hash_of(id.view());
  const Shard& shard = shard_for(hash);
  std::lock_guard lock(shard.mutex);
  if (shard.table.used == 0) {
    return out;
  }
  for (std::int64_t minute = bucket_start(UsageGranularity::kMinute, first_minute); minute <= last_minute;
       minute += 60) {
    if (const Cell* cell = find(shard.table, hash, id, static_cast<std::int32_t>(minute / 60))) {
      out.push_back(to_cell(shard.table, *cell));
    }
  }
  return out;
}

std::size_t UsageRecorder::pending() const {
  std::size_t n = 0;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.table.used;
  }
  return n;
}

// --- KeyUsage

EventStoreOptions::FamilyTuning usage_family_tuning(const Clock& clock, UsageRetention retention) {
  // A flush writes its cells in key order: one insert hint for the whole family (every key
  // id starts with the same four bytes) lets each merge start at the previous one's place.
  return {.merge_operator = std::make_shared<UsageMerge>(),
          .compaction_filters = std::make_shared<UsageRetentionFilters>(clock, retention),
          .insert_hint_prefix =
              std::shared_ptr<const rocksdb::SliceTransform>(rocksdb::NewFixedPrefixTransform(4)),
          // A million keys in use journal about 10 MB every flush, all of it deleted at the next
          // fold: small memtables hand it to disk (and compaction drops it) instead of holding
          // up to 128 MB of it in memory.
          .write_buffer_bytes = std::size_t{16} << 20};
}

namespace {

// An ActiveKeyTable::CountSink that hands sink(UsageCell) each key and minute.
template <typename Sink>
ActiveKeyTable::CountSink to_cells(Sink& sink) {
  static_assert(ActiveKeyTable::kCountedOutcomes == kUsageOutcomes);
  return [&sink](const InlineId& key_id, std::int64_t minute_start,
                 const std::array<std::uint32_t, ActiveKeyTable::kCountedOutcomes>& counts,
                 const std::vector<std::pair<std::string, std::uint32_t>>& sources) {
    UsageCell cell{key_id, minute_start, {}};
    for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
      cell.counts.by_outcome[i] = counts[i];
    }
    for (const auto& [address, n] : sources) {
      cell.counts.sources.emplace_back(address, n);
    }
    sink(std::move(cell));
  };
}

}  // namespace

void drain_counts(ActiveKeyTable& table, UsageRecorder& recorder) {
  const auto merge = [&](UsageCell cell) { recorder.merge(cell); };
  table.drain_counts(to_cells(merge));
}

KeyUsage::KeyUsage(const EventStore& store, const Clock& clock, UsageRetention retention,
                   ActiveKeyTable* table)
    : store_(store), table_(table), clock_(clock), retention_(retention) {
  auto family = store.extra_column_family(kUsageColumnFamily);
  open_status_ = family.status();
  if (family.ok()) {
    family_ = *family;
    open_status_ = recover();
  }
}

namespace {

// The minute/hour buckets, the journal and a fold's progress (the file comment has the layout).
std::string journal_key(std::uint64_t sequence) { return std::string("\0j", 2) + encode_be64(sequence); }
const std::string kFoldProgressKey("\0f", 2);
// A fold runs this long after its minute ends, so that minute's last flush is in it.
constexpr std::int64_t kFoldDelaySeconds = 5;

bool cell_before(const UsageCell& a, const UsageCell& b) {
  return a.key_id.view() != b.key_id.view() ? a.key_id.view() < b.key_id.view() : a.minute < b.minute;
}

}  // namespace

Status KeyUsage::recover() {
  // An unfinished fold: the cells up to `done` of the records below `end` are in the buckets.
  std::uint64_t end = 0;
  UsageCell done;
  auto progress = family_.get(kFoldProgressKey);
  if (!progress.ok()) {
    return progress.status();
  }
  if (progress->has_value()) {
    const std::string& v = **progress;
    if (v.size() < 16) {
      return Status::Corruption("unreadable usage fold progress");
    }
    end = decode_be64(v);
    done.minute = static_cast<std::int64_t>(decode_be64(std::string_view(v).substr(8)));
    done.key_id = InlineId(std::string_view(v).substr(16));
  }
  const std::string first = journal_key(0);
  std::unique_ptr<rocksdb::Iterator> it = family_.iterator();
  v1::UsageReport report;
  for (it->Seek(first); it->Valid(); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    if (key.size() != first.size() || !key.starts_with(std::string_view(first).substr(0, 2))) {
      break;
    }
    const std::uint64_t sequence = decode_be64(key.substr(2));
    if (!report.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Corruption("unreadable usage journal record " + std::to_string(sequence));
    }
    for (const v1::UsageCell& in : report.cells()) {
      UsageCell cell{InlineId(in.key_id()), in.minute_start(), from_proto(in.counts())};
      if (sequence < end && !cell_before(done, cell)) {
        continue;  // folded already
      }
      journalled_.merge(cell);
    }
    if (!journal_written_) {
      journal_first_ = sequence;
    }
    next_journal_ = sequence + 1;
    journal_written_ = true;
  }
  return from_rocks(it->status(), "read the usage journal");
}

Status KeyUsage::flush(Fold fold_when) {
  std::lock_guard lock(flush_mutex_);
  // The journal record is built in an arena: one allocation for every cell's message.
  google::protobuf::ArenaOptions arena_options;
  arena_options.start_block_size = std::size_t{1} << 20;
  arena_options.max_block_size = std::size_t{8} << 20;
  google::protobuf::Arena arena(arena_options);
  auto* report = google::protobuf::Arena::CreateMessage<v1::UsageReport>(&arena);
  const auto add = [&](const UsageCell& cell) {
    v1::UsageCell* out = report->add_cells();
    out->set_key_id(cell.key_id.view().data(), cell.key_id.view().size());
    out->set_minute_start(cell.minute);
    to_proto(cell.counts, *out->mutable_counts());  // in the arena, like `out`
  };
  for (const UsageCell& cell : recorder_.take()) {
    add(cell);
  }
  const int from_recorder = report->cells_size();
  if (table_ != nullptr) {
    // Straight into the record, not through the recorder (a hash table built and emptied
    // every flush); the table keeps their sums per key and minute until the fold.
    table_->drain_counts(to_cells(add), /*keep=*/true);
  }
  if (report->cells_size() > 0) {
    rocksdb::WriteBatch batch;
    family_.put(batch, journal_key(next_journal_), report->SerializeAsString());
    // Synced: a crash of the machine loses at most what was counted since (one fsync per
    // flush, every 2 s on a node).
    const Status s = store_.write(batch, /*sync=*/true);
    // The recorder's cells into the journal's memory image, or back into the recorder for the
    // next flush. The table's are kept in the table either way: folded at the next fold, they
    // are lost only if the process dies first (as if not drained yet).
    UsageRecorder& into = s.ok() ? journalled_ : recorder_;
    for (int i = 0; i < from_recorder; ++i) {
      const v1::UsageCell& cell = report->cells(i);
      into.merge({InlineId(cell.key_id()), cell.minute_start(), from_proto(cell.counts())});
    }
    if (!s.ok()) {
      return s.Annotate("write the usage journal");
    }
    ++next_journal_;
    journal_written_ = true;
  }
  const std::int64_t now_s = unix_seconds(clock_.now());
  if (fold_when == Fold::kWhenDue && now_s < next_fold_s_) {
    return Status::Ok();
  }
  next_fold_s_ = bucket_start(UsageGranularity::kMinute, now_s) + 60 + kFoldDelaySeconds;
  return fold();
}

// Under flush_mutex_. Batches of kBatchCells: every batch but the last records how far the
// fold got, the last drops the journal, so a crash in between neither loses nor doubles a cell
// (recover() skips what the progress covers).
Status KeyUsage::fold() {
  const std::uint64_t end = next_journal_;
  std::vector<UsageCell> cells = journalled_.take();
  if (table_ != nullptr) {
    // Including what the table kept from a flush whose journal record failed to write.
    const auto push = [&](UsageCell cell) { cells.push_back(std::move(cell)); };
    table_->fold_counts(to_cells(push));
  }
  if (cells.empty() && !journal_written_) {
    return Status::Ok();
  }
  // In key order: consecutive merges land next to each other in the memtable (a search path
  // already in cache) instead of each at a random place in it.
  std::sort(cells.begin(), cells.end(), cell_before);
  rocksdb::WriteBatch batch;
  std::size_t written = 0;  // cells[0, written) are in the buckets
  std::string value;
  for (std::size_t i = 0; i <= cells.size(); ++i) {
    const bool last = i == cells.size();
    if (!last) {
      const UsageCell& cell = cells[i];
      to_proto(cell.counts).SerializeToString(&value);
      // The hour's key sorts before the minute's ('h' < 'm'): written in key order.
      family_.merge(batch,
                    bucket_key(cell.key_id.view(), UsageGranularity::kHour,
                               bucket_start(UsageGranularity::kHour, cell.minute)),
                    value);
      family_.merge(batch, bucket_key(cell.key_id.view(), UsageGranularity::kMinute, cell.minute), value);
      if (i + 1 - written < kBatchCells || i + 1 == cells.size()) {
        continue;
      }
      family_.put(batch, kFoldProgressKey,
                  encode_be64(end) + encode_be64(static_cast<std::uint64_t>(cell.minute)) +
                      std::string(cell.key_id.view()));
    } else {
      // One delete per record (a few dozen), not a range deletion: RocksDB shares a memtable
      // insert hint between a family's point and range deletions of the same prefix.
      for (std::uint64_t sequence = journal_first_; sequence < end; ++sequence) {
        family_.erase(batch, journal_key(sequence));
      }
      family_.erase(batch, kFoldProgressKey);
    }
    if (Status s = store_.write(batch, /*sync=*/false); !s.ok()) {
      for (std::size_t j = written; j < cells.size(); ++j) {
        journalled_.merge(cells[j]);  // folded by the next fold
      }
      return s.Annotate("fold the usage journal into buckets");
    }
    batch.Clear();
    written = last ? cells.size() : i + 1;
  }
  journal_written_ = false;
  journal_first_ = end;
  return Status::Ok();
}

Result<std::vector<UsageBucket>> KeyUsage::buckets(const std::vector<std::string>& key_ids,
                                                   UsageGranularity granularity, std::int64_t since,
                                                   std::int64_t until) const {
  const std::int64_t step = bucket_seconds(granularity);
  since = bucket_start(granularity, since);
  std::vector<UsageBucket> out;
  if (until <= since) {
    return out;
  }
  const auto count = static_cast<std::size_t>((until - since + step - 1) / step);
  out.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    out[i].start = since + static_cast<std::int64_t>(i) * step;
  }
  const std::int64_t now_s = unix_seconds(clock_.now());
  const auto add = [&](std::int64_t start, const UsageCounts& counts) {
    if (start >= since && start < until) {
      out[static_cast<std::size_t>((start - since) / step)].counts.add(counts);
    }
  };

  std::lock_guard lock(flush_mutex_);
  if (table_ != nullptr) {
    drain_counts(*table_, recorder_);  // what verification counted, into the recorder peeked below
  }
  for (const std::string& key_id : key_ids) {
    const std::string prefix = prefix_of(key_id, granularity);
    std::unique_ptr<rocksdb::Iterator> it = family_.iterator();
    for (it->Seek(bucket_key(key_id, granularity, since)); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      if (!key.starts_with(prefix) || key.size() != prefix.size() + 8) {
        break;
      }
      const auto start = static_cast<std::int64_t>(decode_be64(key.substr(prefix.size())));
      if (start >= until) {
        break;
      }
      add(start, parse_counts(it->value().ToStringView()));
    }
    if (!it->status().ok()) {
      return from_rocks(it->status(), "read key usage buckets");
    }
    const std::int64_t now_minute = bucket_start(UsageGranularity::kMinute, now_s);
    for (const UsageRecorder* unfolded : std::array<const UsageRecorder*, 2>{&recorder_, &journalled_}) {
      for (const UsageCell& cell : unfolded->peek(key_id, std::max(since, now_minute - kPeekBackSeconds),
                                                  std::min(until - 1, now_minute + 60))) {
        add(bucket_start(granularity, cell.minute), cell.counts);
      }
    }
    if (table_ != nullptr) {
      const auto kept = [&](const UsageCell& cell) {
        add(bucket_start(granularity, cell.minute), cell.counts);
      };
      table_->peek_kept(key_id, to_cells(kept));
    }
  }
  for (UsageBucket& bucket : out) {
    if (!retained(granularity, bucket.start, now_s, retention_)) {
      bucket.counts = {};
    }
  }
  return out;
}

Status KeyUsage::compact(std::atomic<bool>* canceled) const { return family_.compact(canceled); }

KeyUsage::~KeyUsage() { stop_compactions(); }

void KeyUsage::start_compactions(std::chrono::milliseconds interval) {
  if (compactor_.joinable()) {
    return;  // running already
  }
  {
    std::lock_guard lock(compactor_mutex_);
    compactor_stopping_ = false;  // startable again after stop_compactions()
  }
  cancel_compaction_.store(false);
  compactor_ = std::thread([this, interval] {
    name_this_thread("kl-usage-compact");
    run_compactions(interval);
  });
}

void KeyUsage::run_compactions(std::chrono::milliseconds interval) {
  std::unique_lock lock(compactor_mutex_);
  while (!compactor_wake_.wait_for(lock, interval, [&] { return compactor_stopping_; })) {
    lock.unlock();
    if (Status s = compact(&cancel_compaction_); !s.ok() && !cancel_compaction_.load()) {
      spdlog::warn("usage retention: {}", s.ToString());
    }
    compactions_.fetch_add(1, std::memory_order_release);
    lock.lock();
  }
}

void KeyUsage::stop_compactions() {
  {
    std::lock_guard lock(compactor_mutex_);
    compactor_stopping_ = true;
  }
  cancel_compaction_.store(true);
  compactor_wake_.notify_all();
  if (compactor_.joinable()) {
    compactor_.join();
  }
}

std::size_t KeyUsage::pending() const {
  return recorder_.pending() + (table_ != nullptr ? table_->pending_counts() : 0);
}

}  // namespace keyledger
