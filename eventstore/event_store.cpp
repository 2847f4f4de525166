#include "eventstore/event_store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_manager.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace keyledger {

std::string encode_be64(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

std::uint64_t decode_be64(std::string_view bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && i < bytes.size(); ++i) {
    v = (v << 8) | static_cast<std::uint8_t>(bytes[i]);
  }
  return v;
}

namespace {

constexpr std::string_view kEventsCf = "events";
constexpr std::string_view kStreamsCf = "streams";
constexpr std::string_view kEventIdsCf = "event_ids";


std::string stream_key(std::string_view stream, std::uint64_t version) {
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
  std::promise<Result<AppendResult>> done;
};

// One group after its WriteBatch went to the WAL: answered once an fsync covers it.
struct WrittenGroup {
  std::vector<std::unique_ptr<PendingAppend>> appends;
  std::vector<std::optional<Result<AppendResult>>> outcomes;
  std::vector<v1::Event> committed;  // in position order; empty if nothing was written
};

}  // namespace

Status from_rocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) {
    return Status::Ok();
  }
  if (s.IsCorruption()) {
    return Status::Corruption(std::string(what) + ": " + s.ToString());
  }
  return Status::IoError(std::string(what) + ": " + s.ToString());
}

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

CommitSubscription::CommitSubscription(std::shared_ptr<Registry> registry, std::uint64_t id)
    : registry_(std::move(registry)), id_(id) {}

CommitSubscription::CommitSubscription(CommitSubscription&& other) noexcept
    : registry_(std::move(other.registry_)), id_(other.id_) {}

CommitSubscription& CommitSubscription::operator=(CommitSubscription&& other) noexcept {
  if (this != &other) {
    reset();
    registry_ = std::move(other.registry_);
    id_ = other.id_;
  }
  return *this;
}

CommitSubscription::~CommitSubscription() { reset(); }

void CommitSubscription::reset() {
  if (registry_) {
    registry_->remove(id_);
    registry_.reset();
  }
}

struct EventStore::Impl {
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

  // Records met that do not decode (unreadable_events()), and the positions already logged.
  std::atomic<std::uint64_t> unreadable{0};
  std::mutex unreadable_mutex;
  std::set<std::uint64_t> unreadable_logged;

  // The stand-in for a record at `position` that does not decode (is_unreadable): readers go
  // on past it instead of stopping at it for good. Said loudly, once per position.
  v1::Event unreadable_event(std::uint64_t position) {
    {
      std::lock_guard lock(unreadable_mutex);
      if (unreadable_logged.insert(position).second) {
        unreadable.fetch_add(1, std::memory_order_relaxed);
        spdlog::error(
            "event store: the event at position {} cannot be decoded; every reader passes over it "
            "(see README, Operations: unreadable events)",
            position);
      }
    }
    v1::Event e;
    e.set_position(position);
    return e;
  }

