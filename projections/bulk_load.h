#pragma once
// A rebuild's writes to the projection column families, collected in memory and written as
// sorted SST files that RocksDB ingests (ColumnFamily::ingest_sorted): no memtable, no WAL,
// no flush, no compaction of what a rebuild writes. Bounded memory: past `spill_bytes` the
// collected entries are ingested and forgotten, and collection goes on.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
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

  // Collects one entry; of two entries with the same key in the same family, the later wins.
  void put(const ColumnFamily& cf, std::string_view key, std::string_view value);
  // True once the collected entries take `spill_bytes` or more (then call ingest()).
  bool full() const { return bytes_ >= spill_bytes_; }
  // Sorts what was collected, family by family, ingests it and forgets it. Entries ingested
  // later are newer than those ingested before (the same key: the later wins).
  Status ingest();

 private:
  struct Record {
    const char* data;  // key, then value, in the arena
    std::uint32_t key_size;
    std::uint32_t value_size;
    std::string_view key() const { return {data, key_size}; }
    std::string_view value() const { return {data + key_size, value_size}; }
  };
  struct Family {
    ColumnFamily cf;
    std::vector<Record> records;
  };
  char* allocate(std::size_t size);

  std::size_t spill_bytes_;
  std::size_t bytes_ = 0;
  std::vector<Family> families_;  // a handful: found by a linear search
  std::vector<std::unique_ptr<char[]>> blocks_;
  std::size_t block_used_ = 0;
  std::size_t block_size_ = 0;
};

}  // namespace keyledger
