#pragma once
// Property checks shared by the fuzz targets. A broken property aborts with a message, which
// libFuzzer reports as a crash and saves the input (crash-…).

#include <string>
#include <string_view>

#include "api/http.h"
#include "api/views.h"
#include "domain/events.h"

namespace keyledger::fuzz {

// Prints "property violated: <what>" and `detail` (made printable), then aborts.
[[noreturn]] void fail(std::string_view what, std::string_view detail = {});

#define FUZZ_CHECK(cond, detail)                \
  do {                                          \
    if (!(cond)) {                              \
      ::keyledger::fuzz::fail(#cond, (detail)); \
    }                                           \
  } while (false)

// Strict UTF-8 (RFC 3629): no overlong forms, surrogates, code points above U+10FFFF or
// truncated sequences. Written here independently of domain/text.cpp, to check it.
bool is_valid_utf8(std::string_view text);
// Code points of valid UTF-8 (precondition: is_valid_utf8).
std::size_t code_points(std::string_view text);
// True if `text` holds a C0 or C1 control character or DEL (U+0000–U+001F, U+007F–U+009F),
// other than those in `allowed`.
bool has_control(std::string_view text, std::string_view allowed = {});

// The body of an error answer of api/openapi.yaml, checked: {"error": {"code", "message",
// "request_id" == `request_id`, "details"?}}; returns the code.
std::string check_error_body(const http::Response& res, const std::string& request_id);

// Every answer: a status of the contract (never 5xx but 503), frameable headers, a JSON body
// that parses when the content type says JSON, an error body for every 4xx/5xx; no body at all
// for HEAD.
api::Json check_response(const http::Response& res, const std::string& request_id, bool head = false);

// A property product code is known to break, reported to its owner and not fixed yet: listed in
// tests/fuzz/known_bugs (ops/fuzz passes the ids in KEYLEDGER_FUZZ_KNOWN_BUGS), its check is
// skipped so the other properties keep being fuzzed. Remove the line once the bug is fixed.
bool known_bug(std::string_view id);

#define FUZZ_CHECK_UNLESS_KNOWN(id, cond, detail)           \
  do {                                                      \
    if (!(cond) && !::keyledger::fuzz::known_bug(id)) {     \
      ::keyledger::fuzz::fail(#cond " [" id "]", (detail)); \
    }                                                       \
  } while (false)

// An event a command appended: every string valid UTF-8, the envelope complete, the type
// matching the payload, the actor and the free texts within the contract's limits, single-line
// texts without control characters.
void check_appended_event(const v1::Event& event);

// Every string field of `message` and its sub-messages is valid UTF-8.
bool strings_are_utf8(const google::protobuf::Message& message);

// `text` with non-printable bytes as \xNN, cut to a readable length.
std::string printable(std::string_view text);

}  // namespace keyledger::fuzz
