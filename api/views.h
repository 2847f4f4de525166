#pragma once
// JSON shapes of the contract (API.md §4): keys, agents, service tokens, audit events.
// Digests and sealed secrets never appear in any of them.

#include <nlohmann/json.hpp>
#include <optional>

#include "domain/agent.h"
#include "domain/service_tokens.h"

namespace keyledger::api {

using Json = nlohmann::json;

// RFC 3339 string, or null.
Json time_json(const std::optional<TimePoint>& t);

// A key; `status` is as of `now` (an active key past its expiry shows `expired`).
Json key_json(const KeyState& key, TimePoint now, std::optional<TimePoint> last_used);
// An agent, with `active_key_count` as of `now`.
Json agent_json(const AgentState& agent, TimePoint now);
// A service token without its secret.
Json token_json(const ServiceTokenState& token);
// An audit entry: {position, event_id, type, agent_id, key_id, actor, occurred_at, data}.
Json audit_event_json(const v1::Event& event);
// The payload of an event as JSON (snake_case, enums as the contract's lowercase words),
// without digests or sealed secrets.
Json event_data_json(const v1::Event& event);

}  // namespace keyledger::api
