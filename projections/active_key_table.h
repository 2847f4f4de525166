#pragma once
// The verification hot path's table: digest -> key entry for every key ever created (revoked
// and expired ones too, so verification can say REVOKED / EXPIRED / COMPROMISED).
// O(1) lookup; many concurrent readers while the projection thread applies events
// (64 shards, each behind a shared_mutex). About 100 bytes per key plus the map's node.

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "domain/agent.h"
#include "domain/key_material.h"

namespace keyledger {

// An id such as `key_…`/`agt_…` stored inline (no heap allocation).
class InlineId {
 public:
  static constexpr std::size_t kCapacity = 31;
  InlineId() = default;
  explicit InlineId(std::string_view id);  // truncates past kCapacity (ids are 28 chars)
  std::string_view view() const { return {data_.data(), size_}; }
  std::string str() const { return std::string(view()); }
  bool operator==(const InlineId& other) const { return view() == other.view(); }

 private:
  std::array<char, kCapacity> data_{};
  std::uint8_t size_ = 0;
};

enum class KeyCondition : std::uint8_t { kActive, kRevoked, kExpired, kCompromised };

struct KeyEntry {
  InlineId key_id;
  InlineId agent_id;
  std::int64_t created_at_ms = 0;                  // occurred_at of KeyCreated (the key indexes need it)
  std::int64_t expires_at_ms = 0;                  // 0: never
  KeyCondition condition = KeyCondition::kActive;  // as recorded by events
  v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
  std::uint8_t tier = 0;  // index into the table's tier names

  // What verification answers at `now_ms`: an active key past its expiry is kExpired.
  KeyCondition condition_at(std::int64_t now_ms) const {
    if (condition == KeyCondition::kActive && expires_at_ms != 0 && now_ms >= expires_at_ms) {
      return KeyCondition::kExpired;
    }
    return condition;
  }
};

class ActiveKeyTable {
 public:
  // `tiers`: tier names from configuration; entry.tier indexes into this list (names not in
  // it are appended on first sight).
  explicit ActiveKeyTable(std::vector<std::string> tiers);

  // Copy of the entry for `digest`, or nullopt. Lock-free for other shards; shared lock on one.
  std::optional<KeyEntry> find(const Digest& digest) const;

  // Copy of the entry of `key_id`, or nullopt.
  std::optional<KeyEntry> find_key(std::string_view key_id) const;

  // Applies one event (KeyCreated, KeyRotated, KeyRevoked, KeyExpired, KeyCompromised,
  // AgentRegistered, RateLimitTierChanged); others are ignored. Idempotent, also for events
  // delivered again out of order (at-least-once consumers): a known key is never created
  // again, a revoked, expired or compromised key never becomes active again, and compromised
  // wins over revoked/expired. If `changed` is given, the digests of the entries the event
  // changed are appended to it (the projector writes their snapshots).
  void apply(const v1::Event& event, std::vector<Digest>* changed = nullptr);

  // Inserts or replaces an entry (start-up load from a checkpoint).
  void put(const Digest& digest, const KeyEntry& entry);

  // What an agent's keys get from the agent: its rate-limit tier and its environment.
  struct AgentDefaults {
    std::uint8_t tier = 0;
    v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
  };
  // From AgentRegistered / RateLimitTierChanged; nullopt for an unknown agent.
  std::optional<AgentDefaults> agent_defaults(std::string_view agent_id) const;
  // Start-up load of what agent_defaults() answers (does not touch existing entries).
  void put_agent(std::string_view agent_id, const AgentDefaults& defaults);

  // Forgets every entry and agent (Projector::rebuild). Tier names and usage data stay.
  void clear();

  std::size_t size() const;
  std::string tier_name(std::uint8_t tier) const;
  std::uint8_t tier_index(std::string_view name);  // appends unknown names

  // Calls fn(digest, entry) for every entry (checkpoint writing, tests).
  template <typename Fn>
  void for_each(Fn fn) const {
    for (const auto& shard : shards_) {
      std::shared_lock lock(shard.mutex);
      for (const auto& [digest, entry] : shard.map) {
        fn(digest, entry);
      }
    }
  }

  // Last successful verification per key (usage data, not events); seconds since epoch.
  void touch(const Digest& digest, std::int64_t now_s);
  std::optional<std::int64_t> last_used(std::string_view key_id) const;
  // Drains the usage recorded since the last call (key_id -> seconds), for periodic flushing.
  std::unordered_map<std::string, std::int64_t> take_usage();

 private:
  struct DigestHash {
    std::size_t operator()(const Digest& d) const noexcept;
  };
  struct Shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<Digest, KeyEntry, DigestHash> map;
    // Usage lives beside the entries so recording it takes no global lock; a key verified
    // again within the same second only takes the shared lock.
    std::unordered_map<Digest, std::int64_t, DigestHash> last_used;  // seconds, all keys seen
    std::unordered_map<Digest, std::int64_t, DigestHash> unflushed;  // since take_usage()
  };
  static constexpr std::size_t kShards = 64;
  Shard& shard_for(const Digest& d);
  const Shard& shard_for(const Digest& d) const;

  std::array<Shard, kShards> shards_;
  // Digests by key id and by agent, to apply events that name a key or an agent.
  mutable std::shared_mutex index_mutex_;
  std::unordered_map<std::string, Digest> digest_by_key_;
  std::unordered_map<std::string, std::vector<Digest>> digests_by_agent_;
  std::unordered_map<std::string, std::uint8_t> agent_tier_;
  std::unordered_map<std::string, v1::Environment> agent_environment_;
  mutable std::shared_mutex tiers_mutex_;
  std::vector<std::string> tiers_;
};

}  // namespace keyledger
