#pragma once
// The agent aggregate: one stream per agent (`agent-<agent_id>`) holding its profile and its
// keys. State is a pure fold of the stream's events; commands check their invariants against
// the folded state and return the events to append (api/openapi.yaml). No I/O here: the caller
// appends the events with `expected_version = state.version`.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "domain/clock.h"
#include "domain/events.h"
#include "domain/key_material.h"
#include "domain/secret_box.h"
#include "domain/status.h"

namespace keyledger {

inline constexpr std::size_t kMaxActiveKeysPerAgent = 10;
inline constexpr std::int64_t kMaxRotationOverlapSeconds = 604800;  // 7 days
inline constexpr std::int64_t kMaxKeyLifetimeSeconds = 10LL * 366 * 24 * 3600;
inline constexpr std::size_t kMaxLabelChars = 100;
inline constexpr std::size_t kMaxRevocationReasonChars = 200;
inline constexpr std::size_t kMaxCompromiseNoteChars = 2000;
inline constexpr std::size_t kMaxCompromiseSourceChars = 200;
inline constexpr std::size_t kMaxActorChars = 128;

enum class KeyStatus { kActive, kRevoked, kExpired };
std::string_view key_status_name(KeyStatus status);               // active | revoked | expired
std::string_view revocation_reason_name(v1::RevocationReason r);  // manual | rotated | … | ""
std::string_view environment_name(v1::Environment e);             // production | staging

struct KeyState {
  std::string key_id;
  std::string agent_id;
  std::string label;
  std::string hint;
  Digest digest{};
  v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
  KeyStatus status = KeyStatus::kActive;  // as recorded by events
  TimePoint created_at{};
  std::optional<TimePoint> expires_at;
  std::optional<TimePoint> revoked_at;
  v1::RevocationReason revocation_reason = v1::REVOCATION_REASON_UNSPECIFIED;
  std::string rotated_from;
  std::string rotated_to;
  std::optional<TimePoint> compromised_at;

  // Expiry is checked against the clock, whether or not KeyExpired was written yet.
  bool is_active_at(TimePoint now) const {
    return status == KeyStatus::kActive && (!expires_at || now < *expires_at);
  }
  KeyStatus status_at(TimePoint now) const {
    return status == KeyStatus::kActive && !is_active_at(now) ? KeyStatus::kExpired : status;
  }
};

struct AgentProfile {
  std::string name;
  std::string description;
  std::vector<std::string> skills;
  std::vector<std::string> languages;
  std::string webhook_url;
  v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
  std::string owner_id;
};

struct AgentState {
  std::string agent_id;  // empty: the stream has no events (no such agent)
  AgentProfile profile;
  std::string rate_limit_tier;
  v1::SealedSecret webhook_secret;
  TimePoint created_at{};
  std::vector<KeyState> keys;  // in creation order
  std::uint64_t version = 0;   // stream_version of the last folded event

