#pragma once
// Signing as GitHub's secret-scanning partner program does (POST /v1/leaks/github): P-256
// key pairs made by the test with OpenSSL, ECDSA-SHA256 signatures in base64 DER, and a keys
// file in the format of https://api.github.com/meta/public_keys/secret_scanning.

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace keyledger::testing {

struct PkeyFree {
  void operator()(EVP_PKEY* pkey) const { EVP_PKEY_free(pkey); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// A fresh key pair: "EC" with a curve ("P-256", "P-384"), or "ED25519".
inline Pkey generate(const char* type, const char* curve = nullptr) {
  Pkey pkey(curve != nullptr ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, curve)
                             : EVP_PKEY_Q_keygen(nullptr, nullptr, type));
  if (!pkey) {
    throw std::runtime_error("key generation failed");
  }
  return pkey;
}

inline std::string public_pem(EVP_PKEY* pkey) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), pkey) != 1) {
    throw std::runtime_error("PEM export failed");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

inline std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(len));
  return out;
}

// What GitHub sends in Github-Public-Key-Signature: base64 of the DER ECDSA-SHA256 signature.
inline std::string sign(EVP_PKEY* pkey, const std::string& body) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::size_t len = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(body.data());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, data, body.size()) != 1) {
    throw std::runtime_error("signing failed");
  }
  std::string der(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(der.data()), &len, data, body.size()) != 1) {
    throw std::runtime_error("signing failed");
  }
  der.resize(len);
  return base64(der);
}

struct Listed {
  std::string id;
  std::string pem;
  bool current = true;
};

// A keys file in the format of https://api.github.com/meta/public_keys/secret_scanning.
inline std::string keys_json(const std::vector<Listed>& keys) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& k : keys) {
    list.push_back({{"key_identifier", k.id}, {"key", k.pem}, {"is_current", k.current}});
  }
  return nlohmann::json{{"public_keys", list}}.dump();
}

}  // namespace keyledger::testing
