// http::parse_target, http::path_segments, http::is_canonical_path, http::frameable and the
// Headers list (api/http.h), on the bytes of a request target.
//
// Checked: parse_target accepts exactly the targets whose path is canonical (an independent
// reading of api/openapi.yaml: "/" or "/seg/…", no empty, "." or ".." segment, no '%') and whose query
// escapes are well formed; the path it gives is the target up to '?'; the query it gives, encoded
// again, parses to the same map; path_segments gives the non-empty pieces between slashes,
// nothing else; frameable is true exactly when there is no CR, LF or NUL (it reads eight bytes
// at a time: every length and alignment matters); a Headers list finds a field by any case of
// its name, set replaces every earlier value, and it is frameable only while every name is
// non-empty and no name or value holds CR, LF or NUL.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "api/http.h"
#include "support/checks.h"

namespace keyledger::fuzz {
namespace {

bool reference_canonical(std::string_view path) {
  if (path == "/") {
    return true;
  }
  if (path.empty() || path.front() != '/') {
    return false;
  }
  std::size_t start = 1;
  while (true) {
    const std::size_t end = path.find('/', start);
    const std::string_view seg =
        path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (seg.empty() || seg == "." || seg == ".." || seg.find('%') != std::string_view::npos) {
      return false;
    }
    if (end == std::string_view::npos) {
      return true;
    }
    start = end + 1;
  }
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool reference_escapes_ok(std::string_view query) {
  for (std::size_t i = 0; i < query.size(); ++i) {
    if (query[i] == '%') {
      if (i + 2 >= query.size()) {
        return false;
      }
      if (!is_hex(query[i + 1]) || !is_hex(query[i + 2])) {
        return false;
      }
      i += 2;
    }
  }
  return true;
}

std::string encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

bool reference_frameable(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

void run(std::string_view target) {
  const std::string where = printable(target);

  // frameable at every offset, so every alignment of the eight-byte reads is tried.
  for (std::size_t skip = 0; skip < 8 && skip <= target.size(); ++skip) {
    const std::string_view piece = target.substr(skip);
    FUZZ_CHECK(http::frameable(piece) == reference_frameable(piece), "frameable: " + printable(piece));
  }

  // path_segments on anything.
  const auto segments = http::path_segments(target);
  std::string joined;
  for (const auto s : segments) {
    FUZZ_CHECK(!s.empty() && s.find('/') == std::string_view::npos, "segment: " + where);
    joined += s;
  }
  std::string without_slashes;
  for (char c : target) {
    if (c != '/') {
      without_slashes += c;
    }
  }
  FUZZ_CHECK(joined == without_slashes, "segments lose or add bytes: " + where);

  // parse_target.
  const std::size_t qpos = target.find('?');
  const std::string_view raw_path = target.substr(0, qpos);
  FUZZ_CHECK(http::is_canonical_path(raw_path) == reference_canonical(raw_path),
             "is_canonical_path: " + where);
  const bool expected = reference_canonical(raw_path) &&
                        (qpos == std::string_view::npos || reference_escapes_ok(target.substr(qpos + 1)));
  std::string path;
  std::map<std::string, std::string> query;
  const bool ok = http::parse_target(target, path, query);
  FUZZ_CHECK(ok == expected, std::string("parse_target ") + (ok ? "accepts " : "refuses ") + where);
  if (ok) {
    FUZZ_CHECK(path == raw_path, "path: " + where);
    std::string again = path;
    char sep = '?';
    for (const auto& [name, value] : query) {
      again += sep + encode(name) + "=" + encode(value);
      sep = '&';
    }
    std::string path2;
    std::map<std::string, std::string> query2;
    FUZZ_CHECK(http::parse_target(again, path2, query2) && path2 == path && query2 == query,
               "query round trip: " + where + " -> " + printable(again));
  }

  // Headers: the input split at the first ':' into a name and a value.
  const std::size_t colon = target.find(':');
  const std::string_view name = target.substr(0, colon);
  const std::string_view value =
      colon == std::string_view::npos ? std::string_view{} : target.substr(colon + 1);
  http::Headers h;
  h.add("X-First", "1");
  h.add(name, value);
  const bool framed = !name.empty() && reference_frameable(name) && reference_frameable(value);
  FUZZ_CHECK(h.frameable() == framed, "Headers::frameable: " + where);
  std::string upper(name);
  for (auto& c : upper) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (!http::equals_ignoring_case(name, "X-First")) {
    FUZZ_CHECK(h.get(upper) == value, "get by another case: " + where);
  }
  h.set(name, "replaced");
  FUZZ_CHECK(h.get(name) == std::string_view("replaced"), "set: " + where);
  std::size_t count = 0;
  for (const auto& f : h.all()) {
    count += http::equals_ignoring_case(f.name, name) ? 1 : 0;
  }
  FUZZ_CHECK(count == 1, "set left other values: " + where);
  if (framed) {
    FUZZ_CHECK(std::string(h.wire()) == "X-First: 1\r\n" + std::string(name) + ": replaced\r\n" ||
                   http::equals_ignoring_case(name, "X-First"),
               "wire: " + where);
  }
}

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keyledger::fuzz::run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
