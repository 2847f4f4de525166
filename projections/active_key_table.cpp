#include "projections/active_key_table.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace keyledger {

namespace {

std::int64_t to_unix_ms(const google::protobuf::Timestamp& ts) {
  return std::chrono::floor<std::chrono::milliseconds>(from_timestamp(ts)).time_since_epoch().count();
}

// 0 means "never" in KeyEntry, so an expiry at or before the epoch is kept as 1 ms.
std::int64_t expiry_ms(const google::protobuf::Timestamp& ts) {
  return std::max<std::int64_t>(1, to_unix_ms(ts));
}

std::optional<Digest> digest_from_bytes(const std::string& bytes) {
  Digest d{};
  if (bytes.size() != d.size()) {
    return std::nullopt;
  }
  std::memcpy(d.data(), bytes.data(), d.size());
  return d;
}

// Moves `entry` to `next` unless that would undo a terminal condition: only an active key
// changes, except that compromised is recorded over revoked/expired too.
bool transition(KeyEntry& entry, KeyCondition next) {
  if (entry.condition == next) {
    return false;
  }
  if (entry.condition == KeyCondition::kActive || next == KeyCondition::kCompromised) {
    entry.condition = next;
    return true;
  }
  return false;
}

}  // namespace

InlineId::InlineId(std::string_view id) {
  size_ = static_cast<std::uint8_t>(std::min(id.size(), kCapacity));
  std::memcpy(data_.data(), id.data(), size_);
}

namespace {

template <typename Count>
Count saturating_add(Count a, Count b) {
  return a > std::numeric_limits<Count>::max() - b ? std::numeric_limits<Count>::max() : a + b;
}

// Whether `a` is kept before `b` when a list is cut: more uses first, then by address.
template <typename Count>
bool ranks_before(const std::pair<std::string, Count>& a, const std::pair<std::string, Count>& b) {
  return a.second != b.second ? a.second > b.second : a.first < b.first;
}

// What an address missing from `list` may have been used (merge_sources): 0 unless it is full.
template <typename Count>
Count floor_of(const std::vector<std::pair<std::string, Count>>& list, std::size_t bound) {
  if (list.empty() || list.size() < bound) {
    return 0;
  }
  Count floor = std::numeric_limits<Count>::max();
  for (const auto& entry : list) {
    floor = std::min(floor, entry.second);
  }
  return floor;
}

template <typename List>
auto find_address(List& list, std::size_t end, std::string_view address) {
  return std::find_if(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(end),
                      [&](const auto& entry) { return entry.first == address; });
}

}  // namespace

template <typename Count>
void merge_sources(std::vector<std::pair<std::string, Count>>& into,
                   const std::vector<std::pair<std::string, Count>>& from, std::size_t bound) {
  if (from.empty()) {
    return;
  }
  const Count into_floor = floor_of(into, bound);
  const Count from_floor = floor_of(from, bound);
  const std::size_t listed = into.size();
  for (auto& entry : into) {
    const auto found = find_address(from, from.size(), entry.first);
    entry.second = saturating_add(entry.second, found != from.end() ? found->second : from_floor);
  }
  for (const auto& [address, count] : from) {
    if (find_address(into, listed, address) == into.begin() + static_cast<std::ptrdiff_t>(listed)) {
      into.emplace_back(address, saturating_add(count, into_floor));
    }
  }
  if (into.size() > bound) {
    std::sort(into.begin(), into.end(), ranks_before<Count>);
    into.resize(bound);
  }
}

template <typename Count>
void add_source(std::vector<std::pair<std::string, Count>>& into, std::string_view address, Count count,
                std::size_t bound) {
  // merge_sources(into, {{address, count}}, bound), without building the one-entry list.
  if (const auto found = find_address(into, into.size(), address); found != into.end()) {
    found->second = saturating_add(found->second, count);
    return;
  }
  if (into.size() < bound) {
    into.emplace_back(address, count);
    return;
  }
  if (bound == 0) {
    return;
  }
  // Full: the newcomer competes with the entry ranked last, which holds the smallest count.
  const auto last = std::max_element(into.begin(), into.end(), ranks_before<Count>);
  std::pair<std::string, Count> entrant(address, saturating_add(last->second, count));
  if (ranks_before(entrant, *last)) {
    *last = std::move(entrant);
  }
}

template void merge_sources(std::vector<std::pair<std::string, std::uint32_t>>&,
                            const std::vector<std::pair<std::string, std::uint32_t>>&, std::size_t);
template void merge_sources(std::vector<std::pair<std::string, std::uint64_t>>&,
                            const std::vector<std::pair<std::string, std::uint64_t>>&, std::size_t);
template void add_source(std::vector<std::pair<std::string, std::uint32_t>>&, std::string_view, std::uint32_t,
                         std::size_t);
template void add_source(std::vector<std::pair<std::string, std::uint64_t>>&, std::string_view, std::uint64_t,
                         std::size_t);

