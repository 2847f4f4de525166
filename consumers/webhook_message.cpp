#include "consumers/webhook_message.h"

#include <sodium.h>

#include <array>
#include <nlohmann/json.hpp>

#include "domain/event_json.h"
#include "domain/ids.h"

namespace keyledger::consumers {

using Json = nlohmann::json;

std::string webhook_body(const v1::Event& event) {
  if (!is_key_event(event)) {
    return "";
  }
  const Json body = {
      {"id", event.event_id()},
      {"type", std::string(event_type_name(event.payload_case()))},
      {"created_at", format_rfc3339(from_timestamp(event.occurred_at()))},
      {"data", event_data_json(event)},
  };
  return body.dump();
}

std::string webhook_signature(std::string_view secret, std::int64_t unix_seconds, std::string_view body) {
  const std::string t = std::to_string(unix_seconds);
  crypto_auth_hmacsha256_state state;
  std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
  const auto* key = reinterpret_cast<const unsigned char*>(secret.data());
  const auto* msg = reinterpret_cast<const unsigned char*>(body.data());
  if (crypto_auth_hmacsha256_init(&state, key, secret.size()) != 0 ||
      crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(t.data()), t.size()) !=
          0 ||
      crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>("."), 1) != 0 ||
      crypto_auth_hmacsha256_update(&state, msg, body.size()) != 0 ||
      crypto_auth_hmacsha256_final(&state, mac.data()) != 0) {
    sodium_memzero(&state, sizeof state);
    return "";  // libsodium's HMAC does not fail in practice; an empty header fails verification
  }
  sodium_memzero(&state, sizeof state);
  std::array<char, crypto_auth_hmacsha256_BYTES * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), mac.data(), mac.size());
  return "t=" + t + ",v1=" + std::string(hex.data());
}

}  // namespace keyledger::consumers
