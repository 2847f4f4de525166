#pragma once
// A RocksDB file system that fails on demand, for the storage-fault tests: writes (appends to
// any file, as a full disk does) and syncs (as a failing disk does), until told to stop.

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <memory>
#include <string>

namespace keyledger::testing {

class FaultyFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  FaultyFileSystem() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}

  const char* Name() const override { return "FaultyFileSystem"; }

  std::atomic<bool> fail_writes{false};  // Append fails with NoSpace
  std::atomic<bool> fail_syncs{false};   // Sync and Fsync fail with IOError
  // When not negative: how many more appends succeed before every one fails (as fail_writes).
  std::atomic<long> appends_left{-1};

  // Whether an append may go through (consumes one of appends_left).
  bool admit_append() {
    if (fail_writes) {
      return false;
    }
    long left = appends_left.load();
    while (left > 0 && !appends_left.compare_exchange_weak(left, left - 1)) {
    }
    return left != 0;
  }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    // A full disk still creates files (they take no blocks); writing to them fails.
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, &file, dbg);
    if (s.ok()) {
      *result = std::make_unique<File>(std::move(file), *this);
    }
    return s;
  }

  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->ReopenWritableFile(name, options, &file, dbg);
    if (s.ok()) {
      *result = std::make_unique<File>(std::move(file), *this);
    }
    return s;
  }

 private:
  class File final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> target, FaultyFileSystem& fs)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(target)), fs_(fs) {}

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (!fs_.admit_append()) {
        return rocksdb::IOStatus::NoSpace("injected: disk full");
      }
      return target()->Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (!fs_.admit_append()) {
        return rocksdb::IOStatus::NoSpace("injected: disk full");
      }
      return target()->Append(data, options, info, dbg);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_.fail_syncs) {
        return rocksdb::IOStatus::IOError("injected: fsync failed");
      }
      return target()->Sync(options, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_.fail_syncs) {
        return rocksdb::IOStatus::IOError("injected: fsync failed");
      }
      return target()->Fsync(options, dbg);
    }

   private:
    FaultyFileSystem& fs_;
  };
};

}  // namespace keyledger::testing
