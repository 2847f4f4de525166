#include "eventstore/event_store.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "support/faulty_file_system.h"
#include "support/temp_dir.h"

namespace keyledger {
namespace {

v1::Event make_event(const std::string& id, const std::string& key_id = "key_x") {
  v1::Event e;
  e.set_event_id(id);
  e.set_type("key.created");
  e.mutable_key_created()->set_key_id(key_id);
  return e;
}

// Writes `bytes` as the record at `position`, with RocksDB itself on the closed store's files.
void damage_record(const std::filesystem::path& dir, std::uint64_t position, const std::string& bytes) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.string(), &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const auto& name : names) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir.string(), families, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  const auto events = std::find(names.begin(), names.end(), "events");
  REQUIRE(events != names.end());
  CHECK(db->Put(rocksdb::WriteOptions(), handles[static_cast<std::size_t>(events - names.begin())],
                encode_be64(position), bytes)
            .ok());
  for (auto* handle : handles) {
    CHECK(db->DestroyColumnFamilyHandle(handle).ok());
  }
  CHECK(db->Close().ok());
}

std::unique_ptr<EventStore> open_store(const std::filesystem::path& dir) {
  auto store = EventStore::open(keyledger::EventStoreOptions{
      .path = dir, .sync = true, .max_group_size = 1024, .extra_column_families = {}});
  REQUIRE(store.ok());
  return std::move(store).value();
}

// Bytes of RocksDB WAL files in a store's directory.
std::uintmax_t wal_bytes_in(const std::filesystem::path& dir) {
  std::uintmax_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".log") {
      total += entry.file_size();
    }
  }
  return total;
}

TEST_CASE("a clean close leaves no WAL for the next open to replay", "[eventstore]") {
  testing::TempDir dir;
  const auto wal_bytes = [&] { return wal_bytes_in(dir.path()); };
  {
    auto store = open_store(dir.path());
    for (int i = 0; i < 200; ++i) {
      REQUIRE(
          store->append("agent-" + std::to_string(i % 7), kAnyVersion, {make_event("e" + std::to_string(i))})
              .ok());
    }
    CHECK(wal_bytes() > 200 * 40);  // the events are in the WAL while the store is open
  }
  CHECK(wal_bytes() < 1024);  // flushed at close: what is left holds nothing to replay
  auto store = open_store(dir.path());
  CHECK(store->last_position() == 200);
  auto last = store->read_position(200);
  REQUIRE(last.ok());
  CHECK(last->event_id() == "e199");
}

TEST_CASE("a bulk load writes past the WAL, reads back sorted, and is durable once flushed", "[eventstore]") {
  testing::TempDir dir;
  const auto wal_bytes = [&] { return wal_bytes_in(dir.path()); };
  const auto key_of = [](int i) { return encode_be64(static_cast<std::uint64_t>((i * 7919) % 1000)); };
  {
    auto opened = EventStore::open(keyledger::EventStoreOptions{
        .path = dir.path(), .extra_column_families = {"index"}, .bulk_load = true});
    REQUIRE(opened.ok());
    auto& store = **opened;
    auto index = store.extra_column_family("index");
    REQUIRE(index.ok());
    const std::uintmax_t wal_before = wal_bytes();
    rocksdb::WriteBatch batch;
    for (int i = 0; i < 1000; ++i) {  // written out of key order
      index->put(batch, key_of(i), "v" + std::to_string((i * 7919) % 1000));
    }
    REQUIRE(store.write(batch).ok());
    CHECK(wal_bytes() == wal_before);  // not in the WAL
    auto got = index->get(encode_be64(500));
    REQUIRE(got.ok());
    CHECK(*got == std::optional<std::string>("v500"));
    REQUIRE(store.flush().ok());
  }
  auto opened =
      EventStore::open(keyledger::EventStoreOptions{.path = dir.path(), .extra_column_families = {"index"}});
  REQUIRE(opened.ok());
  auto index = (*opened)->extra_column_family("index");
  REQUIRE(index.ok());
  std::unique_ptr<rocksdb::Iterator> it = index->iterator();
  std::uint64_t expected = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next(), ++expected) {
    CHECK(decode_be64(it->key().ToStringView()) == expected);
    CHECK(it->value().ToString() == "v" + std::to_string(expected));
  }
  CHECK(expected == 1000);
}

