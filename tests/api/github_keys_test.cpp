#include "api/github_keys.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/github_signer.h"
#include "support/temp_dir.h"

namespace keyledger::api {
namespace {

using namespace keyledger::testing;  // generate, public_pem, sign, keys_json

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) {
    throw std::runtime_error("cannot write " + path.string());
  }
}

const std::string kBody =
    R"([{"token":"cg_0123456789abcdef0123456789abcdef","type":"keyledger_api_key",)"
    R"("url":"https://github.com/octocat/Hello-World/blob/main/x.txt","source":"content"}])";
const std::string kIdA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
const std::string kIdB = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

}  // namespace

TEST_CASE("GitHub's documented sample signature verifies", "[github]") {
  // The example in GitHub's secret-scanning partner program documentation.
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const std::string id = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";
  write(file, keys_json({{id,
                          "-----BEGIN PUBLIC KEY-----\n"
                          "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9MJJHnMfn2+H4xL4YaPDA4RpJqUq\n"
                          "kCmRCBnYERxZanmcpzQSXs1X/AljlKkbJ8qpVIW4clayyef9gWhFbNHWAA==\n"
                          "-----END PUBLIC KEY-----\n",
                          false}}));
  GithubKeyring keyring(file);
  REQUIRE(keyring.reload().ok());
  const std::string body = R"([{"token":"some_token","type":"some_type","url":"some_url"}])";
  const std::string sig =
      "MEUCIQDKZokqnCjrRtw0tni+2Ltvl/uiMJ1EGumEsp1BsNr32AIgQY1YXD2nlj+XNfGK4rBfkMJ1JDOQcYXxa2sY8FNkrKc=";
  CHECK(keyring.verify(id, sig, body) == GithubSignature::kOk);
  CHECK(keyring.verify(id, sig, body + "\n") == GithubSignature::kBadSignature);
}

TEST_CASE("a GitHub signature verifies only over the signed bytes with the named key", "[github]") {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const Pkey github = generate("EC", "P-256");
  const Pkey stranger = generate("EC", "P-256");
  write(file, keys_json({{kIdA, public_pem(github.get())}}));
  GithubKeyring keyring(file);
  const auto load = keyring.reload();
  REQUIRE(load.ok());
  CHECK(load->keys == 1);
  CHECK(load->skipped.empty());
  CHECK(keyring.key_count() == 1);
  const std::string sig = sign(github.get(), kBody);

  CHECK(keyring.verify(kIdA, sig, kBody) == GithubSignature::kOk);

  SECTION("a tampered body is bad") {
    std::string tampered = kBody;
    tampered[20] ^= 1;
    CHECK(keyring.verify(kIdA, sig, tampered) == GithubSignature::kBadSignature);
    CHECK(keyring.verify(kIdA, sig, kBody + " ") == GithubSignature::kBadSignature);
    CHECK(keyring.verify(kIdA, sig, "") == GithubSignature::kBadSignature);
  }
  SECTION("a signature by another P-256 key is bad") {
    CHECK(keyring.verify(kIdA, sign(stranger.get(), kBody), kBody) == GithubSignature::kBadSignature);
  }
  SECTION("an unlisted key id is unknown, whatever the signature") {
    CHECK(keyring.verify(kIdB, sig, kBody) == GithubSignature::kUnknownKey);
    CHECK(keyring.verify(kIdA.substr(0, 10), sig, kBody) == GithubSignature::kUnknownKey);
  }
  SECTION("an absent header is missing") {
    CHECK(keyring.verify("", sig, kBody) == GithubSignature::kMissing);
    CHECK(keyring.verify(kIdA, "", kBody) == GithubSignature::kMissing);
    CHECK(keyring.verify("", "", kBody) == GithubSignature::kMissing);
  }
  SECTION("a signature that is not base64 of a DER signature is bad") {
    CHECK(keyring.verify(kIdA, "!!! not base64 !!!", kBody) == GithubSignature::kBadSignature);
    CHECK(keyring.verify(kIdA, sig.substr(0, sig.size() - 1), kBody) == GithubSignature::kBadSignature);
    CHECK(keyring.verify(kIdA, sig + "AAAA", kBody) == GithubSignature::kBadSignature);
    CHECK(keyring.verify(kIdA, base64("definitely not DER"), kBody) == GithubSignature::kBadSignature);
    CHECK(keyring.verify(kIdA, std::string(kMaxGithubSignatureChars + 4, 'A'), kBody) ==
          GithubSignature::kBadSignature);
    // Still good afterwards: no OpenSSL error state leaks into the next check.
    CHECK(keyring.verify(kIdA, sig, kBody) == GithubSignature::kOk);
  }
}

