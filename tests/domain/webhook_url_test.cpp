#include "domain/webhook_url.h"

#include <catch2/catch.hpp>

#include <string>

namespace keyledger {

TEST_CASE("one webhook URL parser: its parts", "[domain][webhook_url]") {
  auto u = parse_webhook_url("HTTPS://Agent.Example.com:8443/hooks?x=1#frag");
  REQUIRE(u.ok());
  CHECK(u->tls);
  CHECK(u->host == "agent.example.com");
  CHECK(u->port == 8443);
  CHECK(u->target == "/hooks?x=1");
  CHECK(u->host_header() == "agent.example.com:8443");

  u = parse_webhook_url("http://[2001:db8::1]?q");
  REQUIRE(u.ok());
  CHECK_FALSE(u->tls);
  CHECK(u->port == 80);
  CHECK(u->host == "2001:db8::1");
  CHECK(u->target == "/?q");
  CHECK(u->host_header() == "[2001:db8::1]");
}

TEST_CASE("one webhook URL parser: what it refuses, and why", "[domain][webhook_url]") {
  const auto why = [](const std::string& url) {
    const auto parsed = parse_webhook_url(url);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().IsInvalidArgument());
    return parsed.status().message();
  };
  CHECK(why("https://user:pw@example.com/") == "must not contain credentials");
  CHECK(why("https://example.com:0/") == "has an invalid port");
  CHECK(why("https://example.com:70000/") == "has an invalid port");
  CHECK(why("https://exa mple.com/") == "must not contain spaces, control or non-ASCII characters");
  CHECK(why("https://caf\xC3\xA9.example/") == "must not contain spaces, control or non-ASCII characters");
  CHECK(why("https://example.com/" + std::string(kMaxWebhookUrlChars, 'a')).find("at most") != std::string::npos);
  for (const char* url : {"", "example.com", "ftp://example.com/", "https:///path", "https://:443/",
                          "https://example.com:/", "https://[::1/", "https://[]/", "https://[::g]/",
                          "https://-example.com/", "https://.example.com/", "https://exa_mple.com/",
                          "https://[::1]x/"}) {
    INFO(url);
    CHECK(why(url) == "must be an absolute http or https URL with a host");
  }
}

}  // namespace keyledger
