#pragma once
// The verification hot path's table: digest -> key entry for every key ever created (revoked
// and expired ones too, so verification can say REVOKED / EXPIRED / COMPROMISED).
//
// Slots of 128 bytes (digest, entry, the key's rate-limit bucket and last use) live in 2 MiB
// chunks on transparent huge pages and never move. 8 shards (kShards) each own an open-addressing
// index over them (8 bytes a place: slot number plus 32 bits of the digest as a tag) and a
// mutex. A verification is one shard lock, one probe of the index and one slot: no TLB miss
// and one cache miss past the index, however many keys there are. Many threads verify at once
// (each locks one shard, briefly) while the projection applies events. Resident bytes per key,
// indexes included, are measured by ops/bench/verify (README, Performance), not kept here.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "domain/agent.h"
#include "domain/key_material.h"
#include "projections/huge_pages.h"

namespace keyledger {

// An id such as `key_…`/`agt_…` stored inline (no heap allocation).
class InlineId {
 public:
  static constexpr std::size_t kCapacity = 28;  // "key_" + 24 hex
  InlineId() = default;
  explicit InlineId(std::string_view id);  // truncates past kCapacity
  std::string_view view() const { return {data_.data(), size_}; }
  std::string str() const { return std::string(view()); }
  bool operator==(const InlineId& other) const { return view() == other.view(); }

 private:
  std::array<char, kCapacity> data_{};
  std::uint8_t size_ = 0;
};

// Client addresses of a key's uses in one bucket, bounded to `bound` entries the Space-Saving
// way (Metwally et al., "Efficient computation of frequent and top-k elements in data
// streams"), so that the most frequent addresses are kept, not the first ones seen. A list
// with fewer than `bound` entries is exact. A full one may have let addresses go; each of them
// was used at most as often as the smallest count listed, so merging lists credits an address
// missing from a full list with that list's smallest count, sums the rest per address and
// keeps the `bound` largest (count, then address). A single use is a one-entry list: an
// address new to a full list takes the place of its smallest entry with that count plus one.
// Listed counts of a full list are thus upper bounds, over by at most its smallest count, and
// an address used more often than that is always listed. Every merge of lists (cells, the
// journal, minutes into hours, replicas' reports, answers) goes through here. Counts
// saturate. The order of `into` is kept where nothing is dropped.
template <typename Count>
void merge_sources(std::vector<std::pair<std::string, Count>>& into,
                   const std::vector<std::pair<std::string, Count>>& from, std::size_t bound);
// One use (or `count` uses) by `address`: merge_sources with a one-entry list.
template <typename Count>
void add_source(std::vector<std::pair<std::string, Count>>& into, std::string_view address, Count count,
                std::size_t bound);

// An IPv4 address (network byte order, as inet_pton gives it) as dotted-quad text.
std::string ipv4_text(std::uint32_t address);

enum class KeyCondition : std::uint8_t { kActive, kRevoked, kExpired, kCompromised };

struct KeyEntry {
  std::int64_t created_at_ms = 0;  // occurred_at of KeyCreated (the key indexes need it)
  std::int64_t expires_at_ms = 0;  // 0: never
  InlineId key_id;
  InlineId agent_id;
  KeyCondition condition = KeyCondition::kActive;  // as recorded by events
  std::uint8_t tier = 0;                           // index into the table's tier names
  v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;

  // What verification answers at `now_ms`: an active key past its expiry is kExpired.
  KeyCondition condition_at(std::int64_t now_ms) const {
    if (condition == KeyCondition::kActive && expires_at_ms != 0 && now_ms >= expires_at_ms) {
      return KeyCondition::kExpired;
    }
    return condition;
  }
};

// A key's token bucket (rate limiting lives in api/; the table only keeps the state beside
// the entry, so a verification touches one slot).
struct TokenBucket {
  std::int64_t updated_ns = 0;  // 0: never used (a fresh bucket is full)
  float tokens = 0;
};

class ActiveKeyTable {
 public:
  // `tiers`: tier names from configuration; entry.tier indexes into this list (names not in
  // it are appended on first sight).
  explicit ActiveKeyTable(std::vector<std::string> tiers);
  ~ActiveKeyTable();
  ActiveKeyTable(const ActiveKeyTable&) = delete;
  ActiveKeyTable& operator=(const ActiveKeyTable&) = delete;

