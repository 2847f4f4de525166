// The client address counted in key usage: the peer, unless a trusted proxy names another.
#include "api/client_address.h"

#include <catch2/catch.hpp>

namespace keyledger::api {
namespace {

http::Request from(std::string_view peer, std::string_view forwarded_for = {},
                   std::string_view real_ip = {}) {
  http::Request req;
  req.remote_address = std::string(peer);
  if (!forwarded_for.empty()) {
    req.headers.set("x-forwarded-for", forwarded_for);
  }
  if (!real_ip.empty()) {
    req.headers.set("x-real-ip", real_ip);
  }
  return req;
}

TEST_CASE("without trusted proxies the peer is the client, whatever the headers say", "[api][usage]") {
  const TrustedProxies nobody;
  CHECK(nobody.client_of(from("192.0.2.10", "203.0.113.1", "203.0.113.2")) == "192.0.2.10");
  CHECK(nobody.client_of(from("::ffff:192.0.2.10")) == "192.0.2.10");  // v4-mapped, as IPv4
}

TEST_CASE("a trusted proxy's X-Forwarded-For names the nearest untrusted hop", "[api][usage]") {
  auto proxies = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8 ,::1");
  REQUIRE(proxies.ok());
  CHECK(proxies->client_of(from("127.0.0.1", "203.0.113.7")) == "203.0.113.7");
  // A client may send its own X-Forwarded-For: only the hops the proxies appended count.
  CHECK(proxies->client_of(from("10.1.2.3", "6.6.6.6, 203.0.113.7, 10.9.9.9")) == "203.0.113.7");
  CHECK(proxies->client_of(from("::1", "2001:db8::1")) == "2001:db8::1");
  // Every hop trusted: the farthest is the client.
  CHECK(proxies->client_of(from("127.0.0.1", "10.0.0.5, 10.0.0.6")) == "10.0.0.5");
  // No X-Forwarded-For: X-Real-IP; neither, or garbage: the peer.
  CHECK(proxies->client_of(from("127.0.0.1", {}, "203.0.113.8")) == "203.0.113.8");
  CHECK(proxies->client_of(from("127.0.0.1", "not-an-address")) == "127.0.0.1");
  CHECK(proxies->client_of(from("127.0.0.1")) == "127.0.0.1");
  // A proxy that adds a line of its own: the lines are one list, the client's first.
  http::Request two_lines = from("127.0.0.1", "6.6.6.6");
  two_lines.headers.add("x-forwarded-for", "203.0.113.9");
  CHECK(proxies->client_of(two_lines) == "203.0.113.9");
  // An untrusted peer's headers are ignored.
  CHECK(proxies->client_of(from("192.0.2.10", "203.0.113.7")) == "192.0.2.10");
}

TEST_CASE("a trusted-proxies list that is not addresses is refused", "[api][usage]") {
  CHECK(TrustedProxies::parse("").ok());
  CHECK(TrustedProxies::parse("10.0.0.0/33").status().IsInvalidArgument());
  CHECK(TrustedProxies::parse("proxy.example.com").status().IsInvalidArgument());
}

}  // namespace
}  // namespace keyledger::api
