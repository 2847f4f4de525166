#include "projections/projector.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>

#include <spdlog/spdlog.h>

#include "projections/audit_view.h"
#include "projections/bulk_load.h"
#include "projections/key_catalog.h"
#include "projections/storage_format.h"

namespace keyledger {

namespace sf = storage_format;

namespace {

constexpr std::string_view kCheckpointCf = "proj_checkpoint";
constexpr std::string_view kCheckpointKey = "position";
// The layout of the projection families this code reads and writes. A checkpoint written
// under another format (or none: before formats were recorded) is rebuilt from the log.
constexpr std::string_view kFormatKey = "format";
constexpr std::string_view kFormat = "2";
// Recorded while a rebuild runs, replaced by kFormat once its writes are flushed: a rebuild
// cut short (its writes may be half on disk) is redone at the next start.
constexpr std::string_view kRebuilding = "rebuilding";
// The key table's entry count at the checkpoint: a snapshot that loads another count is torn.
constexpr std::string_view kEntriesKey = "entries";
// The agents the table knew at the checkpoint (sizes the table before a load; optional).
constexpr std::string_view kAgentsKey = "agents";
// Usage data, not derived from events: rebuild() keeps it.
constexpr std::string_view kKeyUsageCf = "key_usage";
// Events read from the log per replay step (and per WriteBatch while replaying).
constexpr std::size_t kReplayBatch = 1024;
// A family a rebuild ingested more files into than this is compacted before the rebuild ends.
constexpr std::size_t kMaxFilesUncompacted = 8;

}  // namespace

std::vector<std::string> projection_column_families() {
  return {std::string(kCheckpointCf),
          "key_table",
          "key_agent",
          "key_active",
          "key_expiry",
          std::string(kKeyUsageCf),
          "agent_settings",
          "audit_agent",
          "audit_key",
          "audit_type",
          "audit_actor",
          "audit_time",
          "deliveries"};
}

std::map<std::string, EventStoreOptions::FamilyTuning, std::less<>> projection_family_tuning() {
  std::map<std::string, EventStoreOptions::FamilyTuning, std::less<>> tuning;
  for (const char* scanned : {"key_active", "key_expiry", "audit_agent", "audit_key", "audit_type",
                              "audit_actor", "audit_time", "deliveries"}) {
    tuning[scanned].point_lookups = false;
  }
  return tuning;
}

struct Projector::Impl {
  Impl(EventStore& s, ActiveKeyTable& keys, ServiceTokenTable& toks)
      : store(s), key_table(keys), tokens(toks), catalog(s), audit(s) {
    auto family = store.extra_column_family(kCheckpointCf);
    checkpoint_status = family.status();
    if (family.ok()) {
      checkpoint_cf = *family;
    }
  }

  EventStore& store;
  ActiveKeyTable& key_table;
  ServiceTokenTable& tokens;
  KeyCatalog catalog;
  AuditView audit;
  ColumnFamily checkpoint_cf;
  Status checkpoint_status;

  // Serialises apply (the store's writer thread) with start() and rebuild().
  std::mutex apply_mutex;
  std::atomic<std::uint64_t> applied{0};
  // Index writes not yet in RocksDB. Normally empty between calls; after a failed write it
  // keeps the failed group's writes so the next group's write carries them (the checkpoint
  // in it only ever moves forward with them).
  rocksdb::WriteBatch pending;
  CommitSubscription subscription;  // from start() on

  Status open_status() const {
    if (!checkpoint_status.ok()) {
      return Status::IoError(checkpoint_status.message() +
                             "; open the store with projection_column_families()");
    }
    if (!catalog.open_status().ok()) {
      return catalog.open_status();
    }
    return audit.open_status();
  }

  // What the checkpoint family holds. `position` 0 and no format: a store never projected.
  struct Checkpoint {
    std::uint64_t position = 0;
    std::optional<std::string> format;
    std::optional<std::uint64_t> entries;
    std::size_t agents = 0;  // a size hint only
  };