TEST_CASE("projections reach their own column families through a typed handle, never the log's",
          "[eventstore]") {
  testing::TempDir dir;
  auto opened = EventStore::open(keyledger::EventStoreOptions{
      .path = dir.path(), .sync = true, .max_group_size = 1024, .extra_column_families = {"index"}});
  REQUIRE(opened.ok());
  auto& store = **opened;
  for (const char* own : {"events", "streams", "event_ids", "default"}) {
    CHECK(store.extra_column_family(own).status().IsInvalidArgument());
  }
  CHECK(store.extra_column_family("nonexistent").status().IsNotFound());

  auto index = store.extra_column_family("index");
  REQUIRE(index.ok());
  CHECK(index->name() == "index");
  CHECK(*index->get("a") == std::nullopt);
  REQUIRE(index->put("a", "1", /*sync=*/true).ok());
  rocksdb::WriteBatch batch;
  index->put(batch, "b", "2");
  index->put(batch, "c", "3");
  index->erase(batch, "a");
  CHECK(*index->get("b") == std::nullopt);  // nothing before the batch is written
  REQUIRE(store.write(batch).ok());
  CHECK(*index->get("a") == std::nullopt);
  CHECK(*index->get("b") == std::optional<std::string>("2"));
  std::vector<std::string> keys;
  auto it = index->iterator();
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    keys.push_back(it->key().ToString());
  }
  CHECK(it->status().ok());
  CHECK(keys == std::vector<std::string>{"b", "c"});
  rocksdb::WriteBatch wipe;
  index->erase_range(wipe, "b", std::string("c\0", 2));  // [b, the key after c)
  REQUIRE(store.write(wipe).ok());
  CHECK(*index->get("c") == std::nullopt);
  REQUIRE(index->erase("nothing-there").ok());
}

TEST_CASE("scan and read_position read the log by position, up to what is acknowledged", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(store->append("agent-a", kNoStream, {make_event("e1"), make_event("e2"), make_event("e3")}).ok());
  REQUIRE(store->append("agent-b", kNoStream, {make_event("e4")}).ok());

  const auto scan = [&](std::uint64_t first, std::uint64_t last, bool descending, std::size_t stop_after) {
    std::vector<std::string> ids;
    REQUIRE(store
                ->scan(first, last, descending,
                       [&](const v1::Event& e) {
                         ids.push_back(e.event_id());
                         return ids.size() < stop_after;
                       })
                .ok());
    return ids;
  };
  CHECK(scan(1, UINT64_MAX, false, 99) == std::vector<std::string>{"e1", "e2", "e3", "e4"});
  CHECK(scan(2, 3, false, 99) == std::vector<std::string>{"e2", "e3"});
  CHECK(scan(1, UINT64_MAX, true, 99) == std::vector<std::string>{"e4", "e3", "e2", "e1"});
  CHECK(scan(2, 3, true, 99) == std::vector<std::string>{"e3", "e2"});
  CHECK(scan(1, UINT64_MAX, true, 2) == std::vector<std::string>{"e4", "e3"});  // the visitor stops it
  CHECK(scan(3, 2, false, 99).empty());
  CHECK(scan(5, UINT64_MAX, false, 99).empty());

  auto third = store->read_position(3);
  REQUIRE(third.ok());
  CHECK(third->event_id() == "e3");
  CHECK(third->stream() == "agent-a");
  CHECK(store->read_position(0).status().IsNotFound());
  CHECK(store->read_position(5).status().IsNotFound());
}

}  // namespace

TEST_CASE("append assigns gap-free positions and stream versions", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  CHECK(store->last_position() == 0);

  auto first = store->append("agent-a", kNoStream, {make_event("e1"), make_event("e2")});
  REQUIRE(first.ok());
  CHECK(first->first_position == 1);
  CHECK(first->last_position == 2);
  CHECK(first->stream_version == 2);
  CHECK(first->events[1].stream() == "agent-a");
  CHECK(first->events[1].stream_version() == 2);

  auto second = store->append("agent-b", kNoStream, {make_event("e3")});
  REQUIRE(second.ok());
  CHECK(second->first_position == 3);
  CHECK(second->stream_version == 1);
  CHECK(store->last_position() == 3);

  auto third = store->append("agent-a", 2, {make_event("e4")});
  REQUIRE(third.ok());
  CHECK(third->first_position == 4);
  CHECK(third->stream_version == 3);
}

