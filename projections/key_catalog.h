#pragma once
// The key-side projection column families (layouts in projector.h): the key table snapshot
// (key_table), the agent defaults the table needs to restart (agent_settings), and the
// indexes behind agent_of_key, keys_created_before, keys_expiring_by and last_used
// (key_agent, key_active, key_expiry, key_usage). Internal to the projections layer: the
// Projector writes through it inside its one WriteBatch per group of events.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "eventstore/event_store.h"
#include "projections/active_key_table.h"
#include "projections/bulk_load.h"
#include "projections/projector.h"

namespace rocksdb {
class WriteBatch;
}  // namespace rocksdb

namespace keyledger {

class KeyCatalog {
 public:
  // Finds its column families in `store`, which must outlive it.
  explicit KeyCatalog(const EventStore& store);

  // IoError naming a missing column family (the store was opened without
  // projection_column_families()), else Ok.
  const Status& open_status() const { return open_status_; }

  // --- Writes, added to the caller's batch.
  // The index entries of one key, moved from its entry `before` an event to `after` it
  // (nullopt: the key is not known): key_agent once, key_active while active, key_expiry
  // while active with an expiry.
  void record_key_change(rocksdb::WriteBatch& batch, std::string_view key_id,
                         const std::optional<KeyEntry>& before, const std::optional<KeyEntry>& after) const;
  // The table snapshot of one entry.
  void record_entry(rocksdb::WriteBatch& batch, const Digest& digest, const KeyEntry& entry,
                    std::string_view tier_name) const;
  void record_agent(rocksdb::WriteBatch& batch, std::string_view agent_id, v1::Environment environment,
                    std::string_view tier_name) const;

  // What record_key_change, record_entry and record_agent leave after every event that made
  // `table` (a rebuild writes this once, at the end, instead).
  void write_snapshot(const ActiveKeyTable& table, const IndexWrite& write) const;

  // Writes last-used times (unix seconds) to key_usage, unsynced (usage data, not events).
  // Written in batches of bounded size, so a large flush never holds up the log's writes.
  // Written in key order: consecutive puts land beside each other in the memtable.
  Status write_usage(std::vector<ActiveKeyTable::UsageRecord> usage) const;

  // Fills `table` from the snapshot: agent defaults first, then every entry.
  // Corruption for an unreadable value.
  Status load(ActiveKeyTable& table) const;

  // --- Queries.
  Result<std::string> agent_of_key(std::string_view key_id) const;  // NotFound key_not_found
  Result<std::vector<KeyRef>> created_before(std::int64_t before_ms, std::size_t limit) const;
  Result<std::vector<KeyRef>> expiring_by(std::int64_t by_ms, std::size_t limit) const;
  // Flushed last-used time (unix seconds), or nullopt.
  Result<std::optional<std::int64_t>> last_used(std::string_view key_id) const;

 private:
  Result<std::vector<KeyRef>> scan_time_index(const ColumnFamily& cf, std::int64_t bound_ms, bool inclusive,
                                              std::size_t limit) const;

  const EventStore& store_;
  ColumnFamily key_table_;
  ColumnFamily key_agent_;
  ColumnFamily key_active_;
  ColumnFamily key_expiry_;
  ColumnFamily key_usage_;
  ColumnFamily agent_settings_;
  Status open_status_;
};

}  // namespace keyledger
