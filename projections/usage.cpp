#include "projections/usage.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/write_batch.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "domain/ids.h"
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

// bucket_key into `out`, reusing its memory.
void bucket_key(std::string& out, std::string_view key_id, UsageGranularity granularity, std::int64_t start) {
  out.assign(key_id);
  out.push_back('\0');
  out.push_back(tag_of(granularity));
  out.append(encode_be64(static_cast<std::uint64_t>(std::max<std::int64_t>(0, start))));
}

std::string bucket_key(std::string_view key_id, UsageGranularity granularity, std::int64_t start) {
  std::string key;
  bucket_key(key, key_id, granularity, start);
  return key;
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
    if (existing == nullptr) {  // a bucket's first operand (every minute bucket's only one) as it is
      new_value->assign(value.data(), value.size());
      return true;
    }
    UsageCounts sum = parse_counts(existing->ToStringView());
    sum.add(parse_counts(value.ToStringView()));
    return to_proto(sum).SerializeToString(new_value);
  }
  const char* Name() const override { return "keyledger.UsageMerge"; }
};

class UsageRetentionFilter final : public rocksdb::CompactionFilter {
 public:
  UsageRetentionFilter(std::int64_t now_s, UsageRetention retention)
      : now_s_(now_s), minutes_needed_from_(retention.minutes_needed_from->load()), retention_(retention) {}

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
    // The journal and the progress records start with '\0', key ids never do (storable()).
    if (k.size() < kSuffixBytes || k.front() == '\0' || k[k.size() - kSuffixBytes] != '\0') {
      return false;
    }
    const char tag = k[k.size() - kSuffixBytes + 1];
    if (tag != kMinuteTag && tag != kHourTag) {
      return false;
    }
    const auto start = static_cast<std::int64_t>(decode_be64(k.substr(k.size() - 8)));
    const UsageGranularity granularity =
        tag == kMinuteTag ? UsageGranularity::kMinute : UsageGranularity::kHour;
    if (granularity == UsageGranularity::kMinute &&
        bucket_start(UsageGranularity::kHour, start) >= minutes_needed_from_) {
      return false;  // its hour is not rolled up yet
    }
    return !retained(granularity, start, now_s_, retention_);
  }

  std::int64_t now_s_;
  std::int64_t minutes_needed_from_;
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

// The five counts of an outcome array (64-bit in UsageCounts, 32-bit in a fold's cells).
template <class Counts>
void set_outcomes(const Counts& by_outcome, v1::UsageCounts& proto) {
  proto.set_valid(by_outcome[static_cast<std::size_t>(UsageOutcome::kValid)]);
  proto.set_rate_limited(by_outcome[static_cast<std::size_t>(UsageOutcome::kRateLimited)]);
  proto.set_revoked(by_outcome[static_cast<std::size_t>(UsageOutcome::kRevoked)]);
  proto.set_expired(by_outcome[static_cast<std::size_t>(UsageOutcome::kExpired)]);
  proto.set_compromised(by_outcome[static_cast<std::size_t>(UsageOutcome::kCompromised)]);
}

void to_proto(const UsageCounts& counts, v1::UsageCounts& proto) {
  set_outcomes(counts.by_outcome, proto);
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
// Nor may an id hold one anywhere: the rollup walks the family from one key id to the next
// by seeking past `id '\1'`, which would skip an `id '\0' …` of another key.
bool storable(std::string_view key_id) { return !key_id.empty() && key_id.find('\0') == std::string_view::npos; }

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
          .write_buffer_bytes = std::size_t{16} << 20,
          // Snappy took a fifth of the family's flushes (perf, GET /v1/auth at a million keys),
          // for journal records of varints and packed ids that the next fold deletes and
          // buckets of a few varints each; the buckets kept for their retention take more disk.
          .compress = false};
}

namespace {

UsageCell to_cell(const ActiveKeyTable::CountedMinute& counted) {
  static_assert(ActiveKeyTable::kCountedOutcomes == kUsageOutcomes);
  UsageCell cell{counted.key_id, counted.minute_start, {}};
  for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
    cell.counts.by_outcome[i] = counted.counts[i];
  }
  for (auto& [address, n] : counted.sources()) {
    cell.counts.sources.emplace_back(std::move(address), n);
  }
  return cell;
}

