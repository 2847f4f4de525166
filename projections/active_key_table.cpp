#include "projections/active_key_table.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>

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

namespace {

// Digests are keyed BLAKE2b output, so any of their bytes are uniformly distributed: bytes
// 0-7 place a digest in its shard's index, byte 8 picks the shard, byte 9 is the index tag.
std::uint64_t digest_hash(const Digest& d) {
  std::uint64_t h = 0;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}
std::uint32_t digest_tag(const Digest& d) { return static_cast<std::uint32_t>(d[9]) << 24; }

constexpr std::uint32_t kSlotMask = 0x00FF'FFFFU;  // index values: tag << 24 | (slot + 1)
constexpr std::size_t kMaxSlotsPerShard = kSlotMask - 1;
constexpr std::size_t kMinIndexSize = 16;

// The index grows (doubling) before it is three quarters full.
bool needs_growth(std::size_t used, std::size_t capacity) { return (used + 1) * 4 > capacity * 3; }

std::uint64_t key_id_hash(std::string_view id) { return std::hash<std::string_view>{}(id); }

}  // namespace

ActiveKeyTable::Slot* ActiveKeyTable::Shard::locate(const Digest& digest) {
  return const_cast<Slot*>(std::as_const(*this).locate(digest));
}

const ActiveKeyTable::Slot* ActiveKeyTable::Shard::locate(const Digest& digest) const {
  if (index.empty()) {
    return nullptr;
  }
  const std::size_t mask = index.size() - 1;
  const std::uint32_t tag = digest_tag(digest);
  for (std::size_t pos = digest_hash(digest) & mask;; pos = (pos + 1) & mask) {
    const std::uint32_t v = index[pos];
    if (v == 0) {
      return nullptr;
    }
    if ((v & ~kSlotMask) == tag) {
      const Slot& slot = slots[(v & kSlotMask) - 1];
      if (slot.digest == digest) {
        return &slot;
      }
    }
  }
}

std::uint32_t ActiveKeyTable::Shard::insert(const Digest& digest, const KeyEntry& entry) {
  if (slots.size() >= kMaxSlotsPerShard) {
    throw std::length_error("ActiveKeyTable: shard full");
  }
  if (needs_growth(slots.size(), index.size())) {
    decltype(index) grown(std::max(kMinIndexSize, index.size() * 2), 0);
    const std::size_t mask = grown.size() - 1;
    for (std::size_t i = 0; i < slots.size(); ++i) {
      std::size_t pos = digest_hash(slots[i].digest) & mask;
      while (grown[pos] != 0) {
        pos = (pos + 1) & mask;
      }
      grown[pos] = digest_tag(slots[i].digest) | static_cast<std::uint32_t>(i + 1);
    }
    index = std::move(grown);
  }
  const auto number = static_cast<std::uint32_t>(slots.size());
  Slot& slot = slots.emplace_back();
  slot.digest = digest;
  slot.entry = entry;
  const std::size_t mask = index.size() - 1;
  std::size_t pos = digest_hash(digest) & mask;
  while (index[pos] != 0) {
    pos = (pos + 1) & mask;
  }
  index[pos] = digest_tag(digest) | (number + 1);
  return number;
}

void ActiveKeyTable::Shard::mark_used(Slot& slot, std::int64_t now_s) {
  const auto at = static_cast<std::uint32_t>(std::clamp<std::int64_t>(now_s - kUsageEpoch, 1, kUnflushed - 1));
  const std::uint32_t last = slot.last_used & ~kUnflushed;
  if (at <= last) {
    return;  // already recorded this second (or a later one)
  }
  if ((slot.last_used & kUnflushed) == 0) {
    unflushed.push_back(static_cast<std::uint32_t>(&slot - slots.data()));
  }
  slot.last_used = at | kUnflushed;
}

ActiveKeyTable::ActiveKeyTable(std::vector<std::string> tiers) : tiers_(std::move(tiers)) {}

std::optional<KeyEntry> ActiveKeyTable::find(const Digest& digest) const {
  const Shard& shard = shard_for(digest);
  std::lock_guard lock(shard.mutex);
  const Slot* slot = shard.locate(digest);
  if (slot == nullptr) {
    return std::nullopt;
  }
  return slot->entry;
}

