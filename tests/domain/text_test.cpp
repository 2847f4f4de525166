#include "domain/text.h"

#include <catch2/catch.hpp>

namespace keyledger {
namespace {

TEST_CASE("count_code_points counts code points, not bytes", "[domain][text]") {
  CHECK(count_code_points("") == 0u);
  CHECK(count_code_points("abc") == 3u);
  CHECK(count_code_points("caf\xC3\xA9") == 4u);                // café
  CHECK(count_code_points("\xE2\x80\xA6") == 1u);               // …
  CHECK(count_code_points("\xF0\x9F\x94\x91 key") == 5u);       // 🔑 key
  CHECK(count_code_points("\xF4\x8F\xBF\xBF") == 1u);           // U+10FFFF
  CHECK(count_code_points(std::string_view("a\0b", 3)) == 3u);  // NUL is a code point
}

TEST_CASE("count_code_points rejects invalid UTF-8", "[domain][text]") {
  for (const char* bad :
       {"\x80", "a\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xED\xA0\x80", "\xF0\x80\x80\x80",
        "\xF4\x90\x80\x80", "\xF8\x88\x80\x80\x80", "\xFF", "\xE2\x82", "abc\xC3", "\xC3\x28"}) {
    INFO(bad);
    CHECK_FALSE(count_code_points(bad).has_value());
  }
}

TEST_CASE("check_text_length reports the field when out of range", "[domain][text]") {
  std::vector<FieldError> errors;
  CHECK(check_text_length(errors, "name", "ok", 1, 2));
  CHECK(errors.empty());
  CHECK(check_text_length(errors, "name", "\xC3\xA9\xC3\xA9", 1, 2));  // 4 bytes, 2 code points
  CHECK(errors.empty());
  CHECK_FALSE(check_text_length(errors, "name", "abc", 1, 2));
  CHECK_FALSE(check_text_length(errors, "label", "", 1, 2));
  CHECK_FALSE(check_text_length(errors, "note", "\xFF", 0, 2));
  REQUIRE(errors.size() == 3);
  CHECK(errors[0].field == "name");
  CHECK(errors[1].field == "label");
  CHECK(errors[2].field == "note");
  CHECK(errors[2].message == "must be valid UTF-8");
}

}  // namespace
}  // namespace keyledger