  // Copy of the entry for `digest`, or nullopt.
  std::optional<KeyEntry> find(const Digest& digest) const;

  // Copy of the entry of `key_id`, or nullopt.
  std::optional<KeyEntry> find_key(std::string_view key_id) const;

  // What a visit did: record the key's last use (a successful verification), and count an
  // outcome of its usage (0 to kCountedOutcomes - 1; -1: none).
  struct Visited {
    bool used = false;
    int counted = -1;
  };
  static constexpr std::size_t kCountedOutcomes = 5;
  static constexpr std::size_t kMaxCountedSources = 20;  // client addresses kept per key and minute

  // The verification path: runs fn(const KeyEntry&, TokenBucket&) -> bool or Visited under the
  // entry's shard lock; when fn says used, the key's last use is recorded as `now_s` (Unix
  // seconds); when it says counted, that outcome is counted for the key in `now_s`'s minute,
  // with `source` (a client address, may be empty) among the minute's sources. False if the
  // digest is unknown (fn not called).
  template <typename Fn>
  bool visit(const Digest& digest, std::int64_t now_s, Fn&& fn, std::string_view source = {}) {
    Shard& shard = shard_for(digest);
    std::lock_guard lock(shard.mutex);
    const std::optional<Ref> ref = shard.locate(digest, *this);
    if (!ref) {
      return false;
    }
    Slot& slot = slot_at(*ref);
    // The key's count cell is written after fn: fetch it while fn runs.
    if (const UseCell* cells = use_cells_.chunks[*ref >> kUseChunkBits].load(std::memory_order_relaxed)) {
      __builtin_prefetch(&cells[*ref & (kUseChunkCells - 1)], 1);
    }
    TokenBucket bucket{slot.bucket_updated_ns, slot.bucket_tokens};
    Visited visited;
    if constexpr (std::is_same_v<std::decay_t<decltype(fn(slot.entry, bucket))>, bool>) {
      visited.used = fn(static_cast<const KeyEntry&>(slot.entry), bucket);
    } else {
      visited = fn(static_cast<const KeyEntry&>(slot.entry), bucket);
    }
    slot.bucket_updated_ns = bucket.updated_ns;
    slot.bucket_tokens = bucket.tokens;
    if (visited.used) {
      shard.mark_used(slot, *ref, now_s);
    }
    if (visited.counted >= 0) {
      count_use(shard, *ref, now_s, static_cast<std::size_t>(visited.counted), source);
    }
    return true;
  }

  // One key's counts in one minute, as handed to a CountSink (valid during the call only).
  struct CountedMinute {
    const InlineId& key_id;
    std::int64_t minute_start = 0;  // Unix seconds
    const std::array<std::uint32_t, kCountedOutcomes>& counts;
    // The client addresses: every use from one IPv4 address (network byte order), or a list
    // (may be empty).
    std::optional<std::uint32_t> ipv4;
    const std::vector<std::pair<std::string, std::uint32_t>>& list;
    // The addresses as one list either way.
    std::vector<std::pair<std::string, std::uint32_t>> sources() const;
  };
  using CountSink = std::function<void(const CountedMinute&)>;

  // Usage is counted by visit() into one cell per key (its current minute: what it holds
  // since that minute began, or since the cell was last taken) and stays there until taken.
  // A key used in a later minute sets its old minute's cell aside (taken with the others).
  // The calls below run sink under the shards' locks, a bounded chunk of cells at a time, so
  // verifications go on meanwhile: sinks only copy. journal_counts() reads the cells each
  // shard listed as changed; take_counts() and journal_counts(all) scan every cell in slot
  // order (no list of which cells hold counts: that would cost 4 more bytes a key).

