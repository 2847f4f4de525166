#pragma once
// X-Request-Id (api/openapi.yaml): the client's, if it is sane, else a fresh one. Echoed in every
// response and log line of the request.

#include <cstddef>
#include <string>
#include <string_view>

#include "api/http.h"

namespace keyledger::api {

// A client's value is kept only if it is this short and made of [A-Za-z0-9._-].
inline constexpr std::size_t kMaxRequestIdLength = 128;
inline constexpr std::size_t kGeneratedRequestIdBytes = 8;  // 16 hex characters

// Whether a client's X-Request-Id may be kept: 1-128 of [A-Za-z0-9._-], and not shaped like
// a key or a service token (a client that put its credential in the wrong header).
bool is_sane_request_id(std::string_view id);
// A fresh id into `out`: a random per-thread prefix plus a counter, 16 hex characters.
void new_request_id(std::string& out);
// Sets `out` to the client's X-Request-Id if it is sane, else to a fresh one.
void request_id_for(const http::Headers& headers, std::string& out);

}  // namespace keyledger::api
