#include "eventstore/event_store.h"

#include <google/protobuf/arena.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_manager.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "domain/thread_name.h"
#include "eventstore/event_store_impl.h"

namespace keyledger {

using store_detail::kEventIdsCf;
using store_detail::kEventsCf;
using store_detail::kStreamsCf;
using store_detail::PendingAppend;
using store_detail::stream_key;

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

Status from_rocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) {
    return Status::Ok();
  }
  if (s.IsCorruption()) {
    return Status::Corruption(std::string(what) + ": " + s.ToString());
  }
  return Status::IoError(std::string(what) + ": " + s.ToString());
}

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

EventStore::Impl::~Impl() {
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
  // A clean close leaves nothing for the next open to replay: the memtables go to SST files,
  // so start-up does not depend on how much was written since the last flush. Not after a
  // failed fsync: what the WAL holds then is for recovery to decide.
  if (db && !broken) {
    if (const Status s = flush_all(); !s.ok()) {
      spdlog::warn("event store: flushing at close: {}; the next start replays the WAL", s.ToString());
    }
  }
  for (auto* h : handles) {
    db->DestroyColumnFamilyHandle(h);
  }
  if (db) {
    db->Close();
  }
}

Status EventStore::Impl::flush_all() {
  rocksdb::FlushOptions options;
  options.wait = true;
  return from_rocks(db->Flush(options, handles), "flush");
}

v1::Event EventStore::Impl::unreadable_event(std::uint64_t position) {
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

namespace {

rocksdb::DBOptions db_options_for(const EventStoreOptions& options, rocksdb::Env* env) {
  rocksdb::DBOptions db_options;
  if (env != nullptr) {
    db_options.env = env;
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
  // Start-up replays the WAL that no flush has covered yet. A column family that rarely gets
  // writes (a projection's, the relay's cursor) would keep every WAL file since its last
  // write alive; past this total RocksDB flushes it, so the WAL to replay stays bounded. The
  // log's own families flush at this size too, before their 64 MB memtables fill: replaying
  // 16 MB after a kill takes about half a second (ops/bench/run-all), 64 MB about two.
  db_options.max_total_wal_size = 16ull << 20;
  // Recovery from a full disk: RocksDB marks it in progress as soon as a write fails with
  // ENOSPC, and only an SstFileManager ever completes it (it watches the free space). The
  // writer's Resume (after a probe write) covers what the free space does not show.
  db_options.sst_file_manager.reset(rocksdb::NewSstFileManager(
      db_options.env, options.file_system ? options.file_system : rocksdb::FileSystem::Default()));
  if (options.bulk_load) {
    db_options.allow_concurrent_memtable_write = false;  // the vector memtable has no concurrent insert
  }
  return db_options;
}

// The store's own column families, the caller's, and any other that exists on disk (created,
// say, by a newer projection): RocksDB opens a database only with all of them.
std::vector<rocksdb::ColumnFamilyDescriptor> column_families_for(const EventStoreOptions& options,
                                                                 const rocksdb::DBOptions& db_options) {
  rocksdb::ColumnFamilyOptions cf_options;
  // Point lookups of absent keys (a new event id, a new stream) are on the append path: a
  // Bloom filter answers them without reading every SST file's index.
  rocksdb::BlockBasedTableOptions table_options;
  table_options.block_cache = rocksdb::NewLRUCache(std::size_t{8} << 20);  // RocksDB's default size, shared
  const rocksdb::BlockBasedTableOptions scan_table_options = table_options;
  table_options.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));
  // Every family written per command (events, streams, event ids, the audit indexes) is
  // flushed together each time the WAL reaches max_total_wal_size, so level 0 fills with
  // small files; a family keyed at random (event ids, streams, audit by agent) overlaps all
  // of level 1 with each of them, and compacting level 0 rewrites the whole of level 1 (100 MB
  // at a million events). Letting 16 files gather instead of RocksDB's 4 rewrites it a quarter
  // as often (ops/bench/run-all, 1 000 000 keys: server CPU per command 128 -> 110 µs); a
  // point lookup then checks up to 16 more Bloom filters, about a microsecond.
  cf_options.level0_file_num_compaction_trigger = 16;
  cf_options.level0_slowdown_writes_trigger = 48;
  cf_options.level0_stop_writes_trigger = 64;
  std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName, std::string(kEventsCf),
                                    std::string(kStreamsCf), std::string(kEventIdsCf)};
  for (const auto& extra : options.extra_column_families) {
    names.push_back(extra);
  }
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, options.path.string(), &existing).ok()) {
    for (const auto& name : existing) {
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(name);
      }
    }
  }
  // A bulk load appends to a vector and sorts it once at flush, instead of a skip-list insert
  // (a dozen key comparisons, each a cache miss) per write.
  rocksdb::ColumnFamilyOptions bulk_options = cf_options;
  bulk_options.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
  bulk_options.write_buffer_size = 256ull << 20;
  // A rebuild ingests its files while wiped data sits below them: compacting that now would
  // compete with the rebuild for the CPU (a third of its time). The rebuild compacts the
  // families itself when it ingested more files than level 0 should hold; otherwise the
  // server's next start compacts them in the background.
  bulk_options.disable_auto_compactions = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const auto& name : names) {
    const bool extra = std::find(options.extra_column_families.begin(), options.extra_column_families.end(),
                                 name) != options.extra_column_families.end();
    rocksdb::ColumnFamilyOptions family = options.bulk_load && extra ? bulk_options : cf_options;
    if (name == kStreamsCf || name == kEventIdsCf) {
      // Every append looks up keys that are absent (a new stream's first version, each new
      // event id): a Bloom filter over the memtable answers without a skip-list search.
      family.memtable_prefix_bloom_size_ratio = 0.02;
      family.memtable_whole_key_filtering = true;
    }
    if (auto tuned = options.tuning.find(name); tuned != options.tuning.end()) {
      family.merge_operator = tuned->second.merge_operator;
      family.compaction_filter_factory = tuned->second.compaction_filters;
      family.memtable_insert_with_hint_prefix_extractor = tuned->second.insert_hint_prefix;
      if (tuned->second.write_buffer_bytes != 0) {
        family.write_buffer_size = tuned->second.write_buffer_bytes;
      }
      if (!tuned->second.compress) {
        family.compression = rocksdb::kNoCompression;
      }
      if (!tuned->second.point_lookups) {
        family.table_factory.reset(rocksdb::NewBlockBasedTableFactory(scan_table_options));
      }
    }
    descriptors.emplace_back(name, family);
  }
  return descriptors;
}

}  // namespace

