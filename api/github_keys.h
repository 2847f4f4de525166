#pragma once
// GitHub's secret-scanning partner signatures (api/openapi.yaml, `POST /v1/leaks/github`): GitHub
// signs the raw request body with ECDSA P-256 / SHA-256, names its key in
// `Github-Public-Key-Identifier` and sends the DER signature, base64, in
// `Github-Public-Key-Signature`. Its public keys come from a file in the format of
// https://api.github.com/meta/public_keys/secret_scanning (`--github-keys-file`):
//
//   {"public_keys": [{"key_identifier": "90a4…", "key": "-----BEGIN PUBLIC KEY-----\n…",
//                     "is_current": true}, …]}
//
// Every listed P-256 key verifies, `is_current: false` ones too: GitHub keeps a key it is
// rotating away from in the list while signatures made with it may still arrive, and retires it
// by removing it. A key id missing from the file (never listed, or removed) is unknown.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "domain/status.h"

namespace keyledger::api {

// The request headers GitHub sends (HTTP header names are case-insensitive).
inline constexpr std::string_view kGithubKeyIdentifierHeader = "Github-Public-Key-Identifier";
inline constexpr std::string_view kGithubKeySignatureHeader = "Github-Public-Key-Signature";

// Larger keys files are refused: GitHub's is about 1 KiB per key.
inline constexpr std::size_t kMaxGithubKeysFileBytes = 1 << 20;
// Longer signature headers are bad without decoding: a DER P-256 signature is at most 72 bytes.
inline constexpr std::size_t kMaxGithubSignatureChars = 256;

enum class GithubSignature {
  kOk,            // signed by a listed key over exactly these bytes
  kMissing,       // a header absent or empty
  kUnknownKey,    // the key id is not in the file (or there are no keys at all)
  kBadSignature,  // not base64, not a DER ECDSA signature, or not over these bytes by that key
};

// "ok", "missing", "unknown_key", "bad_signature": for logs and metrics labels.
std::string_view github_signature_name(GithubSignature result);

// What a successful load took in.
struct GithubKeysLoad {
  std::size_t keys = 0;              // keys now verifying
  std::vector<std::string> skipped;  // one line per listed key that is not P-256, saying which and why
};

// The keys GitHub signs with, reloadable while requests are verified. Thread-safe: verify() may
// run on any number of threads while reload() swaps in a new key set; a verify() sees either
// the old set or the new one, whole.
class GithubKeyring {
 public:
  // Holds no keys until reload() succeeds. An empty `path` (no --github-keys-file) means
  // never any keys: reload() then succeeds with none, and every request gets kUnknownKey.
  explicit GithubKeyring(std::filesystem::path path);
  ~GithubKeyring();
  GithubKeyring(const GithubKeyring&) = delete;
  GithubKeyring& operator=(const GithubKeyring&) = delete;

  // (Re-)reads the file: call once at startup and on SIGHUP. On success the file's keys replace
  // the previous ones (keys removed from the file stop verifying) and the result says how many
  // keys verify and which entries were skipped: a well-formed public key that is not EC P-256
  // (another curve, RSA, Ed25519) is skipped, not fatal, so GitHub adding a new kind of key
  // does not stop its P-256 keys from loading. An empty file (or only whitespace) is a
  // deliberate "no keys" and succeeds with none.
  // On failure the previous keys stay (at startup: none) and the status says why:
  //   NotFound   ("github_keys_not_found") the file does not exist;
  //   IoError    the file cannot be read;
  //   InvalidArgument  larger than kMaxGithubKeysFileBytes, not JSON, no `public_keys` array,
  //              an entry without a non-empty string `key_identifier` and `key`, a `key` that
  //              is not a PEM public key, or a key identifier listed twice.
  [[nodiscard]] Result<GithubKeysLoad> reload();

  // Checks GitHub's signature headers against the raw request body (the exact bytes received,
  // before any parsing). Pass "" for an absent header.
  GithubSignature verify(std::string_view key_identifier, std::string_view signature_base64,
                         std::string_view body) const;

  // How many keys verify now.
  std::size_t key_count() const;

  const std::filesystem::path& path() const { return path_; }

 private:
  struct KeySet;  // key id -> parsed public key; immutable once built

  static Result<std::shared_ptr<const KeySet>> read_key_set(const std::filesystem::path& path,
                                                            GithubKeysLoad& load);
  std::shared_ptr<const KeySet> current() const;

  const std::filesystem::path path_;
  std::mutex reload_mutex_;               // one reload at a time
  mutable std::shared_mutex keys_mutex_;  // guards keys_ (the pointer, not the set)
  std::shared_ptr<const KeySet> keys_;    // never null
};

}  // namespace keyledger::api