std::optional<ActiveKeyTable::Ref> ActiveKeyTable::ref_by_key(std::string_view key_id) const {
  if (key_index_.empty()) {
    return std::nullopt;
  }
  const std::size_t mask = key_index_.size() - 1;
  for (std::size_t pos = key_id_hash(key_id) & mask;; pos = (pos + 1) & mask) {
    const std::uint32_t v = key_index_[pos];
    if (v == 0) {
      return std::nullopt;
    }
    if (key_id_of(v - 1).view() == key_id) {
      return v - 1;
    }
  }
}

// Key ids and digests never change once a slot is written, and slots only move when their
// shard grows, which happens under index_mutex_ held exclusively: holding it shared is enough.
InlineId ActiveKeyTable::key_id_of(Ref ref) const {
  return shards_[ref >> kSlotBits].slots[ref & ((1U << kSlotBits) - 1)].entry.key_id;
}

Digest ActiveKeyTable::digest_of(Ref ref) const {
  return shards_[ref >> kSlotBits].slots[ref & ((1U << kSlotBits) - 1)].digest;
}

void ActiveKeyTable::index_key(Ref ref, std::string_view key_id) {
  if (needs_growth(key_count_, key_index_.size())) {
    std::vector<std::uint32_t> grown(std::max(kMinIndexSize, key_index_.size() * 2), 0);
    const std::size_t mask = grown.size() - 1;
    for (const std::uint32_t v : key_index_) {
      if (v == 0) {
        continue;
      }
      std::size_t pos = key_id_hash(key_id_of(v - 1).view()) & mask;
      while (grown[pos] != 0) {
        pos = (pos + 1) & mask;
      }
      grown[pos] = v;
    }
    key_index_ = std::move(grown);
  }
  const std::size_t mask = key_index_.size() - 1;
  std::size_t pos = key_id_hash(key_id) & mask;
  while (key_index_[pos] != 0) {
    pos = (pos + 1) & mask;
  }
  key_index_[pos] = ref + 1;
  ++key_count_;
}

