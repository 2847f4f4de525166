#include "api/cursor.h"

#include <sodium.h>

#include <charconv>
#include <cstring>

namespace keyledger::api {

std::string encode_cursor(bool descending, std::uint64_t position) {
  const std::string raw = (descending ? "d:" : "a:") + std::to_string(position);
  std::string out(sodium_base64_encoded_len(raw.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

bool decode_cursor(const std::string& cursor, bool descending, std::uint64_t& position) {
  std::string raw(cursor.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(raw.data()), raw.size(), cursor.data(),
                        cursor.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return false;
  }
  raw.resize(len);
  if (raw.size() < 3 || raw.substr(0, 2) != (descending ? "d:" : "a:")) {
    return false;
  }
  const auto [ptr, ec] = std::from_chars(raw.data() + 2, raw.data() + raw.size(), position);
  return ec == std::errc() && ptr == raw.data() + raw.size();
}

}  // namespace keyledger::api