namespace {

// Digests are keyed BLAKE2b output, so any of their bytes are uniformly distributed: bytes
// 0-7 place a digest in its shard's index, byte 8 picks the shard, bytes 12-15 are the tag.
std::uint64_t digest_hash(const Digest& d) {
  std::uint64_t h = 0;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}
std::uint64_t digest_tag(const Digest& d) {
  std::uint32_t t = 0;
  std::memcpy(&t, d.data() + 12, sizeof t);
  return static_cast<std::uint64_t>(t) << 32;
}

constexpr std::uint64_t kRefMask = 0xFFFF'FFFFULL;
constexpr std::size_t kMinIndexSize = 16;

// An index grows (doubling) before it is three quarters full.
bool needs_growth(std::size_t used, std::size_t capacity) { return (used + 1) * 4 > capacity * 3; }

std::uint64_t key_id_hash(std::string_view id) { return std::hash<std::string_view>{}(id); }

// Adds `value` to an open-addressing index with linear probing (0 marks a free place), at the
// place hash_of(value) says, doubling the index first when it would be over three quarters
// full (`used` places are taken).
template <typename Index, typename HashOf>
void index_insert(Index& index, std::size_t used, typename Index::value_type value, HashOf hash_of) {
  const auto place = [&](Index& into, typename Index::value_type v) {
    const std::size_t mask = into.size() - 1;
    std::size_t pos = hash_of(v) & mask;
    while (into[pos] != 0) {
      pos = (pos + 1) & mask;
    }
    into[pos] = v;
  };
  if (needs_growth(used, index.size())) {
    Index grown(std::max(kMinIndexSize, index.size() * 2), 0);
    for (const auto v : index) {
      if (v != 0) {
        place(grown, v);
      }
    }
    index = std::move(grown);
  }
  place(index, value);
}

}  // namespace

std::optional<ActiveKeyTable::Ref> ActiveKeyTable::Shard::locate(const Digest& digest,
                                                                 const ActiveKeyTable& table) const {
  if (index.empty()) {
    return std::nullopt;
  }
  const std::size_t mask = index.size() - 1;
  const std::uint64_t tag = digest_tag(digest);
  for (std::size_t pos = digest_hash(digest) & mask;; pos = (pos + 1) & mask) {
    const std::uint64_t v = index[pos];
    if (v == 0) {
      return std::nullopt;
    }
    if ((v & ~kRefMask) == tag) {
      const auto ref = static_cast<Ref>((v & kRefMask) - 1);
      const Slot& slot = table.slot_at(ref);
      // A slot spans two cache lines: fetch the second (bucket, last use; written next) while
      // the digest in the first is compared, so the two misses overlap.
      __builtin_prefetch(reinterpret_cast<const char*>(&slot) + 64, 1);
      // Constant time (README, Design decisions). The tag compared above is a few bits of a keyed hash that a
      // caller cannot aim at without the pepper, so its early exit tells nothing.
      if (digest_equal(slot.digest, digest)) {
        return ref;
      }
    }
  }
}

void ActiveKeyTable::Shard::insert(const Digest& digest, Ref ref, const ActiveKeyTable& table) {
  index_insert(index, count, digest_tag(digest) | (static_cast<std::uint64_t>(ref) + 1),
               [&](std::uint64_t v) {
                 return digest_hash(table.slot_at(static_cast<Ref>((v & kRefMask) - 1)).digest);
               });
  ++count;
}

void ActiveKeyTable::Shard::mark_used(Slot& slot, Ref ref, std::int64_t now_s) {
  const auto at =
      static_cast<std::uint32_t>(std::clamp<std::int64_t>(now_s - kUsageEpoch, 1, kUnflushed - 1));
  if (at <= (slot.last_used & ~kUnflushed)) {
    return;  // already recorded this second (or a later one)
  }
  if ((slot.last_used & kUnflushed) == 0) {
    unflushed.push_back(ref);
  }
  slot.last_used = at | kUnflushed;
}

ActiveKeyTable::ActiveKeyTable(std::vector<std::string> tiers) : tiers_(std::move(tiers)) {}

ActiveKeyTable::~ActiveKeyTable() { free_chunks(); }

void ActiveKeyTable::free_chunks() {
  for (Slot*& chunk : chunks_) {
    if (chunk != nullptr) {
      std::destroy_n(chunk, kChunkSlots);
      free_huge_pages(chunk, kChunkSlots * sizeof(Slot));
      chunk = nullptr;
    }
  }
  use_cells_.free();
}

void ActiveKeyTable::CountCells::free() {
  for (auto& chunk : chunks) {
    if (UseCell* cells = chunk.exchange(nullptr)) {
      free_huge_pages(cells, kUseChunkCells * sizeof(UseCell));
    }
  }
}