TEST_CASE("a key GitHub no longer signs with (is_current false) still verifies", "[github]") {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const Pkey old_key = generate("EC", "P-256");
  const Pkey new_key = generate("EC", "P-256");
  write(file, keys_json({{kIdA, public_pem(old_key.get()), false}, {kIdB, public_pem(new_key.get()), true}}));
  GithubKeyring keyring(file);
  REQUIRE(keyring.reload().ok());
  CHECK(keyring.verify(kIdA, sign(old_key.get(), kBody), kBody) == GithubSignature::kOk);
  CHECK(keyring.verify(kIdB, sign(new_key.get(), kBody), kBody) == GithubSignature::kOk);
  // Each id names its own key.
  CHECK(keyring.verify(kIdB, sign(old_key.get(), kBody), kBody) == GithubSignature::kBadSignature);
}

TEST_CASE("reloading picks up added keys and drops removed ones", "[github]") {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const Pkey a = generate("EC", "P-256");
  const Pkey b = generate("EC", "P-256");
  write(file, keys_json({{kIdA, public_pem(a.get())}}));
  GithubKeyring keyring(file);
  REQUIRE(keyring.reload().ok());
  const std::string sig_a = sign(a.get(), kBody);
  const std::string sig_b = sign(b.get(), kBody);
  CHECK(keyring.verify(kIdA, sig_a, kBody) == GithubSignature::kOk);
  CHECK(keyring.verify(kIdB, sig_b, kBody) == GithubSignature::kUnknownKey);

  write(file, keys_json({{kIdB, public_pem(b.get())}}));
  const auto load = keyring.reload();
  REQUIRE(load.ok());
  CHECK(load->keys == 1);
  CHECK(keyring.verify(kIdB, sig_b, kBody) == GithubSignature::kOk);
  CHECK(keyring.verify(kIdA, sig_a, kBody) == GithubSignature::kUnknownKey);
}

TEST_CASE("a reload that fails keeps the keys there were and says why", "[github]") {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const Pkey a = generate("EC", "P-256");
  write(file, keys_json({{kIdA, public_pem(a.get())}}));
  GithubKeyring keyring(file);
  REQUIRE(keyring.reload().ok());
  const std::string sig = sign(a.get(), kBody);

  auto keeps_old_keys_after = [&](const std::string& text, const std::string& why) {
    write(file, text);
    const auto load = keyring.reload();
    REQUIRE_FALSE(load.ok());
    CHECK(load.status().IsInvalidArgument());
    CHECK(load.status().message().find(file.string()) != std::string::npos);
    CHECK(load.status().message().find(why) != std::string::npos);
    CHECK(keyring.key_count() == 1);
    CHECK(keyring.verify(kIdA, sig, kBody) == GithubSignature::kOk);
  };
  keeps_old_keys_after(keys_json({{kIdA, public_pem(a.get())}}).substr(0, 40), "not JSON");
  keeps_old_keys_after(R"({"keys":[]})", "public_keys");
  keeps_old_keys_after(R"({"public_keys":{}})", "public_keys");
  keeps_old_keys_after(R"({"public_keys":["x"]})", "public_keys[0]: not an object");
  keeps_old_keys_after(R"({"public_keys":[{"key":"x"}]})", "public_keys[0].key_identifier");
  keeps_old_keys_after(R"({"public_keys":[{"key_identifier":"ab","key":""}]})", "public_keys[0].key");
  keeps_old_keys_after(keys_json({{kIdB, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}}),
                       "public_keys[0].key: not a PEM public key");
  keeps_old_keys_after(keys_json({{kIdB, public_pem(a.get())}, {kIdB, public_pem(a.get())}}), "listed twice");
  keeps_old_keys_after(std::string(kMaxGithubKeysFileBytes + 1, ' '), "larger than");

  std::filesystem::remove(file);
  const auto gone = keyring.reload();
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.status().IsNotFound());
  CHECK(gone.status().reason() == "github_keys_not_found");
  CHECK(keyring.verify(kIdA, sig, kBody) == GithubSignature::kOk);
}

