#include "domain/text.h"

#include <cstdint>

namespace keyledger {

namespace {

// Decodes the code point at text[i]: its value and length in bytes, or nullopt if the bytes
// there are not a valid UTF-8 sequence (overlong forms, surrogates, code points above
// U+10FFFF and truncated sequences are invalid).
struct CodePoint {
  std::uint32_t value = 0;
  std::size_t bytes = 0;
};

std::optional<CodePoint> decode_at(std::string_view text, std::size_t i) {
  const auto lead = static_cast<std::uint8_t>(text[i]);
  std::size_t trailing = 0;
  std::uint32_t code = 0;
  std::uint32_t min_code = 0;
  if (lead < 0x80) {
    return CodePoint{lead, 1};
  }
  if ((lead & 0xE0) == 0xC0) {
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
  return CodePoint{code, trailing + 1};
}

bool allowed(std::uint32_t code, TextForm form) {
  const bool control = code < 0x20 || (code >= 0x7F && code <= 0x9F);
  if (!control) {
    return true;
  }
  return form == TextForm::kMultiLine && (code == '\t' || code == '\n' || code == '\r');
}

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

std::optional<std::size_t> count_code_points(std::string_view text) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++count) {
    const auto cp = decode_at(text, i);
    if (!cp) {
      return std::nullopt;
    }
    i += cp->bytes;
  }
  return count;
}

std::optional<std::size_t> count_text_characters(std::string_view text, TextForm form) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++count) {
    const auto cp = decode_at(text, i);
    if (!cp || !allowed(cp->value, form)) {
      return std::nullopt;
    }
    i += cp->bytes;
  }
  return count;
}

std::string sanitize_text(std::string_view text, std::size_t max) {
  std::string out;
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size() && count < max; ++count) {
    const auto cp = decode_at(text, i);
    if (cp && allowed(cp->value, TextForm::kSingleLine)) {
      out.append(text.substr(i, cp->bytes));
      i += cp->bytes;
    } else {
      out.append(kReplacementCharacter);
      i += cp ? cp->bytes : 1;
    }
  }
  return out;
}

bool check_text_length(std::vector<FieldError>& errors, std::string_view field, std::string_view text,
                       std::size_t min, std::size_t max, TextForm form) {
  if (!count_code_points(text)) {
    errors.push_back({std::string(field), "must be valid UTF-8"});
    return false;
  }
  const auto length = count_text_characters(text, form);
  if (!length) {
    errors.push_back({std::string(field), form == TextForm::kSingleLine
                                              ? "must not contain control characters"
                                              : "must not contain control characters other than tab and line breaks"});
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
