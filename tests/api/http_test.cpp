#include "api/http.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

namespace keyledger::http {
namespace {

std::vector<std::pair<std::string, std::string>> fields_of(const Headers& headers) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, value] : headers.all()) {
    out.emplace_back(name, value);
  }
  return out;
}

}  // namespace

TEST_CASE("headers keep names as added and look them up in any case", "[http]") {
  Headers headers;
  headers.add("X-Agent-Id", "agt_1");
  headers.add("ratelimit", "r=1");

  CHECK(headers.get("x-agent-id") == "agt_1");
  CHECK(headers.get("X-AGENT-ID") == "agt_1");
  CHECK(headers.get("RateLimit") == "r=1");
  CHECK_FALSE(headers.get("x-agent").has_value());  // a prefix is another name
  CHECK(fields_of(headers) == std::vector<std::pair<std::string, std::string>>{{"X-Agent-Id", "agt_1"}, {"ratelimit", "r=1"}});
}

TEST_CASE("set replaces every value of a name whatever its case; add keeps them", "[http]") {
  Headers headers;
  headers.add("X-Multi", "one");
  headers.add("x-other", "o");
  headers.add("x-MULTI", "two");
  CHECK(headers.get("x-multi") == "one");  // the first value
  REQUIRE(headers.size() == 3);

  headers.set("X-multi", "three");
  CHECK(fields_of(headers) == std::vector<std::pair<std::string, std::string>>{{"x-other", "o"}, {"X-multi", "three"}});
}

TEST_CASE("add_folded stores the name in lowercase and leaves the value alone", "[http]") {
  Headers headers;
  headers.add_folded("X-Api-Key", "Cg_MixedCase");
  headers.add_folded("HOST", "Example.COM");
  CHECK(fields_of(headers) ==
        std::vector<std::pair<std::string, std::string>>{{"x-api-key", "Cg_MixedCase"}, {"host", "Example.COM"}});

  headers.clear();
  CHECK(headers.size() == 0);
  headers.add_folded("Authorization", "Bearer x");  // a cleared list starts over
  CHECK(fields_of(headers) == std::vector<std::pair<std::string, std::string>>{{"authorization", "Bearer x"}});
}

TEST_CASE("headers are stored as they go on the wire", "[http]") {
  Headers headers;
  CHECK(headers.wire().empty());
  headers.add("X-Agent-Id", "agt_1");
  headers.add("X-Empty", "");
  CHECK(headers.wire() == "X-Agent-Id: agt_1\r\nX-Empty: \r\n");
  CHECK(headers.get("x-empty") == "");

  headers.set("x-agent-id", "agt_2");  // the remaining fields are packed again
  CHECK(headers.wire() == "X-Empty: \r\nx-agent-id: agt_2\r\n");
  CHECK(headers.get("X-Agent-Id") == "agt_2");
}

TEST_CASE("headers know whether they can be framed", "[http]") {
  Headers headers;
  headers.add("X-Fine", "a value with a \t tab");
  CHECK(headers.frameable());

  // What every section below leads to.
  const auto check_outcome = [&] {
    CHECK_FALSE(headers.frameable());

    headers.set("X-Fine", "still");  // packing again keeps the verdict
    CHECK_FALSE(headers.frameable());
    headers.clear();
    CHECK(headers.frameable());
  };

  SECTION("CR LF in a value") { headers.add("X-Evil", "a\r\nSet-Cookie: b"); check_outcome(); }
  SECTION("LF in a name") { headers.add("X-\nEvil", "v"); check_outcome(); }
  SECTION("NUL in a value") { headers.add("X-Evil", std::string_view("v\0v", 3)); check_outcome(); }
  SECTION("an empty name") { headers.add("", "v"); check_outcome(); }
}

TEST_CASE("set over the one field that could not be framed makes the headers frameable again", "[http]") {
  Headers headers;
  headers.add("X-Fine", "yes");
  headers.add("X-Evil", "a\r\nb");
  REQUIRE_FALSE(headers.frameable());
  headers.set("x-evil", "harmless");
  CHECK(headers.frameable());
  CHECK(headers.wire() == "X-Fine: yes\r\nx-evil: harmless\r\n");
}

TEST_CASE("add_folded trusts the parser: it does not check what it stores", "[http]") {
  Headers headers;
  headers.add_folded("X-Checked-By-Beast", "value");
  CHECK(headers.frameable());
  CHECK(headers.get("x-checked-by-beast") == "value");
}

TEST_CASE("frameable finds CR, LF and NUL at any position and nothing else", "[http]") {
  CHECK(frameable(""));
  for (std::size_t length = 1; length <= 24; ++length) {  // short, whole words, overlapping tails
    for (std::size_t at = 0; at < length; ++at) {
      for (const char bad : {'\r', '\n', '\0'}) {
        std::string text(length, 'a');
        text[at] = bad;
        CAPTURE(length, at, static_cast<int>(bad));
        CHECK_FALSE(frameable(text));
      }
    }
    std::string allowed;
    for (std::size_t i = 0; i < length; ++i) {
      constexpr std::string_view kNeighbours = "\t\x01\x0b\x0c\x0e\x1f\x7f\x80\x8a\x8d\xff x";
      allowed.push_back(kNeighbours[i % kNeighbours.size()]);
    }
    CAPTURE(length);
    CHECK(frameable(allowed));
  }
}

TEST_CASE("paths are canonical or refused; queries are decoded", "[http][hardening]") {
  std::string path;
  std::map<std::string, std::string> query;
  for (const std::string target : {"/", "/v1/tokens", "/v1/keys/key_abc/revoke", "/v1/a.b~c-d_e"}) {
    INFO(target);
    CHECK(parse_target(target, path, query));
    CHECK(path == target);
  }
  for (const std::string target :
       {"", "v1/tokens", "//v1//tokens", "/v1/tokens/", "/v1/%74okens", "/v1/agents/ID%2Fkeys", "/v1/./tokens",
        "/v1/../v1/tokens", "/v1/tokens/..", "/v1/tokens/.", "/v1/a%20b"}) {
    INFO(target);
    CHECK_FALSE(parse_target(target, path, query));
  }
  REQUIRE(parse_target("/v1/audit?actor=leak%3Acontent&type=key.revoked&x=a+b&flag", path, query));
  CHECK(path == "/v1/audit");
  CHECK(query["actor"] == "leak:content");
  CHECK(query["x"] == "a b");
  CHECK(query.count("flag") == 1);
  CHECK_FALSE(parse_target("/v1/audit?actor=%zz", path, query));
}

}  // namespace keyledger::http
