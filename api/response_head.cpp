#include "api/response_head.h"

#include <array>
#include <charconv>
#include <ostream>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/status.hpp>

namespace keyledger::api {

namespace {

namespace bhttp = boost::beast::http;

bool frameable(std::string_view text) {
  for (const char c : text) {
    if (c == '\r' || c == '\n' || c == '\0') {
      return false;
    }
  }
  return true;
}

void append_number(std::string& out, std::size_t n) {
  std::array<char, 24> digits{};
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), n).ptr;
  out.append(digits.data(), static_cast<std::size_t>(end - digits.data()));
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

bool is_bodiless(unsigned status) {
  constexpr unsigned kNoContent = 204;
  constexpr unsigned kNotModified = 304;
  return status / 100 == 1 || status == kNoContent || status == kNotModified;
}

}  // namespace

ResponseHead write_response_head(const http::Response& response, unsigned version, std::string_view request_id,
                                 bool keep_alive, std::string& out) {
  ResponseHead head;
  head.has_body = !is_bodiless(response.status);

  out.append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_number(out, response.status);
  out.push_back(' ');
  const auto reason = bhttp::obsolete_reason(bhttp::int_to_status(response.status));
  out.append(reason.data(), reason.size());
  out.append("\r\n");

  bool has_content_type = false;
  for (const auto& [name, value] : response.headers.all()) {
    if (name.empty() || !frameable(name) || !frameable(value)) {
      head.valid = false;
      return head;
    }
    // Framing is the server's; a handler may only ask for the connection to end.
    if (name == "content-length" || name == "transfer-encoding") {
      continue;
    }
    if (name == "connection") {
      keep_alive = keep_alive && !boost::beast::iequals(boost::beast::string_view(value.data(), value.size()), "close");
      continue;
    }
    has_content_type = has_content_type || name == "content-type";
    append_field(out, name, value);
  }
  const bool sends_body = head.has_body && !response.body.empty();
  if (sends_body && !response.content_type.empty() && !has_content_type) {
    if (!frameable(response.content_type)) {
      head.valid = false;
      return head;
    }
    append_field(out, "Content-Type", response.content_type);
  }
  if (!frameable(request_id)) {
    head.valid = false;
    return head;
  }
  append_field(out, "X-Request-Id", request_id);
  if (version == 10 && keep_alive) {
    append_field(out, "Connection", "keep-alive");
  } else if (version != 10 && !keep_alive) {
    append_field(out, "Connection", "close");
  }
  if (head.has_body) {
    out.append("Content-Length: ");
    append_number(out, response.body.size());
    out.append("\r\n");
  }
  out.append("\r\n");
  head.keep_alive = keep_alive;
  return head;
}

}  // namespace keyledger::api
