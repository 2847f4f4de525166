#pragma once
// Helpers around the Event envelope (README, Operations: Kafka).

#include <string>
#include <string_view>

#include "domain/clock.h"
#include "keyledger/v1/events.pb.h"

namespace keyledger {

inline constexpr std::string_view kTokensStream = "tokens";

// `agent-<agent_id>`.
std::string agent_stream(std::string_view agent_id);

// The audit type string of an event's payload (`key.revoked`, …); "" for an empty payload.
std::string_view event_type_name(v1::Event::PayloadCase payload);

// The agent and key an event is about ("" where it has none): the event's own field, valid
// as long as the event.
const std::string& event_agent_id(const v1::Event& event);
// True for the stand-in the event store returns for a record it cannot decode: only position
// (and, read by stream, stream and stream_version) set, no event_id, no payload. Consumers
// pass over it (it changes no state and is published nowhere); the store counts and logs it.
bool is_unreadable(const v1::Event& event);
const std::string& event_key_id(const v1::Event& event);
// A key.* event (created, rotated, revoked, expired, compromised): what webhooks announce.
bool is_key_event(const v1::Event& event);

// Conversions between TimePoint and protobuf Timestamps (nanosecond precision).
google::protobuf::Timestamp to_timestamp(TimePoint t);
TimePoint from_timestamp(const google::protobuf::Timestamp& ts);

// RFC 3339 UTC, `2026-11-26T10:36:23Z`, with `.mmm` fractional seconds when not whole.
std::string format_rfc3339(TimePoint t);
// Parses RFC 3339 with `Z` or a numeric offset, fractional seconds allowed.
bool parse_rfc3339(std::string_view text, TimePoint& out);

}  // namespace keyledger
