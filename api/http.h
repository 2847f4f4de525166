#pragma once
// Transport-free HTTP request and response: handlers take a Request and return a Response;
// only api/server.cpp knows about sockets and Beast.

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keyledger::http {

// Case-insensitive header map (names stored lowercase). clear() keeps the strings' buffers,
// so a connection's reused Request fills its headers without allocating.
class Header {
 public:
  std::string name;  // lowercase
  std::string value;
};

class Headers {
 public:
  void set(std::string_view name, std::string_view value);
  void add(std::string_view name, std::string_view value);  // keeps earlier values of `name`
  std::optional<std::string_view> get(std::string_view name) const;
  std::span<const Header> all() const { return {items_.data(), size_}; }
  void clear() { size_ = 0; }

 private:
  std::vector<Header> items_;  // [0, size_) in use; the rest are spare buffers
  std::size_t size_ = 0;
};

struct Request {
  std::string method;  // "GET", "POST", …
  std::string path;    // without the query string, e.g. /v1/keys/key_abc/revoke
  std::map<std::string, std::string> query;  // decoded; last value of a repeated name wins
  Headers headers;
  std::string body;
  std::string request_id;  // set by the server (X-Request-Id from the client or generated)
  std::string remote_address;
  // Set by the dispatcher the first time it matches this request, so the route is found once
  // however often it is asked (scheduling, dispatch, metrics). -2: not matched yet; -1: none.
  mutable int route_index = -2;
  mutable std::vector<std::string> route_params;

  // Empties every field for the next request on a connection, keeping buffer capacity.
  void reset();
};

struct Response {
  unsigned status = 200;
  Headers headers;
  std::string body;          // JSON unless content-type says otherwise
  std::string content_type = "application/json";
};

// The non-empty segments of a path: "/v1/keys/abc" -> {"v1", "keys", "abc"} (views into `path`).
std::vector<std::string_view> path_segments(std::string_view path);

// Splits "/a/b?x=1&y=%20" into path and decoded query parameters (percent and '+' decoding).
// Returns false for a malformed target (bad percent escape, not starting with '/').
bool parse_target(std::string_view target, std::string& path, std::map<std::string, std::string>& query);

}  // namespace keyledger::http
