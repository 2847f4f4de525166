#pragma once
// Length rules of the contract count Unicode code points, not bytes (API.md §4).

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

// Appends a FieldError for `field` to `errors` unless `text` is valid UTF-8 of `min`…`max`
// code points. Returns true when the text is acceptable.
bool check_text_length(std::vector<FieldError>& errors, std::string_view field, std::string_view text,
                       std::size_t min, std::size_t max);

}  // namespace keyledger