// The table's journal records: a format byte and a base minute, then per key and minute its
// counts so far, about 20 bytes for a key used from one IPv4 address (a million keys in use
// journal about 20 MB a flush):
//   u8 flags: bits 0-4 which outcomes were counted (UsageOutcome order), bits 5-6 the
//     sources (kNoSources, kIpv4Source, kSourceList), bit 7 a well-formed key id packed;
//   the key id: packed, its 12 bytes after "key_"; else varint length and the id;
//   varint zigzag(minute - base minute) (Unix minutes); a varint per counted outcome;
//   kIpv4Source: 4 bytes, the address in network order (every use); kSourceList: varint n,
//   then n x (varint length, address, varint count).
// Varints and zigzag as protobuf's wire format writes them.
constexpr std::uint8_t kFormatV1 = 1;
enum : std::uint8_t { kNoSources = 0, kIpv4Source = 1, kSourceList = 2 };
constexpr std::uint8_t kPackedKeyId = 0x80;
constexpr std::size_t kPackedIdBytes = 12;
constexpr std::size_t kMaxEncodedText = 255;  // bytes of an id or address
constexpr std::size_t kMaxEncodedList = 255;  // addresses in a list

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::internal::WireFormatLite;

}  // namespace

UsageJournalWriter::UsageJournalWriter(std::string& out, std::int64_t base_minute) : out_(out), base_(base_minute) {
  out_.push_back(static_cast<char>(kFormatV1));
  varint(static_cast<std::uint32_t>(base_minute));
}

void UsageJournalWriter::add(const ActiveKeyTable::CountedMinute& counted) {
  std::uint8_t flags = 0;
  for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
    flags |= counted.counts[i] != 0 ? static_cast<std::uint8_t>(1U << i) : 0;
  }
  const auto fits = [](const auto& source) { return source.first.size() <= kMaxEncodedText; };
  const std::size_t listed =
      std::min<std::size_t>(kMaxEncodedList, std::count_if(counted.list.begin(), counted.list.end(), fits));
  flags |= static_cast<std::uint8_t>((counted.ipv4 ? kIpv4Source : listed > 0 ? kSourceList : kNoSources) << 5);
  const std::string_view id = counted.key_id.view();
  std::array<unsigned char, kPackedIdBytes> packed{};
  const bool pack = is_well_formed_id(id, kKeyIdPrefix) &&
                    sodium_hex2bin(packed.data(), packed.size(), id.data() + kKeyIdPrefix.size(),
                                   id.size() - kKeyIdPrefix.size(), nullptr, nullptr, nullptr) == 0;
  out_.push_back(static_cast<char>(flags | (pack ? kPackedKeyId : 0)));
  if (pack) {
    out_.append(reinterpret_cast<const char*>(packed.data()), packed.size());
  } else {
    text(id);
  }
  varint(WireFormatLite::ZigZagEncode32(static_cast<std::int32_t>(counted.minute_start / 60 - base_)));
  for (const std::uint32_t n : counted.counts) {
    if (n != 0) {
      varint(n);
    }
  }
  if (counted.ipv4) {
    out_.append(reinterpret_cast<const char*>(&*counted.ipv4), 4);  // as stored: network order
  } else if (listed > 0) {
    varint(static_cast<std::uint32_t>(listed));
    std::size_t written = 0;
    for (const auto& source : counted.list) {
      if (fits(source) && written++ < listed) {
        text(source.first);
        varint(source.second);
      }
    }
  }
}

void UsageJournalWriter::varint(std::uint32_t v) {
  std::array<std::uint8_t, 5> bytes{};
  const std::uint8_t* end = CodedOutputStream::WriteVarint32ToArray(v, bytes.data());
  out_.append(reinterpret_cast<const char*>(bytes.data()), end - bytes.data());
}

void UsageJournalWriter::text(std::string_view s) {
  varint(static_cast<std::uint32_t>(s.size()));
  out_.append(s);
}

