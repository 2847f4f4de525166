#pragma once
// Transport-free HTTP request and response: handlers take a Request and return a Response;
// only api/server.cpp knows about sockets and Beast.

#include <map>
#include <optional>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keyledger::http {

// True if `text` holds no CR, LF or NUL: the bytes that would end a header line early (and
// so split a response). Checks eight bytes at a time.
bool frameable(std::string_view text);

// Appends one header line as it goes on the wire: "name: value\r\n".
void append_field_line(std::string& out, std::string_view name, std::string_view value);

// ASCII case-insensitive equality, as header names compare.
bool equals_ignoring_case(std::string_view a, std::string_view b);

// Header list with case-insensitive lookups (ASCII). Names are kept as given: a response's
// "X-Agent-Id" goes out as written; the server folds a request's field names to lowercase
// (add_folded). The fields are stored as they go on the wire, "name: value\r\n" each, in one
// buffer: a response's head copies them in one piece, a response's headers cost two
// allocations, and a connection's reused Request fills its headers without allocating once the
// buffers are big enough (clear() keeps them).
class Headers {
 public:
  struct Field {
    std::string_view name;  // as added
    std::string_view value;
  };

  // `name` and `value` must not point into this list: adding may reallocate it.
  void set(std::string_view name, std::string_view value);  // replaces every value of `name`
  void add(std::string_view name, std::string_view value);  // keeps earlier values of `name`
  // add, storing `name` in lowercase, for a request's fields: the parser has already refused
  // any that could not be framed, so they are not checked again.
  void add_folded(std::string_view name, std::string_view value);
  std::optional<std::string_view> get(std::string_view name) const;
  void clear();
  std::size_t size() const { return entries_.size(); }

  // The fields in order: for (const auto& [name, value] : headers.all()).
  class Range;
  Range all() const;

  // Every field as "name: value\r\n", in order. Only well-formed if frameable().
  std::string_view wire() const { return text_; }
  // False once a field has an empty name, or a CR, LF or NUL in its name or value.
  bool frameable() const { return frameable_; }

 private:
  struct Entry {
    std::uint32_t at = 0;  // name at text_[at], then ": ", the value and "\r\n"
    std::uint32_t name_size = 0;
    std::uint32_t value_size = 0;
  };
  static constexpr std::uint32_t kSeparatorSize = 2;  // ": " and "\r\n"
  void append(std::string_view name, std::string_view value, bool check);
  Field field(const Entry& e) const {
    return {std::string_view(text_).substr(e.at, e.name_size),
            std::string_view(text_).substr(e.at + e.name_size + kSeparatorSize, e.value_size)};
  }

  std::string text_;
  std::vector<Entry> entries_;
  bool frameable_ = true;
};

class Headers::Range {
 public:
  class Iterator {
   public:
    Iterator(const Headers* h, std::size_t i) : h_(h), i_(i) {}
    Field operator*() const { return h_->field(h_->entries_[i_]); }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& other) const { return i_ != other.i_; }

   private:
    const Headers* h_;
    std::size_t i_;
  };
  explicit Range(const Headers* h) : h_(h) {}
  Iterator begin() const { return {h_, 0}; }
  Iterator end() const { return {h_, h_->entries_.size()}; }

 private:
  const Headers* h_;
};

inline Headers::Range Headers::all() const { return Range(this); }

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
  // Always a string literal (static storage): a std::string of 16 characters would allocate
  // for every response.
  std::string_view content_type = "application/json";
};

// The non-empty segments of a path: "/v1/keys/abc" -> {"v1", "keys", "abc"} (views into `path`).
std::vector<std::string_view> path_segments(std::string_view path);

// True if `path` is "/" or "/seg/seg…" with no empty, "." or ".." segment and no percent escape
// (api/openapi.yaml: a non-canonical path is refused, so a proxy's path rules and keyledger's routing
// and idempotency scopes see the same path; keyledger's ids never need escaping).
bool is_canonical_path(std::string_view path);

// Splits "/a/b?x=1&y=%20" into the path, kept as sent, and the decoded query parameters
// (percent and '+' decoding). Returns false for a malformed target: a path that is not
// canonical (is_canonical_path), or a bad percent escape in the query.
bool parse_target(std::string_view target, std::string& path, std::map<std::string, std::string>& query);

// `method` if it is GET, HEAD, POST, PUT, DELETE, PATCH or OPTIONS, else "OTHER": what a metric
// label, a log line or an error message may say of a request's method (a raw method can be
// thousands of bytes of anything).
std::string_view known_method_or_other(std::string_view method);

}  // namespace keyledger::http