  ~Impl() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake.notify_all();
    if (writer.joinable()) {
      writer.join();
    }
    {
      std::lock_guard lock(sync_mutex);
      sync_stopping = true;
    }
    sync_wake.notify_all();
    if (syncer.joinable()) {
      syncer.join();
    }
    for (auto* h : handles) {
      db->DestroyColumnFamilyHandle(h);
    }
    if (db) {
      db->Close();
    }
  }

  Result<std::uint64_t> stored_stream_version(std::string_view stream) const {
    rocksdb::ReadOptions ro;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, streams_cf));
    const std::string upper = stream_key(stream, UINT64_MAX);
    it->SeekForPrev(upper);
    if (!it->status().ok()) {
      return from_rocks(it->status(), "read stream version");
    }
    if (!it->Valid()) {
      return std::uint64_t{0};
    }
    const rocksdb::Slice key = it->key();
    const std::string prefix = std::string(stream) + '\0';
    if (key.size() != prefix.size() + 8 || !key.starts_with(prefix)) {
      return std::uint64_t{0};
    }
    return decode_be64(std::string_view(key.data() + prefix.size(), 8));
  }

  void run_writer() {
    std::vector<std::unique_ptr<PendingAppend>> group;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) {
          return;  // stopping and drained
        }
        while (!queue.empty() && group.size() < options.max_group_size) {
          group.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      commit_group(group);  // hands the group on (or answers it)
      group.clear();
    }
  }

  // True if a file of a WAL write's size can be written beside the log now. Resume is only
  // tried then: a resume that fails (the disk still full) can leave RocksDB in a state no
  // later resume recovers from.
  rocksdb::Status probe_write() const {
    constexpr std::size_t kProbeBytes = 64 * 1024;
    rocksdb::FileSystem* fs = db->GetFileSystem();
    const std::string path = (options.path / "WRITE_PROBE").string();
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = fs->NewWritableFile(path, rocksdb::FileOptions(), &file, nullptr);
    if (s.ok()) {
      s = file->Append(rocksdb::Slice(std::string(kProbeBytes, '\0')), rocksdb::IOOptions(), nullptr);
      const rocksdb::IOStatus closed = file->Close(rocksdb::IOOptions(), nullptr);
      if (s.ok()) {
        s = closed;
      }
    }
    fs->DeleteFile(path, rocksdb::IOOptions(), nullptr).PermitUncheckedError();
    return s;
  }

  // DB::Resume answers Busy while the SstFileManager's recovery from a full disk runs (it
  // retries every 5 s while the disk is full): the appends of now are refused at once, and a
  // later group resumes once that recovery is through.
  rocksdb::Status resume() {
    if (rocksdb::Status probed = probe_write(); !probed.ok()) {
      return probed;
    }
    return db->Resume();
  }

  // Validates each append against the current stream versions and writes every accepted one
  // in one WriteBatch; the syncer answers them once they are fsync'd.
  void commit_group(std::vector<std::unique_ptr<PendingAppend>>& group) {
    Status usable = Status::Ok();
    if (broken) {
      usable = Status::IoError("a WAL sync failed; restart to recover");
    } else if (needs_resume) {
      // After a failed write RocksDB refuses writes until it is resumed, which succeeds once
      // the cause is gone (space freed). Nothing of the failed group was applied.
      if (const rocksdb::Status resumed = resume(); resumed.ok()) {
        needs_resume = false;
        writes_failing = false;
        spdlog::info("event store: writes resumed");
      } else {
        usable = from_rocks(resumed, "storage still failing");
      }
    }
    if (!usable.ok()) {
      for (auto& p : group) {
        p->done.set_value(usable);
      }
      group.clear();
      return;
    }
    rocksdb::WriteBatch batch;
    const std::uint64_t first_position_of_group = next_position;
    std::unordered_map<std::string, std::uint64_t> touched;  // stream -> version before group
    std::unordered_set<std::string> group_event_ids;
    std::vector<std::optional<Result<AppendResult>>> outcomes(group.size());
    std::vector<v1::Event> committed;

    for (std::size_t i = 0; i < group.size(); ++i) {
      PendingAppend& p = *group[i];
      auto current = current_version(p.stream);
      if (!current.ok()) {
        outcomes[i] = current.status();
        continue;
      }
      if (p.expected_version != kAnyVersion &&
          static_cast<std::uint64_t>(p.expected_version) != *current) {
        outcomes[i] = Status::VersionConflict("stream " + p.stream + " is at version " +
                                              std::to_string(*current) + ", expected " +
                                              std::to_string(p.expected_version));
        continue;
      }
      Status ids_ok = check_event_ids(p.events, group_event_ids);
      if (!ids_ok.ok()) {
        outcomes[i] = ids_ok;
        continue;
      }

      touched.try_emplace(p.stream, *current);
      AppendResult result;
      result.first_position = next_position;
      std::uint64_t version = *current;
      std::string value;
      for (auto& e : p.events) {
        const std::uint64_t position = next_position++;
        e.set_position(position);
        e.set_stream(p.stream);
        e.set_stream_version(++version);
        e.SerializeToString(&value);
        const std::string pos_key = encode_be64(position);
        batch.Put(events_cf, pos_key, value);
        batch.Put(streams_cf, stream_key(p.stream, version), pos_key);
        batch.Put(event_ids_cf, e.event_id(), pos_key);
        group_event_ids.insert(e.event_id());
      }
      for (const auto& [cf, write] : p.side_writes) {
        batch.Put(cf, write.key, write.value);
      }
      version_cache[p.stream] = version;
      result.last_position = next_position - 1;
      result.stream_version = version;
      result.events = p.events;
      committed.insert(committed.end(), p.events.begin(), p.events.end());
      outcomes[i] = std::move(result);
    }

    if (batch.Count() > 0) {
      // Pipelined group commit: the batch goes to the WAL now, unsynced, and the syncer thread
      // fsyncs it (with every group written meanwhile) before anyone is answered. While one
      // fsync runs, the next groups are already being validated and written.
      const rocksdb::Status s = db->Write(rocksdb::WriteOptions(), &batch);
      if (!s.ok()) {
        spdlog::error("event store: writing to the log failed: {}; commands are refused until it works again",
                      s.ToString());
        needs_resume = true;
        writes_failing = true;
        // Nothing of this group was written: forget the positions and versions it took.
        next_position = first_position_of_group;
        for (const auto& [stream, before] : touched) {
          version_cache[stream] = before;
        }
        const Status failed = from_rocks(s, "append");
        for (auto& o : outcomes) {
          if (o && o->ok()) {
            o = failed;
          }
        }
        committed.clear();
      }
    }

    {
      std::lock_guard lock(sync_mutex);
      written.push_back(WrittenGroup{std::move(group), std::move(outcomes), std::move(committed)});
    }
    sync_wake.notify_one();
  }

  void run_syncer() {
    std::deque<WrittenGroup> groups;
    for (;;) {
      {
        std::unique_lock lock(sync_mutex);
        sync_wake.wait(lock, [&] { return sync_stopping || !written.empty(); });
        if (written.empty()) {
          return;  // stopping and drained
        }
        groups.swap(written);
      }
      const bool wrote = std::any_of(groups.begin(), groups.end(), [](const auto& g) { return !g.committed.empty(); });
      Status synced = Status::Ok();
      if (wrote && options.sync && broken) {
        // Written before the writer saw the failed fsync: a later fsync that succeeds would
        // not prove these durable (the kernel reports a lost writeback only once).
        synced = Status::IoError("a WAL sync failed; restart to recover");
      } else if (wrote && options.sync) {
        const rocksdb::Status s = db->SyncWAL();
        if (!s.ok()) {
          // Not retried (PostgreSQL's fsyncgate): after a failed fsync the kernel may have
          // dropped the dirty pages, so a later fsync that succeeds proves nothing. The store
          // refuses every append from now on; a restart recovers what the WAL really holds.
          spdlog::critical("event store: syncing the log failed: {}; no more writes until a restart",
                           s.ToString());
          broken = true;
          synced = from_rocks(s, "sync WAL");
        }
      }
      for (auto& g : groups) {
        if (!g.committed.empty()) {
          if (synced.ok()) {
            last_position.store(g.committed.back().position(), std::memory_order_release);
            listeners->notify(g.committed);
          } else {
            for (auto& o : g.outcomes) {
              if (o && o->ok()) {
                o = synced;
              }
            }
          }
        }
        for (std::size_t i = 0; i < g.appends.size(); ++i) {
          g.appends[i]->done.set_value(std::move(*g.outcomes[i]));
        }
      }
      groups.clear();
    }
  }

  Result<std::uint64_t> current_version(const std::string& stream) {
    if (auto it = version_cache.find(stream); it != version_cache.end()) {
      return it->second;
    }
    auto stored = stored_stream_version(stream);
    if (stored.ok()) {
      version_cache.emplace(stream, *stored);
    }
    return stored;
  }

  Status check_event_ids(const std::vector<v1::Event>& events,
                         const std::unordered_set<std::string>& group_event_ids) const {
    std::unordered_set<std::string_view> own;
    for (const auto& e : events) {
      if (e.event_id().empty()) {
        return Status::InvalidArgument("every event needs an event_id");
      }
      if (group_event_ids.contains(e.event_id()) || !own.insert(e.event_id()).second) {
        return Status::InvalidArgument("duplicate event_id " + e.event_id());
      }
      std::string ignored;
      const rocksdb::Status s = db->Get(rocksdb::ReadOptions(), event_ids_cf, e.event_id(), &ignored);
      if (s.ok()) {
        return Status::InvalidArgument("duplicate event_id " + e.event_id());
      }
      if (!s.IsNotFound()) {
        return from_rocks(s, "check event id");
      }
    }
    return Status::Ok();
  }
};