  bool exists() const { return !agent_id.empty(); }
  const KeyState* find_key(std::string_view key_id) const;
  std::size_t active_key_count(TimePoint now) const;
};

// The pure fold. Events of other streams or unknown payloads leave the state unchanged
// except for `version`, which becomes event.stream_version().
AgentState apply(AgentState state, const v1::Event& event);
AgentState fold_agent(const std::vector<v1::Event>& events);

// What a command needs besides the state. References must outlive the call.
struct CommandContext {
  const Clock& clock;
  RandomSource& random;
  const KeyHasher& hasher;
  const SecretBox& secrets;
  std::string actor;  // recorded in every event ("gateway-eu", "key:key_…", "leak:github", …)
};

// A command's outcome: the events to append and the secrets to show once.
struct Decision {
  std::vector<v1::Event> events;  // stream, event_id, occurred_at, actor and type are set
  std::string agent_id;
  std::string key_id;          // the key created (create, rotate, compromise with replace)
  std::string api_key;         // the new full key, if one was created
  std::string webhook_secret;  // on registration only
};

// --- Commands. Each returns the Decision, or a Status with the contract's error code:
// InvalidArgument (validation_failed, every broken field in details), NotFound
// (agent_not_found / key_not_found), Conflict (key_not_active, key_already_compromised,
// too_many_active_keys).

struct RegisterAgentOptions {
  // Plain http webhook URLs are accepted only with --allow-insecure-webhooks.
  bool allow_insecure_webhooks = false;
  // Tier a new agent gets.
  std::string default_tier = "standard";
};
// Rules: name 1–100 chars; description 20–2000; skills 1–50 unique non-empty strings of at
// most 64 chars; languages 1–20 likewise; webhook_url absolute https URL; owner_id ≤ 128.
// Lengths count Unicode code points. All broken fields are reported together.
std::vector<FieldError> validate_profile(const AgentProfile& profile, const RegisterAgentOptions& options);
Result<Decision> register_agent(const AgentProfile& profile, const RegisterAgentOptions& options,
                                CommandContext& ctx);

struct CreateKey {
  std::optional<std::string> label;                // ≤ 100 chars
  std::optional<std::int64_t> expires_in_seconds;  // 1 … kMaxKeyLifetimeSeconds
};
Result<Decision> create_key(const AgentState& state, const CreateKey& cmd, CommandContext& ctx);

struct RotateKey {
  std::string key_id;
  std::optional<std::string> label;  // default: the old key's label
  // Unset: the old key stays active (overlap). 0: revoked at once (reason rotated).
  // 1…604800: it expires that many seconds from now (never later than it already would).
  std::optional<std::int64_t> old_key_expires_in_seconds;
};
// The new key inherits the old key's lifetime (expires_at - created_at) if it had one.
Result<Decision> rotate_key(const AgentState& state, const RotateKey& cmd, CommandContext& ctx);

struct RevokeKey {
  std::string key_id;
  std::string reason;  // free text ≤ 200 chars; recorded as the event's note
};
Result<Decision> revoke_key(const AgentState& state, const RevokeKey& cmd, CommandContext& ctx);

struct ReportCompromise {
  std::string key_id;
  std::string note;    // ≤ 2000 chars
  std::string source;  // ≤ 200 chars
  bool replace = false;
};
// Revokes at once if active; marks compromised even if already revoked or expired;
// recorded once (a second report is key_already_compromised). With `replace`, a new key is
// created (rotated_from = the compromised key).
Result<Decision> report_compromise(const AgentState& state, const ReportCompromise& cmd, CommandContext& ctx);

// Records the expiry of a key past its expires_at (the scheduler's command). Conflict
// key_not_active if the key is not (recorded as) active or not yet past its expiry.
Result<Decision> expire_key(const AgentState& state, std::string_view key_id, CommandContext& ctx);

// `known_tiers`: the tiers in configuration; any other is a validation error on "tier".
Result<Decision> set_rate_limit_tier(const AgentState& state, const std::string& tier,
                                     const std::vector<std::string>& known_tiers, CommandContext& ctx);

// One webhook delivery attempt, recorded in the agent's stream (WebhookDeliveryRecorded).
struct RecordWebhookDelivery {
  v1::WebhookDeliveryRecorded record;    // its agent_id is set to the agent's
  std::string event_id;                  // empty: a new id (a carried record keeps its own)
  std::optional<TimePoint> occurred_at;  // empty: now
};
Result<Decision> record_webhook_delivery(const AgentState& state, const RecordWebhookDelivery& cmd,
                                         CommandContext& ctx);

// The event that records a delivery attempt, as the command decides it and as `keyledger
// webhooks` carries it over Kafka before the server records it.
v1::Event webhook_delivery_event(const std::string& agent_id, const v1::WebhookDeliveryRecorded& record,
                                 std::string event_id, TimePoint occurred_at, std::string actor);

}  // namespace keyledger
