#pragma once
// Length rules of the contract count Unicode code points, not bytes (api/openapi.yaml).

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain/status.h"

namespace keyledger {

// The number of code points in `text`, or nullopt if it is not valid UTF-8 (overlong forms,
// surrogates, code points above U+10FFFF and truncated sequences are invalid).
std::optional<std::size_t> count_code_points(std::string_view text);

// Which control characters (U+0000–U+001F, U+007F–U+009F) a text may hold: none on one line
// (names, labels, ids, actors: a NUL or an escape sequence there only ever deceives a reader
// of the audit log or a terminal), tab and line breaks in prose (descriptions, notes, reasons).
enum class TextForm { kSingleLine, kMultiLine };

// The number of code points in `text` if it is valid UTF-8 whose control characters `form`
// allows, else nullopt.
std::optional<std::size_t> count_text_characters(std::string_view text, TextForm form);

// Appends a FieldError for `field` to `errors` unless `text` is valid UTF-8 of `min`…`max`
// code points with no control character that `form` forbids. Returns true when the text is
// acceptable.
bool check_text_length(std::vector<FieldError>& errors, std::string_view field, std::string_view text,
                       std::size_t min, std::size_t max, TextForm form = TextForm::kSingleLine);

// The longest prefix of `text` of at most `max` code points that is valid UTF-8 with no
// control character: invalid sequences and control characters are replaced by U+FFFD first.
// For text that must be stored whatever the client sent (a leak report's source).
std::string sanitize_text(std::string_view text, std::size_t max);

}  // namespace keyledger
