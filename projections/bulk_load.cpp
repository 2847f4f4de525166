#include "projections/bulk_load.h"

#include <algorithm>
#include <cstring>

namespace keyledger {
namespace {

constexpr std::size_t kBlockBytes = std::size_t{4} << 20;

}  // namespace

BulkLoad::BulkLoad(std::size_t spill_bytes) : spill_bytes_(spill_bytes) {}

char* BulkLoad::allocate(std::size_t size) {
  if (blocks_.empty() || block_size_ - block_used_ < size) {
    block_size_ = std::max(kBlockBytes, size);
    blocks_.push_back(std::make_unique<char[]>(block_size_));
    block_used_ = 0;
  }
  char* out = blocks_.back().get() + block_used_;
  block_used_ += size;
  return out;
}

void BulkLoad::put(const ColumnFamily& cf, std::string_view key, std::string_view value) {
  auto family =
      std::find_if(families_.begin(), families_.end(), [&](const Family& f) { return f.cf.same_as(cf); });
  if (family == families_.end()) {
    families_.push_back(Family{cf, {}});
    family = families_.end() - 1;
  }
  char* data = allocate(key.size() + value.size());
  std::memcpy(data, key.data(), key.size());
  std::memcpy(data + key.size(), value.data(), value.size());
  family->records.push_back(
      Record{data, static_cast<std::uint32_t>(key.size()), static_cast<std::uint32_t>(value.size())});
  bytes_ += key.size() + value.size() + sizeof(Record);
}

Status BulkLoad::ingest() {
  Status status;
  std::vector<ColumnFamily::Entry> entries;
  for (Family& family : families_) {
    if (!status.ok()) {
      break;
    }
    // Stable: of equal keys, the one put last ends its run and is the one kept.
    std::stable_sort(family.records.begin(), family.records.end(),
                     [](const Record& a, const Record& b) { return a.key() < b.key(); });
    entries.clear();
    entries.reserve(family.records.size());
    for (std::size_t i = 0; i < family.records.size(); ++i) {
      if (i + 1 < family.records.size() && family.records[i + 1].key() == family.records[i].key()) {
        continue;
      }
      entries.emplace_back(family.records[i].key(), family.records[i].value());
    }
    status = family.cf.ingest_sorted(entries);
  }
  families_.clear();
  blocks_.clear();
  block_used_ = block_size_ = 0;
  bytes_ = 0;
  return status;
}

}  // namespace keyledger
