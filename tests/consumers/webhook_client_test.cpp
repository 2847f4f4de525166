#include "consumers/webhook_client.h"

#include <catch2/catch.hpp>

#include "consumers/address_policy.h"
#include "consumers/webhook_receiver.h"

namespace keyledger::consumers {
namespace {

using boost::asio::ip::make_address;

std::string refused(const char* address) { return refused_address_class(make_address(address)); }

WebhookClientOptions client_options(bool allow_private, bool allow_insecure = true) {
  WebhookClientOptions o;
  o.timeout = std::chrono::seconds(2);
  o.allow_private = allow_private;
  o.allow_insecure = allow_insecure;
  return o;
}

std::unique_ptr<WebhookClient> make_client(WebhookClientOptions options) {
  auto client = WebhookClient::create(std::move(options));
  INFO(client.status().ToString());
  REQUIRE(client.ok());
  return std::move(client).value();
}

const std::vector<std::pair<std::string, std::string>> kJson = {{"Content-Type", "application/json"}};

}  // namespace

TEST_CASE("the address policy refuses non-public addresses", "[webhooks]") {
  CHECK(refused("127.0.0.1") == "loopback");
  CHECK(refused("127.9.9.9") == "loopback");
  CHECK(refused("10.0.0.1") == "private");
  CHECK(refused("172.16.0.1") == "private");
  CHECK(refused("172.31.255.255") == "private");
  CHECK(refused("192.168.1.1") == "private");
  CHECK(refused("100.64.0.1") == "shared");
  CHECK(refused("169.254.169.254") == "link-local");
  CHECK(refused("224.0.0.1") == "multicast");
  CHECK(refused("0.0.0.0") == "unspecified");
  CHECK(refused("255.255.255.255") == "reserved");
  CHECK(refused("::1") == "loopback");
  CHECK(refused("::") == "unspecified");
  CHECK(refused("fc00::1") == "unique-local");
  CHECK(refused("fd12:3456::1") == "unique-local");
  CHECK(refused("fe80::1") == "link-local");
  CHECK(refused("ff02::1") == "multicast");
  CHECK(refused("::ffff:127.0.0.1") == "loopback");
  CHECK(refused("::ffff:169.254.169.254") == "link-local");
  CHECK(refused("::ffff:10.1.2.3") == "private");
  CHECK(refused("64:ff9b::a00:1") == "private");
  CHECK(refused("2002:7f00:1::1") == "loopback");

  CHECK(refused("93.184.216.34").empty());
  CHECK(refused("172.32.0.1").empty());
  CHECK(refused("100.128.0.1").empty());
  CHECK(refused("2606:4700:4700::1111").empty());
  CHECK(refused("::ffff:93.184.216.34").empty());
}

TEST_CASE("webhook URLs are split for the request", "[webhooks]") {
  auto u = parse_webhook_url("https://Agent.Example.com/hooks/clawgig?x=1#frag");
  REQUIRE(u.ok());
  CHECK(u->tls);
  CHECK(u->host == "agent.example.com");
  CHECK(u->port == 443);
  CHECK(u->target == "/hooks/clawgig?x=1");
  CHECK(u->host_header() == "agent.example.com");

  u = parse_webhook_url("http://[::1]:8080");
  REQUIRE(u.ok());
  CHECK_FALSE(u->tls);
  CHECK(u->host == "::1");
  CHECK(u->port == 8080);
  CHECK(u->target == "/");
  CHECK(u->host_header() == "[::1]:8080");

  CHECK_FALSE(parse_webhook_url("ftp://example.com/").ok());
  CHECK_FALSE(parse_webhook_url("https://user:pw@example.com/").ok());
  CHECK_FALSE(parse_webhook_url("https:///path").ok());
  CHECK_FALSE(parse_webhook_url("https://example.com:0/").ok());
  CHECK_FALSE(parse_webhook_url("https://example.com:70000/").ok());
  CHECK_FALSE(parse_webhook_url("https://[::1/").ok());
}

TEST_CASE("private targets are refused before any connection", "[webhooks]") {
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto client = make_client(client_options(/*allow_private=*/false));
  const std::string port = std::to_string(receiver.port());
  // Only literal addresses and "localhost" here: the refusal happens before any socket is
  // made, and nothing but loopback is ever contacted by these tests.
  for (const std::string& url : std::vector<std::string>{"http://127.0.0.1:" + port + "/h", "http://localhost:" + port + "/h",
                                "http://[::1]:" + port + "/h", "http://10.0.0.1:" + port + "/h",
                                "http://169.254.169.254/latest/meta-data/", "https://[::ffff:127.0.0.1]/h"}) {
    INFO(url);
    const WebhookAttempt a = client->post(url, "{}", kJson);
    CHECK(a.permanent);
    CHECK(a.status_code == 0);
    CHECK(a.error.starts_with("address_refused"));
    CHECK(a.duration < std::chrono::seconds(1));
  }
  CHECK(receiver.connections() == 0);
}

TEST_CASE("plain http needs allow_insecure", "[webhooks]") {
  testing::TestReceiver receiver([](int) { return 200u; });
  const auto client = make_client(client_options(/*allow_private=*/true, /*allow_insecure=*/false));
  const WebhookAttempt a = client->post(receiver.url(), "{}", kJson);
  CHECK(a.permanent);
  CHECK(a.error.starts_with("insecure_url"));
  CHECK(receiver.connections() == 0);
}

TEST_CASE("the client posts over http and reports the status", "[webhooks]") {
  testing::TestReceiver receiver([](int n) { return n == 1 ? 204u : n == 2 ? 302u : 500u; });
  const auto client = make_client(client_options(/*allow_private=*/true));
  WebhookAttempt a = client->post(receiver.url(), R"({"a":1})", kJson);
  CHECK(a.delivered());
  CHECK(a.status_code == 204);
  CHECK(a.error.empty());
  a = client->post(receiver.url("localhost"), "{}", kJson);  // redirects are not followed
  CHECK_FALSE(a.delivered());
  CHECK_FALSE(a.permanent);
  CHECK(a.status_code == 302);
  CHECK(a.error == "http_status: 302");
  const auto requests = receiver.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].target == "/hooks/clawgig");
  CHECK(requests[0].body == R"({"a":1})");
  CHECK(requests[0].content_type == "application/json");
}

