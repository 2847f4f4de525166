#pragma once
// The append-only log of record, on RocksDB.
//
// Column families:
//   default   unused
//   events    position (8-byte big-endian)        -> serialized v1::Event (position and
//                                                    stream_version filled in)
//   streams   stream name + '\0' + version (BE)   -> position (8-byte big-endian)
//   event_ids event_id                            -> position
// Projections may add column families of their own through `extra_column_families` and
// reach them through a ColumnFamily handle (extra_column_family), never the raw database.
//
// Durability: an append returns only after its WriteBatch is in the WAL and the WAL is
// fsync'd. Appends from many threads are committed by one writer thread in groups: all
// pending appends go into one WriteBatch, written to the WAL unsynced; a syncer thread then
// fsyncs every group written so far in one go and answers them (pipelined group commit: the
// next groups are validated and written while an fsync runs), so throughput grows
// with the number of writers.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "domain/events.h"
#include "domain/status.h"
#include "eventstore/column_family.h"

namespace rocksdb {
class Status;
class FileSystem;
class WriteBatch;
class MergeOperator;
class CompactionFilterFactory;
}  // namespace rocksdb

namespace keyledger {

// 8-byte big-endian encoding of positions and versions, so RocksDB keys sort like the
// numbers. Used for every position-keyed column family, the store's and the projections'.
std::string encode_be64(std::uint64_t v);
// The first 8 bytes of `bytes` (fewer bytes read as the high part of the number).
std::uint64_t decode_be64(std::string_view bytes);

// A RocksDB status as ours: Ok, Corruption, or IoError for every other failure, the message
// prefixed with `what`. For every layer that keeps column families in the store.
Status from_rocks(const rocksdb::Status& s, std::string_view what);

struct EventStoreOptions {
  // Directory of the RocksDB database; created if missing.
  std::filesystem::path path;
  // fsync the WAL before acknowledging. Off only in benchmarks. Default: true.
  bool sync = true;
  // Most appends committed in one WriteBatch. Default: 1024.
  std::size_t max_group_size = 1024;
  // Extra column families to create/open (used by projections); handles via extra_column_family().
  std::vector<std::string> extra_column_families = {};
  // The file system RocksDB uses (tests inject faults through it). Default: the machine's.
  std::shared_ptr<rocksdb::FileSystem> file_system = nullptr;
  // For an offline bulk load (`keyledger rebuild-projections`): the extra column families
  // take writes into unsorted in-memory tables (sorted once, when flushed) and write()
  // without `sync` skips the WAL, so nothing of it is durable before flush(). Only for a
  // one-off job that flushes at its end and, after a crash, is redone from the log. Default:
  // false.
  bool bulk_load = false;
  // Per extra column family: how values combine (ColumnFamily::merge) and what background
  // compactions drop. Families not named here have neither.
  struct FamilyTuning {
    std::shared_ptr<rocksdb::MergeOperator> merge_operator;
    std::shared_ptr<rocksdb::CompactionFilterFactory> compaction_filters;
    // Keys with the same prefix (under this transform) are mostly written in ascending
    // order: the memtable starts each insert from where the last one of the prefix went.
    std::shared_ptr<const rocksdb::SliceTransform> insert_hint_prefix = nullptr;
    // False for a family only ever scanned (an index read in key order): its files carry no
    // Bloom filter, which would only take memory (every file's filter is loaded at open).
    bool point_lookups = true;
    // The memtable's size, when not RocksDB's default (64 MiB): a family written in large
    // short-lived records (the usage journal) holds less memory with a smaller one.
    std::size_t write_buffer_bytes = 0;
    // False for a family whose records Snappy would only slow down: compact binary records,
    // most of them deleted within a minute (the usage journal). Its flushes and compactions
    // then write blocks as they are.
    bool compress = true;
  };
  std::map<std::string, FamilyTuning, std::less<>> tuning = {};
};

// The version of a stream an append expects. kAny skips the check; kNoStream (0) demands an
// empty stream.
inline constexpr std::int64_t kAnyVersion = -1;
inline constexpr std::int64_t kNoStream = 0;

struct AppendResult {
  std::uint64_t first_position = 0;
  std::uint64_t last_position = 0;
  std::uint64_t stream_version = 0;  // the stream's version after the append
  std::vector<v1::Event> events;     // as stored: positions and stream versions filled in
};

// A write kept with an append, in its WriteBatch: it is applied exactly when the append's
// events are (both or neither, crash or not). `column_family` is one of
// EventStoreOptions::extra_column_families, never the log's own. The command layer keeps an
// Idempotency-Key's response this way, so a retry after a crash cannot run a command twice.
struct SideWrite {
  std::string column_family;
  std::string key;
  std::string value;
};

// Called on the syncer thread after each group is durable and before any of its appends
// return, with every event of the group in position order. Keep it short: it delays acks.
// It must not append, subscribe or unsubscribe (the syncer would wait for itself).
using CommitListener = std::function<void(const std::vector<v1::Event>&)>;

// A commit listener's registration (EventStore::subscribe). Destroying it, or reset(),
// unsubscribes and returns only once no call of the listener is running, so the listener may
// capture what is destroyed right after. It may outlive the store.
class [[nodiscard]] CommitSubscription {
 public:
  CommitSubscription() = default;
  CommitSubscription(CommitSubscription&& other) noexcept;
  CommitSubscription& operator=(CommitSubscription&& other) noexcept;
  CommitSubscription(const CommitSubscription&) = delete;
  CommitSubscription& operator=(const CommitSubscription&) = delete;
  ~CommitSubscription();

