#pragma once
// Byte layouts of the projection column families (listed in projector.h). Internal to the
// projections layer.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "domain/clock.h"
#include "domain/status.h"
#include "projections/active_key_table.h"

#include "eventstore/event_store.h"

namespace rocksdb {
class Status;
}  // namespace rocksdb

namespace keyledger::storage_format {

inline constexpr std::size_t kPositionBytes = 8;

using ::keyledger::decode_be64;  // eventstore/event_store.h
using ::keyledger::encode_be64;

// Milliseconds since the epoch, rounded down.
std::int64_t unix_ms(TimePoint t);
// A time key: BE(ms); times before the epoch share key 0 (their exact time is checked on the event).
std::string time_key(std::int64_t ms);

// `value \0 BE(position)`: the keys of the audit_* and deliveries families, into `out` (what
// it held is replaced; its memory is reused).
void value_position_key(std::string& out, std::string_view value, std::uint64_t position);
// `value \0`: every key of one value starts with it.
std::string value_prefix(std::string_view value);

// key_active / key_expiry: `BE(ms) key_id`.
std::string time_key_id(std::int64_t ms, std::string_view key_id);

// key_table values. The tier is stored by name: tier indexes depend on configuration order.
std::string pack_key_entry(const KeyEntry& entry, std::string_view tier_name);
bool unpack_key_entry(std::string_view bytes, KeyEntry& entry, std::string& tier_name);

// agent_settings values: environment and tier name.
std::string pack_agent_settings(v1::Environment environment, std::string_view tier_name);
bool unpack_agent_settings(std::string_view bytes, v1::Environment& environment, std::string& tier_name);

// IoError or Corruption saying `what` failed; Ok for an ok status.
using keyledger::from_rocks;  // eventstore/event_store.h

}  // namespace keyledger::storage_format
