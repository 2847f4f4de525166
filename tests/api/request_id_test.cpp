#include "api/request_id.h"

#include <catch2/catch.hpp>

#include <set>
#include <string>

namespace keyledger::api {

TEST_CASE("a client's X-Request-Id is kept only when it is sane", "[server]") {
  CHECK(is_sane_request_id("req-1"));
  CHECK(is_sane_request_id("A.b_c-9"));
  CHECK(is_sane_request_id(std::string(kMaxRequestIdLength, 'a')));
  CHECK_FALSE(is_sane_request_id(""));
  CHECK_FALSE(is_sane_request_id(std::string(kMaxRequestIdLength + 1, 'a')));
  CHECK_FALSE(is_sane_request_id("a b"));
  CHECK_FALSE(is_sane_request_id("a\r\nb"));
  CHECK_FALSE(is_sane_request_id("caf\xC3\xA9"));
  // Shaped like a key or a service token: never echoed.
  CHECK_FALSE(is_sane_request_id("cg_0123456789abcdef0123456789abcdef"));
  CHECK_FALSE(is_sane_request_id("kls_anything"));

  http::Headers headers;
  std::string id;
  headers.set("X-Request-Id", "trace-42");
  request_id_for(headers, id);
  CHECK(id == "trace-42");
  headers.set("X-Request-Id", "cg_0123456789abcdef0123456789abcdef");
  request_id_for(headers, id);
  CHECK(id.size() == kGeneratedRequestIdBytes * 2);
  CHECK(id.find("cg_") == std::string::npos);
}

TEST_CASE("generated request ids are distinct hex", "[server]") {
  std::set<std::string> seen;
  std::string id;
  for (int i = 0; i < 1000; ++i) {
    new_request_id(id);
    REQUIRE(id.size() == kGeneratedRequestIdBytes * 2);
    REQUIRE(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(id);
  }
  CHECK(seen.size() == 1000);
}

}  // namespace keyledger::api