bool read_usage_journal(std::string_view record, const ActiveKeyTable::CountSink& sink) {
  if (record.empty() || static_cast<std::uint8_t>(record.front()) != kFormatV1) {
    return false;
  }
  CodedInputStream in(reinterpret_cast<const std::uint8_t*>(record.data()) + 1, static_cast<int>(record.size() - 1));
  std::uint32_t base = 0;
  if (!in.ReadVarint32(&base)) {
    return false;
  }
  std::string text;
  const auto read_text = [&] {
    std::uint32_t size = 0;
    return in.ReadVarint32(&size) && size <= kMaxEncodedText && in.ReadString(&text, static_cast<int>(size));
  };
  std::vector<std::pair<std::string, std::uint32_t>> list;
  while (!in.ExpectAtEnd()) {
    std::uint8_t flags = 0;
    if (!in.ReadRaw(&flags, 1)) {
      return false;
    }
    InlineId key_id;
    if ((flags & kPackedKeyId) != 0) {
      std::array<unsigned char, kPackedIdBytes> packed{};
      std::array<char, kPackedIdBytes * 2 + 1> hex{};
      if (!in.ReadRaw(packed.data(), packed.size())) {
        return false;
      }
      sodium_bin2hex(hex.data(), hex.size(), packed.data(), packed.size());
      key_id = InlineId(std::string(kKeyIdPrefix) + hex.data());
    } else {
      if (!read_text() || text.size() > InlineId::kCapacity) {
        return false;
      }
      key_id = InlineId(text);
    }
    std::uint32_t minute = 0;
    if (!in.ReadVarint32(&minute)) {
      return false;
    }
    const std::int64_t unix_minute = std::int64_t{base} + WireFormatLite::ZigZagDecode32(minute);
    if (unix_minute < 1 || unix_minute > INT32_MAX) {
      return false;
    }
    const std::int64_t minute_start = unix_minute * 60;
    std::array<std::uint32_t, ActiveKeyTable::kCountedOutcomes> counts{};
    for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
      if ((flags & (1U << i)) != 0 && !in.ReadVarint32(&counts[i])) {
        return false;
      }
    }
    std::optional<std::uint32_t> ipv4;
    list.clear();
    switch ((flags >> 5) & 3) {
      case kNoSources:
        break;
      case kIpv4Source:
        ipv4.emplace();
        if (!in.ReadRaw(&*ipv4, 4)) {
          return false;
        }
        break;
      case kSourceList: {
        std::uint32_t n = 0;
        if (!in.ReadVarint32(&n) || n > kMaxEncodedList) {
          return false;
        }
        for (; n > 0; --n) {
          std::uint32_t count = 0;
          if (!read_text() || !in.ReadVarint32(&count)) {
            return false;
          }
          list.emplace_back(text, count);
        }
        break;
      }
      default:
        return false;
    }
    if (storable(key_id.view())) {
      sink(ActiveKeyTable::CountedMinute{key_id, minute_start, counts, ipv4, list});
    }
  }
  return true;
}

void drain_counts(ActiveKeyTable& table, UsageRecorder& recorder) {
  table.take_counts([&](const ActiveKeyTable::CountedMinute& counted) { recorder.merge(to_cell(counted)); });
}

KeyUsage::KeyUsage(const EventStore& store, const Clock& clock, UsageRetention retention,
                   ActiveKeyTable* table)
    : store_(store), table_(table), clock_(clock), retention_(retention) {
  auto family = store.extra_column_family(kUsageColumnFamily);
  open_status_ = family.status();
  if (!family.ok()) {
    return;
  }
  family_ = *family;
  open_status_ = recover();
}

namespace {

// The minute/hour buckets, the journal and a fold's progress (the file comment has the layout).
constexpr char kRecorderJournalTag = 'j';
constexpr char kTableJournalTag = 'k';
std::string journal_key(char tag, std::uint64_t sequence) {
  return std::string{'\0', tag} + encode_be64(sequence);
}
// How far an unfinished fold got: BE64 journal end, BE64 minute before which the table's cells
// were folded, BE64 minute and key id of the last cell folded. (Up to the version that wrote
// only changes: '\0' 'f' -> BE64 end, BE64 minute, key id.)
const std::string kFoldProgressKey("\0g", 2);
const std::string kOldFoldProgressKey("\0f", 2);
// A fold runs this long after its minute ends, so that minute's last flush is in it.
constexpr std::int64_t kFoldDelaySeconds = 5;
// The rollup's progress (usage.h has the layout).
const std::string kRollupKey("\0r", 2);
// A rollup starts this long after its last hour ends: after the folds of that hour's last
// minute, so that what they bring goes to the minute buckets it sums and not as merges to
// hour buckets it has written.
constexpr std::int64_t kRollDelaySeconds = 150;
// Buckets a rollup steps over to reach the next key before it seeks instead.
constexpr std::size_t kRollMaxSteps = 128;

// The cells as a journal record of counts that add up.
std::string report_of(const std::vector<UsageCell>& cells) {
  v1::UsageReport report;
  for (const UsageCell& cell : cells) {
    v1::UsageCell* out = report.add_cells();
    out->set_key_id(cell.key_id.view().data(), cell.key_id.view().size());
    out->set_minute_start(cell.minute);
    to_proto(cell.counts, *out->mutable_counts());
  }
  return report.SerializeAsString();
}

// Key id, then minute: the order of the cells in a fold and in its progress record.
template <class Cell>
bool cell_before(const Cell& a, const Cell& b) {
  return a.key_id.view() != b.key_id.view() ? a.key_id.view() < b.key_id.view() : a.minute < b.minute;
}

std::uint32_t saturated(std::uint64_t n) { return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, UINT32_MAX)); }

