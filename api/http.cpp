#include "api/http.h"

#include <algorithm>
#include <cctype>

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

namespace {

// ASCII only, as header names are (and without std::tolower's locale lookup).
char lower_char(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_lowercase(std::string_view lowercase, std::string_view name) {
  return lowercase.size() == name.size() &&
         std::equal(name.begin(), name.end(), lowercase.begin(), [](char a, char b) { return lower_char(a) == b; });
}

}  // namespace

void Headers::set(std::string_view name, std::string_view value) {
  std::erase_if(entries_, [&](const Entry& e) { return equals_lowercase(field(e).name, name); });
  add(name, value);
}

void Headers::add(std::string_view name, std::string_view value) {
  if (entries_.empty()) {
    text_.clear();
    // GET /v1/auth's eight headers take about 270 bytes: one allocation each, no regrowth.
    text_.reserve(512);
    entries_.reserve(12);
  }
  Entry e;
  e.at = static_cast<std::uint32_t>(text_.size());
  e.name_size = static_cast<std::uint32_t>(name.size());
  e.value_size = static_cast<std::uint32_t>(value.size());
  text_.append(name);
  std::transform(text_.begin() + e.at, text_.end(), text_.begin() + e.at, lower_char);
  text_.append(value);
  entries_.push_back(e);
}

std::optional<std::string_view> Headers::get(std::string_view name) const {
  for (const Entry& e : entries_) {
    const Field f = field(e);
    if (equals_lowercase(f.name, name)) {
      return f.value;
    }
  }
  return std::nullopt;
}

void Headers::clear() {
  entries_.clear();
  text_.clear();
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
  if (!percent_decode(target.substr(0, qpos), path)) {
    return false;
  }
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

}  // namespace keyledger::http