  // Every cell that changed since the last call (with `all`: every cell), its whole count so
  // far, not the change: KeyUsage journals these, the latest per key and minute being the one
  // that counts.
  void journal_counts(const CountSink& sink, bool all = false);
  // Hands over and forgets the cells of minutes starting before `before` (Unix seconds; every
  // cell by default). Cells it keeps count as changed for the next journal_counts(). Uses
  // counted later at a time before `before` (a clock set back) count in `before`'s minute, so
  // a key and minute taken never has a cell again. One caller at a time, with journal_counts.
  void take_counts(const CountSink& sink, std::int64_t before = INT64_MAX);
  // The cells of `key_id` not taken yet, one call of sink per minute, in no set order.
  void peek_counts(std::string_view key_id, const CountSink& sink) const;
  // Cells changed since the last journal_counts().
  std::size_t pending_counts() const;
  // Entries of the shards' lists of changed cells (a cell may be listed twice): no more than
  // the cells a take kept and the uses since (tests).
  std::size_t listed_changes() const;

  // Applies one event (KeyCreated, KeyRotated, KeyRevoked, KeyExpired, KeyCompromised,
  // AgentRegistered, RateLimitTierChanged); others are ignored. Idempotent, also for events
  // delivered again out of order (at-least-once consumers): a known key is never created
  // again, a revoked, expired or compromised key never becomes active again, and compromised
  // wins over revoked/expired. If `changed` is given, the digests of the entries the event
  // changed are appended to it (the projector writes their snapshots).
  void apply(const v1::Event& event, std::vector<Digest>* changed = nullptr);

  // Inserts or replaces an entry (start-up load from a checkpoint).
  void put(const Digest& digest, const KeyEntry& entry);

  // What an agent's keys get from the agent: its rate-limit tier and its environment.
  struct AgentDefaults {
    std::uint8_t tier = 0;
    v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
  };
  // From AgentRegistered / RateLimitTierChanged; nullopt for an unknown agent.
  std::optional<AgentDefaults> agent_defaults(std::string_view agent_id) const;
  // Start-up load of what agent_defaults() answers (does not touch existing entries).
  void put_agent(std::string_view agent_id, const AgentDefaults& defaults);

  // Sizes an empty table's indexes for `keys` entries and `agents` agents up front, so a
  // start-up load of that many never regrows (and rehashes) them. Does nothing on a table
  // that holds entries.
  void reserve(std::size_t keys, std::size_t agents = 0);

  std::size_t agent_count() const;

  // Forgets every entry and agent (Projector::rebuild). Tier names stay.
  void clear();

  std::size_t size() const;
  std::string tier_name(std::uint8_t tier) const;
  std::uint8_t tier_index(std::string_view name);  // appends unknown names

  // Calls fn(digest, entry) for every entry, in creation order (checkpoint writing, tests).
  template <typename Fn>
  void for_each(Fn fn) const {
    std::shared_lock lock(index_mutex_);
    for (Ref ref = 0; ref < slot_count_; ++ref) {
      const Slot& slot = slot_at(ref);
      std::lock_guard shard_lock(shard_for(slot.digest).mutex);
      fn(slot.digest, static_cast<const KeyEntry&>(slot.entry));
    }
  }

  // Calls fn(agent_id, defaults) for every agent agent_defaults() knows, in no set order.
  template <typename Fn>
  void for_each_agent(Fn fn) const {
    std::shared_lock lock(index_mutex_);
    for (const auto& [id, agent] : agents_) {
      if (agent.registered) {
        fn(id.view(), AgentDefaults{agent.tier, agent.environment});
      }
    }
  }

  // Records a successful verification at `now_s` (Unix seconds) without visit().
  void touch(const Digest& digest, std::int64_t now_s);
  // Last successful verification of a key (usage data, not events); Unix seconds.
  std::optional<std::int64_t> last_used(std::string_view key_id) const;
  // A key's last use, as drained for flushing.
  struct UsageRecord {
    InlineId key_id;
    std::int64_t seconds = 0;  // Unix seconds
  };
  // Drains the usage recorded since the last call, one record per key, for periodic
  // flushing. Verifications go on meanwhile: a shard's lock is held for a bounded chunk of
  // its records at a time, never for all of them.
  std::vector<UsageRecord> take_usage();