// One key and minute to fold: a cache line, with no allocation unless its client addresses
// are a list (most keys are used from one IPv4 address), so that a fold of a million keys
// sorts and writes 64 MB of these instead of a million UsageCells and their vectors.
struct FoldCell {
  InlineId key_id;
  std::int32_t minute = 0;  // Unix minutes
  std::array<std::uint32_t, kUsageOutcomes> counts{};
  std::uint32_t ipv4 = 0;     // network order, when sources is kIpv4
  std::uint32_t sources = 0;  // none (0), kIpv4 (every use from ipv4), or 1 + index of a list
  static constexpr std::uint32_t kIpv4 = UINT32_MAX;
};
static_assert(sizeof(FoldCell) == 64, "a fold cell is one cache line");

class FoldCells {
 public:
  void add(const ActiveKeyTable::CountedMinute& counted) {
    FoldCell cell{counted.key_id, static_cast<std::int32_t>(counted.minute_start / 60), counted.counts};
    if (counted.ipv4) {
      cell.ipv4 = *counted.ipv4;
      cell.sources = FoldCell::kIpv4;
    } else if (!counted.list.empty()) {
      cell.sources = add_list(Sources(counted.list.begin(), counted.list.end()));
    }
    cells_.push_back(cell);
  }
  void add(const UsageCell& in) {
    FoldCell cell{in.key_id, static_cast<std::int32_t>(in.minute / 60)};
    for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
      cell.counts[i] = saturated(in.counts.by_outcome[i]);
    }
    if (!in.counts.sources.empty()) {
      cell.sources = add_list(in.counts.sources);
    }
    cells_.push_back(cell);
  }

  // Sorts the cells by key and minute and sums those of the same key and minute.
  void sort_and_sum() {
    std::sort(cells_.begin(), cells_.end(), cell_before<FoldCell>);
    std::size_t unique = 0;
    for (std::size_t i = 0; i < cells_.size(); ++i) {
      if (unique > 0 && cells_[unique - 1].minute == cells_[i].minute &&
          cells_[unique - 1].key_id == cells_[i].key_id) {
        sum_into(cells_[unique - 1], cells_[i]);
      } else {
        cells_[unique++] = cells_[i];
      }
    }
    cells_.resize(unique);
  }

  const std::vector<FoldCell>& cells() const { return cells_; }

  // The cell's counts, its addresses bounded and sorted.
  UsageCounts counts_of(const FoldCell& cell) const {
    UsageCounts counts;
    for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
      counts.by_outcome[i] = cell.counts[i];
    }
    if (cell.sources == FoldCell::kIpv4) {
      counts.sources.emplace_back(ipv4_text(cell.ipv4), counts.total());
    } else if (cell.sources != 0) {
      UsageCounts listed;
      listed.sources = lists_[cell.sources - 1];
      counts.add(listed);
    }
    return counts;
  }
  UsageCell usage_cell(const FoldCell& cell) const {
    return UsageCell{cell.key_id, std::int64_t{cell.minute} * 60, counts_of(cell)};
  }
  // The cell as a bucket's value, into `proto` (cleared first: reused, it allocates nothing
  // for a cell of one address).
  void to_proto(const FoldCell& cell, v1::UsageCounts& proto) const {
    proto.Clear();
    if (cell.sources != 0 && cell.sources != FoldCell::kIpv4) {
      keyledger::to_proto(counts_of(cell), proto);
      return;
    }
    std::uint64_t total = 0;
    for (const std::uint32_t n : cell.counts) {
      total += n;
    }
    set_outcomes(cell.counts, proto);
    if (cell.sources == FoldCell::kIpv4) {
      v1::UsageSource* source = proto.add_sources();
      source->set_address(ipv4_text(cell.ipv4));
      source->set_count(total);
    }
  }

 private:
  using Sources = std::vector<std::pair<std::string, std::uint64_t>>;
  std::uint32_t add_list(Sources list) {
    lists_.push_back(std::move(list));
    return static_cast<std::uint32_t>(lists_.size());
  }
  void sum_into(FoldCell& into, const FoldCell& from) {
    if (into.sources != 0 || from.sources != 0) {  // the addresses as a list
      UsageCounts sum = counts_of(into);
      sum.add(counts_of(from));
      into.ipv4 = 0;
      into.sources = sum.sources.empty() ? 0 : add_list(std::move(sum.sources));
    }
    for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
      into.counts[i] = saturated(std::uint64_t{into.counts[i]} + from.counts[i]);
    }
  }

  std::vector<FoldCell> cells_;
  std::vector<Sources> lists_;
};

}  // namespace

