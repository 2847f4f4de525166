#include "api/github_keys.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <sodium.h>

#include <array>
#include <fstream>
#include <iterator>
#include <map>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

namespace keyledger::api {

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* pkey) const { EVP_PKEY_free(pkey); }
};
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The whole file, or why not. A missing file is NotFound so the caller can tell it apart.
Result<std::string> read_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec == std::errc::no_such_file_or_directory) {
    return Status::NotFound("github_keys_not_found", "no such file");
  }
  if (ec) {
    return Status::IoError(ec.message());
  }
  if (size > kMaxGithubKeysFileBytes) {
    return Status::InvalidArgument("larger than " + std::to_string(kMaxGithubKeysFileBytes) + " bytes");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::IoError("cannot open for reading");
  }
  std::string text;
  text.resize(kMaxGithubKeysFileBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) {
    return Status::IoError("read failed");
  }
  text.resize(static_cast<std::size_t>(in.gcount()));
  // Grown between the size check and the read.
  if (text.size() > kMaxGithubKeysFileBytes) {
    return Status::InvalidArgument("larger than " + std::to_string(kMaxGithubKeysFileBytes) + " bytes");
  }
  return text;
}

// The PEM `SubjectPublicKeyInfo` ("-----BEGIN PUBLIC KEY-----") in `pem`, or null.
PkeyPtr parse_public_key(const std::string& pem) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr pkey;
  if (bio) {
    pkey.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  }
  ERR_clear_error();  // a failure leaves entries on this thread's queue
  return pkey;
}

// Empty if `pkey` is an EC key on P-256, else what it is instead ("RSA", "EC secp384r1").
std::string not_p256(EVP_PKEY* pkey) {
  const char* type = EVP_PKEY_get0_type_name(pkey);
  std::string what = type != nullptr ? type : "unknown type";
  if (EVP_PKEY_is_a(pkey, "EC") != 1) {
    return what;
  }
  std::array<char, 80> group{};
  std::size_t len = 0;
  if (EVP_PKEY_get_group_name(pkey, group.data(), group.size(), &len) != 1) {
    ERR_clear_error();
    return what + " without a named curve";
  }
  const std::string_view name(group.data(), len);
  if (name == SN_X9_62_prime256v1) {
    return {};
  }
  return what + " " + std::string(name);
}

}  // namespace

struct GithubKeyring::KeySet {
  std::map<std::string, PkeyPtr, std::less<>> keys;
};

std::string_view github_signature_name(GithubSignature result) {
  switch (result) {
    case GithubSignature::kOk:
      return "ok";
    case GithubSignature::kMissing:
      return "missing";
    case GithubSignature::kUnknownKey:
      return "unknown_key";
    case GithubSignature::kBadSignature:
      return "bad_signature";
  }
  return "unknown";
}

GithubKeyring::GithubKeyring(std::filesystem::path path)
    : path_(std::move(path)), keys_(std::make_shared<const KeySet>()) {}

GithubKeyring::~GithubKeyring() = default;

Result<std::shared_ptr<const GithubKeyring::KeySet>> GithubKeyring::read_key_set(
    const std::filesystem::path& path, GithubKeysLoad& load) {
  auto set = std::make_shared<KeySet>();
  if (path.empty()) {
    return std::shared_ptr<const KeySet>(std::move(set));
  }
  auto text = read_file(path);
  if (!text.ok()) {
    return text.status();
  }
  if (text->find_first_not_of(" \t\r\n") == std::string::npos) {
    return std::shared_ptr<const KeySet>(std::move(set));
  }
  const auto doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::InvalidArgument("not JSON");
  }
  if (!doc.is_object() || !doc.contains("public_keys") || !doc["public_keys"].is_array()) {
    return Status::InvalidArgument("no \"public_keys\" array");
  }
  const auto& entries = doc["public_keys"];
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::string where = "public_keys[" + std::to_string(i) + "]";
    const auto& entry = entries[i];
    if (!entry.is_object()) {
      return Status::InvalidArgument(where + ": not an object");
    }
    const auto id = entry.find("key_identifier");
    if (id == entry.end() || !id->is_string() || id->get_ref<const std::string&>().empty()) {
      return Status::InvalidArgument(where + ".key_identifier: must be a non-empty string");
    }
    const auto pem = entry.find("key");
    if (pem == entry.end() || !pem->is_string() || pem->get_ref<const std::string&>().empty()) {
      return Status::InvalidArgument(where + ".key: must be a non-empty string");
    }
    const std::string& key_id = id->get_ref<const std::string&>();
    if (set->keys.contains(key_id)) {
      return Status::InvalidArgument(where + ".key_identifier: " + key_id + " is listed twice");
    }
    PkeyPtr pkey = parse_public_key(pem->get_ref<const std::string&>());
    if (!pkey) {
      return Status::InvalidArgument(where + ".key: not a PEM public key");
    }
    if (const std::string other = not_p256(pkey.get()); !other.empty()) {
      load.skipped.push_back(where + " (" + key_id + "): " + other + ", not EC P-256");
      continue;
    }
    set->keys.emplace(key_id, std::move(pkey));
  }
  return std::shared_ptr<const KeySet>(std::move(set));
}

Result<GithubKeysLoad> GithubKeyring::reload() {
  std::lock_guard reload_lock(reload_mutex_);
  GithubKeysLoad load;
  auto set = read_key_set(path_, load);
  if (!set.ok()) {
    return set.status().Annotate("github keys file " + path_.string());
  }
  load.keys = (*set)->keys.size();
  std::shared_ptr<const KeySet> replaced = std::move(set).value();
  {
    std::unique_lock lock(keys_mutex_);
    keys_.swap(replaced);
  }
  return load;  // the old set is freed here, outside the lock
}

std::shared_ptr<const GithubKeyring::KeySet> GithubKeyring::current() const {
  std::shared_lock lock(keys_mutex_);
  return keys_;
}

std::size_t GithubKeyring::key_count() const { return current()->keys.size(); }

GithubSignature GithubKeyring::verify(std::string_view key_identifier, std::string_view signature_base64,
                                      std::string_view body) const {
  if (key_identifier.empty() || signature_base64.empty()) {
    return GithubSignature::kMissing;
  }
  const auto keys = current();  // holds this set alive while a reload swaps in another
  const auto key = keys->keys.find(key_identifier);
  if (key == keys->keys.end()) {
    return GithubSignature::kUnknownKey;
  }
  if (signature_base64.size() > kMaxGithubSignatureChars) {
    return GithubSignature::kBadSignature;
  }
  std::array<unsigned char, kMaxGithubSignatureChars> der{};
  std::size_t der_len = 0;
  if (sodium_base642bin(der.data(), der.size(), signature_base64.data(), signature_base64.size(), nullptr,
                        &der_len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return GithubSignature::kBadSignature;
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  // EVP_DigestVerify: 1 verified, 0 wrong signature, negative for a malformed one.
  const bool ok = ctx &&
                  EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key->second.get()) == 1 &&
                  EVP_DigestVerify(ctx.get(), der.data(), der_len,
                                   reinterpret_cast<const unsigned char*>(body.data()), body.size()) == 1;
  ERR_clear_error();
  return ok ? GithubSignature::kOk : GithubSignature::kBadSignature;
}

}  // namespace keyledger::api
