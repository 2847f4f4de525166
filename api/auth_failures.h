#pragma once
// A limit on failed authentications per client address (issue 13, "hostile clients"). Keys and
// tokens carry 256 random bits, so guessing is hopeless anyway; the limit bounds what a client
// that keeps presenting bad credentials costs us (a digest and a lookup each, a log line, a
// metric) and makes credential stuffing visible as 429s instead of a stream of 401s.
//
// Each address may fail `max_failures` times per window (a fixed window starting at its first
// failure); past that, every request of it that needs a credential is answered 429
// `rate_limited` with Retry-After until the window ends, before the credential is looked at.
// IPv6 addresses count per /64 (what one host is typically given). Loopback addresses are never
// limited: they are a proxy on this host (whose clients are not ours to tell apart) or an
// operator. At most `max_tracked` addresses are remembered; when full (a flood from very many
// addresses), new addresses are not tracked rather than evicting the ones being limited.

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "api/http.h"
#include "domain/clock.h"
#include "domain/guarded.h"

namespace keyledger::api {

struct AuthFailureLimitOptions {
  // Failed authentications an address may have per window; 0 turns the limit off. Default 100.
  std::uint32_t max_failures = 100;
  std::chrono::seconds window{60};
  std::size_t max_tracked = 100'000;
};

class AuthFailureLimiter {
 public:
  AuthFailureLimiter(const Clock& clock, AuthFailureLimitOptions options);

  // Seconds until `address` may try again (≥ 1) if it is over its limit now, else nullopt.
  std::optional<std::int64_t> retry_after(std::string_view address);
  // Counts a failed authentication (a 401) of `address`.
  void failed(std::string_view address);

  // The key an address is counted under ("" for one that is never limited).
  static std::string bucket_of(std::string_view address);

 private:
  struct Entry {
    std::int64_t window_start_ms = 0;
    std::uint32_t failures = 0;
  };
  using Entries = std::unordered_map<std::string, Entry>;
  using Shard = Guarded<Entries>;
  static constexpr std::size_t kShards = 16;

  Shard& shard_of(const std::string& bucket);
  std::int64_t now_ms() const;
  void forget_expired(Entries& entries, std::int64_t now) const;

  const Clock& clock_;
  const AuthFailureLimitOptions options_;
  std::array<Shard, kShards> shards_;
};

// The answer to a request from an address over its limit: 429 rate_limited, Retry-After.
http::Response too_many_failed_authentications(const http::Request& request,
                                               std::int64_t retry_after_seconds);

}  // namespace keyledger::api