Status KeyUsage::recover() {
  auto rollup = family_.get(kRollupKey);
  if (!rollup.ok()) {
    return rollup.status();
  }
  if (rollup->has_value()) {
    const std::string_view v = **rollup;
    if (v.size() < 16) {
      return Status::Corruption("unreadable usage rollup progress");
    }
    rolled_before_ = static_cast<std::int64_t>(decode_be64(v));
    rolling_to_ = static_cast<std::int64_t>(decode_be64(v.substr(8)));
    rolled_through_ = std::string(v.substr(16));
  } else {
    // A new family, or one whose hour buckets were merged minute by minute (the versions
    // before the rollup): every hour before this one is in its buckets.
    rolled_before_ = rolling_to_ = bucket_start(UsageGranularity::kHour, unix_seconds(clock_.now()));
    rocksdb::WriteBatch batch;
    put_rollup(batch, rolled_before_, rolling_to_, {});
    if (Status s = store_.write(batch, /*sync=*/true); !s.ok()) {
      return s.Annotate("start the usage rollup");
    }
  }
  retention_.minutes_needed_from->store(rolled_before_);

  // An unfinished fold: the cells up to `done` of the records below `end` are in the buckets,
  // of the table's records only those of minutes before `table_before`.
  std::uint64_t end = 0;
  std::int64_t table_before = INT64_MAX;
  UsageCell done;
  for (const std::string* key : {&kOldFoldProgressKey, &kFoldProgressKey}) {
    auto progress = family_.get(*key);
    if (!progress.ok()) {
      return progress.status();
    }
    if (!progress->has_value()) {
      continue;
    }
    std::string_view v = **progress;
    const std::size_t fixed = key == &kFoldProgressKey ? 24 : 16;
    if (v.size() < fixed) {
      return Status::Corruption("unreadable usage fold progress");
    }
    end = decode_be64(v);
    if (key == &kFoldProgressKey) {
      table_before = static_cast<std::int64_t>(decode_be64(v.substr(8)));
      v.remove_prefix(8);
    }
    done.minute = static_cast<std::int64_t>(decode_be64(v.substr(8)));
    done.key_id = InlineId(v.substr(16));
  }
  const auto folded = [&](std::uint64_t sequence, const UsageCell& cell) {
    return sequence < end && !cell_before(done, cell);
  };
  // The table's records: the latest per key and minute holds its counts so far.
  std::unordered_map<std::string, UsageCell> latest;
  for (const char tag : {kRecorderJournalTag, kTableJournalTag}) {
    const std::string first = journal_key(tag, 0);
    std::unique_ptr<rocksdb::Iterator> it = family_.iterator();
    v1::UsageReport report;
    for (it->Seek(first); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      if (key.size() != first.size() || !key.starts_with(std::string_view(first).substr(0, 2))) {
        break;
      }
      const std::uint64_t sequence = decode_be64(key.substr(2));
      const std::string_view value = it->value().ToStringView();
      bool ok = true;
      if (tag == kRecorderJournalTag) {
        ok = report.ParseFromArray(value.data(), static_cast<int>(value.size()));
        for (const v1::UsageCell& in : report.cells()) {
          UsageCell cell{InlineId(in.key_id()), in.minute_start(), from_proto(in.counts())};
          if (!folded(sequence, cell)) {
            journalled_.merge(cell);
          }
        }
      } else {
        ok = read_usage_journal(value, [&](const ActiveKeyTable::CountedMinute& counted) {
          UsageCell cell = to_cell(counted);
          if (cell.minute >= table_before || !folded(sequence, cell)) {
            latest[std::string(cell.key_id.view()) + '\0' + std::to_string(cell.minute)] = std::move(cell);
          }
        });
      }
      if (!ok) {
        return Status::Corruption("unreadable usage journal record " + std::string(1, tag) + std::to_string(sequence));
      }
      journal_first_ = journal_written_ ? std::min(journal_first_, sequence) : sequence;
      next_journal_ = std::max(next_journal_, sequence + 1);
      journal_written_ = true;
    }
    if (Status s = from_rocks(it->status(), "read the usage journal"); !s.ok()) {
      return s;
    }
  }
  for (const auto& [_, cell] : latest) {
    journalled_.merge(cell);
  }
  if (!journal_written_) {
    return Status::Ok();
  }
  // What is not folded yet becomes one record of counts that add up, in place of the journal
  // and the fold's progress (one synced batch: the old journal or the new one, never both).
  // The table's records of this process then never meet the last one's, which named the
  // same minutes' counts so far, and the next fold starts from no progress.
  const std::vector<UsageCell> unfolded = journalled_.take();
  for (const UsageCell& cell : unfolded) {
    journalled_.merge(cell);
  }
  rocksdb::WriteBatch batch;
  family_.put(batch, journal_key(kRecorderJournalTag, next_journal_), report_of(unfolded));
  drop_journal(batch, next_journal_);
  if (Status s = store_.write(batch, /*sync=*/true); !s.ok()) {
    return s.Annotate("rewrite the usage journal");
  }
  journal_first_ = next_journal_++;
  return Status::Ok();
}

