#include "api/response_head.h"

#include <array>
#include <cassert>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <ostream>  // boost/beast/http/status.hpp needs it complete

#include <boost/beast/http/status.hpp>

namespace keyledger::api {

namespace {

namespace bhttp = boost::beast::http;

bool is_named(std::string_view name, std::string_view lowercase) { return http::equals_ignoring_case(name, lowercase); }

bool is_bodiless(unsigned status) {
  constexpr unsigned kNoContent = 204;
  constexpr unsigned kNotModified = 304;
  return status / 100 == 1 || status == kNoContent || status == kNotModified;
}

// What the head does with one of the handler's headers. Most names are none of these, which
// their length alone shows.
enum class Use { kWrite, kSkip, kConnection, kContentType };

Use use_of(std::string_view name) {
  constexpr std::string_view kContentLength = "content-length";
  constexpr std::string_view kTransferEncoding = "transfer-encoding";
  constexpr std::string_view kConnection = "connection";
  constexpr std::string_view kContentType = "content-type";
  switch (name.size()) {
    case kContentLength.size():
      return is_named(name, kContentLength) ? Use::kSkip : Use::kWrite;
    case kTransferEncoding.size():
      return is_named(name, kTransferEncoding) ? Use::kSkip : Use::kWrite;
    case kConnection.size():
      return is_named(name, kConnection) ? Use::kConnection : Use::kWrite;
    case kContentType.size():
      return is_named(name, kContentType) ? Use::kContentType : Use::kWrite;
    default:
      return Use::kWrite;
  }
}

// Fills a head already sized to fit, so that no field costs a reallocation. The sizes are
// worked out beforehand; the asserts hold them to it in debug and sanitizer builds.
class HeadWriter {
 public:
  HeadWriter(char* at, char* end) : at_(at), end_(end) {}
  void text(std::string_view s) {
    assert(s.size() <= static_cast<std::size_t>(end_ - at_));
    if (!s.empty()) {  // an empty view's data() may be null
      std::memcpy(at_, s.data(), s.size());
      at_ += s.size();
    }
  }
  void field(std::string_view name, std::string_view value) {
    text(name);
    text(": ");
    text(value);
    text("\r\n");
  }
  bool full() const { return at_ == end_; }

 private:
  char* at_;
  char* end_;
};

std::size_t field_size(std::string_view name, std::string_view value) { return name.size() + value.size() + 4; }

using Digits = std::array<char, 20>;  // any std::size_t

std::string_view digits_of(std::size_t n, Digits& digits) {
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), n).ptr;
  return {digits.data(), static_cast<std::size_t>(end - digits.data())};
}

}  // namespace

ResponseHead write_response_head(const http::Response& response, unsigned version, std::string_view request_id,
                                 bool keep_alive, std::string& out) {
  ResponseHead head;
  head.has_body = !is_bodiless(response.status);

  // First what the head holds and how long it is, then the head itself in one piece. Framing
  // is the server's: a handler may only ask for the connection to end. Without such fields
  // (GET /v1/auth has none) the handler's headers are copied as they are stored.
  const http::Headers& headers = response.headers;
  if (!headers.frameable()) {
    head.valid = false;
    return head;
  }
  bool has_content_type = false;
  bool copies_whole = true;
  std::size_t size = 0;
  for (const auto& [name, value] : headers.all()) {
    switch (use_of(name)) {
      case Use::kWrite:
        size += field_size(name, value);
        break;
      case Use::kContentType:
        has_content_type = true;
        size += field_size(name, value);
        break;
      case Use::kConnection:
        keep_alive = keep_alive && !is_named(value, "close");
        copies_whole = false;
        break;
      case Use::kSkip:
        copies_whole = false;
        break;
    }
  }
  const bool sends_body = head.has_body && !response.body.empty();
  const bool adds_content_type = sends_body && !response.content_type.empty() && !has_content_type;
  if ((adds_content_type && !http::frameable(response.content_type)) || !http::frameable(request_id)) {
    head.valid = false;
    return head;
  }
  head.keep_alive = keep_alive;

  Digits status_digits{};
  const std::string_view status = digits_of(response.status, status_digits);
  const auto reason_text = bhttp::obsolete_reason(bhttp::int_to_status(response.status));
  const std::string_view reason(reason_text.data(), reason_text.size());
  std::string_view connection;
  if (version == 10 && keep_alive) {
    connection = "keep-alive";
  } else if (version != 10 && !keep_alive) {
    connection = "close";
  }
  Digits length_digits{};
  const std::string_view length = digits_of(response.body.size(), length_digits);

  const std::string_view http_version = version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  size += http_version.size() + status.size() + 1 + reason.size() + 2;
  size += adds_content_type ? field_size("Content-Type", response.content_type) : 0;
  size += field_size("X-Request-Id", request_id);
  size += connection.empty() ? 0 : field_size("Connection", connection);
  size += head.has_body ? field_size("Content-Length", length) : 0;
  size += 2;

  const std::size_t start = out.size();
  out.resize(start + size);
  HeadWriter w(out.data() + start, out.data() + out.size());
  w.text(http_version);
  w.text(status);
  w.text(" ");
  w.text(reason);
  w.text("\r\n");
  if (copies_whole) {
    w.text(headers.wire());
  } else {
    for (const auto& [name, value] : headers.all()) {
      const Use use = use_of(name);
      if (use == Use::kWrite || use == Use::kContentType) {
        w.field(name, value);
      }
    }
  }
  if (adds_content_type) {
    w.field("Content-Type", response.content_type);
  }
  w.field("X-Request-Id", request_id);
  if (!connection.empty()) {
    w.field("Connection", connection);
  }
  if (head.has_body) {
    w.field("Content-Length", length);
  }
  w.text("\r\n");
  assert(w.full());
  return head;
}

}  // namespace keyledger::api
