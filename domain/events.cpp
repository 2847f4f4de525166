#include "domain/events.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <limits>

namespace keyledger {

namespace {

using std::chrono::days;
using std::chrono::duration_cast;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr std::int64_t kNanosPerSecond = 1'000'000'000;
// TimePoint counts nanoseconds in an int64 (about years 1678–2261); anything outside is clamped
// or rejected rather than overflowing.
constexpr std::int64_t kMaxSeconds = std::numeric_limits<std::int64_t>::max() / kNanosPerSecond - 1;
constexpr std::int64_t kMinSeconds = -kMaxSeconds;

struct SplitTime {
  std::int64_t seconds;  // floor of the time in seconds since the epoch
  std::int32_t nanos;    // 0 … 999'999'999
};

SplitTime split(TimePoint t) {
  const std::int64_t ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  std::int64_t secs = ns / kNanosPerSecond;
  std::int64_t rem = ns % kNanosPerSecond;
  if (rem < 0) {
    rem += kNanosPerSecond;
    --secs;
  }
  return {secs, static_cast<std::int32_t>(rem)};
}

TimePoint join(std::int64_t secs, std::int64_t nanos) {
  if (secs > kMaxSeconds) {
    return TimePoint::max();
  }
  if (secs < kMinSeconds) {
    return TimePoint::min();
  }
  return TimePoint(duration_cast<TimePoint::duration>(nanoseconds(secs * kNanosPerSecond + nanos)));
}

// Reads exactly `count` decimal digits at `pos`, advancing it.
bool read_digits(std::string_view text, std::size_t& pos, std::size_t count, int& out) {
  if (text.size() - pos < count) {
    return false;
  }
  int value = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') {
      return false;
    }
    value = value * 10 + (c - '0');
  }
  pos += count;
  out = value;
  return true;
}

bool read_char(std::string_view text, std::size_t& pos, char expected) {
  if (pos >= text.size() || text[pos] != expected) {
    return false;
  }
  ++pos;
  return true;
}

}  // namespace

std::string agent_stream(std::string_view agent_id) { return "agent-" + std::string(agent_id); }

std::string_view event_type_name(v1::Event::PayloadCase payload) {
  switch (payload) {
    case v1::Event::kAgentRegistered:
      return "agent.registered";
    case v1::Event::kRateLimitTierChanged:
      return "agent.rate_limit_changed";
    case v1::Event::kKeyCreated:
      return "key.created";
    case v1::Event::kKeyRotated:
      return "key.rotated";
    case v1::Event::kKeyRevoked:
      return "key.revoked";
    case v1::Event::kKeyExpired:
      return "key.expired";
    case v1::Event::kKeyCompromised:
      return "key.compromised";
    case v1::Event::kWebhookDeliveryRecorded:
      return "webhook.delivery_recorded";
    case v1::Event::kServiceTokenCreated:
      return "token.created";
    case v1::Event::kServiceTokenRevoked:
      return "token.revoked";
    case v1::Event::PAYLOAD_NOT_SET:
      return "";
  }
  return "";
}

namespace {
const std::string kNoId;  // what an event that names no agent or key answers
}  // namespace

const std::string& event_agent_id(const v1::Event& event) {
  switch (event.payload_case()) {
    case v1::Event::kAgentRegistered:
      return event.agent_registered().agent_id();
    case v1::Event::kRateLimitTierChanged:
      return event.rate_limit_tier_changed().agent_id();
    case v1::Event::kKeyCreated:
      return event.key_created().agent_id();
    case v1::Event::kKeyRotated:
      return event.key_rotated().agent_id();
    case v1::Event::kKeyRevoked:
      return event.key_revoked().agent_id();
    case v1::Event::kKeyExpired:
      return event.key_expired().agent_id();
    case v1::Event::kKeyCompromised:
      return event.key_compromised().agent_id();
    case v1::Event::kWebhookDeliveryRecorded:
      return event.webhook_delivery_recorded().agent_id();
    case v1::Event::kServiceTokenCreated:
    case v1::Event::kServiceTokenRevoked:
    case v1::Event::PAYLOAD_NOT_SET:
      return kNoId;
  }
  return kNoId;
}

bool is_unreadable(const v1::Event& event) {
  return event.event_id().empty() && event.payload_case() == v1::Event::PAYLOAD_NOT_SET;
}

const std::string& event_key_id(const v1::Event& event) {
  switch (event.payload_case()) {
    case v1::Event::kKeyCreated:
      return event.key_created().key_id();
    case v1::Event::kKeyRotated:
      return event.key_rotated().key_id();
    case v1::Event::kKeyRevoked:
      return event.key_revoked().key_id();
    case v1::Event::kKeyExpired:
      return event.key_expired().key_id();
    case v1::Event::kKeyCompromised:
      return event.key_compromised().key_id();
    default:
      return kNoId;
  }
}

