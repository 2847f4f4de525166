// The agent aggregate's state: the names its enums show, and the fold of its stream's events
// (apply, fold_agent). The commands that decide new events are in agent.cpp.
#include <algorithm>

#include "domain/agent.h"
#include "domain/ids.h"

namespace keyledger {

// --- Names ------------------------------------------------------------------------------

std::string_view key_status_name(KeyStatus status) {
  switch (status) {
    case KeyStatus::kActive:
      return "active";
    case KeyStatus::kRevoked:
      return "revoked";
    case KeyStatus::kExpired:
      return "expired";
  }
  return "";
}

std::string_view revocation_reason_name(v1::RevocationReason r) {
  switch (r) {
    case v1::REVOCATION_REASON_MANUAL:
      return "manual";
    case v1::REVOCATION_REASON_ROTATED:
      return "rotated";
    case v1::REVOCATION_REASON_EXPIRED:
      return "expired";
    case v1::REVOCATION_REASON_COMPROMISED:
      return "compromised";
    default:
      return "";
  }
}

std::string_view environment_name(v1::Environment e) {
  // Unspecified reads as the contract's default.
  return e == v1::ENVIRONMENT_STAGING ? "staging" : "production";
}

// --- State ------------------------------------------------------------------------------

const KeyState* AgentState::find_key(std::string_view key_id) const {
  for (const KeyState& key : keys) {
    if (key.key_id == key_id) {
      return &key;
    }
  }
  return nullptr;
}

std::size_t AgentState::active_key_count(TimePoint now) const {
  return static_cast<std::size_t>(
      std::count_if(keys.begin(), keys.end(), [now](const KeyState& key) { return key.is_active_at(now); }));
}

namespace {

KeyState* find_key_mut(AgentState& state, std::string_view key_id) {
  for (KeyState& key : state.keys) {
    if (key.key_id == key_id) {
      return &key;
    }
  }
  return nullptr;
}

// The first event of a stream: only an AgentRegistered for this very stream starts it.
AgentState registered(AgentState state, const v1::Event& event, TimePoint at) {
  if (event.payload_case() != v1::Event::kAgentRegistered) {
    return state;
  }
  const v1::AgentRegistered& e = event.agent_registered();
  if (e.agent_id().empty() || event.stream() != agent_stream(e.agent_id())) {
    return state;
  }
  state.agent_id = e.agent_id();
  state.profile.name = e.name();
  state.profile.description = e.description();
  state.profile.skills.assign(e.skills().begin(), e.skills().end());
  state.profile.languages.assign(e.languages().begin(), e.languages().end());
  state.profile.webhook_url = e.webhook_url();
  state.profile.environment = e.environment();
  state.profile.owner_id = e.owner_id();
  state.rate_limit_tier = e.rate_limit_tier();
  state.webhook_secret = e.webhook_secret();
  state.created_at = at;
  return state;
}

void key_created(AgentState& state, const v1::KeyCreated& e, TimePoint at) {
  if (state.find_key(e.key_id()) != nullptr) {
    return;
  }
  KeyState key;
  key.key_id = e.key_id();
  key.agent_id = e.agent_id();
  key.label = e.label();
  key.hint = e.hint();
  if (e.digest().size() == key.digest.size()) {
    std::copy(e.digest().begin(), e.digest().end(), key.digest.begin());
  }
  key.environment = e.environment();
  key.status = KeyStatus::kActive;
  key.created_at = at;
  if (e.has_expires_at()) {
    key.expires_at = from_timestamp(e.expires_at());
  }
  key.rotated_from = e.rotated_from();
  if (!key.rotated_from.empty()) {
    // A compromise replacement has no KeyRotated; the link is recorded here for both.
    if (KeyState* old_key = find_key_mut(state, key.rotated_from)) {
      old_key->rotated_to = key.key_id;
    }
  }
  state.keys.push_back(std::move(key));
}

void key_rotated(AgentState& state, const v1::KeyRotated& e) {
  if (KeyState* key = find_key_mut(state, e.key_id())) {
    key->rotated_to = e.new_key_id();
    if (e.has_old_key_expires_at()) {
      key->expires_at = from_timestamp(e.old_key_expires_at());
    }
  }
}

void key_revoked(AgentState& state, const v1::KeyRevoked& e, TimePoint at) {
  KeyState* key = find_key_mut(state, e.key_id());
  if (key != nullptr && key->status == KeyStatus::kActive) {
    key->status = KeyStatus::kRevoked;
    key->revoked_at = at;
    key->revocation_reason = e.reason();
  }
}

void key_expired(AgentState& state, const v1::KeyExpired& e) {
  KeyState* key = find_key_mut(state, e.key_id());
  if (key != nullptr && key->status == KeyStatus::kActive) {
    key->status = KeyStatus::kExpired;
    key->revocation_reason = v1::REVOCATION_REASON_EXPIRED;
    if (e.has_expires_at()) {
      key->expires_at = from_timestamp(e.expires_at());
    }
  }
}

void key_compromised(AgentState& state, const v1::KeyCompromised& e, TimePoint at) {
  KeyState* key = find_key_mut(state, e.key_id());
  if (key == nullptr) {
    return;
  }
  if (!key->compromised_at) {
    key->compromised_at = at;
  }
  if (e.was_active() && key->status == KeyStatus::kActive) {
    key->status = KeyStatus::kRevoked;
    key->revoked_at = at;
    key->revocation_reason = v1::REVOCATION_REASON_COMPROMISED;
  }
}

}  // namespace

AgentState apply(AgentState state, const v1::Event& event) {
  state.version = event.stream_version();
  const TimePoint at = from_timestamp(event.occurred_at());
  if (!state.exists()) {
    return registered(std::move(state), event, at);
  }
  if (event.stream() != agent_stream(state.agent_id) || event_agent_id(event) != state.agent_id) {
    return state;
  }
  switch (event.payload_case()) {
    case v1::Event::kRateLimitTierChanged:
      state.rate_limit_tier = event.rate_limit_tier_changed().tier();
      break;
    case v1::Event::kKeyCreated:
      key_created(state, event.key_created(), at);
      break;
    case v1::Event::kKeyRotated:
      key_rotated(state, event.key_rotated());
      break;
    case v1::Event::kKeyRevoked:
      key_revoked(state, event.key_revoked(), at);
      break;
    case v1::Event::kKeyExpired:
      key_expired(state, event.key_expired());
      break;
    case v1::Event::kKeyCompromised:
      key_compromised(state, event.key_compromised(), at);
      break;
    default:  // a second registration, webhook deliveries, other streams' payloads
      break;
  }
  return state;
}

AgentState fold_agent(const std::vector<v1::Event>& events) {
  AgentState state;
  for (const v1::Event& event : events) {
    state = apply(std::move(state), event);
  }
  return state;
}

}  // namespace keyledger
