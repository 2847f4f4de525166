#include "domain/text.h"

#include <cstdint>

namespace keyledger {

std::optional<std::size_t> count_code_points(std::string_view text) {
  std::size_t count = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<std::uint8_t>(text[i]);
    std::size_t trailing = 0;
    std::uint32_t code = 0;
    std::uint32_t min_code = 0;
    if (lead < 0x80) {
      code = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      trailing = 1;
      code = lead & 0x1F;
      min_code = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      trailing = 2;
      code = lead & 0x0F;
      min_code = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      trailing = 3;
      code = lead & 0x07;
      min_code = 0x10000;
    } else {
      return std::nullopt;  // a continuation byte or 0xF8…0xFF cannot start a code point
    }
    if (text.size() - i <= trailing) {
      return std::nullopt;  // truncated sequence
    }
    for (std::size_t k = 1; k <= trailing; ++k) {
      const auto byte = static_cast<std::uint8_t>(text[i + k]);
      if ((byte & 0xC0) != 0x80) {
        return std::nullopt;
      }
      code = (code << 6) | (byte & 0x3F);
    }
    if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return std::nullopt;
    }
    i += trailing + 1;
    ++count;
  }
  return count;
}

bool check_text_length(std::vector<FieldError>& errors, std::string_view field, std::string_view text,
                       std::size_t min, std::size_t max) {
  const auto length = count_code_points(text);
  if (!length) {
    errors.push_back({std::string(field), "must be valid UTF-8"});
    return false;
  }
  if (*length < min || *length > max) {
    std::string message;
    if (min == 0) {
      message = "must be at most " + std::to_string(max) + " characters";
    } else {
      message = "must be " + std::to_string(min) + " to " + std::to_string(max) + " characters";
    }
    errors.push_back({std::string(field), std::move(message)});
    return false;
  }
  return true;
}

}  // namespace keyledger
