#pragma once
// ColumnFamily: a column family a projection keeps beside the log, in the same RocksDB
// database (EventStoreOptions::extra_column_families). It is the one way into RocksDB from
// outside eventstore/: reads, an iterator and writes of that family only, and puts into a
// WriteBatch that EventStore::write commits (so a projection's families change together).
// The log's own families (events, streams, event_ids) are not reachable through one: readers
// of events use EventStore's read calls. Cheap to copy; valid while its store is open.
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "domain/status.h"

namespace keyledger {

class EventStore;

// How a read of a whole family or of the log goes (a start-up load, a rebuild): reading
// ahead, and leaving the block cache to what is read again.
rocksdb::ReadOptions full_scan_options();

class ColumnFamily {
 public:
  ColumnFamily() = default;  // bound to nothing: valid() is false

  bool valid() const { return cf_ != nullptr; }
  // Whether both name the same family of the same store.
  bool same_as(const ColumnFamily& other) const { return cf_ == other.cf_; }
  std::string name() const;

  // The value at `key`, or nullopt if there is none; IoError or Corruption from RocksDB.
  Result<std::optional<std::string>> get(std::string_view key) const;
  // An iterator over this family alone (check status() once done with it).
  std::unique_ptr<rocksdb::Iterator> iterator() const;
  // An iterator with full_scan_options(), for reading the whole family once.
  std::unique_ptr<rocksdb::Iterator> full_scan() const;
  // One write on its own, fsync'd first if `sync` (through EventStore::sync(): a failed fsync
  // breaks the store as one of the log's own does).
  Status put(std::string_view key, std::string_view value, bool sync = false) const;
  Status erase(std::string_view key, bool sync = false) const;
  // Writes into `batch`, for EventStore::write.
  void put(rocksdb::WriteBatch& batch, std::string_view key, std::string_view value) const;
  void erase(rocksdb::WriteBatch& batch, std::string_view key) const;
  // Combines `value` into the one at `key` with the family's merge operator
  // (EventStoreOptions::tuning); only for a family that has one.
  void merge(rocksdb::WriteBatch& batch, std::string_view key, std::string_view value) const;
  // Every key in [first, end).
  void erase_range(rocksdb::WriteBatch& batch, std::string_view first, std::string_view end) const;
  // Compacts the whole family now (its compaction filter sees every entry), and waits. Not
  // exclusive: RocksDB's own compactions of every family go on meanwhile. Once `canceled` (may
  // be null) turns true it ends early with a non-Ok status, what it did so far kept.
  Status compact(std::atomic<bool>* canceled = nullptr) const;
  // Bulk load (a rebuild): writes `entries`, keys strictly ascending (bytewise), into an SST
  // file in the store's kIngestDirectory (emptied when the store opens) and ingests it, moved, as the newest
  // data of this family: no memtable, no WAL, no flush. Durable when it returns. InvalidArgument if the keys
  // are out of order.
  using Entry = std::pair<std::string_view, std::string_view>;
  static constexpr std::string_view kIngestDirectory = "ingest";
  Status ingest_sorted(const std::vector<Entry>& entries) const;

 private:
  friend class EventStore;
  ColumnFamily(const EventStore* store, rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf)
      : store_(store), db_(db), cf_(cf) {}
  Status synced(Status written) const;  // `written`, then EventStore::sync() if it is Ok

  const EventStore* store_ = nullptr;
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* cf_ = nullptr;
};

}  // namespace keyledger