TEST_CASE("a stale expected version is a conflict and writes nothing", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(store->append("agent-a", kNoStream, {make_event("e1")}).ok());

  auto stale = store->append("agent-a", kNoStream, {make_event("e2")});
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.status().IsVersionConflict());
  CHECK(stale.status().reason() == "version_conflict");
  CHECK(store->last_position() == 1);
  CHECK(store->read_stream("agent-a")->size() == 1);
  CHECK_FALSE(store->read_event("e2").ok());

  auto ahead = store->append("agent-a", 5, {make_event("e3")});
  CHECK(ahead.status().IsVersionConflict());

  // kAny skips the check.
  auto any = store->append("agent-a", kAnyVersion, {make_event("e4")});
  REQUIRE(any.ok());
  CHECK(any->stream_version == 2);
  CHECK(any->first_position == 2);
}

TEST_CASE("bad appends are refused without writing", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(store->append("agent-a", kNoStream, {make_event("e1")}).ok());

  CHECK(store->append("agent-a", 1, {}).status().IsInvalidArgument());
  CHECK(store->append("agent-a", 1, {make_event("")}).status().IsInvalidArgument());
  CHECK(store->append("agent-a", 1, {make_event("e1")}).status().IsInvalidArgument());
  CHECK(store->append("agent-a", 1, {make_event("e2"), make_event("e2")}).status().IsInvalidArgument());
  CHECK(store->append(std::string("bad\0name", 8), kAnyVersion, {make_event("e9")})
            .status()
            .IsInvalidArgument());
  CHECK(store->last_position() == 1);
  CHECK(*store->stream_version("agent-a") == 1);
}

TEST_CASE("side writes are applied exactly when their append is", "[eventstore]") {
  testing::TempDir dir;
  auto opened = EventStore::open(keyledger::EventStoreOptions{
      .path = dir.path(), .sync = true, .max_group_size = 1024, .extra_column_families = {"answers"}});
  REQUIRE(opened.ok());
  auto& store = **opened;
  auto answers = store.extra_column_family("answers");
  REQUIRE(answers.ok());
  auto answer = [&](const std::string& key) -> std::optional<std::string> {
    auto value = answers->get(key);
    REQUIRE(value.ok());
    return *value;
  };

  REQUIRE(store.append("agent-a", kNoStream, {make_event("e1")}, {{"answers", "k1", "first"}}).ok());
  CHECK(answer("k1") == "first");

  SECTION("a conflicting append writes neither its events nor its side writes") {
    auto stale = store.append("agent-a", kNoStream, {make_event("e2")}, {{"answers", "k2", "second"}});
    CHECK(stale.status().IsVersionConflict());
    CHECK_FALSE(answer("k2"));
    CHECK_FALSE(store.read_event("e2").ok());
  }
  SECTION("a side write into the log's own column families is refused before anything is written") {
    for (const char* cf : {"events", "streams", "event_ids", "default", "nonexistent"}) {
      auto refused = store.append("agent-a", kAnyVersion, {make_event("e3")}, {{cf, "k", "v"}});
      CHECK(refused.status().IsInvalidArgument());
    }
    CHECK_FALSE(store.read_event("e3").ok());
    CHECK(store.last_position() == 1);
  }
  SECTION("the side write survives a reopen with its events") {
    opened->reset();
    auto reopened = EventStore::open(keyledger::EventStoreOptions{
        .path = dir.path(), .sync = true, .max_group_size = 1024, .extra_column_families = {"answers"}});
    REQUIRE(reopened.ok());
    auto family = (*reopened)->extra_column_family("answers");
    REQUIRE(family.ok());
    auto value = family->get("k1");
    REQUIRE(value.ok());
    CHECK(*value == std::optional<std::string>("first"));
  }
}

