#include "api/response_head.h"

#include <string>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>

namespace keyledger::api {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct Wire {
  ResponseHead head;
  std::string bytes;  // head, then the body if the head says it has one
};

Wire wire_of(const http::Response& response, unsigned version, bool keep_alive, std::string_view request_id = "req-1") {
  Wire wire;
  wire.head = write_response_head(response, version, request_id, keep_alive, wire.bytes);
  if (wire.head.has_body) {
    wire.bytes += response.body;
  }
  return wire;
}

// Beast reads back what we wrote: the head is well-formed HTTP and frames the body exactly.
bhttp::response<bhttp::string_body> parsed(const std::string& bytes) {
  bhttp::response_parser<bhttp::string_body> parser;
  beast::error_code ec;
  std::size_t used = 0;
  while (used < bytes.size() && !parser.is_done()) {
    const std::size_t n = parser.put(boost::asio::buffer(bytes.data() + used, bytes.size() - used), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(n > 0);
    used += n;
  }
  if (!parser.is_done()) {
    parser.put_eof(ec);
    REQUIRE_FALSE(ec);
  }
  REQUIRE(parser.is_done());
  CHECK(used == bytes.size());  // nothing left over: the next response would start here
  return parser.release();
}

}  // namespace

TEST_CASE("a response head frames the body with Content-Length and carries every header", "[response_head]") {
  http::Response response;
  response.status = 201;
  response.headers.set("location", "/v1/keys/key_1");
  response.headers.add("x-multi", "a");
  response.headers.add("x-multi", "b");
  response.body = R"({"id":"key_1"})";

  const Wire wire = wire_of(response, 11, true);
  REQUIRE(wire.head.valid);
  CHECK(wire.head.keep_alive);
  CHECK(wire.head.has_body);
  CHECK(wire.bytes.rfind("HTTP/1.1 201 Created\r\n", 0) == 0);

  const auto message = parsed(wire.bytes);
  CHECK(message.result_int() == 201);
  CHECK(message.version() == 11);
  CHECK(message.keep_alive());
  CHECK(message.body() == response.body);
  CHECK(message[bhttp::field::content_length] == std::to_string(response.body.size()));
  CHECK(message[bhttp::field::content_type] == "application/json");
  CHECK(message["X-Request-Id"] == "req-1");
  CHECK(message[bhttp::field::location] == "/v1/keys/key_1");
  CHECK(message.count("x-multi") == 2);
  CHECK(message.count(bhttp::field::connection) == 0);  // keep-alive is HTTP/1.1's default
}

TEST_CASE("a response head says Connection when it differs from the version's default", "[response_head]") {
  http::Response response;
  response.body = "{}";

  SECTION("HTTP/1.1 closing") {
    const Wire wire = wire_of(response, 11, false);
    CHECK_FALSE(wire.head.keep_alive);
    const auto message = parsed(wire.bytes);
    CHECK(message[bhttp::field::connection] == "close");
    CHECK_FALSE(message.keep_alive());
  }
  SECTION("HTTP/1.0 kept alive") {
    const Wire wire = wire_of(response, 10, true);
    CHECK(wire.head.keep_alive);
    CHECK(wire.bytes.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
    const auto message = parsed(wire.bytes);
    CHECK(message.version() == 10);
    CHECK(message[bhttp::field::connection] == "keep-alive");
    CHECK(message.keep_alive());
  }
  SECTION("HTTP/1.0 closing") {
    const Wire wire = wire_of(response, 10, false);
    const auto message = parsed(wire.bytes);
    CHECK(message.count(bhttp::field::connection) == 0);
    CHECK_FALSE(message.keep_alive());
  }
  SECTION("a handler's connection: close ends the connection, whatever the case") {
    response.headers.add("X-Before", "b");
    response.headers.set("Connection", "Close");
    response.headers.add("x-After", "a");
    const Wire wire = wire_of(response, 11, true);
    CHECK_FALSE(wire.head.keep_alive);
    const auto message = parsed(wire.bytes);
    CHECK(message.count(bhttp::field::connection) == 1);
    CHECK(message[bhttp::field::connection] == "close");
    CHECK(wire.bytes.find("\r\nX-Before: b\r\nx-After: a\r\n") != std::string::npos);  // the others, in order
  }
}

TEST_CASE("a response head keeps framing to itself", "[response_head]") {
  http::Response response;
  response.body = "12345";
  // Names in any case: the handler's names are kept as written, and still recognized.
  response.headers.set("Content-Length", "999");
  response.headers.set("transfer-encoding", "chunked");
  response.headers.set("CONTENT-TYPE", "text/plain");

  const Wire wire = wire_of(response, 11, true);
  const auto message = parsed(wire.bytes);
  CHECK(message.count(bhttp::field::content_length) == 1);
  CHECK(message[bhttp::field::content_length] == "5");
  CHECK(message.count(bhttp::field::transfer_encoding) == 0);
  CHECK(message.count(bhttp::field::content_type) == 1);  // the handler's, not the default
  CHECK(message[bhttp::field::content_type] == "text/plain");
  CHECK(message.body() == "12345");
}

TEST_CASE("a response head writes header names as the handler spelled them", "[response_head]") {
  http::Response response;
  response.headers.add("X-Agent-Id", "agt_1");
  response.headers.add("ratelimit-policy", "\"standard\";q=60;w=1");
  const Wire wire = wire_of(response, 11, true);
  CHECK(wire.bytes.find("\r\nX-Agent-Id: agt_1\r\n") != std::string::npos);
  CHECK(wire.bytes.find("\r\nratelimit-policy: \"standard\";q=60;w=1\r\n") != std::string::npos);
  CHECK(parsed(wire.bytes)["x-agent-id"] == "agt_1");
}

TEST_CASE("a response head is appended after what the buffer already holds", "[response_head]") {
  http::Response response;
  response.headers.add("X-Agent-Id", "agt_1");
  std::string out = "earlier bytes";
  REQUIRE(write_response_head(response, 11, "req-1", true, out).valid);
  REQUIRE(out.rfind("earlier bytes", 0) == 0);
  const auto message = parsed(out.substr(std::string("earlier bytes").size()));
  CHECK(message["X-Agent-Id"] == "agt_1");
  CHECK(message["X-Request-Id"] == "req-1");

  std::string untouched = "earlier bytes";
  response.headers.add("X-Evil", "a\nb");
  CHECK_FALSE(write_response_head(response, 11, "req-1", true, untouched).valid);
  CHECK(untouched == "earlier bytes");
}

TEST_CASE("a response head leaves out Content-Type for an empty body", "[response_head]") {
  http::Response response;
  response.body.clear();

  const Wire wire = wire_of(response, 11, true);
  const auto message = parsed(wire.bytes);
  CHECK(message[bhttp::field::content_length] == "0");
  CHECK(message.count(bhttp::field::content_type) == 0);
}

TEST_CASE("1xx, 204 and 304 heads have neither body nor Content-Length", "[response_head]") {
  for (const unsigned status : {100U, 204U, 304U}) {
    CAPTURE(status);
    http::Response response;
    response.status = status;
    response.body = "ignored";
    const Wire wire = wire_of(response, 11, true);
    CHECK_FALSE(wire.head.has_body);
    CHECK(wire.bytes.find("Content-Length") == std::string::npos);
    CHECK(wire.bytes.find("ignored") == std::string::npos);
    CHECK(wire.bytes.size() >= 4);
    CHECK(wire.bytes.substr(wire.bytes.size() - 4) == "\r\n\r\n");
  }
}

TEST_CASE("a status without a standard reason still makes a valid status line", "[response_head]") {
  http::Response response;
  response.status = 599;
  const Wire wire = wire_of(response, 11, true);
  REQUIRE(wire.head.valid);
  CHECK(parsed(wire.bytes).result_int() == 599);
}

TEST_CASE("a header that would break the framing makes the head invalid", "[response_head]") {
  http::Response response;
  // What every section below leads to.
  const auto check_outcome = [&] {
    std::string out;
    CHECK_FALSE(write_response_head(response, 11, "req-1", true, out).valid);

    std::string with_bad_id;
    CHECK_FALSE(write_response_head(http::Response{}, 11, "a\r\nb", true, with_bad_id).valid);
  };

  SECTION("CR LF in a value (response splitting)") {
    response.headers.set("x-evil", "a\r\nSet-Cookie: b");
    check_outcome();
  }
  SECTION("a bare LF in a value") {
    response.headers.set("x-evil", "a\nb");
    check_outcome();
  }
  SECTION("NUL in a name") {
    response.headers.set(std::string_view("x-e\0vil", 7), "v");
    check_outcome();
  }
  SECTION("an empty name") {
    response.headers.set("", "v");
    check_outcome();
  }
}

TEST_CASE("a CR, LF or NUL anywhere in a long value is found, and nothing else is refused", "[response_head]") {
  // The head refuses what Headers found unframeable (http::frameable, tested on its own in
  // http_test): every position of a 21-byte value is tried.
  constexpr std::size_t kLength = 21;
  for (const char bad : {'\r', '\n', '\0'}) {
    for (std::size_t at = 0; at < kLength; ++at) {
      CAPTURE(static_cast<int>(bad), at);
      std::string value(kLength, 'v');
      value[at] = bad;
      http::Response response;
      response.headers.set("X-Value", value);
      std::string out;
      CHECK_FALSE(write_response_head(response, 11, "req-1", true, out).valid);
    }
  }
  // Neighbours of the refused bytes, tab and bytes with the high bit set all pass as they are.
  std::string allowed = "\t\x01\x0b\x0c\x0e\x1f \x7f";
  for (const unsigned char high : {0x80, 0x8a, 0x8d, 0xff}) {
    allowed.push_back(static_cast<char>(high));
  }
  allowed += "\t\x0c\x8d\x8a\x80\x0b\x0e\x8d\x8a";  // more than one word
  http::Response response;
  response.headers.set("X-Value", allowed);
  std::string out;
  REQUIRE(write_response_head(response, 11, "req-1", true, out).valid);
  CHECK(out.find("\r\nX-Value: " + allowed + "\r\n") != std::string::npos);
}

}  // namespace keyledger::api
