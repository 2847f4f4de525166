#include "projections/bulk_load.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

namespace keyledger {
namespace {

constexpr std::size_t kBlockBytes = std::size_t{4} << 20;
// Below this many records a comparison sort is cheaper than the radix sort's 256-entry counts.
constexpr std::size_t kRadixMinRecords = 256;

}  // namespace

// Stable LSD radix sort of [begin, end) by (chunk, chunk_bytes): one counting pass finds the
// bytes that differ at all (an audit index's keys share their prefix), then one scatter per
// such byte, least significant first. A handful of moves per record instead of the
// comparison sort's log2(n).
void BulkLoad::radix_sort(Record* begin, Record* end) {
  const auto n = static_cast<std::size_t>(end - begin);
  constexpr std::size_t kDigits = 9;  // chunk_bytes, then the chunk's bytes from the lowest
  const auto digit = [](const Record& r, std::size_t d) -> std::size_t {
    return d == 0 ? r.chunk_bytes : (r.chunk >> (8 * (d - 1))) & 0xFF;
  };
  std::vector<std::array<std::size_t, 256>> counts(kDigits);
  for (const Record* r = begin; r != end; ++r) {
    for (std::size_t d = 0; d < kDigits; ++d) {
      ++counts[d][digit(*r, d)];
    }
  }
  std::vector<Record> buffer(n);
  Record* from = begin;
  Record* to = buffer.data();
  for (std::size_t d = 0; d < kDigits; ++d) {
    if (counts[d][digit(*begin, d)] == n) {
      continue;  // every record has this byte: the pass would change nothing
    }
    std::array<std::size_t, 256> offsets{};
    for (std::size_t v = 1; v < 256; ++v) {
      offsets[v] = offsets[v - 1] + counts[d][v - 1];
    }
    for (const Record* r = from; r != from + n; ++r) {
      to[offsets[digit(*r, d)]++] = *r;
    }
    std::swap(from, to);
  }
  if (from != begin) {
    std::copy(from, from + n, begin);
  }
}

BulkLoad::BulkLoad(std::size_t spill_bytes) : spill_bytes_(spill_bytes) {}

BulkLoad::~BulkLoad() {
  if (spilling_.valid()) {
    spilling_.wait();
  }
}

char* BulkLoad::allocate(std::size_t size) {
  if (batch_.blocks.empty() || block_size_ - block_used_ < size) {
    block_size_ = std::max(kBlockBytes, size);
    batch_.blocks.push_back(std::make_unique_for_overwrite<char[]>(block_size_));  // not zeroed
    block_used_ = 0;
  }
  char* out = batch_.blocks.back().get() + block_used_;
  block_used_ += size;
  return out;
}

void BulkLoad::put(const ColumnFamily& cf, std::string_view key, std::string_view value) {
  std::vector<Family>& families = batch_.families;
  auto family =
      std::find_if(families.begin(), families.end(), [&](const Family& f) { return f.cf.same_as(cf); });
  if (family == families.end()) {
    families.push_back(Family{cf, {}});
    family = families.end() - 1;
  }
  char* data = allocate(key.size() + value.size());
  std::memcpy(data, key.data(), key.size());
  std::memcpy(data + key.size(), value.data(), value.size());
  family->records.push_back(Record{data, static_cast<std::uint32_t>(key.size()),
                                   static_cast<std::uint32_t>(value.size()), 0, 0, false});
  bytes_ += key.size() + value.size() + sizeof(Record);
}

// Orders [begin, end), whose keys share their first `depth` bytes, bytewise by key and stably
// (equal keys keep the order they were put in). Eight bytes at a time, most significant first:
// each record's next eight bytes are read once into it, and the sort compares integers held in
// the records instead of chasing two pointers into the arena per comparison. A run of equal
// eight bytes is ordered by the bytes after them, recursively; a run already in order (an
// audit index: one value, positions ascending) costs one pass.
void BulkLoad::sort(Record* begin, Record* end, std::size_t depth) {
  for (Record* r = begin; r != end; ++r) {
    const std::size_t rest = std::min<std::size_t>(r->key_size - depth, 8);
    unsigned char bytes[8] = {};
    std::memcpy(bytes, r->data + depth, rest);
    std::uint64_t chunk = 0;
    for (unsigned char b : bytes) {
      chunk = (chunk << 8) | b;
    }
    r->chunk = chunk;
    r->chunk_bytes = static_cast<std::uint8_t>(rest);  // a shorter key sorts before its extensions
  }
  const auto less = [](const Record& a, const Record& b) {
    return a.chunk != b.chunk ? a.chunk < b.chunk : a.chunk_bytes < b.chunk_bytes;
  };
  if (std::is_sorted(begin, end, less)) {
    // an audit index's run: one value, positions ascending
  } else if (static_cast<std::size_t>(end - begin) >= kRadixMinRecords) {
    radix_sort(begin, end);
  } else {
    std::stable_sort(begin, end, less);
  }
  for (Record* run = begin; run != end;) {
    Record* run_end = run + 1;
    while (run_end != end && run_end->chunk == run->chunk && run_end->chunk_bytes == run->chunk_bytes) {
      ++run_end;
    }
    if (run->chunk_bytes == 8 && run_end - run > 1) {
      sort(run, run_end, depth + 8);
    } else {
      // Fewer than eight bytes left: the keys of the run are equal, in the order they were
      // put; the last one put is kept.
      for (Record* r = run; r + 1 != run_end; ++r) {
        r->superseded = true;
      }
    }
    run = run_end;
  }
}

Status BulkLoad::ingest_family(Family& family) {
  sort(family.records.data(), family.records.data() + family.records.size(), 0);
  std::vector<ColumnFamily::Entry> entries;
  entries.reserve(family.records.size());
  for (const Record& record : family.records) {
    if (!record.superseded) {
      entries.emplace_back(record.key(), record.value());
    }
  }
  return family.cf.ingest_sorted(entries);
}

Status BulkLoad::ingest_batch(Batch& batch, std::size_t threads) {
  // The families are independent: sorted and written by `threads` threads at once.
  threads = std::min(threads, batch.families.size());
  std::vector<Status> statuses(batch.families.size());
  std::atomic<std::size_t> next{0};
  const auto work = [&] {
    for (std::size_t i = next.fetch_add(1); i < batch.families.size(); i = next.fetch_add(1)) {
      try {
        statuses[i] = ingest_family(batch.families[i]);
      } catch (const std::exception& e) {  // say, bad_alloc: an error, not std::terminate
        statuses[i] = Status::IoError("ingest into " + batch.families[i].cf.name() + ": " + e.what());
      }
    }
  };
  std::vector<std::jthread> helpers;
  for (std::size_t t = 1; t < threads; ++t) {
    helpers.emplace_back(work);
  }
  work();
  helpers.clear();  // joins
  batch = Batch{};  // the arena goes
  for (const Status& status : statuses) {
    if (!status.ok()) {
      return status;
    }
  }
  return Status::Ok();
}

BulkLoad::Batch BulkLoad::take() {
  for (const Family& family : batch_.families) {
    auto counted =
        std::find_if(files_.begin(), files_.end(), [&](const auto& f) { return f.first.same_as(family.cf); });
    if (counted == files_.end()) {
      files_.emplace_back(family.cf, 1);
    } else {
      ++counted->second;
    }
  }
  Batch taken = std::move(batch_);
  batch_ = Batch{};
  block_used_ = block_size_ = 0;
  bytes_ = 0;
  return taken;
}

std::vector<ColumnFamily> BulkLoad::families_with_more_files_than(std::size_t files) const {
  std::vector<ColumnFamily> out;
  for (const auto& [cf, count] : files_) {
    if (count > files) {
      out.push_back(cf);
    }
  }
  return out;
}

Status BulkLoad::spill() {
  if (spilling_.valid()) {
    // One in flight at most: its entries are older than these.
    if (Status earlier = spilling_.get(); !earlier.ok()) {
      take();  // dropped: the load has failed
      return earlier;
    }
  }
  // One thread: the collection goes on beside it.
  spilling_ = std::async(std::launch::async, [batch = take()]() mutable { return ingest_batch(batch, 1); });
  return Status::Ok();
}

Status BulkLoad::ingest() {
  Status earlier;
  if (spilling_.valid()) {
    earlier = spilling_.get();
  }
  Batch rest = take();
  if (!earlier.ok()) {
    return earlier;
  }
  return ingest_batch(rest, std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 4));
}

}  // namespace keyledger