ActiveKeyTable::UseCell& ActiveKeyTable::CountCells::cell(Ref ref) {
  std::atomic<UseCell*>& chunk = chunks[ref >> kUseChunkBits];
  UseCell* cells = chunk.load(std::memory_order_acquire);
  if (cells == nullptr) {
    // Zero-filled, which is every cell's empty state. Slots of several shards share a chunk:
    // the first to get theirs in wins, the others give theirs back. The first chunk is left to
    // plain pages, resident as its cells are first used: a table of 10 000 keys does not pay
    // 2 MiB (210 B a key) for its cells, one of a million keys misses the TLB on 6% of them.
    auto* fresh = static_cast<UseCell*>(
        allocate_huge_pages(kUseChunkCells * sizeof(UseCell), /*advise=*/(ref >> kUseChunkBits) != 0));
    if (chunk.compare_exchange_strong(cells, fresh, std::memory_order_acq_rel)) {
      cells = fresh;
    } else {
      free_huge_pages(fresh, kUseChunkCells * sizeof(UseCell));
    }
  }
  return cells[ref & (kUseChunkCells - 1)];
}

const ActiveKeyTable::UseCell* ActiveKeyTable::CountCells::find(Ref ref) const {
  const UseCell* cells = chunks[ref >> kUseChunkBits].load(std::memory_order_acquire);
  return cells == nullptr ? nullptr : &cells[ref & (kUseChunkCells - 1)];
}

namespace {

std::uint32_t total_of(const std::array<std::uint32_t, ActiveKeyTable::kCountedOutcomes>& counts) {
  std::uint64_t sum = 0;
  for (const std::uint32_t n : counts) {
    sum += n;
  }
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(sum, UINT32_MAX));
}

// A dotted-quad IPv4 address as four bytes (inet_pton takes no other form).
std::optional<std::uint32_t> ipv4_of(std::string_view address) {
  std::array<char, INET_ADDRSTRLEN> text{};
  if (address.size() >= text.size()) {
    return std::nullopt;
  }
  std::memcpy(text.data(), address.data(), address.size());
  in_addr parsed{};
  if (::inet_pton(AF_INET, text.data(), &parsed) != 1) {
    return std::nullopt;
  }
  return parsed.s_addr;
}

}  // namespace

std::string ipv4_text(std::uint32_t address) {
  in_addr a{};
  a.s_addr = address;
  std::array<char, INET_ADDRSTRLEN> text{};
  ::inet_ntop(AF_INET, &a, text.data(), text.size());
  return text.data();
}

std::vector<std::pair<std::string, std::uint32_t>> ActiveKeyTable::CountedMinute::sources() const {
  if (ipv4) {
    return {{ipv4_text(*ipv4), total_of(counts)}};
  }
  return list;
}

void ActiveKeyTable::add_sources(CountLists& lists, UseCell& cell, std::uint32_t before, std::uint32_t added,
                                 const SourceList& sources) {
  // One IPv4 address behind every use so far stays in the cell (most keys are used from one
  // place): no list, no allocation. Anything else moves to a list.
  if (sources.size() == 1 && sources[0].second == added) {
    if (const auto address = ipv4_of(sources[0].first)) {
      if (cell.sources == 0 && before == 0) {
        cell.sources = kInlineSource;
        cell.spare = *address;
        return;
      }
      if ((cell.sources & kInlineSource) != 0 && cell.spare == *address) {
        return;
      }
    }
  }
  const auto new_list = [&](SourceList list) {
    if (lists.free_sources.empty()) {
      lists.sources.push_back(std::move(list));
      cell.sources = static_cast<std::uint32_t>(lists.sources.size());
    } else {
      cell.sources = lists.free_sources.back() + 1;
      lists.free_sources.pop_back();
      lists.sources[cell.sources - 1] = std::move(list);
    }
  };
  if ((cell.sources & kInlineSource) != 0) {
    new_list({{ipv4_text(cell.spare), before}});
    cell.spare = 0;
  }
  if (sources.empty()) {
    return;
  }
  if (cell.sources == 0) {
    new_list({});
  }
  SourceList& list = lists.sources[cell.sources - 1];
  if (sources.size() == 1) {
    add_source(list, sources[0].first, sources[0].second, kMaxCountedSources);  // as merging, cheaper
  } else {
    merge_sources(list, sources, kMaxCountedSources);
  }
}

void ActiveKeyTable::release(CountLists& lists, UseCell& cell) {
  if (cell.sources != 0 && (cell.sources & kInlineSource) == 0) {
    lists.sources[cell.sources - 1] = {};
    lists.free_sources.push_back(cell.sources - 1);
  }
  cell = UseCell{};
}