std::optional<KeyEntry> ActiveKeyTable::find_key(std::string_view key_id) const {
  Digest digest{};
  {
    std::shared_lock lock(index_mutex_);
    const auto ref = ref_by_key(key_id);
    if (!ref) {
      return std::nullopt;
    }
    digest = digest_of(*ref);
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
      Agent& agent = agents_[e.agent_id()];
      if (!agent.registered) {
        agent.registered = true;
        agent.tier = tier;
        agent.environment = env;
      }
      return;
    }

    case v1::Event::kRateLimitTierChanged: {
      const v1::RateLimitTierChanged& e = event.rate_limit_tier_changed();
      const std::uint8_t tier = tier_index(e.tier());
      std::unique_lock lock(index_mutex_);
      Agent& agent = agents_[e.agent_id()];
      agent.registered = true;
      agent.tier = tier;
      for (const Ref ref : agent.keys) {
        Shard& shard = shards_[ref >> kSlotBits];
        std::lock_guard shard_lock(shard.mutex);
        Slot& slot = shard.slots[ref & ((1U << kSlotBits) - 1)];
        if (slot.entry.tier != tier) {
          slot.entry.tier = tier;
          if (changed != nullptr) {
            changed->push_back(slot.digest);
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
      if (ref_by_key(e.key_id())) {
        return;
      }
      KeyEntry entry;
      entry.key_id = InlineId(e.key_id());
      entry.agent_id = InlineId(e.agent_id());
      entry.created_at_ms = to_unix_ms(event.occurred_at());
      entry.expires_at_ms = e.has_expires_at() ? expiry_ms(e.expires_at()) : 0;
      entry.condition = KeyCondition::kActive;
      auto agent = agents_.find(e.agent_id());
      const bool registered = agent != agents_.end() && agent->second.registered;
      if (registered) {
        entry.tier = agent->second.tier;
      }
      entry.environment = e.environment();
      if (entry.environment == v1::ENVIRONMENT_UNSPECIFIED) {
        entry.environment = registered ? agent->second.environment : v1::ENVIRONMENT_PRODUCTION;
      }
      const std::size_t shard_number = shard_of(*digest);
      Shard& shard = shards_[shard_number];
      std::uint32_t slot = 0;
      {
        std::lock_guard shard_lock(shard.mutex);
        if (shard.locate(*digest) != nullptr) {
          return;  // the same digest under another key id: keep the first
        }
        slot = shard.insert(*digest, entry);
      }
      const Ref ref = ref_of(shard_number, slot);
      index_key(ref, e.key_id());
      agents_[e.agent_id()].keys.push_back(ref);
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
  const auto ref = ref_by_key(key_id);
  if (!ref) {
    return;
  }
  Shard& shard = shards_[*ref >> kSlotBits];
  std::lock_guard shard_lock(shard.mutex);
  Slot& slot = shard.slots[*ref & ((1U << kSlotBits) - 1)];
  KeyEntry& entry = slot.entry;
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
    changed->push_back(slot.digest);
  }
}

void ActiveKeyTable::put(const Digest& digest, const KeyEntry& entry) {
  std::unique_lock lock(index_mutex_);
  const std::size_t shard_number = shard_of(digest);
  Shard& shard = shards_[shard_number];
  std::uint32_t slot = 0;
  {
    std::lock_guard shard_lock(shard.mutex);
    if (Slot* existing = shard.locate(digest); existing != nullptr) {
      existing->entry = entry;
      return;
    }
    slot = shard.insert(digest, entry);
  }
  const Ref ref = ref_of(shard_number, slot);
  if (!ref_by_key(entry.key_id.view())) {
    index_key(ref, entry.key_id.view());
    agents_[entry.agent_id.str()].keys.push_back(ref);
  }
}

std::optional<ActiveKeyTable::AgentDefaults> ActiveKeyTable::agent_defaults(std::string_view agent_id) const {
  std::shared_lock lock(index_mutex_);
  auto it = agents_.find(std::string(agent_id));
  if (it == agents_.end() || !it->second.registered) {
    return std::nullopt;
  }
  AgentDefaults out;
  out.tier = it->second.tier;
  out.environment = it->second.environment;
  return out;
}

void ActiveKeyTable::put_agent(std::string_view agent_id, const AgentDefaults& defaults) {
  std::unique_lock lock(index_mutex_);
  Agent& agent = agents_[std::string(agent_id)];
  agent.registered = true;
  agent.tier = defaults.tier;
  agent.environment = defaults.environment;
}

void ActiveKeyTable::clear() {
  std::unique_lock lock(index_mutex_);
  for (Shard& shard : shards_) {
    std::lock_guard shard_lock(shard.mutex);
    shard.slots.clear();
    shard.index.clear();
    shard.unflushed.clear();
  }
  key_index_.clear();
  key_count_ = 0;
  agents_.clear();
}

std::size_t ActiveKeyTable::size() const {
  std::size_t total = 0;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    total += shard.slots.size();
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
  visit(digest, now_s, [](const KeyEntry&, TokenBucket&) { return true; });
}

std::optional<std::int64_t> ActiveKeyTable::last_used(std::string_view key_id) const {
  std::shared_lock lock(index_mutex_);
  const auto ref = ref_by_key(key_id);
  if (!ref) {
    return std::nullopt;
  }
  const Shard& shard = shards_[*ref >> kSlotBits];
  std::lock_guard shard_lock(shard.mutex);
  const std::uint32_t at = shard.slots[*ref & ((1U << kSlotBits) - 1)].last_used & ~kUnflushed;
  if (at == 0) {
    return std::nullopt;
  }
  return kUsageEpoch + at;
}

std::unordered_map<std::string, std::int64_t> ActiveKeyTable::take_usage() {
  std::unordered_map<std::string, std::int64_t> out;
  for (auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    for (const std::uint32_t number : shard.unflushed) {
      Slot& slot = shard.slots[number];
      slot.last_used &= ~kUnflushed;
      out[slot.entry.key_id.str()] = kUsageEpoch + slot.last_used;
    }
    shard.unflushed.clear();
  }
  return out;
}

}  // namespace keyledger
