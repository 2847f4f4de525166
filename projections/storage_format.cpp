#include "projections/storage_format.h"

#include <rocksdb/status.h>

#include <algorithm>
#include <chrono>

namespace keyledger::storage_format {

namespace {

// Leading byte of packed values, so the layout can change without a guess.
constexpr std::uint8_t kKeyEntryFormat = 1;
constexpr std::uint8_t kAgentSettingsFormat = 1;
constexpr std::size_t kMaxShortString = UINT8_MAX;

void put_short_string(std::string& out, std::string_view s) {
  const std::size_t n = std::min(s.size(), kMaxShortString);
  out.push_back(static_cast<char>(n));
  out.append(s.data(), n);
}

// Reads bytes from a packed value, failing (not throwing) on truncation.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  bool u8(std::uint8_t& out) {
    if (bytes_.empty()) {
      return false;
    }
    out = static_cast<std::uint8_t>(bytes_.front());
    bytes_.remove_prefix(1);
    return true;
  }
  bool i64(std::int64_t& out) {
    if (bytes_.size() < 8) {
      return false;
    }
    out = static_cast<std::int64_t>(decode_be64(bytes_));
    bytes_.remove_prefix(8);
    return true;
  }
  bool short_string(std::string_view& out) {
    std::uint8_t n = 0;
    if (!u8(n) || bytes_.size() < n) {
      return false;
    }
    out = bytes_.substr(0, n);
    bytes_.remove_prefix(n);
    return true;
  }
  bool done() const { return bytes_.empty(); }

 private:
  std::string_view bytes_;
};

}  // namespace

std::int64_t unix_ms(TimePoint t) {
  return std::chrono::floor<std::chrono::milliseconds>(t).time_since_epoch().count();
}

std::string time_key(std::int64_t ms) {
  return encode_be64(static_cast<std::uint64_t>(std::max<std::int64_t>(0, ms)));
}

void value_position_key(std::string& out, std::string_view value, std::uint64_t position) {
  out.assign(value);
  out.push_back('\0');
  out += encode_be64(position);
}

std::string value_prefix(std::string_view value) {
  std::string key(value);
  key.push_back('\0');
  return key;
}

std::string time_key_id(std::int64_t ms, std::string_view key_id) {
  std::string key = time_key(ms);
  key.append(key_id);
  return key;
}

std::string pack_key_entry(const KeyEntry& entry, std::string_view tier_name) {
  std::string out;
  out.reserve(96);
  out.push_back(static_cast<char>(kKeyEntryFormat));
  put_short_string(out, entry.key_id.view());
  put_short_string(out, entry.agent_id.view());
  out += encode_be64(static_cast<std::uint64_t>(entry.created_at_ms));
  out += encode_be64(static_cast<std::uint64_t>(entry.expires_at_ms));
  out.push_back(static_cast<char>(entry.condition));
  out.push_back(static_cast<char>(entry.environment));
  put_short_string(out, tier_name);
  return out;
}

bool unpack_key_entry(std::string_view bytes, KeyEntry& entry, std::string& tier_name) {
  Reader in(bytes);
  std::uint8_t format = 0;
  std::string_view key_id;
  std::string_view agent_id;
  std::string_view tier;
  std::uint8_t condition = 0;
  std::uint8_t environment = 0;
  KeyEntry out;
  if (!in.u8(format) || format != kKeyEntryFormat || !in.short_string(key_id) || !in.short_string(agent_id) ||
      !in.i64(out.created_at_ms) || !in.i64(out.expires_at_ms) || !in.u8(condition) || !in.u8(environment) ||
      !in.short_string(tier) || !in.done()) {
    return false;
  }
  if (condition > static_cast<std::uint8_t>(KeyCondition::kCompromised) ||
      !v1::Environment_IsValid(environment)) {
    return false;
  }
  out.key_id = InlineId(key_id);
  out.agent_id = InlineId(agent_id);
  out.condition = static_cast<KeyCondition>(condition);
  out.environment = static_cast<v1::Environment>(environment);
  entry = out;
  tier_name.assign(tier);
  return true;
}

std::string pack_agent_settings(v1::Environment environment, std::string_view tier_name) {
  std::string out;
  out.push_back(static_cast<char>(kAgentSettingsFormat));
  out.push_back(static_cast<char>(environment));
  put_short_string(out, tier_name);
  return out;
}

bool unpack_agent_settings(std::string_view bytes, v1::Environment& environment, std::string& tier_name) {
  Reader in(bytes);
  std::uint8_t format = 0;
  std::uint8_t env = 0;
  std::string_view tier;
  if (!in.u8(format) || format != kAgentSettingsFormat || !in.u8(env) || !in.short_string(tier) ||
      !in.done() || !v1::Environment_IsValid(env)) {
    return false;
  }
  environment = static_cast<v1::Environment>(env);
  tier_name.assign(tier);
  return true;
}

}  // namespace keyledger::storage_format