void KeyUsage::put_rollup(rocksdb::WriteBatch& batch, std::int64_t before, std::int64_t to,
                          std::string_view through) const {
  family_.put(batch, kRollupKey,
              encode_be64(static_cast<std::uint64_t>(before)) + encode_be64(static_cast<std::uint64_t>(to)) +
                  std::string(through));
}

bool KeyUsage::rolled(std::string_view key_id, std::int64_t hour) const {
  return hour < rolled_before_ || (hour < rolling_to_ && !rolled_through_.empty() && key_id <= rolled_through_);
}

std::int64_t KeyUsage::rolled_before() const {
  std::lock_guard lock(flush_mutex_);
  return rolled_before_;
}

// Under flush_mutex_, like the folds: no minute bucket of a key changes while the slice sums
// them, and a fold that comes between two slices merges into the hour buckets of the keys
// rolled up already (rolled()) and only into the minute buckets of the others.
Status KeyUsage::roll(std::int64_t now_s) {
  const std::int64_t hour_now = bucket_start(UsageGranularity::kHour, now_s);
  std::int64_t to = rolling_to_;
  std::string through = rolled_through_;
  if (to == rolled_before_) {
    if (hour_now <= rolled_before_ || now_s < hour_now + kRollDelaySeconds) {
      return Status::Ok();
    }
    to = hour_now;
    through.clear();
  }
  rocksdb::WriteBatch batch;
  std::string key_id;
  std::string value;
  std::unique_ptr<rocksdb::Iterator> it = family_.iterator();
  // Key ids never start with '\0' (storable()), the journal's records all do.
  it->Seek(through.empty() ? std::string(1, '\1') : through + '\1');
  for (std::size_t keys = 0; keys < kRollSliceKeys && it->Valid(); ++keys) {
    std::string_view k = it->key().ToStringView();
    if (k.size() <= kSuffixBytes || k[k.size() - kSuffixBytes] != '\0') {
      it->Next();  // not a bucket
      continue;
    }
    key_id.assign(k.substr(0, k.size() - kSuffixBytes));
    const std::string prefix = prefix_of(key_id, UsageGranularity::kMinute);
    UsageCounts sum;
    std::int64_t sum_hour = 0;
    const auto put_sum = [&] {
      if (sum.total() > 0) {
        to_proto(sum).SerializeToString(&value);
        family_.put(batch, bucket_key(key_id, UsageGranularity::kHour, sum_hour), value);
      }
      sum = {};
    };
    for (it->Seek(bucket_key(key_id, UsageGranularity::kMinute, rolled_before_)); it->Valid(); it->Next()) {
      k = it->key().ToStringView();
      if (!k.starts_with(prefix) || k.size() != prefix.size() + 8) {
        break;
      }
      const auto start = static_cast<std::int64_t>(decode_be64(k.substr(prefix.size())));
      if (start >= to) {
        break;
      }
      if (const std::int64_t hour = bucket_start(UsageGranularity::kHour, start); hour != sum_hour) {
        put_sum();
        sum_hour = hour;
      }
      sum.add(parse_counts(it->value().ToStringView()));
    }
    put_sum();
    through = key_id;
    // On to the next key's first bucket: past this key's minutes from `to` on (those of the
    // hour under way, a few dozen), steps cost less than a seek, which reads every level.
    const auto same_key = [&] {
      k = it->key().ToStringView();
      return k.size() == key_id.size() + kSuffixBytes && k.starts_with(key_id);
    };
    for (std::size_t steps = 0; it->Valid() && same_key(); ++steps) {
      if (steps == kRollMaxSteps) {
        it->Seek(key_id + '\1');
        break;
      }
      it->Next();
    }
  }
  if (Status s = from_rocks(it->status(), "read minute buckets to roll up"); !s.ok()) {
    return s;
  }
  const bool done = !it->Valid();
  const std::int64_t before = done ? to : rolled_before_;
  if (done) {
    through.clear();
  }
  put_rollup(batch, before, to, through);
  // The end of a rollup is synced before the retention filter may drop the minutes it summed:
  // a crash never takes back a rollup whose minutes are gone.
  if (Status s = store_.write(batch, /*sync=*/done); !s.ok()) {
    return s.Annotate("roll usage up into hour buckets");  // this slice again at the next flush
  }
  rolled_before_ = before;
  rolling_to_ = to;
  rolled_through_ = std::move(through);
  retention_.minutes_needed_from->store(rolled_before_);
  return Status::Ok();
}

