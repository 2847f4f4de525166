#include "domain/secret_box.h"

#include <sodium.h>

#include <array>
#include <cstdlib>

namespace keyledger {

namespace {

constexpr std::uint64_t kWebhookSecretSubkeyId = 1;
constexpr char kWebhookSecretContext[crypto_kdf_CONTEXTBYTES + 1] = "whsecret";
constexpr std::size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32);
static_assert(crypto_kdf_KEYBYTES == Pepper::kSize);

const unsigned char* bytes_of(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

}  // namespace

SecretBox::SecretBox(const Pepper& pepper) {
  if (crypto_kdf_derive_from_key(key_.data(), key_.size(), kWebhookSecretSubkeyId, kWebhookSecretContext,
                                 pepper.bytes().data()) != 0) {
    std::abort();  // cannot fail with these fixed sizes; never seal under an all-zero key
  }
}

SecretBox::~SecretBox() { sodium_memzero(key_.data(), key_.size()); }

v1::SealedSecret SecretBox::seal(std::string_view plaintext, std::string_view associated,
                                 RandomSource& random) const {
  std::array<std::uint8_t, kNonceBytes> nonce{};
  random.fill(nonce);
  std::string ciphertext(plaintext.size() + kTagBytes, '\0');
  unsigned long long ciphertext_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_encrypt(reinterpret_cast<unsigned char*>(ciphertext.data()),
                                                 &ciphertext_len, bytes_of(plaintext), plaintext.size(),
                                                 bytes_of(associated), associated.size(), nullptr,
                                                 nonce.data(), key_.data()) != 0 ||
      ciphertext_len != ciphertext.size()) {
    std::abort();  // cannot fail for messages of this size; never store a secret unsealed
  }
  v1::SealedSecret sealed;
  sealed.set_nonce(nonce.data(), nonce.size());
  sealed.set_ciphertext(std::move(ciphertext));
  return sealed;
}

Result<std::string> SecretBox::open(const v1::SealedSecret& sealed, std::string_view associated) const {
  if (sealed.nonce().size() != kNonceBytes) {
    return Status::Corruption("sealed secret has a nonce of the wrong size");
  }
  if (sealed.ciphertext().size() < kTagBytes) {
    return Status::Corruption("sealed secret is too short");
  }
  std::string plaintext(sealed.ciphertext().size() - kTagBytes, '\0');
  unsigned long long plaintext_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(plaintext.data()), &plaintext_len, nullptr,
          bytes_of(sealed.ciphertext()), sealed.ciphertext().size(), bytes_of(associated), associated.size(),
          bytes_of(sealed.nonce()), key_.data()) != 0) {
    sodium_memzero(plaintext.data(), plaintext.size());
    return Status::Corruption("sealed secret does not open: wrong owner, pepper or tampered data");
  }
  plaintext.resize(static_cast<std::size_t>(plaintext_len));
  return plaintext;
}

}  // namespace keyledger