TEST_CASE("reads: one stream, the whole log in batches, an event by id", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  for (int i = 0; i < 10; ++i) {
    const std::string stream = i % 2 == 0 ? "agent-even" : "agent-odd";
    REQUIRE(store->append(stream, kAnyVersion, {make_event("e" + std::to_string(i), "k" + std::to_string(i))})
                .ok());
  }
  // A stream whose name is a prefix of another stays separate.
  REQUIRE(store->append("agent-eve", kNoStream, {make_event("x")}).ok());

  auto even = store->read_stream("agent-even");
  REQUIRE(even.ok());
  REQUIRE(even->size() == 5);
  for (std::size_t i = 0; i < even->size(); ++i) {
    CHECK((*even)[i].stream_version() == i + 1);
    CHECK((*even)[i].event_id() == "e" + std::to_string(2 * i));
  }
  CHECK(store->read_stream("agent-even", 4)->size() == 2);
  CHECK(store->read_stream("agent-none")->empty());
  CHECK(*store->stream_version("agent-eve") == 1);
  CHECK(*store->stream_version("agent-none") == 0);

  std::vector<std::uint64_t> positions;
  for (std::uint64_t from = 1;;) {
    auto batch = store->read_all(from, 3);
    REQUIRE(batch.ok());
    if (batch->empty()) {
      break;
    }
    for (const auto& e : *batch) {
      positions.push_back(e.position());
    }
    from = batch->back().position() + 1;
  }
  REQUIRE(positions.size() == 11);
  for (std::size_t i = 0; i < positions.size(); ++i) {
    CHECK(positions[i] == i + 1);
  }

  auto e7 = store->read_event("e7");
  REQUIRE(e7.ok());
  CHECK(e7->key_created().key_id() == "k7");
  CHECK(e7->position() == 8);
  CHECK(store->read_event("nope").status().IsNotFound());
}

TEST_CASE("reopening keeps every event and continues positions and versions", "[eventstore]") {
  testing::TempDir dir;
  {
    auto store = open_store(dir.path());
    REQUIRE(store->append("agent-a", kNoStream, {make_event("e1"), make_event("e2")}).ok());
    REQUIRE(store->append("agent-b", kNoStream, {make_event("e3")}).ok());
  }
  auto store = open_store(dir.path());
  CHECK(store->last_position() == 3);
  auto stale = store->append("agent-a", 1, {make_event("e4")});
  CHECK(stale.status().IsVersionConflict());
  auto next = store->append("agent-a", 2, {make_event("e4")});
  REQUIRE(next.ok());
  CHECK(next->first_position == 4);
  CHECK(next->stream_version == 3);
  // The event-id index survived too.
  CHECK(store->append("agent-c", kNoStream, {make_event("e1")}).status().IsInvalidArgument());
}

TEST_CASE("a second open of the same directory fails while the first holds it", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  auto second = EventStore::open(keyledger::EventStoreOptions{
      .path = dir.path(), .sync = true, .max_group_size = 1024, .extra_column_families = {}});
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().IsIoError());
}

TEST_CASE("concurrent appenders get distinct gap-free positions; conflicts lose cleanly", "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  std::vector<v1::Event> seen;
  std::mutex seen_mutex;
  const CommitSubscription subscription = store->subscribe([&](const std::vector<v1::Event>& events) {
    std::lock_guard lock(seen_mutex);
    seen.insert(seen.end(), events.begin(), events.end());
  });

  constexpr int kThreads = 8;
  constexpr int kPerThread = 50;
  std::atomic<int> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Own stream with exact versions, plus a contended shared stream.
        auto own = store->append("agent-" + std::to_string(t), i,
                                 {make_event(std::to_string(t) + "-" + std::to_string(i))});
        REQUIRE(own.ok());
        auto version = store->stream_version("agent-shared");
        auto shared = store->append("agent-shared", static_cast<std::int64_t>(*version),
                                    {make_event("s" + std::to_string(t) + "-" + std::to_string(i))});
        if (!shared.ok()) {
          REQUIRE(shared.status().IsVersionConflict());
          ++conflicts;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  const std::uint64_t shared_version = *store->stream_version("agent-shared");
  CHECK(shared_version + static_cast<std::uint64_t>(conflicts.load()) == kThreads * kPerThread);
  const std::uint64_t total = kThreads * kPerThread + shared_version;
  CHECK(store->last_position() == total);

  auto all = store->read_all(1, 100000);
  REQUIRE(all.ok());
  REQUIRE(all->size() == total);
  for (std::size_t i = 0; i < all->size(); ++i) {
    REQUIRE((*all)[i].position() == i + 1);
  }
  // The listener saw every committed event exactly once, in position order.
  REQUIRE(seen.size() == total);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    REQUIRE(seen[i].position() == i + 1);
  }
  auto shared = store->read_stream("agent-shared");
  for (std::size_t i = 0; i < shared->size(); ++i) {
    REQUIRE((*shared)[i].stream_version() == i + 1);
  }
}