void KeyUsage::drop_journal(rocksdb::WriteBatch& batch, std::uint64_t end) const {
  // One delete per record (a few dozen), not a range deletion: RocksDB shares a memtable
  // insert hint between a family's point and range deletions of the same prefix.
  for (std::uint64_t sequence = journal_first_; sequence < end; ++sequence) {
    family_.erase(batch, journal_key(kRecorderJournalTag, sequence));
    family_.erase(batch, journal_key(kTableJournalTag, sequence));
  }
  family_.erase(batch, kFoldProgressKey);
  family_.erase(batch, kOldFoldProgressKey);
}

bool KeyUsage::journal_table(rocksdb::WriteBatch& batch, std::uint64_t sequence) {
  std::string& record = journal_record_;
  record.clear();
  UsageJournalWriter writer(record, bucket_start(UsageGranularity::kMinute, unix_seconds(clock_.now())) / 60);
  const std::size_t empty = record.size();
  table_->journal_counts([&](const ActiveKeyTable::CountedMinute& counted) { writer.add(counted); },
                         rejournal_table_);
  rejournal_table_ = false;
  if (record.size() == empty) {
    return false;
  }
  family_.put(batch, journal_key(kTableJournalTag, sequence), record);
  return true;
}

Status KeyUsage::flush(Fold fold_when) {
  std::lock_guard lock(flush_mutex_);
  rocksdb::WriteBatch& batch = flush_batch_;
  batch.Clear();
  std::vector<UsageCell> from_recorder = recorder_.take();
  if (!from_recorder.empty()) {
    family_.put(batch, journal_key(kRecorderJournalTag, next_journal_), report_of(from_recorder));
  }
  // The table's cells that changed since the last flush, each with its minute's counts so far
  // (the table keeps them until the fold).
  if (table_ != nullptr) {
    journal_table(batch, next_journal_);
  }
  if (batch.Count() > 0) {
    // Synced: a crash of the machine loses at most what was counted since (one fsync per
    // flush, every 2 s on a node).
    const Status s = store_.write(batch, /*sync=*/true);
    // The recorder's cells into the journal's memory image, or back into the recorder for the
    // next flush; the table's are journalled again whole by the next flush after a failure.
    UsageRecorder& into = s.ok() ? journalled_ : recorder_;
    for (const UsageCell& cell : from_recorder) {
      into.merge(cell);
    }
    if (!s.ok()) {
      rejournal_table_ = true;
      return s.Annotate("write the usage journal");
    }
    ++next_journal_;
    journal_written_ = true;
  }
  const std::int64_t now_s = unix_seconds(clock_.now());
  if (fold_when == Fold::kNow || now_s >= next_fold_s_) {
    next_fold_s_ = bucket_start(UsageGranularity::kMinute, now_s) + 60 + kFoldDelaySeconds;
    if (Status s = fold(fold_when == Fold::kNow); !s.ok()) {
      return s;
    }
  }
  return roll(now_s);
}

