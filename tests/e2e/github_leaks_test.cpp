// POST /v1/leaks/github against the real binary: the keys file is read at start and again on
// SIGHUP, so GitHub's key rotation needs no restart.
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>

#include "consumers/kafka_reader.h"
#include "harness.h"
#include "support/github_signer.h"

namespace keyledger::e2e {
namespace {

using namespace std::chrono_literals;

void write_keys(const std::filesystem::path& file, const std::string& id, EVP_PKEY* key) {
  std::ofstream out(file, std::ios::trunc);
  out << testing::keys_json({{id, testing::public_pem(key), true}});
  REQUIRE(out.good());
}

}  // namespace

TEST_CASE("GitHub's rotated key is taken on SIGHUP, and the old one is refused", "[e2e][github]") {
  testing::TempDir dir;
  const testing::Pkey old_key = testing::generate("EC", "P-256");
  const testing::Pkey new_key = testing::generate("EC", "P-256");
  const auto keys_file = dir.path() / "github-keys.json";
  write_keys(keys_file, "old", old_key.get());
  ServerProcess server(dir.path() / "data", {"--github-keys-file", keys_file.string()});

  // A report of a key nobody has: GitHub is told it is a false positive.
  const std::string body =
      R"([{"token":"cg_0123456789abcdef0123456789abcdef","type":"clawgig_api_key","url":"https://github.com/o/r","source":"content"}])";
  const auto report = [&](const std::string& id, EVP_PKEY* key) {
    return http_request(server.port(), "POST", "/v1/leaks/github", body,
                        {{"Content-Type", "application/json"},
                         {"Github-Public-Key-Identifier", id},
                         {"Github-Public-Key-Signature", testing::sign(key, body)}});
  };
  const HttpResult first = report("old", old_key.get());
  REQUIRE(first.status == 200);
  CHECK(first.json()[0]["label"] == "false_positive");
  CHECK(first.json()[0]["result"] == "unknown");
  CHECK(report("new", new_key.get()).status == 401);

  write_keys(keys_file, "new", new_key.get());
  server.send_signal(SIGHUP);
  REQUIRE(testing::eventually([&] { return report("new", new_key.get()).status == 200; }, 10s));
  CHECK(report("old", old_key.get()).status == 401);

  // A keys file that does not load keeps the keys there were; the server goes on.
  {
    std::ofstream out(keys_file, std::ios::trunc);
    out << "{not json";
  }
  server.send_signal(SIGHUP);
  REQUIRE(testing::eventually(
      [&] { return server.log().find("keeping the 1 loaded before") != std::string::npos; }, 10s));
  CHECK(report("new", new_key.get()).status == 200);
  CHECK(server.get("/healthz", "").status == 200);
}

}  // namespace keyledger::e2e
