#include "domain/ids.h"

#include <sodium.h>

#include <array>

#include "domain/key_material.h"

namespace keyledger {

namespace {

constexpr std::size_t kIdRandomBytes = 12;
constexpr std::size_t kIdHexChars = 2 * kIdRandomBytes;

std::string new_id(std::string_view prefix, RandomSource& random) {
  std::array<std::uint8_t, kIdRandomBytes> bytes{};
  random.fill(bytes);
  return std::string(prefix) +
         to_hex(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

// `bytes` as a lowercase 8-4-4-4-12 UUID with the given version and the RFC 4122 variant.
std::string format_uuid(std::array<std::uint8_t, 16> bytes, std::uint8_t version) {
  bytes[6] = static_cast<std::uint8_t>((bytes[6] & 0x0F) | (version << 4));
  bytes[8] = static_cast<std::uint8_t>((bytes[8] & 0x3F) | 0x80);
  const std::string hex = to_hex(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  std::string out;
  out.reserve(36);
  out.append(hex, 0, 8).append("-").append(hex, 8, 4).append("-").append(hex, 12, 4).append("-");
  out.append(hex, 16, 4).append("-").append(hex, 20, 12);
  return out;
}

}  // namespace

std::string new_agent_id(RandomSource& random) { return new_id(kAgentIdPrefix, random); }
std::string new_key_id(RandomSource& random) { return new_id(kKeyIdPrefix, random); }
std::string new_token_id(RandomSource& random) { return new_id(kTokenIdPrefix, random); }

std::string new_event_id(RandomSource& random) {
  std::array<std::uint8_t, 16> bytes{};
  random.fill(bytes);
  return format_uuid(bytes, 4);
}

std::string derived_event_id(std::string_view name) {
  std::array<std::uint8_t, 16> bytes{};
  // crypto_generichash (BLAKE2b) with a 16-byte output and no key cannot fail.
  if (crypto_generichash(bytes.data(), bytes.size(), reinterpret_cast<const unsigned char*>(name.data()),
                         name.size(), nullptr, 0) != 0) {
    bytes.fill(0);
  }
  return format_uuid(bytes, 8);
}

bool is_well_formed_id(std::string_view id, std::string_view prefix) {
  if (!id.starts_with(prefix) || id.size() != prefix.size() + kIdHexChars) {
    return false;
  }
  for (char c : id.substr(prefix.size())) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

}  // namespace keyledger