namespace {

// Nothing is appended that could not be read back: an event that does not survive an encode
// and a decode (a proto3 string that is not valid UTF-8 is refused by the decoder, not the
// encoder) would stop every reader of the log at its position.
Status check_readable(std::string_view stream, const std::vector<v1::Event>& events) {
  v1::Event probe;
  std::string bytes;
  probe.set_stream(std::string(stream));  // stored in every event of the append
  if (!probe.SerializeToString(&bytes) || !probe.ParseFromString(bytes)) {
    return Status::InvalidArgument("invalid stream name");
  }
  for (const v1::Event& e : events) {
    if (!e.SerializeToString(&bytes) || !probe.ParseFromString(bytes)) {
      return Status::InvalidArgument("event " + std::string(event_type_name(e.payload_case())) +
                                     " would not decode (a text field that is not valid UTF-8)");
    }
  }
  return Status::Ok();
}

}  // namespace

EventStore::EventStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventStore::~EventStore() = default;

Result<std::unique_ptr<EventStore>> EventStore::open(const EventStoreOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.path, ec);
  if (ec) {
    return Status::IoError("cannot create " + options.path.string() + ": " + ec.message());
  }

  rocksdb::DBOptions db_options;
  std::unique_ptr<rocksdb::Env> env;
  if (options.file_system) {
    env = rocksdb::NewCompositeEnv(options.file_system);
    db_options.env = env.get();
  }
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // A crash can leave a torn record at the WAL's tail. Every acknowledged batch was fsync'd
  // whole before its append returned, so a torn tail can only belong to an append that was
  // never acknowledged. kPointInTimeRecovery replays up to the last intact batch and stops
  // there: nothing acknowledged is lost, nothing after a hole is replayed (which
  // kSkipAnyCorruptedRecords could do), and a torn tail does not refuse to open (as
  // kAbsoluteConsistency would).
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_options.max_background_jobs = 2;
  // Recovery from a full disk: RocksDB marks it in progress as soon as a write fails with
  // ENOSPC, and only an SstFileManager ever completes it (it watches the free space). The
  // writer's Resume (after a probe write) covers what the free space does not show.
  db_options.sst_file_manager.reset(rocksdb::NewSstFileManager(
      db_options.env, options.file_system ? options.file_system : rocksdb::FileSystem::Default()));

  rocksdb::ColumnFamilyOptions cf_options;
  // Point lookups of absent keys (a new event id, a new stream) are on the append path: a
  // Bloom filter answers them without reading every SST file's index.
  rocksdb::BlockBasedTableOptions table_options;
  table_options.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));
  std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName, std::string(kEventsCf),
                                    std::string(kStreamsCf), std::string(kEventIdsCf)};
  for (const auto& extra : options.extra_column_families) {
    names.push_back(extra);
  }
  // Column families that exist on disk must all be opened, including ones this build does
  // not name (for instance created by a newer projection).
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, options.path.string(), &existing).ok()) {
    for (const auto& name : existing) {
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(name);
      }
    }
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const auto& name : names) {
    descriptors.emplace_back(name, cf_options);
  }

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->env = std::move(env);  // db_options.env still points to it
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s =
      rocksdb::DB::Open(db_options, options.path.string(), descriptors, &impl->handles, &raw);
  if (!s.ok()) {
    return Status::IoError("cannot open event store at " + options.path.string() + ": " + s.ToString());
  }
  impl->db.reset(raw);
  for (auto* h : impl->handles) {
    impl->cf_by_name.emplace(h->GetName(), h);
  }
  impl->events_cf = impl->cf_by_name.at(std::string(kEventsCf));
  impl->streams_cf = impl->cf_by_name.at(std::string(kStreamsCf));
  impl->event_ids_cf = impl->cf_by_name.at(std::string(kEventIdsCf));

  // The next position follows the last event that survived recovery.
  std::unique_ptr<rocksdb::Iterator> it(impl->db->NewIterator(rocksdb::ReadOptions(), impl->events_cf));
  it->SeekToLast();
  if (!it->status().ok()) {
    return from_rocks(it->status(), "read last position");
  }
  const std::uint64_t last = it->Valid() ? decode_be64(it->key().ToStringView()) : 0;
  impl->last_position = last;
  impl->next_position = last + 1;
  it.reset();

  impl->writer = std::thread([p = impl.get()] { p->run_writer(); });
  impl->syncer = std::thread([p = impl.get()] { p->run_syncer(); });
  return std::unique_ptr<EventStore>(new EventStore(std::move(impl)));
}

