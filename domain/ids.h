#pragma once
// Opaque, URL-safe, server-generated ids.

#include <string>
#include <string_view>

#include "domain/clock.h"

namespace keyledger {

// `agt_` / `key_` / `tok_` + 24 lowercase hex characters (12 random bytes).
std::string new_agent_id(RandomSource& random);
std::string new_key_id(RandomSource& random);
std::string new_token_id(RandomSource& random);
// RFC 4122 version 4 UUID, lowercase, e.g. 1b4e28ba-2fa1-41d2-883f-0016d3cca427.
std::string new_event_id(RandomSource& random);
// A UUID (RFC 9562 version 8, lowercase) derived from `name` alone: the first 16 bytes of
// BLAKE2b(name) with the version and variant bits set. The same name gives the same id, so an
// event produced twice (at-least-once) is recognised by its id.
std::string derived_event_id(std::string_view name);

// True iff `id` is `prefix` followed by 24 lowercase hex characters.
bool is_well_formed_id(std::string_view id, std::string_view prefix);

inline constexpr std::string_view kAgentIdPrefix = "agt_";
inline constexpr std::string_view kKeyIdPrefix = "key_";
inline constexpr std::string_view kTokenIdPrefix = "tok_";

}  // namespace keyledger
