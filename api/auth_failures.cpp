#include "api/auth_failures.h"

#include "api/errors.h"

#include <boost/asio/ip/address.hpp>

#include <algorithm>

#include <functional>

namespace keyledger::api {

AuthFailureLimiter::AuthFailureLimiter(const Clock& clock, AuthFailureLimitOptions options)
    : clock_(clock), options_(options) {}

std::string AuthFailureLimiter::bucket_of(std::string_view address) {
  boost::system::error_code ec;
  auto ip = boost::asio::ip::make_address(std::string(address), ec);
  if (ec) {
    return std::string(address);  // not an IP literal (a test's name, say): counted as it is
  }
  if (ip.is_v6() && ip.to_v6().is_v4_mapped()) {
    ip = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, ip.to_v6());
  }
  if (ip.is_loopback()) {
    return "";
  }
  if (ip.is_v6()) {
    auto bytes = ip.to_v6().to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return boost::asio::ip::address_v6(bytes).to_string() + "/64";
  }
  return ip.to_string();
}

AuthFailureLimiter::Shard& AuthFailureLimiter::shard_of(const std::string& bucket) {
  return shards_[std::hash<std::string>{}(bucket) % kShards];
}

std::int64_t AuthFailureLimiter::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
}

void AuthFailureLimiter::forget_expired(Entries& entries, std::int64_t now) const {
  const std::int64_t window_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.window).count();
  std::erase_if(entries, [&](const auto& item) {
    const std::int64_t age = now - item.second.window_start_ms;
    return age >= window_ms || age < 0;  // a clock that went back starts windows afresh
  });
}

std::optional<std::int64_t> AuthFailureLimiter::retry_after(std::string_view address) {
  if (options_.max_failures == 0) {
    return std::nullopt;
  }
  const std::string bucket = bucket_of(address);
  if (bucket.empty()) {
    return std::nullopt;
  }
  const std::int64_t window_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.window).count();
  const std::int64_t now = now_ms();
  return shard_of(bucket).with([&](Entries& entries) -> std::optional<std::int64_t> {
    const auto it = entries.find(bucket);
    if (it == entries.end() || it->second.failures < options_.max_failures) {
      return std::nullopt;
    }
    const std::int64_t left_ms = it->second.window_start_ms + window_ms - now;
    if (left_ms <= 0 || left_ms > window_ms) {
      entries.erase(it);  // the window is over (or the clock went back): a fresh start
      return std::nullopt;
    }
    return std::max<std::int64_t>(1, (left_ms + 999) / 1000);
  });
}

void AuthFailureLimiter::failed(std::string_view address) {
  if (options_.max_failures == 0) {
    return;
  }
  const std::string bucket = bucket_of(address);
  if (bucket.empty()) {
    return;
  }
  const std::int64_t now = now_ms();
  const std::int64_t window_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.window).count();
  shard_of(bucket).with([&](Entries& entries) {
    auto it = entries.find(bucket);
    if (it == entries.end()) {
      if (entries.size() >= options_.max_tracked / kShards + 1) {
        forget_expired(entries, now);
        if (entries.size() >= options_.max_tracked / kShards + 1) {
          return;  // full of live entries: do not evict an address being limited
        }
      }
      it = entries.emplace(bucket, Entry{now, 0}).first;
    }
    Entry& entry = it->second;
    const std::int64_t age = now - entry.window_start_ms;
    if (age >= window_ms || age < 0) {
      entry = Entry{now, 0};
    }
    ++entry.failures;
  });
}

http::Response too_many_failed_authentications(const http::Request& request,
                                               std::int64_t retry_after_seconds) {
  http::Response res = error_response(
      429, "rate_limited", "too many failed authentications from this address", request.request_id);
  res.headers.set("Retry-After", std::to_string(retry_after_seconds));
  return res;
}

}  // namespace keyledger::api