void ActiveKeyTable::count_use(Shard& shard, Ref ref, std::int64_t now_s, std::size_t outcome,
                               std::string_view source) {
  CountLists& lists = shard.counts;
  UseCell& cell = use_cells_.cell(ref);
  const auto minute = std::max(static_cast<std::uint32_t>(std::clamp<std::int64_t>(now_s / 60, 1, kChanged - 1)),
                               taken_before_.load(std::memory_order_relaxed));
  const std::uint32_t held = cell.minute & ~kChanged;
  if (held == 0) {
    cell.minute = minute;
  } else if (minute > held) {
    lists.set_aside.push_back({ref, cell});  // taken with the rest; its source list goes along
    cell = UseCell{};
    cell.minute = minute;
  }
  // A clock set back counts into the later minute the cell holds: between two takes a key's
  // minutes only grow, so each key and minute has one cell, whose journalled counts only grow.
  if ((cell.minute & kChanged) == 0) {
    cell.minute |= kChanged;
    ++lists.changed_cells;
    lists.changed.push_back(ref);
  }
  const std::uint32_t before = total_of(cell.counts);
  if (cell.counts[outcome] != UINT32_MAX) {
    ++cell.counts[outcome];
  }
  if (source.empty() && cell.sources == 0) {
    return;
  }
  // The common case without building a list: the same address as every use before.
  if ((cell.sources & kInlineSource) != 0 && !source.empty()) {
    const auto address = ipv4_of(source);
    if (address && *address == cell.spare) {
      return;
    }
  }
  add_sources(lists, cell, before, 1, source.empty() ? SourceList{} : SourceList{{std::string(source), 1}});
}

void ActiveKeyTable::hand(const CountSink& sink, const Slot& slot, const CountLists& lists,
                          const UseCell& cell) const {
  static const SourceList kNone;
  const bool inline_source = (cell.sources & kInlineSource) != 0;
  sink(CountedMinute{
      .key_id = slot.entry.key_id,
      .minute_start = static_cast<std::int64_t>(cell.minute & ~kChanged) * 60,
      .counts = cell.counts,
      .ipv4 = inline_source ? std::optional<std::uint32_t>(cell.spare) : std::nullopt,
      .list = cell.sources != 0 && !inline_source ? lists.sources[cell.sources - 1] : kNone,
  });
}

namespace {
// Cells (slots) per window of a scan, and set-aside cells per lock: a verification waits
// for at most this many of its shard's cells.
constexpr std::size_t kCountChunk = 256;
// How far ahead of the cell being journalled its successors' cells and key ids are fetched.
constexpr std::size_t kJournalAhead = 8;
}  // namespace

void ActiveKeyTable::forget_listed_changes() {
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    shard.counts.changed.clear();
  }
}

std::size_t ActiveKeyTable::listed_changes() const {
  std::size_t n = 0;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.counts.changed.size();
  }
  return n;
}

std::size_t ActiveKeyTable::pending_counts() const {
  std::size_t n = 0;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.counts.changed_cells;
  }
  return n;
}

template <typename Fn>
void ActiveKeyTable::scan_cells([[maybe_unused]] const IndexReader& held, Fn fn) {
  assert(held.mutex() == &index_mutex_ && held.owns_lock());
  std::array<std::uint8_t, kCountChunk> shard_of_cell{};
  for (Ref first = 0; first < slot_count_; first += kUseChunkCells) {
    UseCell* cells = use_cells_.chunks[first >> kUseChunkBits].load(std::memory_order_acquire);
    if (cells == nullptr) {
      continue;  // no key in it was ever counted
    }
    const std::size_t in_chunk = std::min<std::size_t>(kUseChunkCells, slot_count_ - first);
    for (std::size_t i = 0; i < in_chunk; i += kCountChunk) {
      // A cell is its slot's shard's: each shard's lock is held in turn over the cells of
      // the window that are its own (a slot's digest never changes, the index lock keeps the
      // slots), so a verification waits for a few of its shard's cells, never for others'.
      const std::size_t n = std::min(in_chunk - i, kCountChunk);
      for (std::size_t j = 0; j < n; ++j) {
        shard_of_cell[j] = static_cast<std::uint8_t>(shard_of(slot_at(static_cast<Ref>(first + i + j)).digest));
      }
      for (std::size_t s = 0; s < kShards; ++s) {
        std::lock_guard lock(shards_[s].mutex);
        for (std::size_t j = 0; j < n; ++j) {
          if (shard_of_cell[j] == s && cells[i + j].minute != 0) {
            fn(shards_[s].counts, static_cast<Ref>(first + i + j), cells[i + j]);
          }
        }
      }
    }
  }
}

