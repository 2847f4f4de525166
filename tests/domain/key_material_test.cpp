#include "domain/key_material.h"

#include <sodium.h>

#include <catch2/catch.hpp>
#include <regex>
#include <set>

#include "domain/domain_fixture.h"

namespace keyledger {
namespace {

using testing::test_pepper;

TEST_CASE("generated API keys match ^cg_[0-9a-f]{32}$ and differ", "[domain][key_material]") {
  SystemRandom random;
  const std::regex format("^cg_[0-9a-f]{32}$");
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string key = generate_api_key(random);
    CHECK(std::regex_match(key, format));
    CHECK(is_well_formed_api_key(key));
    seen.insert(key);
  }
  CHECK(seen.size() == 100);
}

TEST_CASE("seeded randomness makes keys repeatable", "[domain][key_material]") {
  SeededRandom a(99);
  SeededRandom b(99);
  SeededRandom c(100);
  const std::string first = generate_api_key(a);
  CHECK(first == generate_api_key(b));
  CHECK(first != generate_api_key(c));
  CHECK(first != generate_api_key(a));  // each draw moves on
}

TEST_CASE("is_well_formed_api_key is strict", "[domain][key_material]") {
  CHECK(is_well_formed_api_key("cg_a1b2c3d4e5f6789012345678abcdef90"));
  CHECK_FALSE(is_well_formed_api_key(""));
  CHECK_FALSE(is_well_formed_api_key("cg_"));
  CHECK_FALSE(is_well_formed_api_key("cg_A1B2C3D4E5F6789012345678ABCDEF90"));   // uppercase
  CHECK_FALSE(is_well_formed_api_key("cg_a1b2c3d4e5f6789012345678abcdef9A"));   // one uppercase
  CHECK_FALSE(is_well_formed_api_key("cg_a1b2c3d4e5f6789012345678abcdef9"));    // 31 hex
  CHECK_FALSE(is_well_formed_api_key("cg_a1b2c3d4e5f6789012345678abcdef901"));  // 33 hex
  CHECK_FALSE(is_well_formed_api_key("CG_a1b2c3d4e5f6789012345678abcdef90"));   // prefix case
  CHECK_FALSE(is_well_formed_api_key("cx_a1b2c3d4e5f6789012345678abcdef90"));   // wrong prefix
  CHECK_FALSE(is_well_formed_api_key("a1b2c3d4e5f6789012345678abcdef90ab1"));   // no prefix
  CHECK_FALSE(is_well_formed_api_key("cg_g1b2c3d4e5f6789012345678abcdef90"));   // non-hex g
  CHECK_FALSE(is_well_formed_api_key("cg_a1b2c3d4e5f6789012345678abcdef9 "));   // space
  CHECK_FALSE(is_well_formed_api_key(" cg_a1b2c3d4e5f6789012345678abcdef90"));  // leading space
  CHECK_FALSE(is_well_formed_api_key(std::string_view("cg_a1b2c3d4e5f6789012345678abcdef9\0", 35)));
  CHECK_FALSE(is_well_formed_api_key("kls_a1b2c3d4e5f6789012345678abcdef90"));
}

TEST_CASE("api_key_hint shows the first and last four hex characters", "[domain][key_material]") {
  CHECK(api_key_hint("cg_a1b2c3d4e5f6789012345678abcdef90") ==
        "cg_a1b2\xE2\x80\xA6"
        "ef90");
  SeededRandom random(1);
  const std::string key = generate_api_key(random);
  const std::string hint = api_key_hint(key);
  CHECK(hint == "cg_" + key.substr(3, 4) + "\xE2\x80\xA6" + key.substr(key.size() - 4));
  CHECK(hint.find(key.substr(7, 24)) == std::string::npos);  // the middle is never shown
}

TEST_CASE("service tokens are kls_ plus 43 base64url characters", "[domain][key_material]") {
  SystemRandom random;
  const std::regex format("^kls_[A-Za-z0-9_-]{43}$");
  for (int i = 0; i < 50; ++i) {
    const std::string token = generate_service_token(random);
    CHECK(std::regex_match(token, format));
    CHECK(is_well_formed_service_token(token));
  }
}

TEST_CASE("is_well_formed_service_token checks prefix, length and alphabet", "[domain][key_material]") {
  const std::string body(43, 'A');
  CHECK(is_well_formed_service_token("kls_" + body));
  CHECK(is_well_formed_service_token("kls_" + body + "-_9z"));         // longer is fine
  CHECK_FALSE(is_well_formed_service_token("kls_" + body.substr(1)));  // 42
  CHECK_FALSE(is_well_formed_service_token("klz_" + body));
  CHECK_FALSE(is_well_formed_service_token("KLS_" + body));
  CHECK_FALSE(is_well_formed_service_token("kls_" + body.substr(1) + "+"));
  CHECK_FALSE(is_well_formed_service_token("kls_" + body.substr(1) + "/"));
  CHECK_FALSE(is_well_formed_service_token("kls_" + body.substr(1) + "="));
  CHECK_FALSE(is_well_formed_service_token("cg_a1b2c3d4e5f6789012345678abcdef90"));
}

TEST_CASE("service_token_hint shows four characters either side", "[domain][key_material]") {
  const std::string token = "kls_AbCd" + std::string(35, 'm') + "wXyZ";
  CHECK(service_token_hint(token) == "kls_AbCd\xE2\x80\xA6wXyZ");
}

TEST_CASE("webhook secrets are whsec_ plus 43 base64url characters", "[domain][key_material]") {
  SeededRandom random(3);
  const std::string secret = generate_webhook_secret(random);
  CHECK(std::regex_match(secret, std::regex("^whsec_[A-Za-z0-9_-]{43}$")));
  CHECK(secret != generate_webhook_secret(random));
}

TEST_CASE("KeyHasher computes keyed BLAKE2b-256 with the pepper", "[domain][key_material]") {
  const Pepper pepper = test_pepper();
  const KeyHasher hasher(pepper);
  const std::string key = "cg_a1b2c3d4e5f6789012345678abcdef90";

  Digest expected{};
  REQUIRE(crypto_generichash(expected.data(), expected.size(),
                             reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                             pepper.bytes().data(), pepper.bytes().size()) == 0);
  const Digest digest = hasher.digest(key);
  CHECK(digest == expected);
  CHECK(digest_equal(digest, expected));

  SECTION("an unkeyed hash is different") {
    Digest unkeyed{};
    REQUIRE(crypto_generichash(unkeyed.data(), unkeyed.size(),
                               reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr,
                               0) == 0);
    CHECK_FALSE(digest_equal(digest, unkeyed));
  }
  SECTION("another pepper gives another digest") {
    CHECK_FALSE(digest_equal(digest, KeyHasher(test_pepper(0x43)).digest(key)));
  }
  SECTION("another key gives another digest") {
    CHECK_FALSE(digest_equal(digest, hasher.digest("cg_a1b2c3d4e5f6789012345678abcdef91")));
  }
  SECTION("hashing is deterministic") { CHECK(digest_equal(digest, KeyHasher(test_pepper()).digest(key))); }
}

TEST_CASE("digest_equal compares every byte", "[domain][key_material]") {
  Digest a{};
  Digest b{};
  CHECK(digest_equal(a, b));
  b[31] = 1;
  CHECK_FALSE(digest_equal(a, b));
  b[31] = 0;
  b[0] = 0x80;
  CHECK_FALSE(digest_equal(a, b));
}

TEST_CASE("to_hex and sha256_hex use lowercase hex", "[domain][key_material]") {
  CHECK(to_hex(std::string_view("\x00\x01\xab\xff", 4)) == "0001abff");
  CHECK(to_hex(std::string_view()) == "");
  Digest d{};
  d[0] = 0xde;
  d[31] = 0x0f;
  CHECK(to_hex(d) == "de" + std::string(60, '0') + "0f");
  // FIPS 180-2 test vectors.
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("crypto_init is idempotent", "[domain][key_material]") {
  CHECK(crypto_init());
  CHECK(crypto_init());
}

}  // namespace
}  // namespace keyledger
