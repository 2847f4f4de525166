#include "domain/secret_box.h"

#include <sodium.h>

#include <catch2/catch.hpp>

#include "domain/domain_fixture.h"

namespace keyledger {
namespace {

using testing::test_pepper;

constexpr std::string_view kSecret = "whsec_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
constexpr std::string_view kAgent = "agt_000000000000000000000001";

TEST_CASE("a sealed secret opens with the same pepper and owner", "[domain][secret_box]") {
  SecretBox box(test_pepper());
  SeededRandom random(1);
  const v1::SealedSecret sealed = box.seal(kSecret, kAgent, random);
  CHECK(sealed.nonce().size() == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  CHECK(sealed.ciphertext().size() == kSecret.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  CHECK(sealed.ciphertext().find(kSecret) == std::string::npos);  // not stored in the clear

  auto opened = box.open(sealed, kAgent);
  REQUIRE(opened.ok());
  CHECK(*opened == kSecret);

  SECTION("another SecretBox from the same pepper opens it too (restart)") {
    SecretBox again(test_pepper());
    auto reopened = again.open(sealed, kAgent);
    REQUIRE(reopened.ok());
    CHECK(*reopened == kSecret);
  }
  SECTION("the empty secret round-trips") {
    auto empty = box.open(box.seal("", kAgent, random), kAgent);
    REQUIRE(empty.ok());
    CHECK(empty->empty());
  }
}

TEST_CASE("sealing uses a fresh nonce each time", "[domain][secret_box]") {
  SecretBox box(test_pepper());
  SeededRandom random(2);
  const auto a = box.seal(kSecret, kAgent, random);
  const auto b = box.seal(kSecret, kAgent, random);
  CHECK(a.nonce() != b.nonce());
  CHECK(a.ciphertext() != b.ciphertext());
}

TEST_CASE("the sealing key is derived with crypto_kdf from the pepper", "[domain][secret_box]") {
  // Independent derivation: a ciphertext made under crypto_kdf_derive_from_key(pepper, 1,
  // "whsecret") must open.
  const Pepper pepper = test_pepper();
  std::array<unsigned char, 32> key{};
  REQUIRE(crypto_kdf_derive_from_key(key.data(), key.size(), 1, "whsecret", pepper.bytes().data()) == 0);
  std::array<unsigned char, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES> nonce{};
  nonce.fill(9);
  std::string ciphertext(kSecret.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  unsigned long long len = 0;
  REQUIRE(crypto_aead_xchacha20poly1305_ietf_encrypt(
              reinterpret_cast<unsigned char*>(ciphertext.data()), &len,
              reinterpret_cast<const unsigned char*>(kSecret.data()), kSecret.size(),
              reinterpret_cast<const unsigned char*>(kAgent.data()), kAgent.size(), nullptr, nonce.data(),
              key.data()) == 0);
  v1::SealedSecret sealed;
  sealed.set_nonce(nonce.data(), nonce.size());
  sealed.set_ciphertext(ciphertext);

  auto opened = SecretBox(pepper).open(sealed, kAgent);
  REQUIRE(opened.ok());
  CHECK(*opened == kSecret);
}

TEST_CASE("opening fails on tampering, another owner or another pepper", "[domain][secret_box]") {
  SecretBox box(test_pepper());
  SeededRandom random(3);
  v1::SealedSecret sealed = box.seal(kSecret, kAgent, random);

  SECTION("another agent id") {
    auto r = box.open(sealed, "agt_000000000000000000000002");
    CHECK_FALSE(r.ok());
    CHECK(r.status().code() == Status::Code::kCorruption);
  }
  SECTION("a flipped ciphertext bit") {
    (*sealed.mutable_ciphertext())[0] ^= 0x01;
    CHECK(box.open(sealed, kAgent).status().code() == Status::Code::kCorruption);
  }
  SECTION("a flipped tag bit") {
    sealed.mutable_ciphertext()->back() ^= 0x80;
    CHECK_FALSE(box.open(sealed, kAgent).ok());
  }
  SECTION("a changed nonce") {
    (*sealed.mutable_nonce())[5] ^= 0x01;
    CHECK_FALSE(box.open(sealed, kAgent).ok());
  }
  SECTION("a nonce of the wrong size") {
    sealed.mutable_nonce()->pop_back();
    CHECK(box.open(sealed, kAgent).status().code() == Status::Code::kCorruption);
  }
  SECTION("a truncated ciphertext") {
    sealed.set_ciphertext(sealed.ciphertext().substr(0, 10));
    CHECK(box.open(sealed, kAgent).status().code() == Status::Code::kCorruption);
  }
  SECTION("an empty record") { CHECK_FALSE(box.open(v1::SealedSecret{}, kAgent).ok()); }
  SECTION("another pepper") {
    SecretBox other(test_pepper(0x77));
    CHECK(other.open(sealed, kAgent).status().code() == Status::Code::kCorruption);
  }
  SECTION("the untouched record still opens") { CHECK(box.open(sealed, kAgent).ok()); }
}

}  // namespace
}  // namespace keyledger
