#pragma once
// The JSON form of an event (api/openapi.yaml: audit entries and webhook payloads): what HTTP and
// webhooks both show of the log. Digests and sealed secrets never appear in it.

#include <nlohmann/json.hpp>

#include "domain/events.h"

namespace keyledger {

using Json = nlohmann::json;

// An audit entry: {position, event_id, type, agent_id, key_id, actor, occurred_at, data}.
Json audit_event_json(const v1::Event& event);
// The payload of an event as JSON (snake_case, enums as the contract's lowercase words),
// without digests or sealed secrets.
Json event_data_json(const v1::Event& event);

}  // namespace keyledger