void ActiveKeyTable::journal_counts(const CountSink& sink, bool all) {
  IndexReader index_lock(index_mutex_);  // no slot added, no clear() meanwhile
  // Hands the cell over if it changed since it was last journalled (or, with `all`, anyway).
  const auto journal = [&](CountLists& lists, Ref ref, UseCell& cell) {
    if ((cell.minute & kChanged) != 0) {
      cell.minute &= ~kChanged;
      --lists.changed_cells;
    } else if (!all) {
      return;
    }
    hand(sink, slot_at(ref), lists, cell);
  };
  // Every cell in slot order (the cells and the slots they name are read in address order),
  // or, shard by shard, the cells it listed as changed, sorted into that order. Then each
  // shard's set-aside cells, up to the last one set aside before the loop ends: a cell set
  // aside while its shard's cells were read, before its own turn, is in this record too.
  // (Cells are set aside at any time, only ever appended; takes run one at a time with this.)
  if (all) {
    // The scan hands every changed cell: the lists start afresh before it (a cell changed
    // behind the scan is listed again by its use).
    forget_listed_changes();
    scan_cells(index_lock, journal);
  }
  std::vector<Ref> changed;
  for (Shard& shard : shards_) {
    CountLists& lists = shard.counts;
    if (!all) {
      {
        // The shard goes on with the (emptied) buffer the shard before it listed into.
        std::lock_guard lock(shard.mutex);
        changed.swap(lists.changed);
      }
      std::sort(changed.begin(), changed.end());
      for (std::size_t i = 0; i < changed.size();) {
        std::lock_guard lock(shard.mutex);
        for (const std::size_t end = std::min(changed.size(), i + kCountChunk); i < end; ++i) {
          // A fifth of a million cells is listed every 2 s at 100 000 verifications/s: fetch
          // the cells and key ids a few places ahead, rather than wait for each in turn.
          if (i + kJournalAhead < changed.size()) {
            const Ref ahead = changed[i + kJournalAhead];
            __builtin_prefetch(&use_cells_.cell(ahead));
            __builtin_prefetch(&slot_at(ahead).entry.key_id);
          }
          journal(lists, changed[i], use_cells_.cell(changed[i]));  // a counted cell's chunk exists
        }
      }
      changed.clear();
    }
    for (std::size_t i = 0;;) {
      std::lock_guard lock(shard.mutex);
      for (const std::size_t end = std::min(lists.set_aside.size(), i + kCountChunk); i < end; ++i) {
        journal(lists, lists.set_aside[i].ref, lists.set_aside[i].cell);
      }
      if (i >= lists.set_aside.size()) {
        break;
      }
    }
  }
}

void ActiveKeyTable::take_counts(const CountSink& sink, std::int64_t before) {
  const std::uint32_t before_minute =
      before / 60 >= std::int64_t{kChanged} ? kChanged : static_cast<std::uint32_t>(std::max<std::int64_t>(0, before / 60));
  if (before != INT64_MAX && before_minute > taken_before_.load(std::memory_order_relaxed)) {
    taken_before_.store(before_minute, std::memory_order_relaxed);
  }
  IndexReader index_lock(index_mutex_);  // no slot added, no clear() meanwhile
  // Hands the cell over and empties it, or keeps it (true), to be journalled again: listed
  // as changed if it is a slot's cell (`set_aside` false). The lists start afresh before the
  // scan, which lists every cell it keeps (a cell changed behind the scan is listed by its
  // use), so that they hold no more than the cells kept and the uses since, also where no
  // journal empties them (a replica only takes).
  forget_listed_changes();
  const auto take = [&](CountLists& lists, Ref ref, UseCell& cell, bool set_aside) {
    if ((cell.minute & ~kChanged) < before_minute) {
      if ((cell.minute & kChanged) != 0) {
        --lists.changed_cells;
      }
      hand(sink, slot_at(ref), lists, cell);
      release(lists, cell);
      return false;
    }
    if ((cell.minute & kChanged) == 0) {
      cell.minute |= kChanged;
      ++lists.changed_cells;
    }
    if (!set_aside) {
      lists.changed.push_back(ref);
    }
    return true;
  };
  scan_cells(index_lock, [&](CountLists& lists, Ref ref, UseCell& cell) { take(lists, ref, cell, false); });
  // Then the set-aside cells, taken after every slot's turn: a cell set aside while the scan
  // ran, before its slot's turn, is taken too; one set aside after it holds a minute the scan
  // kept.
  std::vector<CountLists::SetAside> set_aside;
  for (Shard& shard : shards_) {
    CountLists& lists = shard.counts;
    set_aside.clear();
    {
      std::lock_guard lock(shard.mutex);
      set_aside.swap(lists.set_aside);
    }
    for (std::size_t i = 0; i < set_aside.size();) {
      std::lock_guard lock(shard.mutex);
      for (const std::size_t end = std::min(set_aside.size(), i + kCountChunk); i < end; ++i) {
        if (take(lists, set_aside[i].ref, set_aside[i].cell, true)) {
          lists.set_aside.push_back(set_aside[i]);
        }
      }
    }
    std::lock_guard lock(shard.mutex);
    if (lists.free_sources.size() == lists.sources.size()) {
      lists.sources.clear();  // no cell refers to a list any more
      lists.free_sources.clear();
    }
  }
}

void ActiveKeyTable::peek_counts(std::string_view key_id, const CountSink& sink) const {
  IndexReader lock(index_mutex_);
  const auto ref = ref_by_key(lock, key_id);
  if (!ref) {
    return;
  }
  const Slot& slot = slot_at(*ref);
  const Shard& shard = shard_for(slot.digest);
  std::lock_guard shard_lock(shard.mutex);
  // The set-aside cells are scanned whole: queries are rare, verifications never wait long.
  for (const auto& set_aside : shard.counts.set_aside) {
    if (set_aside.ref == *ref) {
      hand(sink, slot, shard.counts, set_aside.cell);
    }
  }
  if (const UseCell* cell = use_cells_.find(*ref); cell != nullptr && cell->minute != 0) {
    hand(sink, slot, shard.counts, *cell);
  }
}

