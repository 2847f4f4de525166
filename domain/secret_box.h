#pragma once
// Secrets the server must read back (the webhook secret, README, Webhooks) are kept sealed with
// XChaCha20-Poly1305 (libsodium AEAD) under a subkey derived from the pepper, in events and
// Kafka messages alike, and in plain text nowhere.

#include <string>
#include <string_view>

#include "domain/clock.h"
#include "domain/key_material.h"
#include "domain/status.h"
#include "keyledger/v1/events.pb.h"

namespace keyledger {

class SecretBox {
 public:
  // Derives the sealing key with crypto_kdf_derive_from_key(pepper, id 1, context "whsecret").
  explicit SecretBox(const Pepper& pepper);
  ~SecretBox();  // wipes the key
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;

  // `associated` binds the ciphertext to its owner (the agent id): a sealed secret copied to
  // another agent does not open.
  v1::SealedSecret seal(std::string_view plaintext, std::string_view associated, RandomSource& random) const;
  // Corruption when the ciphertext, nonce or associated data do not match.
  Result<std::string> open(const v1::SealedSecret& sealed, std::string_view associated) const;

 private:
  std::array<std::uint8_t, 32> key_{};
};

}  // namespace keyledger