// Under flush_mutex_. Batches of kBatchCells: every batch but the last records how far the
// fold got, the last drops the journal (journalling again, under a new sequence, the table's
// cells of the minute under way), so a crash in between neither loses nor doubles a cell
// (recover() skips what the progress covers).
Status KeyUsage::fold(bool everything) {
  const std::uint64_t end = next_journal_;
  FoldCells fold;
  for (const UsageCell& cell : journalled_.take()) {
    fold.add(cell);
  }
  // Minutes under way stay in the table (their counts so far are journalled again below),
  // unless everything is folded (at a stop).
  const std::int64_t table_before =
      everything ? INT64_MAX : bucket_start(UsageGranularity::kMinute, unix_seconds(clock_.now()));
  if (table_ != nullptr) {
    table_->take_counts([&](const ActiveKeyTable::CountedMinute& counted) { fold.add(counted); }, table_before);
  }
  if (fold.cells().empty() && !journal_written_) {
    return Status::Ok();
  }
  // In key order: consecutive merges land next to each other in the memtable (a search path
  // already in cache) instead of each at a random place in it. One cell per key and minute, so
  // that the progress recorded between batches splits none.
  fold.sort_and_sum();
  const std::vector<FoldCell>& cells = fold.cells();
  rocksdb::WriteBatch batch;
  std::size_t written = 0;  // cells[0, written) are in the buckets
  v1::UsageCounts proto;    // reused: its source entries keep their memory
  std::string key;
  std::string value;
  bool rejournalled = false;
  for (std::size_t i = 0; i <= cells.size(); ++i) {
    const bool last = i == cells.size();
    if (!last) {
      const FoldCell& cell = cells[i];
      const std::string_view key_id = cell.key_id.view();
      const std::int64_t minute = std::int64_t{cell.minute} * 60;
      fold.to_proto(cell, proto);
      proto.SerializeToString(&value);
      // An hour rolled up already takes a late count too. Its key sorts before the minute's
      // ('h' < 'm'): written in key order.
      if (const std::int64_t hour = bucket_start(UsageGranularity::kHour, minute); rolled(key_id, hour)) {
        bucket_key(key, key_id, UsageGranularity::kHour, hour);
        family_.merge(batch, key, value);
      }
      bucket_key(key, key_id, UsageGranularity::kMinute, minute);
      family_.merge(batch, key, value);
      if (i + 1 - written < kBatchCells || i + 1 == cells.size()) {
        continue;
      }
      family_.put(batch, kFoldProgressKey,
                  encode_be64(end) + encode_be64(static_cast<std::uint64_t>(table_before)) +
                      encode_be64(static_cast<std::uint64_t>(minute)) + std::string(key_id));
    } else {
      if (table_ != nullptr) {
        rejournalled = journal_table(batch, end);
      }
      drop_journal(batch, end);
    }
    if (Status s = store_.write(batch, /*sync=*/false); !s.ok()) {
      for (std::size_t j = written; j < cells.size(); ++j) {
        journalled_.merge(fold.usage_cell(cells[j]));  // folded by the next fold
      }
      if (last) {
        rejournal_table_ = true;
      }
      return s.Annotate("fold the usage journal into buckets");
    }
    batch.Clear();
    written = last ? cells.size() : i + 1;
  }
  journal_first_ = end;
  journal_written_ = rejournalled;
  if (rejournalled) {
    next_journal_ = end + 1;
  }
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
  // The buckets are whole: the last ends here, past `until` unless it is aligned.
  const std::int64_t end = since + static_cast<std::int64_t>(count) * step;
  out.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    out[i].start = since + static_cast<std::int64_t>(i) * step;
  }
  const std::int64_t now_s = unix_seconds(clock_.now());
  const auto add = [&](std::int64_t start, const UsageCounts& counts) {
    if (start >= since && start < end) {
      out[static_cast<std::size_t>((start - since) / step)].counts.add(counts);
    }
  };

  std::unique_ptr<rocksdb::Iterator> it;
  // Calls fn(start, counts) for the stored buckets of `key_id` in [from, end).
  const auto scan = [&](const std::string& key_id, UsageGranularity stored, std::int64_t from, const auto& fn) {
    const std::string prefix = prefix_of(key_id, stored);
    for (it->Seek(bucket_key(key_id, stored, from)); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      if (!key.starts_with(prefix) || key.size() != prefix.size() + 8) {
        break;
      }
      const auto start = static_cast<std::int64_t>(decode_be64(key.substr(prefix.size())));
      if (start >= end) {
        break;
      }
      fn(start, parse_counts(it->value().ToStringView()));
    }
    return from_rocks(it->status(), "read key usage buckets");
  };

  std::lock_guard lock(flush_mutex_);
  it = family_.iterator();  // the buckets as the rollup's state, fixed from here on, has them
  for (const std::string& key_id : key_ids) {
    Status s;
    if (granularity == UsageGranularity::kMinute) {
      s = scan(key_id, granularity, since, add);
    } else {
      // Hours rolled up from their buckets, the others from their minutes.
      const std::int64_t unrolled = rolled(key_id, rolled_before_) ? rolling_to_ : rolled_before_;
      s = scan(key_id, granularity, since, [&](std::int64_t start, const UsageCounts& counts) {
        if (start < unrolled) {
          add(start, counts);
        }
      });
      if (s.ok() && end > unrolled) {
        s = scan(key_id, UsageGranularity::kMinute, std::max(since, unrolled),
                 [&](std::int64_t start, const UsageCounts& counts) {
                   add(bucket_start(UsageGranularity::kHour, start), counts);
                 });
      }
    }
    if (!s.ok()) {
      return s;
    }
    const std::int64_t now_minute = bucket_start(UsageGranularity::kMinute, now_s);
    for (const UsageRecorder* unfolded : std::array<const UsageRecorder*, 2>{&recorder_, &journalled_}) {
      for (const UsageCell& cell : unfolded->peek(key_id, std::max(since, now_minute - kPeekBackSeconds),
                                                  std::min(end - 1, now_minute + 60))) {
        add(bucket_start(granularity, cell.minute), cell.counts);
      }
    }
    if (table_ != nullptr) {
      table_->peek_counts(key_id, [&](const ActiveKeyTable::CountedMinute& counted) {
        add(bucket_start(granularity, counted.minute_start), to_cell(counted).counts);
      });
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
