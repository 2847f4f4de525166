#pragma once
// The status line and header block of a Response, as the server sends them. The body goes out
// after them untouched, as a second buffer of the same write, so it is never copied.
//
// Beast still parses every request; only this side is written directly, because Beast's
// general serializer (a buffer sequence walked field by field) cost about a sixth of the
// server's CPU on GET /v1/auth, more than the verification itself.

#include <string>
#include <string_view>

#include "api/http.h"

namespace keyledger::api {

struct ResponseHead {
  // False if a header could not be framed: an empty name, or a CR, LF or NUL in a name or
  // value (or in the request id). `out` is then left as it was.
  bool valid = true;
  // Whether the connection stays open after this response: the caller's wish, turned off by a
  // handler's own `connection: close`.
  bool keep_alive = true;
  // False for 1xx, 204 and 304 answers, which carry neither a body nor a Content-Length.
  bool has_body = true;
};

// Appends the head of `response` for an HTTP/1.`version / 10` client to `out`: the status
// line with the standard reason phrase, the handler's headers (minus content-length,
// transfer-encoding and connection, which are the server's), content-type if the body is not
// empty and the handler set none, X-Request-Id, Connection when it differs from the version's
// default, and Content-Length.
ResponseHead write_response_head(const http::Response& response, unsigned version, std::string_view request_id,
                                 bool keep_alive, std::string& out);

}  // namespace keyledger::api
