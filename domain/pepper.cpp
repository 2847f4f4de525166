#include "domain/pepper.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

namespace keyledger {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kHexChars = 2 * Pepper::kSize;
// Large enough for every accepted format; a bigger file is rejected without reading it all.
constexpr std::size_t kMaxPepperFileBytes = 256;
constexpr mode_t kPepperFileMode = 0600;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// Closes a file descriptor on scope exit.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error close() returns.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Wipes a buffer that held pepper material on scope exit.
template <typename Buffer>
class WipeOnExit {
 public:
  explicit WipeOnExit(Buffer& buffer) : buffer_(buffer) {}
  ~WipeOnExit() { sodium_memzero(buffer_.data(), buffer_.size()); }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  Buffer& buffer_;
};

Status write_all(int fd, const char* data, std::size_t size, const fs::path& file) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Status::IoError("cannot write " + file.string() + ": " + errno_text(errno));
    }
    data += written;
    size -= static_cast<std::size_t>(written);
  }
  return Status::Ok();
}

Status fsync_directory(const fs::path& dir) {
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    return Status::IoError("cannot open directory " + dir.string() + ": " + errno_text(errno));
  }
  if (::fsync(fd.get()) != 0) {
    return Status::IoError("cannot fsync directory " + dir.string() + ": " + errno_text(errno));
  }
  return Status::Ok();
}

// Moves `from` to `to` unless `to` exists (EEXIST then): two processes racing to create the
// pepper must not replace one another's.
int rename_no_replace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return 0;
  }
  if (errno != EINVAL && errno != ENOSYS) {
    return errno;
  }
  // The file system cannot refuse to replace on rename: link() is atomic and never replaces.
  if (::link(from.c_str(), to.c_str()) != 0) {
    return errno;
  }
  ::unlink(from.c_str());
  return 0;
}

Result<Pepper> create_pepper_file(const fs::path& data_dir, const fs::path& file, RandomSource& random) {
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) {
    return Status::IoError("cannot create data directory " + data_dir.string() + ": " + ec.message());
  }

  std::array<std::uint8_t, Pepper::kSize> bytes{};
  WipeOnExit wipe_bytes(bytes);
  random.fill(bytes);
  std::array<char, kHexChars + 1> hex{};
  WipeOnExit wipe_hex(hex);
  if (sodium_bin2hex(hex.data(), hex.size(), bytes.data(), bytes.size()) == nullptr) {
    return Status::IoError("cannot encode the new pepper");
  }
  hex[kHexChars] = '\n';  // the text file ends with a newline instead of the NUL

  std::string temp = (data_dir / ".pepper.tmp-XXXXXX").string();
  FileDescriptor fd(::mkstemp(temp.data()));
  if (fd.get() < 0) {
    return Status::IoError("cannot create a temporary file in " + data_dir.string() + ": " +
                           errno_text(errno));
  }
  const fs::path temp_path(temp);
  auto fail = [&](Status status) -> Result<Pepper> {
    ::unlink(temp_path.c_str());
    return status;
  };
  if (::fchmod(fd.get(), kPepperFileMode) != 0) {
    return fail(Status::IoError("cannot chmod " + temp + ": " + errno_text(errno)));
  }
  if (Status s = write_all(fd.get(), hex.data(), hex.size(), temp_path); !s.ok()) {
    return fail(std::move(s));
  }
  if (::fsync(fd.get()) != 0) {
    return fail(Status::IoError("cannot fsync " + temp + ": " + errno_text(errno)));
  }
  if (fd.close() != 0) {
    return fail(Status::IoError("cannot close " + temp + ": " + errno_text(errno)));
  }
  if (const int err = rename_no_replace(temp_path, file); err != 0) {
    ::unlink(temp_path.c_str());
    if (err == EEXIST) {
      return read_pepper_file(file);  // created concurrently: that one is the pepper now
    }
    return Status::IoError("cannot move the new pepper into " + file.string() + ": " + errno_text(err));
  }
  if (Status s = fsync_directory(data_dir); !s.ok()) {
    return s;
  }
  return Pepper(bytes);
}

}  // namespace

Result<Pepper> read_pepper_file(const fs::path& file) {
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    return Status::IoError("cannot read pepper file " + file.string() + ": " + errno_text(errno));
  }
  std::array<char, kMaxPepperFileBytes + 1> content{};
  WipeOnExit wipe_content(content);
  std::size_t size = 0;
  while (size < content.size()) {
    const ssize_t got = ::read(fd.get(), content.data() + size, content.size() - size);
    if (got < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Status::IoError("cannot read pepper file " + file.string() + ": " + errno_text(errno));
    }
    if (got == 0) {
      break;
    }
    size += static_cast<std::size_t>(got);
  }

  const std::string malformed = "pepper file " + file.string() +
                                " is malformed: expected 64 hex characters (optionally followed by a "
                                "newline) or exactly 32 raw bytes";
  std::array<std::uint8_t, Pepper::kSize> bytes{};
  WipeOnExit wipe_bytes(bytes);
  if (size == Pepper::kSize) {
    std::memcpy(bytes.data(), content.data(), Pepper::kSize);
    return Pepper(bytes);
  }
  std::size_t hex_chars = size;
  if (hex_chars > 0 && content[hex_chars - 1] == '\n') {
    --hex_chars;
    if (hex_chars > 0 && content[hex_chars - 1] == '\r') {
      --hex_chars;
    }
  }
  if (hex_chars != kHexChars) {
    return Status::Corruption(malformed);
  }
  std::size_t decoded = 0;
  // Without an `ignore` set or `hex_end`, any non-hex character makes sodium_hex2bin fail.
  if (sodium_hex2bin(bytes.data(), bytes.size(), content.data(), hex_chars, nullptr, &decoded, nullptr) !=
          0 ||
      decoded != Pepper::kSize) {
    return Status::Corruption(malformed);
  }
  return Pepper(bytes);
}

Result<Pepper> load_or_create_pepper(const fs::path& data_dir, const std::optional<fs::path>& pepper_file,
                                     bool store_has_data, RandomSource& random) {
  if (pepper_file) {
    return read_pepper_file(*pepper_file);
  }
  const fs::path file = data_dir / "pepper";
  std::error_code ec;
  const bool exists = fs::exists(file, ec);
  if (ec) {
    return Status::IoError("cannot check for pepper file " + file.string() + ": " + ec.message());
  }
  if (exists) {
    return read_pepper_file(file);
  }
  if (store_has_data) {
    return Status::Unavailable("the pepper is missing: " + file.string() +
                               " does not exist but the data directory already holds events. Generating "
                               "a new pepper would invalidate every key and service token, so keyledger "
                               "refuses to start; restore the pepper file or pass --pepper-file");
  }
  return create_pepper_file(data_dir, file, random);
}

}  // namespace keyledger