 private:
  // Last use is kept in 31 bits as seconds since 2020-01-01 (good until 2088); the top bit
  // says "not flushed yet".
  static constexpr std::int64_t kUsageEpoch = 1'577'836'800;
  static constexpr std::uint32_t kUnflushed = 0x8000'0000U;

  struct Slot {
    Digest digest{};
    KeyEntry entry;
    std::int64_t bucket_updated_ns = 0;
    float bucket_tokens = 0;
    std::uint32_t last_used = 0;  // 0: never; else kUsageEpoch-relative seconds | kUnflushed
  };

  static_assert(sizeof(Slot) == 128, "a slot is two cache lines (Shard::locate prefetches the second)");

  // A slot's number. Slots are only ever added, so a Ref stays valid until clear().
  using Ref = std::uint32_t;
  static constexpr unsigned kChunkBits = 14;  // 16 384 slots of 128 bytes: one huge page
  static constexpr std::size_t kChunkSlots = std::size_t{1} << kChunkBits;
  static constexpr std::size_t kMaxChunks = std::size_t{1} << 14;  // 268 million keys
  static constexpr std::size_t kShards = 8;

  // A key's usage counts in one minute, beside its slot (same Ref, same shard lock): 32 bytes
  // a key, in chunks of one huge page made when a key in them is first counted.
  struct UseCell {
    std::uint32_t minute = 0;  // Unix minutes | kChanged; 0: nothing counted
    std::array<std::uint32_t, kCountedOutcomes> counts{};
    // 1 + index into the shard's source lists; kInlineSource: every use came from the IPv4
    // address in `spare`; 0: none.
    std::uint32_t sources = 0;
    std::uint32_t spare = 0;
  };
  static constexpr std::uint32_t kChanged = 0x8000'0000U;  // in UseCell::minute: not journalled
  static constexpr std::uint32_t kInlineSource = 0x8000'0000U;
  static_assert(sizeof(UseCell) == 32, "a usage cell is half a cache line");
  static constexpr unsigned kUseChunkBits = 16;  // 65 536 cells of 32 bytes: one huge page
  static constexpr std::size_t kUseChunkCells = std::size_t{1} << kUseChunkBits;
  using SourceList = std::vector<std::pair<std::string, std::uint32_t>>;

  // What a shard's usage cells point to, and how many of them changed.
  struct CountLists {
    struct SetAside {
      Ref ref;
      UseCell cell;
    };
    std::vector<SetAside> set_aside;  // a minute a key left before it was taken
    std::vector<SourceList> sources;  // UseCell::sources
    std::vector<std::uint32_t> free_sources;  // indexes into `sources` no cell uses
    std::size_t changed_cells = 0;  // cells and set-aside cells with kChanged
    // The cells (not set aside) that took kChanged since the last journal_counts(), so that
    // it reads those instead of every cell: 4 bytes a key used in a flush interval, not a
    // key. A cell may be listed twice, or have lost kChanged to a take since.
    std::vector<Ref> changed;
  };
  // One cell per slot (same Ref), in chunks made when a key in them is first counted.
  struct CountCells {
    std::array<std::atomic<UseCell*>, kMaxChunks * kChunkSlots / kUseChunkCells> chunks{};
    UseCell& cell(Ref ref);  // allocates its chunk on first use
    const UseCell* find(Ref ref) const;  // null while its chunk is not made
    void free();
  };

  struct Shard {
    mutable std::mutex mutex;
    CountLists counts;  // usage counted by visit(), not taken yet
    std::vector<std::uint64_t, HugePageAllocator<std::uint64_t>>
        index;  // 0 empty, else tag << 32 | (ref + 1)
    std::size_t count = 0;
    std::vector<Ref> unflushed;  // slots whose last use is not flushed yet

    std::optional<Ref> locate(const Digest& digest, const ActiveKeyTable& table) const;
    void insert(const Digest& digest, Ref ref, const ActiveKeyTable& table);
    void mark_used(Slot& slot, Ref ref, std::int64_t now_s);
  };