  void reset();
  bool active() const { return registry_ != nullptr; }

  class Registry;  // the store's listeners (event_store.cpp)

 private:
  friend class EventStore;
  CommitSubscription(std::shared_ptr<Registry> registry, std::uint64_t id);
  std::shared_ptr<Registry> registry_;
  std::uint64_t id_ = 0;
};

// How an asynchronous append ends (EventStore::append_async).
using AppendDone = std::function<void(Result<AppendResult>)>;

class EventStore {
 public:
  // Opens (creating if needed) the store. Fails with IoError when RocksDB cannot open it,
  // including when another process holds its lock ("lock hold by current process" / LOCK).
  static Result<std::unique_ptr<EventStore>> open(const EventStoreOptions& options);
  ~EventStore();  // stops the writer after draining pending appends, closes RocksDB
  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;

  // Appends `events` to `stream` atomically, all or nothing. Each event must carry its
  // event_id; position, stream and stream_version are assigned here. Returns the stored
  // events, or VersionConflict if the stream's version is not `expected_version` (nothing is
  // written), InvalidArgument for an empty list, a duplicate event_id or an event that would
  // not decode again (checked by encoding and decoding it here), IoError if the write
  // failed. Thread-safe; blocks until durable. `side_writes` go in the same WriteBatch
  // (InvalidArgument if one names a column family that is not an extra one).
  Result<AppendResult> append(std::string_view stream, std::int64_t expected_version,
                              std::vector<v1::Event> events, std::vector<SideWrite> side_writes = {});
  // The same append without waiting for it: `done` gets what append() would return, exactly
  // once. A refused append (the checks above) is answered at once on the calling thread; one
  // that went to the writer is answered on the syncer thread once durable (after the commit
  // listeners saw it) or on the writer thread when the storage refuses it. `done` must be
  // short and must not throw, append synchronously, subscribe or unsubscribe: the store's
  // threads wait for it. The HTTP layer completes a command's request from it, so no thread
  // waits for the fsync on the command's behalf.
  void append_async(std::string_view stream, std::int64_t expected_version, std::vector<v1::Event> events,
                    std::vector<SideWrite> side_writes, AppendDone done);

