#include "projections/active_key_table.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

namespace keyledger {

namespace {

std::int64_t to_unix_ms(const google::protobuf::Timestamp& ts) {
  return std::chrono::floor<std::chrono::milliseconds>(from_timestamp(ts)).time_since_epoch().count();
}

// 0 means "never" in KeyEntry, so an expiry at or before the epoch is kept as 1 ms.
std::int64_t expiry_ms(const google::protobuf::Timestamp& ts) {
  return std::max<std::int64_t>(1, to_unix_ms(ts));
}

std::optional<Digest> digest_from_bytes(const std::string& bytes) {
  Digest d{};
  if (bytes.size() != d.size()) {
    return std::nullopt;
  }
  std::memcpy(d.data(), bytes.data(), d.size());
  return d;
}

// Moves `entry` to `next` unless that would undo a terminal condition: only an active key
// changes, except that compromised is recorded over revoked/expired too.
bool transition(KeyEntry& entry, KeyCondition next) {
  if (entry.condition == next) {
    return false;
  }
  if (entry.condition == KeyCondition::kActive || next == KeyCondition::kCompromised) {
    entry.condition = next;
    return true;
  }
  return false;
}

}  // namespace

InlineId::InlineId(std::string_view id) {
  size_ = static_cast<std::uint8_t>(std::min(id.size(), kCapacity));
  std::memcpy(data_.data(), id.data(), size_);
}

std::size_t ActiveKeyTable::DigestHash::operator()(const Digest& d) const noexcept {
  // Digests are keyed BLAKE2b output: any 8 bytes are uniformly distributed.
  std::uint64_t h = 0;
  std::memcpy(&h, d.data(), sizeof h);
  return static_cast<std::size_t>(h);
}

// Bytes independent of DigestHash's, so each shard's buckets stay evenly filled.
ActiveKeyTable::Shard& ActiveKeyTable::shard_for(const Digest& d) { return shards_[d[8] % kShards]; }
const ActiveKeyTable::Shard& ActiveKeyTable::shard_for(const Digest& d) const {
  return shards_[d[8] % kShards];
}

ActiveKeyTable::ActiveKeyTable(std::vector<std::string> tiers) : tiers_(std::move(tiers)) {}

std::optional<KeyEntry> ActiveKeyTable::find(const Digest& digest) const {
  const Shard& shard = shard_for(digest);
  std::shared_lock lock(shard.mutex);
  auto it = shard.map.find(digest);
  if (it == shard.map.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::optional<KeyEntry> ActiveKeyTable::find_key(std::string_view key_id) const {
  Digest digest{};
  {
    std::shared_lock lock(index_mutex_);
    auto it = digest_by_key_.find(std::string(key_id));
    if (it == digest_by_key_.end()) {
      return std::nullopt;
    }
    digest = it->second;
  }
  return find(digest);
}

void ActiveKeyTable::apply(const v1::Event& event, std::vector<Digest>* changed) {
  // Tier names are resolved before taking the index lock (tier_index locks tiers_mutex_).
  switch (event.payload_case()) {
    case v1::Event::kAgentRegistered: {
      const v1::AgentRegistered& e = event.agent_registered();
      const std::uint8_t tier = e.rate_limit_tier().empty() ? 0 : tier_index(e.rate_limit_tier());
      const v1::Environment env =
          e.environment() == v1::ENVIRONMENT_UNSPECIFIED ? v1::ENVIRONMENT_PRODUCTION : e.environment();
      std::unique_lock lock(index_mutex_);
      // A second registration of the same id changes nothing (the aggregate ignores it too).
      agent_tier_.try_emplace(e.agent_id(), tier);
      agent_environment_.try_emplace(e.agent_id(), env);
      return;
    }

    case v1::Event::kRateLimitTierChanged: {
      const v1::RateLimitTierChanged& e = event.rate_limit_tier_changed();
      const std::uint8_t tier = tier_index(e.tier());
      std::unique_lock lock(index_mutex_);
      agent_tier_[e.agent_id()] = tier;
      auto it = digests_by_agent_.find(e.agent_id());
      if (it == digests_by_agent_.end()) {
        return;
      }
      for (const Digest& d : it->second) {
        Shard& shard = shard_for(d);
        std::unique_lock shard_lock(shard.mutex);
        auto entry = shard.map.find(d);
        if (entry != shard.map.end() && entry->second.tier != tier) {
          entry->second.tier = tier;
          if (changed != nullptr) {
            changed->push_back(d);
          }
        }
      }
      return;
    }

    case v1::Event::kKeyCreated: {
      const v1::KeyCreated& e = event.key_created();
      const std::optional<Digest> digest = digest_from_bytes(e.digest());
      if (!digest || e.key_id().empty()) {
        return;  // not a key this table can verify
      }
      std::unique_lock lock(index_mutex_);
      if (digest_by_key_.contains(e.key_id())) {
        return;
      }
      KeyEntry entry;
      entry.key_id = InlineId(e.key_id());
      entry.agent_id = InlineId(e.agent_id());
      entry.created_at_ms = to_unix_ms(event.occurred_at());
      entry.expires_at_ms = e.has_expires_at() ? expiry_ms(e.expires_at()) : 0;
      entry.condition = KeyCondition::kActive;
      if (auto tier = agent_tier_.find(e.agent_id()); tier != agent_tier_.end()) {
        entry.tier = tier->second;
      }
      entry.environment = e.environment();
      if (entry.environment == v1::ENVIRONMENT_UNSPECIFIED) {
        auto env = agent_environment_.find(e.agent_id());
        entry.environment = env != agent_environment_.end() ? env->second : v1::ENVIRONMENT_PRODUCTION;
      }
      {
        Shard& shard = shard_for(*digest);
        std::unique_lock shard_lock(shard.mutex);
        if (!shard.map.try_emplace(*digest, entry).second) {
          return;  // the same digest under another key id: keep the first
        }
      }
      digest_by_key_.emplace(e.key_id(), *digest);
      digests_by_agent_[e.agent_id()].push_back(*digest);
      if (changed != nullptr) {
        changed->push_back(*digest);
      }
      return;
    }

    case v1::Event::kKeyRotated:
    case v1::Event::kKeyRevoked:
    case v1::Event::kKeyExpired:
    case v1::Event::kKeyCompromised:
      break;

    default:
      return;
  }

  // The events that change one existing key.
  const std::string key_id = event_key_id(event);
  std::shared_lock lock(index_mutex_);
  auto found = digest_by_key_.find(key_id);
  if (found == digest_by_key_.end()) {
    return;
  }
  const Digest& digest = found->second;
  Shard& shard = shard_for(digest);
  std::unique_lock shard_lock(shard.mutex);
  auto it = shard.map.find(digest);
  if (it == shard.map.end()) {
    return;
  }
  KeyEntry& entry = it->second;
  bool did_change = false;
  switch (event.payload_case()) {
    case v1::Event::kKeyRotated: {
      const v1::KeyRotated& e = event.key_rotated();
      if (e.has_old_key_expires_at()) {
        const std::int64_t at = expiry_ms(e.old_key_expires_at());
        if (entry.expires_at_ms == 0 || at < entry.expires_at_ms) {
          entry.expires_at_ms = at;
          did_change = true;
        }
      }
      break;
    }
    case v1::Event::kKeyRevoked:
      did_change = transition(entry, event.key_revoked().reason() == v1::REVOCATION_REASON_COMPROMISED
                                         ? KeyCondition::kCompromised
                                         : KeyCondition::kRevoked);
      break;
    case v1::Event::kKeyExpired:
      did_change = transition(entry, KeyCondition::kExpired);
      break;
    case v1::Event::kKeyCompromised:
      did_change = transition(entry, KeyCondition::kCompromised);
      break;
    default:
      break;
  }
  if (did_change && changed != nullptr) {
    changed->push_back(digest);
  }
}

void ActiveKeyTable::put(const Digest& digest, const KeyEntry& entry) {
  const std::string key_id(entry.key_id.view());
  std::unique_lock lock(index_mutex_);
  {
    Shard& shard = shard_for(digest);
    std::unique_lock shard_lock(shard.mutex);
    shard.map.insert_or_assign(digest, entry);
  }
  auto [it, inserted] = digest_by_key_.try_emplace(key_id, digest);
  if (inserted) {
    digests_by_agent_[entry.agent_id.str()].push_back(digest);
  }
}

std::optional<ActiveKeyTable::AgentDefaults> ActiveKeyTable::agent_defaults(std::string_view agent_id) const {
  const std::string id(agent_id);
  std::shared_lock lock(index_mutex_);
  auto tier = agent_tier_.find(id);
  if (tier == agent_tier_.end()) {
    return std::nullopt;
  }
  AgentDefaults out;
  out.tier = tier->second;
  if (auto env = agent_environment_.find(id); env != agent_environment_.end()) {
    out.environment = env->second;
  }
  return out;
}

void ActiveKeyTable::put_agent(std::string_view agent_id, const AgentDefaults& defaults) {
  const std::string id(agent_id);
  std::unique_lock lock(index_mutex_);
  agent_tier_[id] = defaults.tier;
  agent_environment_[id] = defaults.environment;
}

void ActiveKeyTable::clear() {
  std::unique_lock lock(index_mutex_);
  for (Shard& shard : shards_) {
    std::unique_lock shard_lock(shard.mutex);
    shard.map.clear();
  }
  digest_by_key_.clear();
  digests_by_agent_.clear();
  agent_tier_.clear();
  agent_environment_.clear();
}

std::size_t ActiveKeyTable::size() const {
  std::size_t total = 0;
  for (const Shard& shard : shards_) {
    std::shared_lock lock(shard.mutex);
    total += shard.map.size();
  }
  return total;
}

std::string ActiveKeyTable::tier_name(std::uint8_t tier) const {
  std::shared_lock lock(tiers_mutex_);
  return tier < tiers_.size() ? tiers_[tier] : std::string();
}

std::uint8_t ActiveKeyTable::tier_index(std::string_view name) {
  {
    std::shared_lock lock(tiers_mutex_);
    auto it = std::find(tiers_.begin(), tiers_.end(), name);
    if (it != tiers_.end()) {
      return static_cast<std::uint8_t>(it - tiers_.begin());
    }
  }
  std::unique_lock lock(tiers_mutex_);
  auto it = std::find(tiers_.begin(), tiers_.end(), name);
  if (it != tiers_.end()) {
    return static_cast<std::uint8_t>(it - tiers_.begin());
  }
  // entry.tier is one byte; past 256 distinct names the last one absorbs the rest.
  if (tiers_.size() > UINT8_MAX) {
    return UINT8_MAX;
  }
  tiers_.emplace_back(name);
  return static_cast<std::uint8_t>(tiers_.size() - 1);
}

void ActiveKeyTable::touch(const Digest& digest, std::int64_t now_s) {
  Shard& shard = shard_for(digest);
  {
    std::shared_lock lock(shard.mutex);
    auto it = shard.last_used.find(digest);
    if (it != shard.last_used.end() && it->second >= now_s) {
      return;  // already recorded this second
    }
    if (it == shard.last_used.end() && !shard.map.contains(digest)) {
      return;
    }
  }
  std::unique_lock lock(shard.mutex);
  std::int64_t& last = shard.last_used[digest];
  last = std::max(last, now_s);
  std::int64_t& pending = shard.unflushed[digest];
  pending = std::max(pending, now_s);
}

std::optional<std::int64_t> ActiveKeyTable::last_used(std::string_view key_id) const {
  Digest digest{};
  {
    std::shared_lock lock(index_mutex_);
    auto it = digest_by_key_.find(std::string(key_id));
    if (it == digest_by_key_.end()) {
      return std::nullopt;
    }
    digest = it->second;
  }
  const Shard& shard = shard_for(digest);
  std::shared_lock lock(shard.mutex);
  auto it = shard.last_used.find(digest);
  if (it == shard.last_used.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::unordered_map<std::string, std::int64_t> ActiveKeyTable::take_usage() {
  std::unordered_map<std::string, std::int64_t> out;
  for (auto& shard : shards_) {
    std::unique_lock lock(shard.mutex);
    for (const auto& [digest, seconds] : shard.unflushed) {
      if (auto it = shard.map.find(digest); it != shard.map.end()) {
        out[it->second.key_id.str()] = seconds;
      }
    }
    shard.unflushed.clear();
  }
  return out;
}

}  // namespace keyledger