  static std::size_t shard_of(const Digest& d) { return d[8] % kShards; }
  Shard& shard_for(const Digest& d) { return shards_[shard_of(d)]; }
  const Shard& shard_for(const Digest& d) const { return shards_[shard_of(d)]; }
  Slot& slot_at(Ref ref) const { return chunks_[ref >> kChunkBits][ref & (kChunkSlots - 1)]; }
  void count_use(Shard& shard, Ref ref, std::int64_t now_s, std::size_t outcome, std::string_view source);
  // Records that of the `added` uses just counted into `cell` (which held `before`), `sources`
  // came from these addresses.
  static void add_sources(CountLists& lists, UseCell& cell, std::uint32_t before, std::uint32_t added,
                          const SourceList& sources);
  // Empties `cell`, giving its source list back.
  static void release(CountLists& lists, UseCell& cell);
  // Calls sink with the key's counts in `cell`.
  void hand(const CountSink& sink, const Slot& slot, const CountLists& lists, const UseCell& cell) const;
  // The helpers below run under index_mutex_ and take the caller's lock as proof: a call
  // without one does not compile, and debug builds check it locks index_mutex_.
  using IndexWriter = std::unique_lock<std::shared_mutex>;
  using IndexReader = std::shared_lock<std::shared_mutex>;
  struct IndexHeld {  // either kind of lock: lookups need no more than shared
    IndexHeld(const IndexWriter& lock) : mutex(lock.mutex()), owned(lock.owns_lock()) {}  // NOLINT
    IndexHeld(const IndexReader& lock) : mutex(lock.mutex()), owned(lock.owns_lock()) {}  // NOLINT
    const std::shared_mutex* mutex;
    bool owned;
  };
  // Calls fn(lists, ref, cell) for every slot's cell that holds counts, kCountChunk slots at a
  // time, under the lock of the cell's shard (whose lists are the cell's).
  template <typename Fn>
  void scan_cells(const IndexReader& held, Fn fn);
  void forget_listed_changes();  // empties every shard's list of changed cells

  // A new slot holding `entry`, indexed in its shard.
  Ref add_slot(const IndexWriter& held, const Digest& digest, const KeyEntry& entry);
  std::optional<Ref> ref_by_key(IndexHeld held, std::string_view key_id) const;
  void index_key(const IndexWriter& held, Ref ref);  // the slot must hold its key id already
  void free_chunks();

  // apply(), by kind of event.
  void apply_agent_registered(const v1::AgentRegistered& e);
  void apply_tier_change(const v1::RateLimitTierChanged& e, std::vector<Digest>* changed);
  void apply_key_created(const v1::Event& event, std::vector<Digest>* changed);
  void apply_key_change(const v1::Event& event, std::vector<Digest>* changed);

  std::array<Shard, kShards> shards_;
  std::array<Slot*, kMaxChunks> chunks_{};  // written before a slot of theirs is indexed
  CountCells use_cells_;                    // Shard::counts' cells
  // Unix minute: a later use of a minute before this counts in this one (take_counts).
  std::atomic<std::uint32_t> taken_before_{0};

  struct Agent {
    std::uint8_t tier = 0;
    v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
    bool registered = false;
  };
  // Slots by key id (open addressing over Refs, +1; 0 empty) and agents by id, to apply
  // events that name a key or an agent; also guards adding slots.
  mutable std::shared_mutex index_mutex_;
  Ref slot_count_ = 0;
  std::vector<std::uint32_t> key_index_;
  std::size_t key_count_ = 0;
  struct IdHash {
    std::size_t operator()(const InlineId& id) const { return std::hash<std::string_view>{}(id.view()); }
  };
  std::unordered_map<InlineId, Agent, IdHash> agents_;  // ids inline: no allocation but the node
  // agents_[id], creating the agent on first sight.
  Agent& agent_for(const IndexWriter& held, std::string_view agent_id);
  mutable std::shared_mutex tiers_mutex_;
  std::vector<std::string> tiers_;
};

}  // namespace keyledger