ActiveKeyTable::Ref ActiveKeyTable::add_slot([[maybe_unused]] const IndexWriter& held, const Digest& digest,
                                             const KeyEntry& entry) {
  assert(held.mutex() == &index_mutex_ && held.owns_lock());
  const Ref ref = slot_count_;
  Slot*& chunk = chunks_[ref >> kChunkBits];
  if (chunk == nullptr) {
    if ((ref >> kChunkBits) + 1 >= kMaxChunks) {
      throw std::length_error("ActiveKeyTable: too many keys");
    }
    auto* fresh = static_cast<Slot*>(allocate_huge_pages(kChunkSlots * sizeof(Slot)));
    std::uninitialized_default_construct_n(fresh, kChunkSlots);
    chunk = fresh;
  }
  Slot& slot = chunk[ref & (kChunkSlots - 1)];
  slot.digest = digest;
  slot.entry = entry;
  ++slot_count_;
  Shard& shard = shard_for(digest);
  std::lock_guard lock(shard.mutex);
  shard.insert(digest, ref, *this);
  return ref;
}

ActiveKeyTable::Agent& ActiveKeyTable::agent_for([[maybe_unused]] const IndexWriter& held,
                                                 std::string_view agent_id) {
  assert(held.mutex() == &index_mutex_ && held.owns_lock());
  return agents_[InlineId(agent_id)];
}

std::size_t ActiveKeyTable::agent_count() const {
  std::shared_lock lock(index_mutex_);
  return agents_.size();
}

void ActiveKeyTable::reserve(std::size_t keys, std::size_t agents) {
  // The smallest power of two an index can hold `n` values in without growing.
  const auto places_for = [](std::size_t n) {
    std::size_t places = kMinIndexSize;
    while (needs_growth(n, places)) {
      places *= 2;
    }
    return places;
  };
  IndexWriter lock(index_mutex_);
  if (agents_.empty()) {
    agents_.reserve(agents);
  }
  if (slot_count_ != 0 || keys == 0) {
    return;
  }
  // Digests spread evenly over the shards; an eighth more covers a shard's share of chance.
  const std::size_t per_shard = keys / kShards + keys / kShards / 8 + 16;
  for (Shard& shard : shards_) {
    std::lock_guard shard_lock(shard.mutex);
    shard.index.assign(places_for(per_shard), 0);
  }
  key_index_.assign(places_for(keys), 0);
}

std::optional<KeyEntry> ActiveKeyTable::find(const Digest& digest) const {
  const Shard& shard = shard_for(digest);
  std::lock_guard lock(shard.mutex);
  const auto ref = shard.locate(digest, *this);
  if (!ref) {
    return std::nullopt;
  }
  return slot_at(*ref).entry;
}

std::optional<ActiveKeyTable::Ref> ActiveKeyTable::ref_by_key([[maybe_unused]] IndexHeld held,
                                                              std::string_view key_id) const {
  assert(held.mutex == &index_mutex_ && held.owned);
  if (key_index_.empty()) {
    return std::nullopt;
  }
  const std::size_t mask = key_index_.size() - 1;
  for (std::size_t pos = key_id_hash(key_id) & mask;; pos = (pos + 1) & mask) {
    const std::uint32_t v = key_index_[pos];
    if (v == 0) {
      return std::nullopt;
    }
    // A slot's key id never changes once written.
    if (slot_at(v - 1).entry.key_id.view() == key_id) {
      return v - 1;
    }
  }
}

void ActiveKeyTable::index_key([[maybe_unused]] const IndexWriter& held, Ref ref) {
  assert(held.mutex() == &index_mutex_ && held.owns_lock());
  index_insert(key_index_, key_count_, ref + 1, [&](std::uint32_t v) {
    // The new slot's id is written already, so it can be read back like the others.
    return key_id_hash(slot_at(v - 1).entry.key_id.view());
  });
  ++key_count_;
}

std::optional<KeyEntry> ActiveKeyTable::find_key(std::string_view key_id) const {
  Digest digest{};
  {
    IndexReader lock(index_mutex_);
    const auto ref = ref_by_key(lock, key_id);
    if (!ref) {
      return std::nullopt;
    }
    digest = slot_at(*ref).digest;
  }
  return find(digest);
}

void ActiveKeyTable::apply(const v1::Event& event, std::vector<Digest>* changed) {
  switch (event.payload_case()) {
    case v1::Event::kAgentRegistered:
      apply_agent_registered(event.agent_registered());
      return;
    case v1::Event::kRateLimitTierChanged:
      apply_tier_change(event.rate_limit_tier_changed(), changed);
      return;
    case v1::Event::kKeyCreated:
      apply_key_created(event, changed);
      return;
    case v1::Event::kKeyRotated:
    case v1::Event::kKeyRevoked:
    case v1::Event::kKeyExpired:
    case v1::Event::kKeyCompromised:
      apply_key_change(event, changed);
      return;
    default:
      return;
  }
}

