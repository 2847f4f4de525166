#include "api/http.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

namespace keyledger::http {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out.push_back(' ');
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) {
        return false;
      }
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) {
        return false;
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return true;
}

}  // namespace

bool is_canonical_path(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return false;
  }
  if (path.size() == 1) {
    return true;  // "/"
  }
  std::size_t start = 1;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string_view segment = path.substr(start, end - start);
    if (segment.empty() || segment == "." || segment == ".." ||
        segment.find('%') != std::string_view::npos) {
      return false;
    }
    start = end + 1;
  }
  return true;
}

namespace {

// ASCII only, as header names are (and without std::tolower's locale lookup).
char lower_char(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
constexpr std::uint64_t kHighBits = 0x8080808080808080ULL;

// Whether any byte of `word` is CR, LF or NUL. Each of them is below 0x0e, and only a word
// with such a byte (a tab, say) gets the exact check.
bool word_breaks_line(std::uint64_t word) {
  constexpr std::uint64_t kBelowCarriageReturn = kOnes * ('\r' + 1);
  if (((word - kBelowCarriageReturn) & ~word & kHighBits) == 0) {
    return false;
  }
  const auto has_byte = [word](unsigned char byte) {
    const std::uint64_t x = word ^ (kOnes * byte);
    return ((x - kOnes) & ~x & kHighBits) != 0;  // exact: no false positives
  };
  return has_byte('\r') || has_byte('\n') || has_byte('\0');
}

}  // namespace

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower_char(x) == lower_char(y); });
}

void append_field_line(std::string& out, std::string_view name, std::string_view value) {
  out.append(name).append(": ").append(value).append("\r\n");
}

bool frameable(std::string_view text) {
  constexpr std::size_t kWord = sizeof(std::uint64_t);
  const char* p = text.data();
  const std::size_t n = text.size();
  if (n == 0) {
    return true;  // and an empty view's data() may be null
  }
  std::uint64_t word = 0;
  if (n < kWord) {
    word = kOnes * 'x';  // a harmless byte pads a short text to a word
    std::memcpy(&word, p, n);
    return !word_breaks_line(word);
  }
  for (std::size_t i = 0; i + kWord <= n; i += kWord) {
    std::memcpy(&word, p + i, kWord);
    if (word_breaks_line(word)) {
      return false;
    }
  }
  std::memcpy(&word, p + n - kWord, kWord);  // the last word overlaps the one before
  return !word_breaks_line(word);
}

void Headers::set(std::string_view name, std::string_view value) {
  const auto named = [&](const Entry& e) { return equals_ignoring_case(field(e).name, name); };
  if (!std::any_of(entries_.begin(), entries_.end(), named)) {
    return add(name, value);
  }
  // Rare (handlers mostly add): the remaining fields are packed again.
  const std::string text = std::move(text_);
  const std::vector<Entry> entries = std::move(entries_);
  clear();
  for (const Entry& e : entries) {
    const std::string_view line(text.data() + e.at, e.name_size + kSeparatorSize + e.value_size);
    if (!equals_ignoring_case(line.substr(0, e.name_size), name)) {
      append(line.substr(0, e.name_size), line.substr(e.name_size + kSeparatorSize), true);
    }
  }
  append(name, value, true);
}

void Headers::add(std::string_view name, std::string_view value) { append(name, value, true); }

void Headers::add_folded(std::string_view name, std::string_view value) {
  // A request's fields, which Beast has already checked: no CR, LF or NUL, names not empty.
  append(name, value, false);
  const auto folded = text_.begin() + entries_.back().at;
  std::transform(folded, folded + static_cast<std::ptrdiff_t>(name.size()), folded, lower_char);
}

void Headers::append(std::string_view name, std::string_view value, bool check) {
  if (entries_.empty()) {
    text_.clear();
    // GET /v1/auth's eight headers take about 300 bytes: one allocation each, no regrowth.
    text_.reserve(512);
    entries_.reserve(12);
  }
  Entry e;
  e.at = static_cast<std::uint32_t>(text_.size());
  e.name_size = static_cast<std::uint32_t>(name.size());
  e.value_size = static_cast<std::uint32_t>(value.size());
  append_field_line(text_, name, value);
  if (check) {
    // Name, ": " and value in one pass: the separator itself is frameable.
    const std::string_view line(text_.data() + e.at, name.size() + kSeparatorSize + value.size());
    frameable_ = frameable_ && !name.empty() && http::frameable(line);
  }
  entries_.push_back(e);
}

std::optional<std::string_view> Headers::get(std::string_view name) const {
  for (const Entry& e : entries_) {
    const Field f = field(e);
    if (equals_ignoring_case(f.name, name)) {
      return f.value;
    }
  }
  return std::nullopt;
}

void Headers::clear() {
  entries_.clear();
  text_.clear();
  frameable_ = true;
}

void Request::reset() {
  method.clear();
  path.clear();
  query.clear();
  headers.clear();
  body.clear();
  request_id.clear();
  remote_address.clear();
  route_index = -2;
  route_params.clear();
}

std::vector<std::string_view> path_segments(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') {
      ++i;
    }
    const std::size_t start = i;
    while (i < path.size() && path[i] != '/') {
      ++i;
    }
    if (i > start) {
      out.push_back(path.substr(start, i - start));
    }
  }
  return out;
}

bool parse_target(std::string_view target, std::string& path, std::map<std::string, std::string>& query) {
  if (target.empty() || target.front() != '/') {
    return false;
  }
  const auto qpos = target.find('?');
  const std::string_view raw_path = target.substr(0, qpos);
  if (!is_canonical_path(raw_path)) {
    return false;
  }
  path.assign(raw_path);
  query.clear();
  if (qpos == std::string_view::npos) {
    return true;
  }
  std::string_view rest = target.substr(qpos + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (pair.empty()) {
      continue;
    }
    const auto eq = pair.find('=');
    std::string name;
    std::string value;
    if (!percent_decode(pair.substr(0, eq), name)) {
      return false;
    }
    if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), value)) {
      return false;
    }
    query[name] = value;
  }
  return true;
}

std::string_view known_method_or_other(std::string_view method) {
  static constexpr std::array<std::string_view, 7> kKnown = {"GET", "HEAD", "POST", "PUT",
                                                             "DELETE", "PATCH", "OPTIONS"};
  for (const std::string_view known : kKnown) {
    if (method == known) {
      return known;
    }
  }
  return "OTHER";
}

}  // namespace keyledger::http
