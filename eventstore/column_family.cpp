#include "eventstore/column_family.h"

#include <rocksdb/sst_file_writer.h>

#include <atomic>
#include <filesystem>

#include "eventstore/event_store.h"

namespace keyledger {
namespace {

rocksdb::Slice slice(std::string_view text) { return {text.data(), text.size()}; }

}  // namespace

std::string ColumnFamily::name() const { return cf_ == nullptr ? std::string() : cf_->GetName(); }

Result<std::optional<std::string>> ColumnFamily::get(std::string_view key) const {
  std::string value;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf_, slice(key), &value);
  if (s.IsNotFound()) {
    return std::optional<std::string>();
  }
  if (!s.ok()) {
    return from_rocks(s, "read " + name());
  }
  return std::optional<std::string>(std::move(value));
}

std::unique_ptr<rocksdb::Iterator> ColumnFamily::iterator() const {
  return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(rocksdb::ReadOptions(), cf_));
}

rocksdb::ReadOptions full_scan_options() {
  rocksdb::ReadOptions options;
  options.readahead_size = std::size_t{4} << 20;
  options.fill_cache = false;
  return options;
}

std::unique_ptr<rocksdb::Iterator> ColumnFamily::full_scan() const {
  return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(full_scan_options(), cf_));
}

Status ColumnFamily::put(std::string_view key, std::string_view value, bool sync) const {
  const Status written =
      from_rocks(db_->Put(rocksdb::WriteOptions(), cf_, slice(key), slice(value)), "write " + name());
  return sync ? synced(written) : written;
}

Status ColumnFamily::erase(std::string_view key, bool sync) const {
  const Status written =
      from_rocks(db_->Delete(rocksdb::WriteOptions(), cf_, slice(key)), "delete from " + name());
  return sync ? synced(written) : written;
}

Status ColumnFamily::synced(Status written) const {
  if (!written.ok()) {
    return written;
  }
  return store_->sync().Annotate("sync " + name());
}

void ColumnFamily::put(rocksdb::WriteBatch& batch, std::string_view key, std::string_view value) const {
  batch.Put(cf_, slice(key), slice(value)).PermitUncheckedError();
}

void ColumnFamily::erase(rocksdb::WriteBatch& batch, std::string_view key) const {
  batch.Delete(cf_, slice(key)).PermitUncheckedError();
}

void ColumnFamily::erase_range(rocksdb::WriteBatch& batch, std::string_view first,
                               std::string_view end) const {
  batch.DeleteRange(cf_, slice(first), slice(end)).PermitUncheckedError();
}

void ColumnFamily::merge(rocksdb::WriteBatch& batch, std::string_view key, std::string_view value) const {
  batch.Merge(cf_, slice(key), slice(value)).PermitUncheckedError();
}

Status ColumnFamily::compact(std::atomic<bool>* canceled) const {
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  // An exclusive manual compaction (RocksDB's default) holds back the automatic ones of the
  // whole database, the log's too, for as long as it runs.
  options.exclusive_manual_compaction = false;
  options.canceled = canceled;
  return from_rocks(db_->CompactRange(options, cf_, nullptr, nullptr), "compact " + name());
}

Status ColumnFamily::ingest_sorted(const std::vector<Entry>& entries) const {
  if (entries.empty()) {
    return Status::Ok();
  }
  static std::atomic<std::uint64_t> files{0};
  const std::filesystem::path dir = std::filesystem::path(db_->GetName()) / kIngestDirectory;
  std::error_code made;
  std::filesystem::create_directories(dir, made);
  if (made) {
    return Status::IoError("ingest into " + name() + ": cannot create " + dir.string() + ": " +
                           made.message());
  }
  const std::filesystem::path file = dir / (name() + "-" + std::to_string(files.fetch_add(1)) + ".sst");
  rocksdb::ColumnFamilyDescriptor descriptor;
  if (const rocksdb::Status s = cf_->GetDescriptor(&descriptor); !s.ok()) {
    return from_rocks(s, "ingest into " + name());
  }
  rocksdb::Options options(db_->GetDBOptions(), descriptor.options);
  // Uncompressed: compressing was a tenth of a rebuild's time, and the family's compactions
  // compress these entries later, in the background.
  options.compression = rocksdb::kNoCompression;
  rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), options, cf_);
  rocksdb::Status s = writer.Open(file.string());
  bool ascending = true;
  for (std::size_t i = 0; s.ok() && ascending && i < entries.size(); ++i) {
    ascending = i == 0 || entries[i - 1].first < entries[i].first;
    if (ascending) {
      s = writer.Put(slice(entries[i].first), slice(entries[i].second));
    }
  }
  if (!ascending) {  // the unfinished file is removed below: nothing is ingested
    std::error_code ignored;
    std::filesystem::remove(file, ignored);
    return Status::InvalidArgument("ingest into " + name() + ": keys are not strictly ascending");
  }
  if (s.ok()) {
    s = writer.Finish();
  }
  if (s.ok()) {
    rocksdb::IngestExternalFileOptions ingest;
    ingest.move_files = true;
    s = db_->IngestExternalFile(cf_, {file.string()}, ingest);
  }
  std::error_code ignored;
  std::filesystem::remove(file, ignored);  // gone on success (moved); a leftover on failure
  return from_rocks(s, "ingest into " + name());
}

}  // namespace keyledger