TEST_CASE("an event that would not decode again is refused and nothing is written",
          "[eventstore][hardening]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  v1::Event bad = make_event("e1");
  bad.set_actor("caf\xe9");  // Latin-1: a proto3 string must be UTF-8, so decoding it fails
  auto refused = store->append("agent-a", kNoStream, {make_event("e0"), bad});
  CHECK(refused.status().IsInvalidArgument());
  CHECK(store->last_position() == 0);
  CHECK(store->append("agent-\xff", kNoStream, {make_event("e2")}).status().IsInvalidArgument());
  REQUIRE(store->append("agent-a", kNoStream, {make_event("e3")}).ok());
  CHECK(store->last_position() == 1);
}

TEST_CASE("a stored record that does not decode is passed over by readers, counted once",
          "[eventstore][hardening]") {
  testing::TempDir dir;
  {
    auto store = open_store(dir.path());
    REQUIRE(store->append("agent-a", kNoStream, {make_event("e1"), make_event("e2"), make_event("e3")}).ok());
  }
  // Damage position 2 below the store, as a bad disk or an old bug could.
  damage_record(dir.path(), 2, "\xff\xff\xff garbage");
  auto store = open_store(dir.path());
  auto all = store->read_all(1, 10);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].event_id() == "e1");
  CHECK(is_unreadable((*all)[1]));
  CHECK((*all)[1].position() == 2);
  CHECK((*all)[2].event_id() == "e3");
  auto at_two = store->read_position(2);
  REQUIRE(at_two.ok());
  CHECK(is_unreadable(*at_two));
  CHECK(at_two->position() == 2);
  auto stream = store->read_stream("agent-a");
  REQUIRE(stream.ok());
  REQUIRE(stream->size() == 3);
  CHECK(is_unreadable((*stream)[1]));
  CHECK((*stream)[1].stream_version() == 2);
  CHECK((*stream)[1].stream() == "agent-a");
  CHECK(store->unreadable_events() == 1);  // met twice, counted once
  // Appends go on after it.
  REQUIRE(store->append("agent-a", 3, {make_event("e4")}).ok());
  CHECK(store->last_position() == 4);
}

TEST_CASE("subscribers see each committed group in subscription order until their handle goes",
          "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  std::vector<std::string> calls;  // appended only on the syncer thread
  CommitSubscription first = store->subscribe([&](const std::vector<v1::Event>& events) {
    calls.push_back("first:" + std::to_string(events.back().position()));
  });
  std::optional<CommitSubscription> second = store->subscribe([&](const std::vector<v1::Event>& events) {
    calls.push_back("second:" + std::to_string(events.back().position()));
  });
  CHECK(first.active());
  REQUIRE(store->append("agent-a", kNoStream, {make_event("e1")}).ok());
  // The listeners ran before the append returned.
  CHECK(calls == std::vector<std::string>{"first:1", "second:1"});

  second.reset();  // destroying the handle unsubscribes
  REQUIRE(store->append("agent-a", 1, {make_event("e2")}).ok());
  CHECK(calls == std::vector<std::string>{"first:1", "second:1", "first:2"});

  CommitSubscription moved = std::move(first);
  CHECK(moved.active());
  moved.reset();
  CHECK_FALSE(moved.active());
  REQUIRE(store->append("agent-a", 2, {make_event("e3")}).ok());
  CHECK(calls.size() == 3);

  // A handle may outlive its store.
  CommitSubscription late = store->subscribe([](const std::vector<v1::Event>&) {});
  store.reset();
  late.reset();
  CHECK_FALSE(late.active());
}