// Tier names are resolved before taking the index lock (tier_index locks tiers_mutex_).
void ActiveKeyTable::apply_agent_registered(const v1::AgentRegistered& e) {
  const std::uint8_t tier = e.rate_limit_tier().empty() ? 0 : tier_index(e.rate_limit_tier());
  const v1::Environment env =
      e.environment() == v1::ENVIRONMENT_UNSPECIFIED ? v1::ENVIRONMENT_PRODUCTION : e.environment();
  IndexWriter lock(index_mutex_);
  // A second registration of the same id changes nothing (the aggregate ignores it too).
  Agent& agent = agent_for(lock, e.agent_id());
  if (!agent.registered) {
    agent.registered = true;
    agent.tier = tier;
    agent.environment = env;
  }
}

void ActiveKeyTable::apply_tier_change(const v1::RateLimitTierChanged& e, std::vector<Digest>* changed) {
  const std::uint8_t tier = tier_index(e.tier());
  IndexWriter lock(index_mutex_);
  Agent& agent = agent_for(lock, e.agent_id());
  agent.registered = true;
  agent.tier = tier;
  // Tier changes are rare: a scan of every slot (milliseconds at a million keys, under the
  // index lock only, so verifications go on) costs less than a key list kept per agent.
  for (Ref ref = 0; ref < slot_count_; ++ref) {
    Slot& slot = slot_at(ref);
    if (slot.entry.agent_id.view() != e.agent_id()) {
      continue;
    }
    std::lock_guard shard_lock(shard_for(slot.digest).mutex);
    if (slot.entry.tier != tier) {
      slot.entry.tier = tier;
      if (changed != nullptr) {
        changed->push_back(slot.digest);
      }
    }
  }
}

void ActiveKeyTable::apply_key_created(const v1::Event& event, std::vector<Digest>* changed) {
  const v1::KeyCreated& e = event.key_created();
  const std::optional<Digest> digest = digest_from_bytes(e.digest());
  if (!digest || e.key_id().empty()) {
    return;  // not a key this table can verify
  }
  IndexWriter lock(index_mutex_);
  if (ref_by_key(lock, e.key_id())) {
    return;
  }
  KeyEntry entry;
  entry.key_id = InlineId(e.key_id());
  entry.agent_id = InlineId(e.agent_id());
  entry.created_at_ms = to_unix_ms(event.occurred_at());
  entry.expires_at_ms = e.has_expires_at() ? expiry_ms(e.expires_at()) : 0;
  entry.condition = KeyCondition::kActive;
  auto agent = agents_.find(InlineId(e.agent_id()));
  const bool registered = agent != agents_.end() && agent->second.registered;
  if (registered) {
    entry.tier = agent->second.tier;
  }
  entry.environment = e.environment();
  if (entry.environment == v1::ENVIRONMENT_UNSPECIFIED) {
    entry.environment = registered ? agent->second.environment : v1::ENVIRONMENT_PRODUCTION;
  }
  {
    Shard& shard = shard_for(*digest);
    std::lock_guard shard_lock(shard.mutex);
    if (shard.locate(*digest, *this)) {
      return;  // the same digest under another key id: keep the first
    }
  }
  const Ref ref = add_slot(lock, *digest, entry);
  index_key(lock, ref);
  if (changed != nullptr) {
    changed->push_back(*digest);
  }
}

// The events that change one existing key.
void ActiveKeyTable::apply_key_change(const v1::Event& event, std::vector<Digest>* changed) {
  IndexReader lock(index_mutex_);
  const auto ref = ref_by_key(lock, event_key_id(event));
  if (!ref) {
    return;
  }
  Slot& slot = slot_at(*ref);
  std::lock_guard shard_lock(shard_for(slot.digest).mutex);
  KeyEntry& entry = slot.entry;
  bool did_change = false;
  switch (event.payload_case()) {
    case v1::Event::kKeyRotated: {
      const v1::KeyRotated& e = event.key_rotated();
      if (e.has_old_key_expires_at()) {
        const std::int64_t at = expiry_ms(e.old_key_expires_at());
        if (entry.expires_at_ms == 0 || at < entry.expires_at_ms) {
          entry.expires_at_ms = at;
          did_change = true;
        }
      }
      break;
    }
    case v1::Event::kKeyRevoked:
      did_change = transition(entry, event.key_revoked().reason() == v1::REVOCATION_REASON_COMPROMISED
                                         ? KeyCondition::kCompromised
                                         : KeyCondition::kRevoked);
      break;
    case v1::Event::kKeyExpired:
      did_change = transition(entry, KeyCondition::kExpired);
      break;
    case v1::Event::kKeyCompromised:
      did_change = transition(entry, KeyCondition::kCompromised);
      break;
    default:
      break;
  }
  if (did_change && changed != nullptr) {
    changed->push_back(slot.digest);
  }
}