Result<AppendResult> EventStore::append(std::string_view stream, std::int64_t expected_version,
                                        std::vector<v1::Event> events, std::vector<SideWrite> side_writes) {
  if (events.empty()) {
    return Status::InvalidArgument("an append needs at least one event");
  }
  if (stream.empty() || stream.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("invalid stream name");
  }
  if (expected_version < kAnyVersion) {
    return Status::InvalidArgument("invalid expected version");
  }
  if (Status s = check_readable(stream, events); !s.ok()) {
    return s;
  }
  auto pending = std::make_unique<PendingAppend>();
  for (auto& write : side_writes) {
    const auto& extras = impl_->options.extra_column_families;
    rocksdb::ColumnFamilyHandle* cf = column_family(write.column_family);
    if (cf == nullptr || std::find(extras.begin(), extras.end(), write.column_family) == extras.end()) {
      return Status::InvalidArgument("a side write must go to an extra column family, not " + write.column_family);
    }
    pending->side_writes.emplace_back(cf, std::move(write));
  }
  pending->stream = std::string(stream);
  pending->expected_version = expected_version;
  pending->events = std::move(events);
  auto done = pending->done.get_future();
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) {
      return Status::Unavailable("event store is closing");
    }
    impl_->queue.push_back(std::move(pending));
  }
  impl_->wake.notify_one();
  return done.get();
}

