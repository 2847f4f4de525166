// EventStore's group commit: the writer thread validates queued appends against the stream
// versions and writes each group in one WriteBatch to the WAL, unsynced; the syncer thread
// fsyncs every group written meanwhile and only then answers the appends and tells the
// subscribers (see event_store.h for the contract).
#include <rocksdb/file_system.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "eventstore/event_store_impl.h"

namespace keyledger {

using store_detail::stream_key;

Result<std::uint64_t> EventStore::Impl::stored_stream_version(std::string_view stream) const {
  rocksdb::ReadOptions ro;
  // Most streams met here are new (an agent being registered): a point lookup of version 1,
  // answered by the memtable and the files' Bloom filters, says so without an iterator over
  // every file.
  std::string first;
  const rocksdb::Status found = db->Get(ro, streams_cf, stream_key(stream, 1), &first);
  if (found.IsNotFound()) {
    return std::uint64_t{0};
  }
  if (!found.ok()) {
    return from_rocks(found, "read stream version");
  }
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

void EventStore::Impl::run_writer() {
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
rocksdb::Status EventStore::Impl::probe_write() const {
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
rocksdb::Status EventStore::Impl::resume() {
  if (rocksdb::Status probed = probe_write(); !probed.ok()) {
    return probed;
  }
  return db->Resume();
}

Status EventStore::Impl::writable() {
  if (broken) {
    return Status::IoError("a WAL sync failed; restart to recover");
  }
  if (needs_resume) {
    // After a failed write RocksDB refuses writes until it is resumed, which succeeds once
    // the cause is gone (space freed). Nothing of the failed group was applied.
    const rocksdb::Status resumed = resume();
    if (!resumed.ok()) {
      return from_rocks(resumed, "storage still failing");
    }
    needs_resume = false;
    writes_failing = false;
    spdlog::info("event store: writes resumed");
  }
  return Status::Ok();
}

Result<AppendResult> EventStore::Impl::stage(PendingAppend& p, GroupBatch& g) {
  auto current = current_version(p.stream);
  if (!current.ok()) {
    return current.status();
  }
  if (p.expected_version != kAnyVersion && static_cast<std::uint64_t>(p.expected_version) != *current) {
    return Status::VersionConflict("stream " + p.stream + " is at version " + std::to_string(*current) +
                                   ", expected " + std::to_string(p.expected_version));
  }
  if (Status ids_ok = check_event_ids(p.events, g.event_ids); !ids_ok.ok()) {
    return ids_ok;
  }
  g.touched.try_emplace(p.stream, *current);
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
    g.batch.Put(events_cf, pos_key, value);
    g.batch.Put(streams_cf, stream_key(p.stream, version), pos_key);
    g.batch.Put(event_ids_cf, e.event_id(), pos_key);
    g.event_ids.insert(e.event_id());
  }
  for (const auto& [cf, write] : p.side_writes) {
    g.batch.Put(cf, write.key, write.value);
  }
  version_cache[p.stream] = version;
  result.last_position = next_position - 1;
  result.stream_version = version;
  g.wrote = true;
  return result;  // the syncer moves p.events into it once they are durable
}

void EventStore::Impl::write_group(GroupBatch& g,
                                   std::vector<std::optional<Result<AppendResult>>>& outcomes) {
  // Pipelined group commit: the batch goes to the WAL now, unsynced, and the syncer thread
  // fsyncs it (with every group written meanwhile) before anyone is answered. While one
  // fsync runs, the next groups are already being validated and written.
  const rocksdb::Status s = db->Write(rocksdb::WriteOptions(), &g.batch);
  if (s.ok()) {
    return;
  }
  spdlog::error("event store: writing to the log failed: {}; commands are refused until it works again",
                s.ToString());
  needs_resume = true;
  writes_failing = true;
  // Nothing of this group was written: forget the positions and versions it took.
  next_position = g.first_position;
  for (const auto& [stream, before] : g.touched) {
    version_cache[stream] = before;
  }
  const Status failed = from_rocks(s, "append");
  for (auto& o : outcomes) {
    if (o && o->ok()) {
      o = failed;
    }
  }
  g.wrote = false;
}

// Validates each append against the current stream versions and writes every accepted one
// in one WriteBatch; the syncer answers them once they are fsync'd.
void EventStore::Impl::commit_group(std::vector<std::unique_ptr<PendingAppend>>& group) {
  if (const Status usable = writable(); !usable.ok()) {
    for (auto& p : group) {
      p->done(usable);
    }
    group.clear();
    return;
  }
  GroupBatch g;
  g.first_position = next_position;
  std::vector<std::optional<Result<AppendResult>>> outcomes;
  outcomes.reserve(group.size());
  for (auto& p : group) {
    outcomes.emplace_back(stage(*p, g));
  }
  if (g.batch.Count() > 0) {
    write_group(g, outcomes);
  }
  {
    std::lock_guard lock(sync_mutex);
    written.push_back(WrittenGroup{std::move(group), std::move(outcomes), g.wrote});
  }
  sync_wake.notify_one();
}

Status EventStore::Impl::sync_wal() {
  std::lock_guard lock(wal_sync_mutex);
  if (broken) {
    // A later fsync that succeeds would not prove anything written before the failed one
    // durable (the kernel reports a lost writeback only once).
    return Status::IoError("a WAL sync failed; restart to recover");
  }
  const auto started = std::chrono::steady_clock::now();
  const rocksdb::Status s = db->SyncWAL();
  sync_ns.fetch_add(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   std::chrono::steady_clock::now() - started)
                                                   .count()),
                    std::memory_order_relaxed);
  syncs.fetch_add(1, std::memory_order_relaxed);
  if (!s.ok()) {
    // Not retried (PostgreSQL's fsyncgate): after a failed fsync the kernel may have dropped
    // the dirty pages, so a later fsync that succeeds proves nothing. The store refuses every
    // append from now on; a restart recovers what the WAL really holds.
    spdlog::critical("event store: syncing the log failed: {}; no more writes until a restart", s.ToString());
    broken = true;
    return from_rocks(s, "sync WAL");
  }
  return Status::Ok();
}

void EventStore::Impl::run_syncer() {
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
    const bool wrote = std::any_of(groups.begin(), groups.end(), [](const auto& g) { return g.wrote; });
    // Written before the writer saw a failed fsync, these are of unknown durability too.
    const Status synced = wrote && options.sync ? sync_wal() : Status::Ok();
    for (auto& g : groups) {
      if (g.wrote && synced.ok()) {
        announce(g);
      } else if (g.wrote) {
        for (auto& o : g.outcomes) {
          if (o && o->ok()) {
            o = synced;
          }
        }
      }
      for (std::size_t i = 0; i < g.appends.size(); ++i) {
        g.appends[i]->done(std::move(*g.outcomes[i]));
      }
    }
    groups.clear();
  }
}

