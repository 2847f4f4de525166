#pragma once
// The opaque cursor of paged reads (GET /v1/audit, webhook deliveries): base64url of
// "d:<position>" (newest first) or "a:<position>" (oldest first), so a cursor from one order
// is refused in the other.

#include <cstdint>
#include <string>

namespace keyledger::api {

std::string encode_cursor(bool descending, std::uint64_t position);
// False (position untouched or partly set) unless `cursor` is one encode_cursor made for
// the same order.
bool decode_cursor(const std::string& cursor, bool descending, std::uint64_t& position);

}  // namespace keyledger::api
