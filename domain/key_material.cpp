#include "domain/key_material.h"

#include <sodium.h>

#include <cstdlib>
#include <tuple>

namespace keyledger {

namespace {

constexpr std::size_t kApiKeyRandomBytes = kApiKeyHexChars / 2;
constexpr std::size_t kTokenRandomBytes = 32;
constexpr std::string_view kWebhookSecretPrefix = "whsec_";
constexpr std::string_view kHintEllipsis = "\xE2\x80\xA6";  // U+2026 HORIZONTAL ELLIPSIS
constexpr std::size_t kHintChars = 4;

static_assert(sizeof(Digest) == crypto_generichash_BYTES);
static_assert(Pepper::kSize == crypto_generichash_KEYBYTES);
static_assert(sodium_base64_ENCODED_LEN(kTokenRandomBytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
              kServiceTokenBodyChars + 1);

// libsodium calls below cannot fail with these fixed, checked sizes. If one ever does, the
// process must stop: a zeroed or partial secret would be indistinguishable from a real one.
[[noreturn]] void crypto_failure() { std::abort(); }

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool is_url_safe(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

std::string base64url(const std::uint8_t* bytes, std::size_t size) {
  std::string out(sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  if (sodium_bin2base64(out.data(), out.size(), bytes, size, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
      nullptr) {
    crypto_failure();
  }
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::string hex(const std::uint8_t* bytes, std::size_t size) {
  std::string out(size * 2 + 1, '\0');
  if (sodium_bin2hex(out.data(), out.size(), bytes, size) == nullptr) {
    crypto_failure();
  }
  out.resize(size * 2);
  return out;
}

// `prefix` + random bytes encoded by `encode`; the raw bytes are wiped afterwards.
template <std::size_t N, typename Encode>
std::string random_secret(RandomSource& random, std::string_view prefix, Encode encode) {
  std::array<std::uint8_t, N> bytes{};
  random.fill(bytes);
  std::string out(prefix);
  out += encode(bytes.data(), bytes.size());
  sodium_memzero(bytes.data(), bytes.size());
  return out;
}

std::string hint(std::string_view prefix, std::string_view body) {
  if (body.size() < 2 * kHintChars) {
    return std::string(prefix) + std::string(kHintEllipsis);
  }
  std::string out(prefix);
  out += body.substr(0, kHintChars);
  out += kHintEllipsis;
  out += body.substr(body.size() - kHintChars);
  return out;
}

}  // namespace

bool crypto_init() { return sodium_init() >= 0; }

std::string generate_api_key(RandomSource& random) {
  return random_secret<kApiKeyRandomBytes>(random, kApiKeyPrefix, hex);
}

bool is_well_formed_api_key(std::string_view key) {
  if (key.size() != kApiKeyPrefix.size() + kApiKeyHexChars || !key.starts_with(kApiKeyPrefix)) {
    return false;
  }
  for (char c : key.substr(kApiKeyPrefix.size())) {
    if (!is_lower_hex(c)) {
      return false;
    }
  }
  return true;
}

std::string api_key_hint(std::string_view key) {
  const std::string_view body = key.starts_with(kApiKeyPrefix) ? key.substr(kApiKeyPrefix.size()) : key;
  return hint(kApiKeyPrefix, body);
}

std::string generate_service_token(RandomSource& random) {
  return random_secret<kTokenRandomBytes>(random, kServiceTokenPrefix, base64url);
}

bool is_well_formed_service_token(std::string_view token) {
  if (!token.starts_with(kServiceTokenPrefix) ||
      token.size() < kServiceTokenPrefix.size() + kServiceTokenBodyChars) {
    return false;
  }
  for (char c : token.substr(kServiceTokenPrefix.size())) {
    if (!is_url_safe(c)) {
      return false;
    }
  }
  return true;
}

std::string service_token_hint(std::string_view token) {
  const std::string_view body =
      token.starts_with(kServiceTokenPrefix) ? token.substr(kServiceTokenPrefix.size()) : token;
  return hint(kServiceTokenPrefix, body);
}

std::string generate_webhook_secret(RandomSource& random) {
  return random_secret<kTokenRandomBytes>(random, kWebhookSecretPrefix, base64url);
}

bool digest_equal(const Digest& a, const Digest& b) {
  static_assert(std::tuple_size_v<Digest> == crypto_verify_32_BYTES);
  return crypto_verify_32(a.data(), b.data()) == 0;
}

std::string to_hex(std::string_view bytes) {
  return hex(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

std::string to_hex(const Digest& digest) { return hex(digest.data(), digest.size()); }

std::string sha256_hex(std::string_view data) {
  std::array<std::uint8_t, crypto_hash_sha256_BYTES> out{};
  if (crypto_hash_sha256(out.data(), reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 0) {
    crypto_failure();
  }
  return hex(out.data(), out.size());
}

Digest KeyHasher::digest(std::string_view secret) const {
  Digest out{};
  if (crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(secret.data()),
                         secret.size(), pepper_.bytes().data(), pepper_.bytes().size()) != 0) {
    crypto_failure();
  }
  return out;
}

}  // namespace keyledger
