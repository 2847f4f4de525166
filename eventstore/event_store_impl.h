#pragma once
// The inside of EventStore, shared by its source files the way RocksDB splits DBImpl:
// event_store.cpp (opening, reading, the public calls) and event_store_write.cpp (the writer
// and syncer threads of the group commit). Nothing outside eventstore/ includes this.
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "eventstore/event_store.h"

namespace keyledger {
namespace store_detail {

constexpr std::string_view kEventsCf = "events";
constexpr std::string_view kStreamsCf = "streams";
constexpr std::string_view kEventIdsCf = "event_ids";

inline std::string stream_key(std::string_view stream, std::uint64_t version) {
  std::string key(stream);
  key.push_back('\0');
  key += encode_be64(version);
  return key;
}

struct PendingAppend {
  std::string stream;
  std::int64_t expected_version;
  std::vector<v1::Event> events;
  std::vector<std::pair<rocksdb::ColumnFamilyHandle*, SideWrite>> side_writes;
  AppendDone done;  // called once, with the outcome
};

// One group after its WriteBatch went to the WAL: answered once an fsync covers it.
struct WrittenGroup {
  std::vector<std::unique_ptr<PendingAppend>> appends;
  std::vector<std::optional<Result<AppendResult>>> outcomes;  // ok: its events were written
  bool wrote = false;                                         // whether any append's events went to the WAL
};

// What commit_group builds for one group before writing it.
struct GroupBatch {
  rocksdb::WriteBatch batch;
  std::uint64_t first_position = 0;
  std::unordered_map<std::string, std::uint64_t> touched;  // stream -> its version before the group
  std::unordered_set<std::string> event_ids;
  bool wrote = false;  // an append was staged (and, after write_group, written)
};

}  // namespace store_detail

class CommitSubscription::Registry {
 public:
  std::uint64_t add(CommitListener listener) {
    std::unique_lock lock(mutex_);
    listeners_.emplace_back(++last_id_, std::move(listener));
    return last_id_;
  }
  void remove(std::uint64_t id) {
    std::unique_lock lock(mutex_);  // waits for a call in progress
    std::erase_if(listeners_, [id](const auto& entry) { return entry.first == id; });
  }
  void notify(const std::vector<v1::Event>& events) const {
    std::shared_lock lock(mutex_);
    for (const auto& entry : listeners_) {
      entry.second(events);
    }
  }

 private:
  mutable std::shared_mutex mutex_;
  std::vector<std::pair<std::uint64_t, CommitListener>> listeners_;  // in subscription order
  std::uint64_t last_id_ = 0;
};

struct EventStore::Impl {
  using PendingAppend = store_detail::PendingAppend;
  using WrittenGroup = store_detail::WrittenGroup;
  using GroupBatch = store_detail::GroupBatch;

  EventStoreOptions options;
  std::unique_ptr<rocksdb::Env> env;  // over options.file_system, if given; outlives db
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::map<std::string, rocksdb::ColumnFamilyHandle*, std::less<>> cf_by_name;
  rocksdb::ColumnFamilyHandle* events_cf = nullptr;
  rocksdb::ColumnFamilyHandle* streams_cf = nullptr;
  rocksdb::ColumnFamilyHandle* event_ids_cf = nullptr;

  // Owned by the writer thread once it runs.
  std::uint64_t next_position = 1;
  std::unordered_map<std::string, std::uint64_t> version_cache;
  std::shared_ptr<CommitSubscription::Registry> listeners = std::make_shared<CommitSubscription::Registry>();

  std::atomic<std::uint64_t> last_position{0};

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::unique_ptr<PendingAppend>> queue;
  bool stopping = false;
  std::thread writer;

  // Groups written to the WAL (unsynced) and waiting for the fsync that makes them durable.
  std::mutex sync_mutex;
  std::condition_variable sync_wake;
  std::deque<WrittenGroup> written;
  bool sync_stopping = false;
  std::thread syncer;
  // Set when a WAL sync failed: what was written since is of unknown durability, so the
  // store refuses appends until it is reopened (recovery then decides).
  std::atomic<bool> broken{false};
  // Set when a write failed (a full disk, say). Owned by the writer thread: before the next
  // group it asks RocksDB to resume, and answers the group unavailable until it can.
  bool needs_resume = false;
  std::atomic<bool> writes_failing{false};

  // WAL fsyncs done (sync_stats()), and the time they took.
  std::atomic<std::uint64_t> syncs{0};
  std::atomic<std::uint64_t> sync_ns{0};
  // Held across each WAL fsync and the check of `broken` after it: a sync that succeeds after
  // another one failed cannot be taken for proof of what was written before the failure.
  std::mutex wal_sync_mutex;

  // Records met that do not decode (unreadable_events()), and the positions already logged.
  std::atomic<std::uint64_t> unreadable{0};
  std::mutex unreadable_mutex;
  std::set<std::uint64_t> unreadable_logged;

  ~Impl();

  // The stand-in for a record at `position` that does not decode (is_unreadable): readers go
  // on past it instead of stopping at it for good. Said loudly, once per position.
  v1::Event unreadable_event(std::uint64_t position);
  // Every column family's memtable to SST files, waiting for it (EventStore::flush).
  Status flush_all();

  // event_store_write.cpp: the writer and syncer threads.
  Result<std::uint64_t> stored_stream_version(std::string_view stream) const;
  void run_writer();
  rocksdb::Status probe_write() const;
  rocksdb::Status resume();
  void commit_group(std::vector<std::unique_ptr<PendingAppend>>& group);
  Status writable();                                            // broken, or resumed after a failed write
  Result<AppendResult> stage(PendingAppend& p, GroupBatch& g);  // validates p, adds it to g
  void write_group(GroupBatch& g, std::vector<std::optional<Result<AppendResult>>>& outcomes);
  void run_syncer();
  // One WAL fsync (the syncer's and EventStore::sync()); a failure sets `broken`.
  Status sync_wal();
  void announce(WrittenGroup& g);  // a durable group's events to the subscribers and the appends
  Result<std::uint64_t> current_version(const std::string& stream);
  Status check_event_ids(const std::vector<v1::Event>& events,
                         const std::unordered_set<std::string>& group_event_ids) const;
};

}  // namespace keyledger