Result<std::vector<v1::Event>> EventStore::read_stream(std::string_view stream,
                                                       std::uint64_t from_version) const {
  std::vector<v1::Event> out;
  const std::string prefix = std::string(stream) + '\0';
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->streams_cf));
  std::string value;
  for (it->Seek(stream_key(stream, from_version)); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    const rocksdb::Status s =
        impl_->db->Get(rocksdb::ReadOptions(), impl_->events_cf, it->value(), &value);
    if (!s.ok()) {
      return from_rocks(s, "read stream event");
    }
    v1::Event e;
    if (!e.ParseFromString(value)) {
      e = impl_->unreadable_event(decode_be64(it->value().ToStringView()));
      e.set_stream(std::string(stream));
      e.set_stream_version(decode_be64(it->key().ToStringView().substr(prefix.size())));
    }
    out.push_back(std::move(e));
  }
  if (!it->status().ok()) {
    return from_rocks(it->status(), "read stream");
  }
  return out;
}

Result<std::uint64_t> EventStore::stream_version(std::string_view stream) const {
  return impl_->stored_stream_version(stream);
}

Result<std::vector<v1::Event>> EventStore::read_all(std::uint64_t from_position, std::size_t max_count) const {
  std::vector<v1::Event> out;
  rocksdb::ReadOptions ro;
  // Never read past what has been acknowledged.
  const std::uint64_t last = last_position();
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->events_cf));
  for (it->Seek(encode_be64(from_position)); it->Valid() && out.size() < max_count; it->Next()) {
    if (decode_be64(it->key().ToStringView()) > last) {
      break;
    }
    v1::Event e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      e = impl_->unreadable_event(decode_be64(it->key().ToStringView()));
    }
    out.push_back(std::move(e));
  }
  if (!it->status().ok()) {
    return from_rocks(it->status(), "read log");
  }
  return out;
}

Result<v1::Event> EventStore::read_event(std::string_view event_id) const {
  std::string pos;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->event_ids_cf, event_id, &pos);
  if (s.IsNotFound()) {
    return Status::NotFound("event_not_found", "no such event");
  }
  if (!s.ok()) {
    return from_rocks(s, "read event id");
  }
  std::string value;
  s = impl_->db->Get(rocksdb::ReadOptions(), impl_->events_cf, pos, &value);
  if (!s.ok()) {
    return from_rocks(s, "read event");
  }
  v1::Event e;
  if (!e.ParseFromString(value)) {
    return Status::Corruption("unreadable event " + std::string(event_id));
  }
  return e;
}

Status EventStore::write_health() const {
  if (impl_->broken) {
    return Status::IoError("syncing the event log failed; the node takes no writes until it is restarted");
  }
  if (impl_->writes_failing) {
    return Status::Unavailable("storage_unavailable", "writing to the event log failed (disk full?)");
  }
  return Status::Ok();
}

std::uint64_t EventStore::unreadable_events() const {
  return impl_->unreadable.load(std::memory_order_relaxed);
}

std::uint64_t EventStore::last_position() const {
  return impl_->last_position.load(std::memory_order_acquire);
}

CommitSubscription EventStore::subscribe(CommitListener listener) {
  const std::uint64_t id = impl_->listeners->add(std::move(listener));
  return CommitSubscription(impl_->listeners, id);
}

rocksdb::DB* EventStore::db() const { return impl_->db.get(); }

rocksdb::ColumnFamilyHandle* EventStore::column_family(std::string_view name) const {
  auto it = impl_->cf_by_name.find(name);
  return it == impl_->cf_by_name.end() ? nullptr : it->second;
}

}  // namespace keyledger
