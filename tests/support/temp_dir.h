#pragma once
// A fresh directory under the system temp dir, removed with everything in it on destruction.

#include <filesystem>

namespace keyledger::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace keyledger::testing