  // Readers and records that do not decode: read_stream and read_all return, in the place of
  // a stored record that cannot be decoded (disk corruption, or a writer from before append
  // checked this), a stand-in with only its position (and stream and version) set, for which
  // is_unreadable() is true, and count it (unreadable_events) and log it once; read_event
  // answers Corruption. No record that append() accepted can be unreadable.
  //
  // The events of one stream with stream_version >= from_version, in order. An unknown
  // stream yields an empty list.
  Result<std::vector<v1::Event>> read_stream(std::string_view stream, std::uint64_t from_version = 1) const;
  // The current version of a stream (0 if it has no events).
  Result<std::uint64_t> stream_version(std::string_view stream) const;
  // Up to `max_count` events with position >= from_position, in position order.
  Result<std::vector<v1::Event>> read_all(std::uint64_t from_position, std::size_t max_count) const;
  // The event with this id, or NotFound.
  Result<v1::Event> read_event(std::string_view event_id) const;
  // Storage faults. A write that fails (a full disk) fails its appends with IoError and
  // nothing of them is applied; the next append asks RocksDB to resume first, so writes come
  // back by themselves once space does. A failed fsync of the WAL is not retried: every
  // later append fails with IoError until the store is reopened (a restart), since what the
  // kernel dropped cannot be known. Reads are unaffected by either.
  // write_health() is Ok; Unavailable("storage_unavailable") while writes fail and may come
  // back by themselves; IoError once a sync failed (only a restart helps).
  Status write_health() const;

  // Position of the last acknowledged event (0 when the log is empty).
  std::uint64_t last_position() const;
  // How many distinct records that do not decode the readers have met since open.
  std::uint64_t unreadable_events() const;
  // The WAL fsyncs that made appends durable since open, and their total duration.
  struct SyncStats {
    std::uint64_t syncs = 0;
    std::chrono::nanoseconds took{0};
  };
  SyncStats sync_stats() const;

  // Adds a listener of every committed group, called after the listeners subscribed before
  // it. Thread-safe; a listener subscribed while appends run sees the groups committed after
  // it returns. This is how the system follows the log: the projector (before any append is
  // acknowledged, so a command's answer is already projected), the Kafka relay, the webhook
  // dispatcher and the metrics each subscribe themselves.
  CommitSubscription subscribe(CommitListener listener);

  // Events with first <= position <= last (and at most last_position()), oldest first or,
  // if `descending`, newest first, passed to `visit` until it returns false. Unreadable
  // records come as read_all's stand-ins. `bulk`: a read of much of the log (a rebuild), in
  // large sequential reads that leave the block cache to the hot data.
  Status scan(std::uint64_t first, std::uint64_t last, bool descending,
              const std::function<bool(const v1::Event&)>& visit, bool bulk = false) const;
  // The event at `position`: NotFound if there is none (yet); for a record that does not
  // decode, read_all's stand-in (is_unreadable, counted and logged once).
  Result<v1::Event> read_position(std::uint64_t position) const;

  // Projections' own column families (extra_column_families, or any other found on disk):
  // the typed handle through which they read and write (column_family.h). NotFound for a
  // family that is not open, InvalidArgument for one of the log's own.
  Result<ColumnFamily> extra_column_family(std::string_view name) const;
  // Writes every memtable to SST files and waits: the next open replays no WAL for what was
  // written before. Closing the store does it too (unless a WAL sync failed); after a large
  // batch of projection writes (rebuild-projections) it keeps the next start-up short.
  Status flush();
  // Commits a batch of ColumnFamily::put/erase writes atomically, fsync'd first if `sync`
  // (under bulk_load, a write without `sync` is not in the WAL: durable only after flush()).
  // A failed fsync breaks the store as one of the log's own does (see sync()).
  Status write(rocksdb::WriteBatch& batch, bool sync = false) const;
  // Makes everything written so far durable: one WAL fsync, the same as the log's own group
  // commit (they share the WAL). After a failed one the store refuses appends until it is
  // reopened: the kernel may have dropped what was not written back, and reports that once,
  // so a later fsync that succeeds would prove nothing for appends written before it.
  Status sync() const;

 private:
  struct Impl;
  explicit EventStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyledger
