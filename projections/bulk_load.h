#pragma once
// A rebuild's writes to the projection column families, collected in memory and written as
// sorted SST files that RocksDB ingests (ColumnFamily::ingest_sorted): no memtable, no WAL,
// no flush, no compaction of what a rebuild writes. Bounded memory: past `spill_bytes` the
// collected entries are handed to a background thread that ingests them (spill()) while
// collection goes on; at most one spill is in flight.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "eventstore/column_family.h"

namespace keyledger {

// Where a projection's index writes go: a WriteBatch (events applied live) or a BulkLoad.
using IndexWrite = std::function<void(const ColumnFamily& cf, std::string_view key, std::string_view value)>;

class BulkLoad {
 public:
  explicit BulkLoad(std::size_t spill_bytes = std::size_t{256} << 20);
  BulkLoad(const BulkLoad&) = delete;
  BulkLoad& operator=(const BulkLoad&) = delete;
  ~BulkLoad();  // waits for a spill in flight

  // Collects one entry; of two entries with the same key in the same family, the later wins.
  void put(const ColumnFamily& cf, std::string_view key, std::string_view value);
  // True once the collected entries take `spill_bytes` or more (then call spill()).
  bool full() const { return bytes_ >= spill_bytes_; }
  // Hands what was collected to a background thread that sorts and ingests it, after waiting
  // for the spill before it; if that one failed, returns its error and drops what was
  // collected instead.
  Status spill();
  // Waits for the spill in flight, then sorts what was collected, family by family, and
  // ingests it, durable when it returns. Entries ingested later are newer than those ingested
  // before (the same key: the later wins).
  Status ingest();
  // The families that were handed more than `files` files so far (a file per spill or
  // ingest that wrote to them: in level 0 when they overlap).
  std::vector<ColumnFamily> families_with_more_files_than(std::size_t files) const;

 private:
  struct Record {
    const char* data;  // key, then value, in the arena
    std::uint32_t key_size;
    std::uint32_t value_size;
    std::uint64_t chunk = 0;  // sort(): eight bytes of the key, big-endian
    std::uint8_t chunk_bytes = 0;
    bool superseded = false;  // sort(): a later record has the same key
    std::string_view key() const { return {data, key_size}; }
    std::string_view value() const { return {data + key_size, value_size}; }
  };
  struct Family {
    ColumnFamily cf;
    std::vector<Record> records;
  };
  struct Batch {
    std::vector<Family> families;  // a handful: found by a linear search
    std::vector<std::unique_ptr<char[]>> blocks;
  };
  char* allocate(std::size_t size);
  Batch take();
  static void sort(Record* begin, Record* end, std::size_t depth);
  static void radix_sort(Record* begin, Record* end);
  static Status ingest_family(Family& family);
  static Status ingest_batch(Batch& batch, std::size_t threads);

  std::size_t spill_bytes_;
  std::size_t bytes_ = 0;
  Batch batch_;
  std::size_t block_used_ = 0;
  std::size_t block_size_ = 0;
  std::vector<std::pair<ColumnFamily, std::size_t>> files_;  // per family
  std::future<Status> spilling_;                             // the spill in flight, if valid()
};

}  // namespace keyledger