  // An 8-byte big-endian count of the checkpoint family; nullopt when absent, Corruption
  // (naming `what`) when it is not 8 bytes.
  Result<std::optional<std::uint64_t>> read_count(std::string_view key, std::string_view what) const {
    const auto value = checkpoint_cf.get(key);
    if (!value.ok()) {
      return value.status();
    }
    if (!value->has_value()) {
      return std::optional<std::uint64_t>();
    }
    if ((*value)->size() != sf::kPositionBytes) {
      return Status::Corruption("unreadable projection checkpoint" + std::string(what));
    }
    return std::optional<std::uint64_t>(sf::decode_be64(**value));
  }

  Result<Checkpoint> read_checkpoint() const {
    const auto format = checkpoint_cf.get(kFormatKey);
    const auto position = read_count(kCheckpointKey, "");
    const auto entries = read_count(kEntriesKey, " entry count");
    const auto agents = read_count(kAgentsKey, " agent count");
    if (!format.ok()) {
      return format.status();
    }
    for (const auto* read : {&position, &entries}) {
      if (!read->ok()) {
        return read->status();
      }
    }
    // The agent count only sizes the table: a damaged one is ignored, a failed read is not.
    if (!agents.ok() && agents.status().code() != Status::Code::kCorruption) {
      return agents.status();
    }
    return Checkpoint{.position = position->value_or(0),
                      .format = *format,
                      .entries = *entries,
                      .agents = agents.ok() ? agents->value_or(0) : 0};
  }

  // Loads the tables from the checkpoint. Corruption (with the reason) when the checkpoint
  // cannot be used: missing while the log has events, another format, unreadable, ahead of
  // the log, or a snapshot that does not hold the count written with it.
  Status load_checkpoint() {
    Result<Checkpoint> checkpoint = read_checkpoint();
    if (!checkpoint.ok()) {
      return checkpoint.status();
    }
    const std::uint64_t last = store.last_position();
    if (!checkpoint->format) {
      if (checkpoint->position == 0 && last == 0) {  // a new log: nothing to load
        rocksdb::WriteBatch batch;
        checkpoint_cf.put(batch, kFormatKey, kFormat);
        return store.write(batch, /*sync=*/false).Annotate("record the projection format");
      }
      return Status::Corruption(checkpoint->position == 0 ? "no projection checkpoint"
                                                          : "a projection checkpoint of an older format");
    }
    if (*checkpoint->format == kRebuilding) {
      return Status::Corruption("a rebuild of the projections did not finish");
    }
    if (*checkpoint->format != kFormat) {
      return Status::Corruption("a projection checkpoint of format " + *checkpoint->format + ", not " +
                                std::string(kFormat));
    }
    if (checkpoint->position > last) {
      return Status::Corruption("the projection checkpoint " + std::to_string(checkpoint->position) +
                                " is ahead of the log (" + std::to_string(last) + ")");
    }
    applied.store(checkpoint->position);
    // Size hints only (a damaged count is caught below, after the load), so bounded by what
    // the log can hold: every entry and agent comes from an event.
    key_table.reserve(std::min(checkpoint->entries.value_or(0), last),
                      std::min<std::uint64_t>(checkpoint->agents, last));
    if (Status s = catalog.load(key_table); !s.ok()) {
      return s;
    }
    if (checkpoint->entries.value_or(0) != key_table.size()) {
      return Status::Corruption("the key table snapshot holds " + std::to_string(key_table.size()) +
                                " entries, its checkpoint says " +
                                std::to_string(checkpoint->entries.value_or(0)));
    }
    if (Status s = audit.load_time_watermark(); !s.ok()) {
      return s;
    }
    // Service tokens are few and have no snapshot of their own: fold their stream up to the
    // checkpoint; the tail replay applies the rest.
    Result<std::vector<v1::Event>> token_events = store.read_stream(kTokensStream);
    if (!token_events.ok()) {
      return token_events.status();
    }
    for (const v1::Event& event : *token_events) {
      if (event.position() <= checkpoint->position) {
        tokens.apply(event);
      }
    }
    return Status::Ok();
  }

  void reset_tables() {
    key_table.clear();
    tokens.clear();
    pending.Clear();
    audit.reset_time_watermark();
    applied.store(0);
  }