TEST_CASE("the client verifies the receiver's certificate", "[webhooks]") {
  testing::TestCa ca;
  testing::TestReceiver receiver([](int) { return 200u; }, &ca);

  WebhookClientOptions trusted = client_options(/*allow_private=*/true, /*allow_insecure=*/false);
  trusted.ca_file = ca.ca_file();
  const auto client = make_client(trusted);
  WebhookAttempt a = client->post(receiver.url("localhost"), "{}", kJson);
  INFO(a.error);
  CHECK(a.delivered());
  a = client->post(receiver.url("127.0.0.1"), "{}", kJson);
  INFO(a.error);
  CHECK(a.delivered());

  // Without the test CA the certificate is not trusted.
  const auto untrusting = make_client(client_options(/*allow_private=*/true, /*allow_insecure=*/false));
  a = untrusting->post(receiver.url("localhost"), "{}", kJson);
  CHECK_FALSE(a.delivered());
  CHECK(a.status_code == 0);
  CHECK(a.error.starts_with("tls"));
  CHECK(receiver.requests().size() == 2);

  WebhookClientOptions missing = trusted;
  missing.ca_file = ca.ca_file() + ".missing";
  CHECK(WebhookClient::create(missing).status().IsInvalidArgument());
}

TEST_CASE("a hanging receiver is cut at the timeout", "[webhooks]") {
  testing::TestReceiver receiver([](int) { return 0u; });
  WebhookClientOptions o = client_options(/*allow_private=*/true);
  o.timeout = std::chrono::milliseconds(500);
  const auto client = make_client(o);
  const WebhookAttempt a = client->post(receiver.url(), "{}", kJson);
  CHECK_FALSE(a.delivered());
  CHECK(a.error == "timeout: read");
  CHECK(a.duration >= std::chrono::milliseconds(450));
  CHECK(a.duration < std::chrono::milliseconds(1500));
}

}  // namespace keyledger::consumers
