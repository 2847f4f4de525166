#include "api/response_head.h"

#include <array>
#include <charconv>
#include <ostream>  // boost/beast/http/status.hpp needs it complete

#include <boost/beast/http/status.hpp>

namespace keyledger::api {

namespace {

namespace bhttp = boost::beast::http;

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
      return http::equals_ignoring_case(name, kContentLength) ? Use::kSkip : Use::kWrite;
    case kTransferEncoding.size():
      return http::equals_ignoring_case(name, kTransferEncoding) ? Use::kSkip : Use::kWrite;
    case kConnection.size():
      return http::equals_ignoring_case(name, kConnection) ? Use::kConnection : Use::kWrite;
    case kContentType.size():
      return http::equals_ignoring_case(name, kContentType) ? Use::kContentType : Use::kWrite;
    default:
      return Use::kWrite;
  }
}

void append_number(std::string& out, std::size_t n) {
  std::array<char, 20> digits{};  // any std::size_t
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), n).ptr;
  out.append(digits.data(), static_cast<std::size_t>(end - digits.data()));
}

}  // namespace

ResponseHead write_response_head(const http::Response& response, unsigned version, std::string_view request_id,
                                 bool keep_alive, std::string& out) {
  ResponseHead head;
  head.has_body = !is_bodiless(response.status);

  // Framing is the server's: a handler may only ask for the connection to end. Without such
  // fields (GET /v1/auth has none) the handler's headers are copied as they are stored.
  const http::Headers& headers = response.headers;
  if (!headers.frameable()) {
    head.valid = false;
    return head;
  }
  bool has_content_type = false;
  bool copies_whole = true;
  for (const auto& [name, value] : headers.all()) {
    switch (use_of(name)) {
      case Use::kWrite:
        break;
      case Use::kContentType:
        has_content_type = true;
        break;
      case Use::kConnection:
        keep_alive = keep_alive && !http::equals_ignoring_case(value, "close");
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

  out.append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_number(out, response.status);
  out.push_back(' ');
  const auto reason = bhttp::obsolete_reason(bhttp::int_to_status(response.status));
  out.append(reason.data(), reason.size());
  out.append("\r\n");
  if (copies_whole) {
    out.append(headers.wire());
  } else {
    for (const auto& [name, value] : headers.all()) {
      const Use use = use_of(name);
      if (use == Use::kWrite || use == Use::kContentType) {
        http::append_field_line(out, name, value);
      }
    }
  }
  if (adds_content_type) {
    http::append_field_line(out, "Content-Type", response.content_type);
  }
  http::append_field_line(out, "X-Request-Id", request_id);
  if (version == 10 && keep_alive) {
    http::append_field_line(out, "Connection", "keep-alive");
  } else if (version != 10 && !keep_alive) {
    http::append_field_line(out, "Connection", "close");
  }
  if (head.has_body) {
    out.append("Content-Length: ");
    append_number(out, response.body.size());
    out.append("\r\n");
  }
  out.append("\r\n");
  return head;
}

}  // namespace keyledger::api