void ActiveKeyTable::put(const Digest& digest, const KeyEntry& entry) {
  IndexWriter lock(index_mutex_);
  {
    Shard& shard = shard_for(digest);
    std::lock_guard shard_lock(shard.mutex);
    if (const auto existing = shard.locate(digest, *this)) {
      slot_at(*existing).entry = entry;
      return;
    }
  }
  const Ref ref = add_slot(lock, digest, entry);
  if (!ref_by_key(lock, entry.key_id.view())) {
    index_key(lock, ref);
  }
}

std::optional<ActiveKeyTable::AgentDefaults> ActiveKeyTable::agent_defaults(std::string_view agent_id) const {
  std::shared_lock lock(index_mutex_);
  auto it = agents_.find(InlineId(agent_id));
  if (it == agents_.end() || !it->second.registered) {
    return std::nullopt;
  }
  AgentDefaults out;
  out.tier = it->second.tier;
  out.environment = it->second.environment;
  return out;
}

void ActiveKeyTable::put_agent(std::string_view agent_id, const AgentDefaults& defaults) {
  IndexWriter lock(index_mutex_);
  Agent& agent = agent_for(lock, agent_id);
  agent.registered = true;
  agent.tier = defaults.tier;
  agent.environment = defaults.environment;
}

void ActiveKeyTable::clear() {
  std::unique_lock lock(index_mutex_);
  for (Shard& shard : shards_) {
    std::lock_guard shard_lock(shard.mutex);
    shard.index.clear();
    shard.count = 0;
    shard.unflushed.clear();
    shard.counts = {};
  }
  free_chunks();
  slot_count_ = 0;
  key_index_.clear();
  key_count_ = 0;
  agents_.clear();
}

std::size_t ActiveKeyTable::size() const {
  std::shared_lock lock(index_mutex_);
  return slot_count_;
}

std::string ActiveKeyTable::tier_name(std::uint8_t tier) const {
  std::shared_lock lock(tiers_mutex_);
  return tier < tiers_.size() ? tiers_[tier] : std::string();
}

std::uint8_t ActiveKeyTable::tier_index(std::string_view name) {
  {
    std::shared_lock lock(tiers_mutex_);
    auto it = std::find(tiers_.begin(), tiers_.end(), name);
    if (it != tiers_.end()) {
      return static_cast<std::uint8_t>(it - tiers_.begin());
    }
  }
  std::unique_lock lock(tiers_mutex_);
  auto it = std::find(tiers_.begin(), tiers_.end(), name);
  if (it != tiers_.end()) {
    return static_cast<std::uint8_t>(it - tiers_.begin());
  }
  // entry.tier is one byte; past 256 distinct names the last one absorbs the rest.
  if (tiers_.size() > UINT8_MAX) {
    return UINT8_MAX;
  }
  tiers_.emplace_back(name);
  return static_cast<std::uint8_t>(tiers_.size() - 1);
}

void ActiveKeyTable::touch(const Digest& digest, std::int64_t now_s) {
  visit(digest, now_s, [](const KeyEntry&, TokenBucket&) { return true; });
}

std::optional<std::int64_t> ActiveKeyTable::last_used(std::string_view key_id) const {
  IndexReader lock(index_mutex_);
  const auto ref = ref_by_key(lock, key_id);
  if (!ref) {
    return std::nullopt;
  }
  const Slot& slot = slot_at(*ref);
  std::lock_guard shard_lock(shard_for(slot.digest).mutex);
  const std::uint32_t at = slot.last_used & ~kUnflushed;
  if (at == 0) {
    return std::nullopt;
  }
  return kUsageEpoch + at;
}

std::vector<ActiveKeyTable::UsageRecord> ActiveKeyTable::take_usage() {
  // Records taken per shard lock: a verification on the shard waits for at most this many.
  constexpr std::size_t kDrainChunk = 1024;
  std::vector<UsageRecord> out;
  std::vector<Ref> refs;
  std::shared_lock lock(index_mutex_);  // no clear() meanwhile
  for (auto& shard : shards_) {
    for (;;) {
      const std::size_t first = out.size();
      {
        std::lock_guard shard_lock(shard.mutex);
        if (shard.unflushed.empty()) {
          break;
        }
        const std::size_t take = std::min(kDrainChunk, shard.unflushed.size());
        refs.assign(shard.unflushed.end() - static_cast<std::ptrdiff_t>(take), shard.unflushed.end());
        shard.unflushed.resize(shard.unflushed.size() - take);
        for (const Ref ref : refs) {
          Slot& slot = slot_at(ref);
          slot.last_used &= ~kUnflushed;
          out.push_back({.key_id = {}, .seconds = kUsageEpoch + slot.last_used});
        }
      }
      // Outside the shard lock: a slot's key id never changes once written.
      for (std::size_t i = 0; i < refs.size(); ++i) {
        out[first + i].key_id = slot_at(refs[i]).entry.key_id;
      }
    }
  }
  return out;
}

}  // namespace keyledger
