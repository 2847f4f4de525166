#include "api/request_id.h"

#include <sodium.h>

#include <array>
#include <cstdint>

#include "domain/key_material.h"

namespace keyledger::api {

bool is_sane_request_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdLength) {
    return false;
  }
  // Echoed in every log line and response: a value shaped like a key or a service token (a
  // client that put its credential in the wrong header) is replaced, never repeated.
  if (id.starts_with(kApiKeyPrefix) || id.starts_with(kServiceTokenPrefix)) {
    return false;
  }
  for (const char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

// A random per-thread prefix plus a counter: unique and unguessable enough for tracing,
// without a getrandom() system call on every request.
void new_request_id(std::string& out) {
  struct ThreadIds {
    std::array<unsigned char, kGeneratedRequestIdBytes> bytes{};
    std::uint64_t next = 0;
    ThreadIds() { randombytes_buf(bytes.data(), bytes.size()); }
  };
  thread_local ThreadIds ids;
  std::array<unsigned char, kGeneratedRequestIdBytes> bytes = ids.bytes;
  std::uint64_t n = ids.next++;
  for (std::size_t i = 0; i < sizeof n && i < bytes.size(); ++i) {
    bytes[bytes.size() - 1 - i] ^= static_cast<unsigned char>(n >> (8 * i));
  }
  std::array<char, kGeneratedRequestIdBytes * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), bytes.data(), bytes.size());
  out.assign(hex.data(), kGeneratedRequestIdBytes * 2);
}

void request_id_for(const http::Headers& headers, std::string& out) {
  const auto id = headers.get("x-request-id");
  if (id && is_sane_request_id(*id)) {
    out.assign(*id);
    return;
  }
  new_request_id(out);
}

}  // namespace keyledger::api