  // Wipes the projection families and folds the whole log; durable when it returns.
  //
  // A bulk load, not a replay of apply(): one forward scan of the log folds the tables in
  // memory while the audit indexes (one entry per event and index) are collected and ingested
  // as sorted SST files; the key catalog, which only reflects the tables' final state, is
  // written from them once at the end. tests/projections/checkpoint_test.cpp holds this equal,
  // byte for byte, to what apply() builds event by event.
  Status rebuild(std::size_t spill_bytes) {
    reset_tables();
    if (Status s = wipe(); !s.ok()) {
      return s;
    }
    const auto started = std::chrono::steady_clock::now();
    const auto seconds_since = [](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    };
    BulkLoad bulk(spill_bytes);
    Status folded;  // the first error of a spill, or of the fold
    const IndexWrite write = [&](const ColumnFamily& cf, std::string_view key, std::string_view value) {
      if (!folded.ok()) {
        return;  // the load has failed: nothing more to collect
      }
      bulk.put(cf, key, value);
      if (bulk.full()) {
        folded = bulk.spill().Annotate("ingest the rebuilt projections");
      }
    };
    const Status scanned = store.scan(
        1, UINT64_MAX, /*descending=*/false,
        [&](const v1::Event& event) {
          const std::uint64_t expected = applied.load(std::memory_order_relaxed) + 1;
          if (event.position() != expected) {
            folded = Status::Corruption("the log has no event at position " + std::to_string(expected));
            return false;
          }
          key_table.apply(event);
          tokens.apply(event);
          audit.record(write, event);
          applied.store(event.position(), std::memory_order_release);
          return folded.ok();
        },
        /*bulk=*/true);
    if (!scanned.ok()) {
      return scanned;
    }
    if (!folded.ok()) {
      return folded;
    }
    const double fold_seconds = seconds_since(started);
    const auto writing = std::chrono::steady_clock::now();
    catalog.write_snapshot(key_table, write);
    if (!folded.ok()) {
      return folded;
    }
    if (Status s = bulk.ingest(); !s.ok()) {
      return s.Annotate("ingest the rebuilt projections");
    }
    // Each spill leaves a file in level 0 of the audit families (their keys overlap from one
    // spill to the next). RocksDB stalls every write of the store once a family holds 20 there:
    // a family given more than a few is compacted now, not left to the server.
    for (const ColumnFamily& cf : bulk.families_with_more_files_than(kMaxFilesUncompacted)) {
      if (Status s = cf.compact(); !s.ok()) {
        return s.Annotate("compact the rebuilt projections");
      }
    }
    if (Status s = store.flush(); !s.ok()) {
      return s.Annotate("flush the rebuilt projections");
    }
    spdlog::info(
        "projections: rebuild read and folded {} events in {:.2f} s, wrote the projections in {:.2f} s",
        applied.load(std::memory_order_relaxed), fold_seconds, seconds_since(writing));
    rocksdb::WriteBatch done;
    record_checkpoint(done);
    checkpoint_cf.put(done, kFormatKey, kFormat);
    return store.write(done, /*sync=*/true).Annotate("record the projection format");
  }

  // Applies one event at position applied + 1 to the tables and adds its index writes.
  void project(const v1::Event& event, std::set<Digest>& changed_entries) {
    const std::string key_id = event_key_id(event);
    std::optional<KeyEntry> before;
    if (!key_id.empty()) {
      before = key_table.find_key(key_id);
    }
    std::vector<Digest> changed;
    key_table.apply(event, &changed);
    tokens.apply(event);
    changed_entries.insert(changed.begin(), changed.end());

    if (!key_id.empty()) {
      catalog.record_key_change(pending, key_id, before, key_table.find_key(key_id));
    }
    if (event.has_agent_registered() || event.has_rate_limit_tier_changed()) {
      const std::string agent_id = event_agent_id(event);
      if (auto defaults = key_table.agent_defaults(agent_id)) {
        catalog.record_agent(pending, agent_id, defaults->environment, key_table.tier_name(defaults->tier));
      }
    }
    audit.record(pending, event);
    applied.store(event.position(), std::memory_order_release);
  }

