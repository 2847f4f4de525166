#pragma once
// JSON shapes of the contract (api/openapi.yaml): keys, agents, service tokens, audit events.
// Digests and sealed secrets never appear in any of them.

#include <nlohmann/json.hpp>
#include <optional>

#include "domain/agent.h"
#include "domain/event_json.h"
#include "domain/service_tokens.h"

namespace keyledger::api {

using keyledger::Json;
using keyledger::audit_event_json;
using keyledger::event_data_json;

// RFC 3339 string, or null.
Json time_json(const std::optional<TimePoint>& t);

// A key; `status` is as of `now` (an active key past its expiry shows `expired`).
Json key_json(const KeyState& key, TimePoint now, std::optional<TimePoint> last_used);
// An agent, with `active_key_count` as of `now`.
Json agent_json(const AgentState& agent, TimePoint now);
// A service token without its secret.
Json token_json(const ServiceTokenState& token);

}  // namespace keyledger::api