Result<std::unique_ptr<EventStore>> EventStore::open(const EventStoreOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.path, ec);
  if (ec) {
    return Status::IoError("cannot create " + options.path.string() + ": " + ec.message());
  }
  std::unique_ptr<rocksdb::Env> env;
  if (options.file_system) {
    env = rocksdb::NewCompositeEnv(options.file_system);
  }
  const rocksdb::DBOptions db_options = db_options_for(options, env.get());
  const std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = column_families_for(options, db_options);

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
  // SST files a bulk load wrote but a crash kept it from ingesting (the store's lock is held
  // now: no other process is loading into it).
  std::error_code ignored;
  std::filesystem::remove_all(options.path / ColumnFamily::kIngestDirectory, ignored);
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

  impl->writer = std::thread([p = impl.get()] {
    name_this_thread("kl-log-writer");
    p->run_writer();
  });
  impl->syncer = std::thread([p = impl.get()] {
    name_this_thread("kl-log-syncer");
    p->run_syncer();
  });
  return std::unique_ptr<EventStore>(new EventStore(std::move(impl)));
}

Result<AppendResult> EventStore::append(std::string_view stream, std::int64_t expected_version,
                                        std::vector<v1::Event> events, std::vector<SideWrite> side_writes) {
  auto outcome = std::make_shared<std::promise<Result<AppendResult>>>();
  auto done = outcome->get_future();
  append_async(stream, expected_version, std::move(events), std::move(side_writes),
               [outcome](Result<AppendResult> result) { outcome->set_value(std::move(result)); });
  return done.get();
}

void EventStore::append_async(std::string_view stream, std::int64_t expected_version,
                              std::vector<v1::Event> events, std::vector<SideWrite> side_writes,
                              AppendDone done) {
  if (events.empty()) {
    return done(Status::InvalidArgument("an append needs at least one event"));
  }
  if (stream.empty() || stream.find('\0') != std::string_view::npos) {
    return done(Status::InvalidArgument("invalid stream name"));
  }
  if (expected_version < kAnyVersion) {
    return done(Status::InvalidArgument("invalid expected version"));
  }
  if (Status s = check_readable(stream, events); !s.ok()) {
    return done(s);
  }
  auto pending = std::make_unique<PendingAppend>();
  for (auto& write : side_writes) {
    const auto& extras = impl_->options.extra_column_families;
    const auto found = impl_->cf_by_name.find(write.column_family);
    rocksdb::ColumnFamilyHandle* cf = found == impl_->cf_by_name.end() ? nullptr : found->second;
    if (cf == nullptr || std::find(extras.begin(), extras.end(), write.column_family) == extras.end()) {
      return done(Status::InvalidArgument("a side write must go to an extra column family, not " +
                                          write.column_family));
    }
    pending->side_writes.emplace_back(cf, std::move(write));
  }
  pending->stream = std::string(stream);
  pending->expected_version = expected_version;
  pending->events = std::move(events);
  pending->done = std::move(done);
  {
    std::unique_lock lock(impl_->mutex);
    if (impl_->stopping) {
      lock.unlock();
      return pending->done(Status::Unavailable("event store is closing"));
    }
    impl_->queue.push_back(std::move(pending));
  }
  impl_->wake.notify_one();
}