TEST_CASE("keys other than EC P-256 are skipped, the P-256 ones still load", "[github]") {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const Pkey p256 = generate("EC", "P-256");
  const Pkey p384 = generate("EC", "P-384");
  const Pkey ed25519 = generate("ED25519");
  const std::string kIdC = "cccc";
  write(file, keys_json({{kIdA, public_pem(p384.get())},
                         {kIdB, public_pem(p256.get())},
                         {kIdC, public_pem(ed25519.get())}}));
  GithubKeyring keyring(file);
  const auto load = keyring.reload();
  REQUIRE(load.ok());
  CHECK(load->keys == 1);
  REQUIRE(load->skipped.size() == 2);
  CHECK(load->skipped[0].find("public_keys[0] (" + kIdA + "): EC secp384r1") != std::string::npos);
  CHECK(load->skipped[1].find("public_keys[2] (cccc): ED25519") != std::string::npos);
  CHECK(keyring.verify(kIdB, sign(p256.get(), kBody), kBody) == GithubSignature::kOk);
  CHECK(keyring.verify(kIdA, sign(p384.get(), kBody), kBody) == GithubSignature::kUnknownKey);
  CHECK(keyring.verify(kIdC, sign(p256.get(), kBody), kBody) == GithubSignature::kUnknownKey);
}

TEST_CASE("no keys file, an empty one or a missing one means no keys", "[github]") {
  testing::TempDir dir;
  const Pkey a = generate("EC", "P-256");
  const std::string sig = sign(a.get(), kBody);

  GithubKeyring unconfigured{std::filesystem::path()};
  CHECK(unconfigured.reload().ok());
  CHECK(unconfigured.verify(kIdA, sig, kBody) == GithubSignature::kUnknownKey);

  const auto missing_file = dir.path() / "absent.json";
  GithubKeyring missing(missing_file);
  CHECK(missing.reload().status().IsNotFound());
  CHECK(missing.key_count() == 0);
  CHECK(missing.verify(kIdA, sig, kBody) == GithubSignature::kUnknownKey);

  // Emptying the file is how an operator withdraws every key: that reload succeeds.
  const auto file = dir.path() / "keys.json";
  write(file, keys_json({{kIdA, public_pem(a.get())}}));
  GithubKeyring keyring(file);
  REQUIRE(keyring.reload().ok());
  REQUIRE(keyring.verify(kIdA, sig, kBody) == GithubSignature::kOk);
  write(file, "\n");
  const auto load = keyring.reload();
  REQUIRE(load.ok());
  CHECK(load->keys == 0);
  CHECK(keyring.verify(kIdA, sig, kBody) == GithubSignature::kUnknownKey);
  write(file, R"({"public_keys":[]})");
  CHECK(keyring.reload().ok());
  CHECK(keyring.key_count() == 0);
}

TEST_CASE("verification goes on while reloads swap the keys", "[github]") {
  testing::TempDir dir;
  const auto file = dir.path() / "keys.json";
  const Pkey a = generate("EC", "P-256");
  const Pkey b = generate("EC", "P-256");
  const std::string one = keys_json({{kIdA, public_pem(a.get())}});
  const std::string both = keys_json({{kIdA, public_pem(a.get())}, {kIdB, public_pem(b.get())}});
  write(file, one);
  GithubKeyring keyring(file);
  REQUIRE(keyring.reload().ok());
  const std::string sig = sign(a.get(), kBody);

  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (keyring.verify(kIdA, sig, kBody) != GithubSignature::kOk) {
          ++wrong;
        }
      }
    });
  }
  int failed_reloads = 0;
  for (int i = 0; i < 50; ++i) {
    write(file, i % 2 == 0 ? both : one);
    if (!keyring.reload().ok()) {
      ++failed_reloads;
    }
  }
  stop = true;
  for (auto& t : readers) {
    t.join();
  }
  CHECK(failed_reloads == 0);
  CHECK(wrong.load() == 0);
}

}  // namespace keyledger::api
