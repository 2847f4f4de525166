#include "domain/pepper.h"

#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <fstream>

#include "support/temp_dir.h"
#include "domain/domain_fixture.h"

namespace keyledger {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  REQUIRE(out.good());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::string kHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::array<std::uint8_t, 32> counting_bytes() {
  std::array<std::uint8_t, 32> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::uint8_t>(i);
  }
  return bytes;
}

TEST_CASE("a pepper is generated into <data-dir>/pepper with mode 0600", "[domain][pepper]") {
  TempDir dir;
  SeededRandom random(1);
  auto pepper = load_or_create_pepper(dir.path(), std::nullopt, false, random);
  REQUIRE(pepper.ok());

  const fs::path file = dir.path() / "pepper";
  REQUIRE(fs::exists(file));
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  const std::string content = read_file(file);
  CHECK(content.size() == 65);
  CHECK(content.back() == '\n');
  CHECK(content.substr(0, 64) ==
        to_hex(std::string_view(reinterpret_cast<const char*>(pepper->bytes().data()), 32)));

  // No temporary file is left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir.path())) {
    ++entries;
  }
  CHECK(entries == 1);

  SECTION("the next start reads the same pepper back") {
    SeededRandom other(2);
    auto again = load_or_create_pepper(dir.path(), std::nullopt, true, other);
    REQUIRE(again.ok());
    CHECK(again->bytes() == pepper->bytes());
  }
}

TEST_CASE("generated peppers come from the random source", "[domain][pepper]") {
  TempDir a;
  TempDir b;
  SeededRandom ra(1);
  SeededRandom rb(2);
  auto pa = load_or_create_pepper(a.path(), std::nullopt, false, ra);
  auto pb = load_or_create_pepper(b.path(), std::nullopt, false, rb);
  REQUIRE(pa.ok());
  REQUIRE(pb.ok());
  CHECK(pa->bytes() != pb->bytes());
}

TEST_CASE("a data directory with events but no pepper is refused", "[domain][pepper]") {
  TempDir dir;
  SeededRandom random(1);
  auto pepper = load_or_create_pepper(dir.path(), std::nullopt, true, random);
  REQUIRE_FALSE(pepper.ok());
  CHECK(pepper.status().message().find("pepper is missing") != std::string::npos);
  CHECK(pepper.status().message().find("invalidate every key") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "pepper"));
}

TEST_CASE("a missing data directory is created", "[domain][pepper]") {
  TempDir dir;
  SeededRandom random(1);
  const fs::path data = dir.path() / "nested" / "data";
  auto pepper = load_or_create_pepper(data, std::nullopt, false, random);
  REQUIRE(pepper.ok());
  CHECK(fs::exists(data / "pepper"));
}

TEST_CASE("--pepper-file is read and takes precedence", "[domain][pepper]") {
  TempDir dir;
  SeededRandom random(1);
  const fs::path file = dir.path() / "my-pepper";
  write_file(file, kHex + "\n");
  auto pepper = load_or_create_pepper(dir.path(), file, true, random);
  REQUIRE(pepper.ok());
  CHECK(pepper->bytes() == counting_bytes());
  CHECK_FALSE(fs::exists(dir.path() / "pepper"));  // nothing generated

  SECTION("a missing --pepper-file is an error, not a reason to generate one") {
    auto missing = load_or_create_pepper(dir.path(), dir.path() / "nope", false, random);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.status().IsIoError());
    CHECK_FALSE(fs::exists(dir.path() / "pepper"));
  }
}

TEST_CASE("read_pepper_file accepts hex in either case and raw bytes", "[domain][pepper]") {
  TempDir dir;
  const fs::path file = dir.path() / "pepper";

  // What every section below leads to.
  const auto check_outcome = [&] {
    auto pepper = read_pepper_file(file);
    REQUIRE(pepper.ok());
    CHECK(pepper->bytes() == counting_bytes());
  };

  SECTION("lowercase hex without newline") { write_file(file, kHex); check_outcome(); }
  SECTION("uppercase hex with newline") {
    std::string upper = kHex;
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return std::toupper(c); });
    write_file(file, upper + "\n");
    check_outcome();
  }
  SECTION("hex with CRLF") { write_file(file, kHex + "\r\n"); check_outcome(); }
  SECTION("32 raw bytes") {
    const auto bytes = counting_bytes();
    write_file(file, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    check_outcome();
  }
}

TEST_CASE("read_pepper_file rejects malformed files", "[domain][pepper]") {
  TempDir dir;
  const fs::path file = dir.path() / "pepper";
  std::string content;
  // What every section below leads to.
  const auto check_outcome = [&] {
    write_file(file, content);
    auto pepper = read_pepper_file(file);
    REQUIRE_FALSE(pepper.ok());
    CHECK(pepper.status().message().find("malformed") != std::string::npos);

    // load_or_create_pepper neither accepts nor replaces a malformed pepper.
    SeededRandom random(1);
    CHECK_FALSE(load_or_create_pepper(dir.path(), std::nullopt, false, random).ok());
    CHECK(read_file(file) == content);
  };

  SECTION("empty") { content = ""; check_outcome(); }
  SECTION("63 hex characters") { content = kHex.substr(1); check_outcome(); }
  SECTION("65 hex characters") { content = kHex + "0"; check_outcome(); }
  SECTION("a non-hex character") { content = kHex.substr(0, 63) + "g"; check_outcome(); }
  SECTION("spaces inside") { content = kHex.substr(0, 32) + " " + kHex.substr(32, 31); check_outcome(); }
  SECTION("two newlines") { content = kHex + "\n\n"; check_outcome(); }
  SECTION("31 raw bytes") { content = std::string(31, '\x01'); check_outcome(); }
  SECTION("33 raw bytes") { content = std::string(33, '\x01'); check_outcome(); }
  SECTION("a huge file") { content = std::string(100000, 'a'); check_outcome(); }
}

TEST_CASE("errors never echo the pepper file's content", "[domain][pepper]") {
  TempDir dir;
  const fs::path file = dir.path() / "pepper";
  const std::string almost = kHex.substr(0, 63) + "z";
  write_file(file, almost);
  auto pepper = read_pepper_file(file);
  REQUIRE_FALSE(pepper.ok());
  CHECK(pepper.status().message().find(kHex.substr(0, 16)) == std::string::npos);
}

}  // namespace
}  // namespace keyledger