Result<std::vector<v1::Event>> EventStore::read_stream(std::string_view stream,
                                                       std::uint64_t from_version) const {
  std::vector<v1::Event> out;
  const std::string prefix = std::string(stream) + '\0';
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->streams_cf));
  std::string value;
  for (it->Seek(stream_key(stream, from_version)); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    const rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->events_cf, it->value(), &value);
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

Result<std::vector<v1::Event>> EventStore::read_all(std::uint64_t from_position,
                                                    std::size_t max_count) const {
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

EventStore::SyncStats EventStore::sync_stats() const {
  return {.syncs = impl_->syncs.load(std::memory_order_relaxed),
          .took = std::chrono::nanoseconds(impl_->sync_ns.load(std::memory_order_relaxed))};
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

Status EventStore::scan(std::uint64_t first, std::uint64_t last, bool descending,
                        const std::function<bool(const v1::Event&)>& visit, bool bulk) const {
  last = std::min(last, last_position());  // never past what has been acknowledged
  if (first > last) {
    return Status::Ok();
  }
  const rocksdb::ReadOptions ro = bulk ? full_scan_options() : rocksdb::ReadOptions();
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->events_cf));
  if (descending) {
    it->SeekForPrev(encode_be64(last));
  } else {
    it->Seek(encode_be64(first));
  }
  // Events are parsed into an arena, renewed every kArenaEvents: a payload of another type
  // than the previous event's, and its strings, cost a bump of a pointer instead of a malloc
  // and a free each.
  constexpr std::size_t kArenaEvents = 1024;
  google::protobuf::ArenaOptions arena_options;
  arena_options.start_block_size = std::size_t{64} << 10;
  arena_options.max_block_size = std::size_t{1} << 20;
  std::optional<google::protobuf::Arena> arena;
  v1::Event* e = nullptr;
  std::size_t parsed = 0;
  for (; it->Valid(); descending ? it->Prev() : it->Next()) {
    const std::uint64_t position = decode_be64(it->key().ToStringView());
    if (descending ? position < first : position > last) {
      break;
    }
    if (parsed++ % kArenaEvents == 0) {
      arena.emplace(arena_options);
      e = google::protobuf::Arena::CreateMessage<v1::Event>(&*arena);
    }
    if (!e->ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      *e = impl_->unreadable_event(position);
    }
    if (!visit(*e)) {
      break;
    }
  }
  return it->status().ok() ? Status::Ok() : from_rocks(it->status(), "read log");
}

Result<v1::Event> EventStore::read_position(std::uint64_t position) const {
  if (position == 0 || position > last_position()) {
    return Status::NotFound("event_not_found", "no event at position " + std::to_string(position));
  }
  std::string value;
  const rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->events_cf, encode_be64(position), &value);
  if (s.IsNotFound()) {
    return Status::NotFound("event_not_found", "no event at position " + std::to_string(position));
  }
  if (!s.ok()) {
    return from_rocks(s, "read event");
  }
  v1::Event e;
  if (!e.ParseFromString(value)) {
    return impl_->unreadable_event(position);
  }
  return e;
}

Result<ColumnFamily> EventStore::extra_column_family(std::string_view name) const {
  if (name == kEventsCf || name == kStreamsCf || name == kEventIdsCf ||
      name == rocksdb::kDefaultColumnFamilyName) {
    return Status::InvalidArgument("column family " + std::string(name) + " belongs to the log");
  }
  const auto it = impl_->cf_by_name.find(name);
  if (it == impl_->cf_by_name.end()) {
    return Status::NotFound("column_family_not_found",
                            "column family " + std::string(name) + " is not open (extra_column_families)");
  }
  return ColumnFamily(this, impl_->db.get(), it->second);
}

Status EventStore::flush() { return impl_->flush_all(); }

Status EventStore::write(rocksdb::WriteBatch& batch, bool sync) const {
  rocksdb::WriteOptions options;
  options.disableWAL = impl_->options.bulk_load && !sync;
  if (Status s = from_rocks(impl_->db->Write(options, &batch), "write projections"); !s.ok() || !sync) {
    return s;
  }
  return impl_->sync_wal();
}

Status EventStore::sync() const { return impl_->sync_wal(); }

}  // namespace keyledger
