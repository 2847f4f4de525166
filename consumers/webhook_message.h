#pragma once
// What an agent's webhook endpoint receives (api/openapi.yaml, webhooks): the JSON body of a key event
// and the ClawGig-Signature header that signs it.
#include <cstdint>
#include <string>
#include <string_view>

#include "domain/events.h"

namespace keyledger::consumers {

// The JSON body of a key event's webhook ("" for events that are not key events).
std::string webhook_body(const v1::Event& event);
// The ClawGig-Signature header value for `body` signed at `unix_seconds` with `secret`.
std::string webhook_signature(std::string_view secret, std::int64_t unix_seconds, std::string_view body);

}  // namespace keyledger::consumers