bool is_key_event(const v1::Event& event) {
  switch (event.payload_case()) {
    case v1::Event::kKeyCreated:
    case v1::Event::kKeyRotated:
    case v1::Event::kKeyRevoked:
    case v1::Event::kKeyExpired:
    case v1::Event::kKeyCompromised:
      return true;
    default:
      return false;
  }
}

google::protobuf::Timestamp to_timestamp(TimePoint t) {
  const SplitTime parts = split(t);
  google::protobuf::Timestamp ts;
  ts.set_seconds(parts.seconds);
  ts.set_nanos(parts.nanos);
  return ts;
}

TimePoint from_timestamp(const google::protobuf::Timestamp& ts) {
  std::int64_t secs = ts.seconds();
  std::int64_t nanos = ts.nanos();
  // Normalise out-of-range nanos (not produced by to_timestamp, but the wire allows them).
  if (nanos < 0 || nanos >= kNanosPerSecond) {
    if (secs > kMaxSeconds || secs < kMinSeconds) {
      return join(secs, 0);
    }
    secs += nanos / kNanosPerSecond;
    nanos %= kNanosPerSecond;
    if (nanos < 0) {
      nanos += kNanosPerSecond;
      --secs;
    }
  }
  return join(secs, nanos);
}

std::string format_rfc3339(TimePoint t) {
  const SplitTime parts = split(t);
  const std::chrono::sys_seconds whole{seconds(parts.seconds)};
  const auto day = std::chrono::floor<days>(whole);
  const std::chrono::year_month_day ymd{day};
  const std::chrono::hh_mm_ss<seconds> hms{whole - day};
  const int millis = parts.nanos / 1'000'000;

  char buf[48];
  int n = 0;
  if (millis != 0) {
    n = std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(ymd.year()),
                      static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                      static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                      static_cast<int>(hms.seconds().count()), millis);
  } else {
    n = std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                      static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                      static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                      static_cast<int>(hms.seconds().count()));
  }
  if (n < 0) {
    return {};
  }
  return std::string(buf, static_cast<std::size_t>(n));
}

bool parse_rfc3339(std::string_view text, TimePoint& out) {
  std::size_t pos = 0;
  int year = 0;
  int month = 0;
  int day = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
  if (!read_digits(text, pos, 4, year) || !read_char(text, pos, '-') || !read_digits(text, pos, 2, month) ||
      !read_char(text, pos, '-') || !read_digits(text, pos, 2, day)) {
    return false;
  }
  if (pos >= text.size() || (text[pos] != 'T' && text[pos] != 't')) {
    return false;
  }
  ++pos;
  if (!read_digits(text, pos, 2, hour) || !read_char(text, pos, ':') || !read_digits(text, pos, 2, minute) ||
      !read_char(text, pos, ':') || !read_digits(text, pos, 2, second)) {
    return false;
  }
  if (hour > 23 || minute > 59 || second > 59) {
    return false;  // leap seconds (:60) are not representable in TimePoint
  }

  std::int64_t nanos = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 9) {
        nanos = nanos * 10 + (text[pos] - '0');
      }
      ++digits;
      ++pos;
    }
    if (digits == 0) {
      return false;
    }
    for (std::size_t i = digits; i < 9; ++i) {
      nanos *= 10;  // digits beyond nanoseconds are truncated
    }
  }

  std::int64_t offset_seconds = 0;
  if (pos >= text.size()) {
    return false;
  }
  if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else if (text[pos] == '+' || text[pos] == '-') {
    const int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int offset_hours = 0;
    int offset_minutes = 0;
    if (!read_digits(text, pos, 2, offset_hours) || !read_char(text, pos, ':') ||
        !read_digits(text, pos, 2, offset_minutes) || offset_hours > 23 || offset_minutes > 59) {
      return false;
    }
    offset_seconds = sign * (offset_hours * 3600 + offset_minutes * 60);
  } else {
    return false;
  }
  if (pos != text.size()) {
    return false;
  }

  const std::chrono::year_month_day ymd{std::chrono::year{year},
                                        std::chrono::month{static_cast<unsigned>(month)},
                                        std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) {
    return false;
  }
  const std::int64_t secs = std::chrono::sys_days{ymd}.time_since_epoch().count() * 86400LL + hour * 3600LL +
                            minute * 60LL + second - offset_seconds;
  if (secs > kMaxSeconds || secs < kMinSeconds) {
    return false;
  }
  out = join(secs, nanos);
  return true;
}

}  // namespace keyledger