  // Applies `events` (position order) past the checkpoint, reading any gap before them from
  // the log, and writes the group's index changes with the new checkpoint in one batch.
  Status apply_locked(const std::vector<v1::Event>& events) {
    std::set<Digest> changed_entries;
    Status status;
    for (const v1::Event& event : events) {
      const std::uint64_t position = event.position();
      if (position <= applied.load(std::memory_order_relaxed)) {
        continue;
      }
      if (position != applied.load(std::memory_order_relaxed) + 1) {
        status = fill_gap(position, changed_entries);
        if (!status.ok()) {
          break;
        }
      }
      project(event, changed_entries);
    }
    Status written = write_pending(changed_entries);
    return status.ok() ? written : status;
  }

  // Events between the checkpoint and `next_position` that never reached apply (a listener
  // installed late, a failed read): read them from the log.
  Status fill_gap(std::uint64_t next_position, std::set<Digest>& changed_entries) {
    while (applied.load(std::memory_order_relaxed) + 1 < next_position) {
      const std::uint64_t from = applied.load(std::memory_order_relaxed) + 1;
      Result<std::vector<v1::Event>> missing =
          store.read_all(from, std::min<std::uint64_t>(kReplayBatch, next_position - from));
      if (!missing.ok()) {
        return missing.status();
      }
      if (missing->empty() || missing->front().position() != from) {
        return Status::Corruption("the log has no event at position " + std::to_string(from));
      }
      for (const v1::Event& event : *missing) {
        if (event.position() != applied.load(std::memory_order_relaxed) + 1 ||
            event.position() >= next_position) {
          break;
        }
        project(event, changed_entries);
      }
    }
    return Status::Ok();
  }

  // The checkpoint: the position applied and the tables' sizes at it.
  void record_checkpoint(rocksdb::WriteBatch& batch) const {
    checkpoint_cf.put(batch, kCheckpointKey, sf::encode_be64(applied.load(std::memory_order_relaxed)));
    checkpoint_cf.put(batch, kEntriesKey, sf::encode_be64(key_table.size()));
    checkpoint_cf.put(batch, kAgentsKey, sf::encode_be64(key_table.agent_count()));
  }

  Status write_pending(const std::set<Digest>& changed_entries) {
    for (const Digest& digest : changed_entries) {
      if (std::optional<KeyEntry> entry = key_table.find(digest)) {
        catalog.record_entry(pending, digest, *entry, key_table.tier_name(entry->tier));
      }
    }
    if (pending.Count() == 0) {
      return Status::Ok();
    }
    record_checkpoint(pending);
    // The log is the source of truth: after a crash the tail since the checkpoint is replayed.
    if (Status s = store.write(pending, /*sync=*/false); !s.ok()) {
      return s;
    }
    pending.Clear();
    return Status::Ok();
  }

  // Applies every event after the checkpoint that the log holds.
  Status replay_tail() {
    for (;;) {
      Result<std::vector<v1::Event>> batch = store.read_all(applied.load() + 1, kReplayBatch);
      if (!batch.ok()) {
        return batch.status();
      }
      if (batch->empty()) {
        return Status::Ok();
      }
      if (Status s = apply_locked(*batch); !s.ok()) {
        return s;
      }
    }
  }