// A durable group to the subscribers, then its events to the appends that wrote them:
// moved, not copied (the events of the accepted appends, in position order, are the group's).
void EventStore::Impl::announce(WrittenGroup& g) {
  std::vector<v1::Event> committed;
  for (std::size_t i = 0; i < g.appends.size(); ++i) {
    if (g.outcomes[i]->ok()) {
      for (auto& e : g.appends[i]->events) {
        committed.push_back(std::move(e));
      }
    }
  }
  if (committed.empty()) {
    return;  // only side writes
  }
  last_position.store(committed.back().position(), std::memory_order_release);
  listeners->notify(committed);
  auto next = committed.begin();
  for (std::size_t i = 0; i < g.appends.size(); ++i) {
    if (g.outcomes[i]->ok()) {
      const auto count = static_cast<std::ptrdiff_t>(g.appends[i]->events.size());
      g.outcomes[i]->value().events.assign(std::make_move_iterator(next),
                                           std::make_move_iterator(next + count));
      next += count;
    }
  }
}

Result<std::uint64_t> EventStore::Impl::current_version(const std::string& stream) {
  if (auto it = version_cache.find(stream); it != version_cache.end()) {
    return it->second;
  }
  auto stored = stored_stream_version(stream);
  if (stored.ok()) {
    version_cache.emplace(stream, *stored);
  }
  return stored;
}

Status EventStore::Impl::check_event_ids(const std::vector<v1::Event>& events,
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

}  // namespace keyledger
