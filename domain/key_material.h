#pragma once
// Key material (api/openapi.yaml, README "Design decisions"): agent keys `cg_` + 32 hex,
// service tokens `kls_` + 43 URL-safe characters, their hints, and their keyed BLAKE2b-256 digests.
// Secrets live only in std::string values handed back to the caller once; nothing here logs.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "domain/clock.h"
#include "domain/status.h"

namespace keyledger {

// Initialises libsodium; call once before anything else here (idempotent, thread-safe).
// Returns false if libsodium cannot be initialised (the process must not go on).
bool crypto_init();

inline constexpr std::string_view kApiKeyPrefix = "cg_";
inline constexpr std::size_t kApiKeyHexChars = 32;  // 16 random bytes
inline constexpr std::string_view kServiceTokenPrefix = "kls_";
inline constexpr std::size_t kServiceTokenBodyChars = 43;  // 32 random bytes, base64url, no padding

using Digest = std::array<std::uint8_t, 32>;

// A fresh agent key, `cg_` + 32 lowercase hex characters from `random`.
std::string generate_api_key(RandomSource& random);
// True iff `key` matches ^cg_[0-9a-f]{32}$ exactly.
bool is_well_formed_api_key(std::string_view key);
// `cg_a1b2…ef90`: first and last 4 hex characters. Precondition: is_well_formed_api_key(key).
std::string api_key_hint(std::string_view key);

// A fresh service token, `kls_` + 43 base64url characters (32 random bytes).
std::string generate_service_token(RandomSource& random);
// True iff `token` is `kls_` followed by 43 or more URL-safe characters [A-Za-z0-9_-].
bool is_well_formed_service_token(std::string_view token);
// `kls_AbCd…wXyZ`: first and last 4 characters of the body.
std::string service_token_hint(std::string_view token);

// A fresh webhook signing secret, `whsec_` + 43 base64url characters.
std::string generate_webhook_secret(RandomSource& random);

// Constant-time comparison of two digests (crypto_verify_32).
bool digest_equal(const Digest& a, const Digest& b);

// Lowercase hex of a digest or any byte string (libsodium's sodium_bin2hex).
std::string to_hex(std::string_view bytes);
std::string to_hex(const Digest& digest);

// Hex SHA-256 of `data`, as GitHub's secret-scanning format names a token (`token_hash`).
std::string sha256_hex(std::string_view data);

// The 32-byte server secret that keys every digest. Kept outside the database; never logged.
class Pepper {
 public:
  static constexpr std::size_t kSize = 32;
  explicit Pepper(const std::array<std::uint8_t, kSize>& bytes) : bytes_(bytes) {}
  const std::array<std::uint8_t, kSize>& bytes() const { return bytes_; }

 private:
  std::array<std::uint8_t, kSize> bytes_;
};

// Keyed BLAKE2b-256 (crypto_generichash keyed with the pepper): the stored form of keys and
// service tokens. Thread-safe (no mutable state).
class KeyHasher {
 public:
  explicit KeyHasher(const Pepper& pepper) : pepper_(pepper) {}
  Digest digest(std::string_view secret) const;

 private:
  Pepper pepper_;
};

}  // namespace keyledger
