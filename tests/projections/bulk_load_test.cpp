#include "projections/bulk_load.h"

#include <rocksdb/iterator.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "eventstore/event_store.h"
#include "support/temp_dir.h"

namespace keyledger {
namespace {

using Contents = std::map<std::string, std::string>;

Contents contents_of(const ColumnFamily& cf) {
  Contents out;
  std::unique_ptr<rocksdb::Iterator> it = cf.iterator();
  std::string previous;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    CHECK((out.empty() || previous < it->key().ToString()));
    previous = it->key().ToString();
    out.emplace(previous, it->value().ToString());
  }
  REQUIRE(it->status().ok());
  return out;
}

// The SST files in the store's ingest directory (none once each ingest is done).
std::vector<std::string> files_waiting(const testing::TempDir& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& file :
       std::filesystem::directory_iterator(dir.path() / ColumnFamily::kIngestDirectory, ec)) {
    out.push_back(file.path().filename().string());
  }
  return out;
}

EventStoreOptions options_for(const testing::TempDir& dir) {
  return EventStoreOptions{.path = dir.path(), .extra_column_families = {"a", "b"}};
}

TEST_CASE(
    "a bulk load ingests what it collected, sorted, the later of equal keys kept, across spills and ingests",
    "[projections]") {
  testing::TempDir dir;
  Contents expected_a;
  Contents expected_b;
  {
    auto opened = EventStore::open(options_for(dir));
    REQUIRE(opened.ok());
    auto a = (*opened)->extra_column_family("a");
    auto b = (*opened)->extra_column_family("b");
    REQUIRE(a.ok());
    REQUIRE(b.ok());

    BulkLoad bulk(/*spill_bytes=*/2048);  // small: several ingests, a key rewritten in a later one
    int ingests = 0;
    for (int i = 0; i < 600; ++i) {
      const std::string key = "k" + std::to_string((i * 37) % 200);  // each key three times
      const std::string value = "v" + std::to_string(i);
      bulk.put(*a, key, value);
      expected_a[key] = value;
      if (i % 3 == 0 && i < 300) {  // "b" only in the first half: in fewer files
        bulk.put(*b, std::string(1, static_cast<char>(0xF0 + i % 7)) + key, value);  // bytes ≥ 0x80 sort last
        expected_b[std::string(1, static_cast<char>(0xF0 + i % 7)) + key] = value;
      }
      if (bulk.full()) {  // in the background, or (every third) here
        REQUIRE((++ingests % 3 == 0 ? bulk.ingest() : bulk.spill()).ok());
      }
    }
    REQUIRE(bulk.ingest().ok());
    CHECK(ingests >= 6);
    // A file for every spill and ingest that wrote to a family: "a" got one each time, "b" not.
    const std::vector<ColumnFamily> over =
        bulk.families_with_more_files_than(static_cast<std::size_t>(ingests));
    REQUIRE(over.size() == 1);
    CHECK(over[0].same_as(*a));
    CHECK(bulk.families_with_more_files_than(static_cast<std::size_t>(ingests) + 1).empty());
    CHECK(contents_of(*a) == expected_a);
    CHECK(contents_of(*b) == expected_b);
    REQUIRE(bulk.ingest().ok());  // nothing collected: nothing to do
  }
  // Durable: on reopen the ingested files are there, and nothing was left beside them.
  auto reopened = EventStore::open(options_for(dir));
  REQUIRE(reopened.ok());
  CHECK(contents_of(*(*reopened)->extra_column_family("a")) == expected_a);
  CHECK(contents_of(*(*reopened)->extra_column_family("b")) == expected_b);
  CHECK(files_waiting(dir).empty());
}

TEST_CASE(
    "a bulk load orders keys bytewise whatever they share: prefixes, extensions, zero bytes, high bytes",
    "[projections]") {
  testing::TempDir dir;
  auto opened = EventStore::open(options_for(dir));
  REQUIRE(opened.ok());
  auto a = (*opened)->extra_column_family("a");
  REQUIRE(a.ok());

  // Keys from a small alphabet with long shared prefixes (as the audit indexes have: one value,
  // then a position), some a prefix of others, some repeated.
  const std::string alphabet("\0\x01a\x7f\x80\xff", 6);
  std::uint64_t seed = 42;
  const auto next = [&seed] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::size_t>(seed >> 33);
  };
  const std::string shared = "audit.value.shared.prefix";  // longer than two eight-byte steps
  Contents expected;
  BulkLoad bulk;
  for (int i = 0; i < 5000; ++i) {
    std::string key = shared.substr(0, next() % (shared.size() + 1));
    const std::size_t extra = next() % 12;
    for (std::size_t j = 0; j < extra; ++j) {
      key.push_back(alphabet[next() % alphabet.size()]);
    }
    if (key.empty()) {
      continue;  // RocksDB takes an empty key, but nothing of ours writes one
    }
    const std::string value = std::to_string(i);
    bulk.put(*a, key, value);
    expected[key] = value;  // std::string orders bytewise, as unsigned char
  }
  REQUIRE(bulk.ingest().ok());
  CHECK(contents_of(*a) == expected);
}

TEST_CASE("ingest_sorted refuses keys out of order or repeated, and writes nothing then", "[projections]") {
  testing::TempDir dir;
  auto opened = EventStore::open(options_for(dir));
  REQUIRE(opened.ok());
  auto a = (*opened)->extra_column_family("a");
  REQUIRE(a.ok());

  const std::vector<ColumnFamily::Entry> descending{{"b", "1"}, {"a", "2"}};
  CHECK(a->ingest_sorted(descending).IsInvalidArgument());
  const std::vector<ColumnFamily::Entry> repeated{{"a", "1"}, {"a", "2"}};
  CHECK(a->ingest_sorted(repeated).IsInvalidArgument());
  CHECK(contents_of(*a).empty());
  CHECK(files_waiting(dir).empty());  // the unfinished file is gone too

  CHECK(a->ingest_sorted({}).ok());
  const std::vector<ColumnFamily::Entry> sorted{{"a", "1"}, {"b", "2"}};
  REQUIRE(a->ingest_sorted(sorted).ok());
  CHECK(contents_of(*a) == Contents{{"a", "1"}, {"b", "2"}});
}

TEST_CASE("a store opening clears SST files a bulk load left uningested", "[projections]") {
  testing::TempDir dir;
  {
    auto opened = EventStore::open(options_for(dir));
    REQUIRE(opened.ok());
  }
  // As a crash between writing a file and ingesting it leaves it.
  std::filesystem::create_directories(dir.path() / ColumnFamily::kIngestDirectory);
  std::ofstream(dir.path() / ColumnFamily::kIngestDirectory / "a-7.sst") << "half an SST file";
  REQUIRE(files_waiting(dir).size() == 1);
  auto reopened = EventStore::open(options_for(dir));
  REQUIRE(reopened.ok());
  CHECK(files_waiting(dir).empty());
}

}  // namespace
}  // namespace keyledger