  // Deletes every entry of the projection column families except key_usage, and the checkpoint;
  // records (durably) that a rebuild is under way.
  Status wipe() {
    rocksdb::WriteBatch batch;
    for (const std::string& name : projection_column_families()) {
      if (name == kKeyUsageCf) {
        continue;
      }
      auto cf = store.extra_column_family(name);
      if (!cf.ok()) {
        return cf.status();
      }
      std::unique_ptr<rocksdb::Iterator> it = cf->iterator();
      it->SeekToFirst();
      if (!it->Valid()) {
        if (!it->status().ok()) {
          return sf::from_rocks(it->status(), "read " + name);
        }
        continue;
      }
      const std::string first = it->key().ToString();
      it->SeekToLast();
      if (!it->status().ok()) {
        return sf::from_rocks(it->status(), "read " + name);
      }
      std::string end = it->key().ToString();
      end.push_back('\0');  // the smallest key after the last one: the range is [first, end)
      cf->erase_range(batch, first, end);
    }
    checkpoint_cf.put(batch, kFormatKey, kRebuilding);
    return store.write(batch, /*sync=*/true).Annotate("wipe projections");
  }
};

Projector::Projector(EventStore& store, std::vector<std::string> tiers)
    : key_table_(std::make_unique<ActiveKeyTable>(std::move(tiers))),
      tokens_(std::make_unique<ServiceTokenTable>()) {
  impl_ = std::make_unique<Impl>(store, *key_table_, *tokens_);
}

Projector::~Projector() { impl_->subscription.reset(); }

Status Projector::start() {
  Impl& p = *impl_;
  std::lock_guard lock(p.apply_mutex);
  if (p.subscription.active()) {
    return Status::Conflict("projector_started", "the projector is already started");
  }
  if (Status s = p.open_status(); !s.ok()) {
    return s;
  }
  p.reset_tables();
  if (Status loaded = p.load_checkpoint(); !loaded.ok()) {
    if (loaded.code() != Status::Code::kCorruption) {
      return loaded;  // a storage error is not a reason to rewrite the projections
    }
    spdlog::warn("projections: {}; rebuilding them from the log", loaded.message());
    if (Status s = p.rebuild(kRebuildSpillBytes); !s.ok()) {
      return s;
    }
    spdlog::info("projections: rebuilt up to position {}", p.applied.load());
  }
  if (Status s = p.replay_tail(); !s.ok()) {
    return s;
  }
  p.subscription = p.store.subscribe([this](const std::vector<v1::Event>& events) { apply(events); });
  // Anything committed between the replay and the subscription (there should be nothing: the
  // projector starts before serving) is picked up here.
  return p.replay_tail();
}

void Projector::apply(const std::vector<v1::Event>& events) {
  std::lock_guard lock(impl_->apply_mutex);
  // A failed write stays pending and goes out with the next group; the tables are already
  // current, and after a crash the log replays what the indexes missed.
  (void)impl_->apply_locked(events);
}

std::uint64_t Projector::checkpoint() const { return impl_->applied.load(std::memory_order_acquire); }

Result<std::string> Projector::agent_of_key(std::string_view key_id) const {
  if (std::optional<KeyEntry> entry = key_table_->find_key(key_id)) {
    return entry->agent_id.str();
  }
  return impl_->catalog.agent_of_key(key_id);
}

Result<AgentState> Projector::load_agent(std::string_view agent_id) const {
  return keyledger::load_agent(impl_->store, agent_id);
}

TokenRegistryState Projector::token_registry() const { return tokens_->state(); }

Result<std::vector<KeyRef>> Projector::keys_created_before(TimePoint created_before,
                                                           std::size_t limit) const {
  return impl_->catalog.created_before(sf::unix_ms(created_before), limit);
}

Result<std::vector<KeyRef>> Projector::keys_expiring_by(TimePoint now, std::size_t limit) const {
  return impl_->catalog.expiring_by(sf::unix_ms(now), limit);
}

std::optional<TimePoint> Projector::last_used(std::string_view key_id) const {
  std::optional<std::int64_t> seconds = key_table_->last_used(key_id);
  if (!seconds) {
    Result<std::optional<std::int64_t>> flushed = impl_->catalog.last_used(key_id);
    if (flushed.ok()) {
      seconds = *flushed;
    }
  }
  if (!seconds) {
    return std::nullopt;
  }
  return TimePoint(std::chrono::seconds(*seconds));
}

Status Projector::flush_usage() { return impl_->catalog.write_usage(key_table_->take_usage()); }

Result<AuditPage> Projector::audit(const AuditQuery& query) const { return impl_->audit.query(query); }

Result<AuditPage> Projector::webhook_deliveries(std::string_view agent_id, std::size_t limit,
                                                std::optional<std::uint64_t> after_position) const {
  return impl_->audit.deliveries(agent_id, limit, after_position);
}

Status Projector::rebuild(std::size_t spill_bytes) {
  Impl& p = *impl_;
  std::lock_guard lock(p.apply_mutex);
  if (p.subscription.active()) {
    return Status::Conflict("projector_started", "rebuild needs a projector that is not started");
  }
  if (Status s = p.open_status(); !s.ok()) {
    return s;
  }
  return p.rebuild(spill_bytes);
}

}  // namespace keyledger