TEST_CASE("append_async answers once durable, after the subscribers, or at once when refused",
          "[eventstore]") {
  testing::TempDir dir;
  auto store = open_store(dir.path());
  const std::thread::id caller = std::this_thread::get_id();

  // Refused by the checks before the writer: answered on the calling thread, before it returns.
  std::optional<Result<AppendResult>> refused;
  store->append_async("agent-a", kNoStream, {}, {}, [&](Result<AppendResult> r) { refused = std::move(r); });
  REQUIRE(refused.has_value());
  CHECK(refused->status().IsInvalidArgument());

  // Accepted ones: answered on the store's thread, in order, after the subscriber saw them.
  std::mutex mutex;
  std::condition_variable answered;
  std::vector<std::string> seen;  // "listener:<position>" and "done:<position>", as they happen
  std::vector<std::thread::id> answering_threads;
  CommitSubscription listener = store->subscribe([&](const std::vector<v1::Event>& events) {
    std::lock_guard lock(mutex);
    for (const auto& e : events) {
      seen.push_back("listener:" + std::to_string(e.position()));
    }
  });
  constexpr int kAppends = 20;
  for (int i = 0; i < kAppends; ++i) {
    store->append_async("agent-" + std::to_string(i), kNoStream, {make_event("async-" + std::to_string(i))},
                        {}, [&](Result<AppendResult> r) {
                          std::lock_guard lock(mutex);
                          seen.push_back(r.ok() ? "done:" + std::to_string(r->first_position) : "failed");
                          answering_threads.push_back(std::this_thread::get_id());
                          answered.notify_all();
                        });
  }
  // A conflict is answered from the writer's validation, as append() would answer it.
  std::optional<Result<AppendResult>> conflict;
  store->append_async("agent-0", kNoStream, {make_event("async-conflict")}, {}, [&](Result<AppendResult> r) {
    std::lock_guard lock(mutex);
    conflict = std::move(r);
    answered.notify_all();
  });
  {
    std::unique_lock lock(mutex);
    REQUIRE(answered.wait_for(lock, std::chrono::seconds(30),
                              [&] { return answering_threads.size() == kAppends && conflict.has_value(); }));
  }
  CHECK(conflict->status().IsVersionConflict());
  CHECK(std::none_of(answering_threads.begin(), answering_threads.end(),
                     [&](std::thread::id id) { return id == caller; }));
  for (int position = 1; position <= kAppends; ++position) {
    const auto listened = std::find(seen.begin(), seen.end(), "listener:" + std::to_string(position));
    const auto done = std::find(seen.begin(), seen.end(), "done:" + std::to_string(position));
    REQUIRE(listened != seen.end());
    REQUIRE(done != seen.end());
    CHECK(listened < done);
  }
  // Durable: a reopened store reads every one of them back.
  listener.reset();
  store.reset();
  store = open_store(dir.path());
  auto all = store->read_all(1, 100);
  REQUIRE(all.ok());
  CHECK(all->size() == kAppends);
}

TEST_CASE("a failed fsync of a synced write beside the log stops the log's appends too",
          "[eventstore][faults]") {
  testing::TempDir dir;
  auto fs = std::make_shared<testing::FaultyFileSystem>();
  auto opened = EventStore::open(keyledger::EventStoreOptions{
      .path = dir.path(), .extra_column_families = {"index"}, .file_system = fs});
  REQUIRE(opened.ok());
  std::unique_ptr<EventStore> store = std::move(opened).value();
  REQUIRE(store->append("agent-1", kAnyVersion, {make_event("e1")}).ok());
  auto index = store->extra_column_family("index");
  REQUIRE(index.ok());

  SECTION("a synced put") {
    fs->fail_syncs = true;
    CHECK_FALSE(index->put("k", "v", /*sync=*/true).ok());
  }
  SECTION("a synced batch") {
    rocksdb::WriteBatch batch;
    index->put(batch, "k", "v");
    fs->fail_syncs = true;
    CHECK_FALSE(store->write(batch, /*sync=*/true).ok());
  }
  SECTION("sync()") {
    fs->fail_syncs = true;
    CHECK_FALSE(store->sync().ok());
  }
  // They share the WAL with the log: what the log wrote before that fsync may be lost, and a
  // later fsync that succeeds would not prove otherwise (the kernel reports it once).
  fs->fail_syncs = false;
  const auto appended = store->append("agent-1", kAnyVersion, {make_event("e2")});
  REQUIRE_FALSE(appended.ok());
  CHECK(appended.status().ToString().find("restart") != std::string::npos);
  CHECK_FALSE(store->sync().ok());
  CHECK_FALSE(index->put("k2", "v", /*sync=*/true).ok());
}

TEST_CASE("synced writes beside the log are counted with the log's fsyncs", "[eventstore]") {
  testing::TempDir dir;
  auto opened =
      EventStore::open(keyledger::EventStoreOptions{.path = dir.path(), .extra_column_families = {"index"}});
  REQUIRE(opened.ok());
  std::unique_ptr<EventStore> store = std::move(opened).value();
  auto index = store->extra_column_family("index");
  REQUIRE(index.ok());
  const auto before = store->sync_stats().syncs;
  REQUIRE(index->put("k", "v", /*sync=*/true).ok());
  REQUIRE(index->put("k", "w").ok());
  REQUIRE(store->sync().ok());
  CHECK(store->sync_stats().syncs == before + 2);
}

}  // namespace keyledger
