// The webhook URL parser (domain/webhook_url.h), through both of its users: registration
// (validate_profile's webhook_url) and delivery (parse_webhook_url), with the address classes
// the SSRF policy refuses (consumers/address_policy.cpp). Until issue 14 they were two parsers
// with different rules; the checks below keep them from drifting apart again.
//
// Checked: a URL registration accepts is one delivery can parse (else the agent's webhooks
// could never be sent), with the scheme it was accepted for (https unless insecure webhooks are
// allowed); a parsed URL has a non-empty lowercase host without '@', a port 1–65535, a target
// starting with '/' and no fragment, and a Host header that can be framed; an IPv4 address and
// its IPv4-mapped IPv6 form are refused for the same reason.
#include <boost/asio/ip/address.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "consumers/address_policy.h"
#include "domain/agent.h"
#include "support/checks.h"

namespace keyledger::fuzz {
namespace {

bool url_refused(const std::string& url, bool allow_insecure) {
  AgentProfile profile;
  profile.name = "Fuzz Agent";
  profile.description = "Registered by the fuzz harness.";
  profile.skills = {"fuzz"};
  profile.languages = {"en"};
  profile.webhook_url = url;
  RegisterAgentOptions options;
  options.allow_insecure_webhooks = allow_insecure;
  for (const auto& e : validate_profile(profile, options)) {
    FUZZ_CHECK(e.field == "webhook_url", "a fixed valid field refused: " + e.field + " " + e.message);
    return true;
  }
  return false;
}

void run(std::string_view input) {
  const std::string url(input);
  const auto parsed = consumers::parse_webhook_url(url);
  for (const bool allow_insecure : {false, true}) {
    if (url_refused(url, allow_insecure)) {
      continue;
    }
    FUZZ_CHECK_UNLESS_KNOWN("webhook-url-ipv6-literal", parsed.ok(),
                            "registration accepts a URL delivery cannot parse: " + printable(url));
    FUZZ_CHECK(!parsed.ok() || allow_insecure || parsed->tls,
               "registration accepts plain http: " + printable(url));
  }
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().IsInvalidArgument(), "not InvalidArgument: " + printable(url));
    return;
  }
  const consumers::WebhookUrl& u = *parsed;
  const std::string where =
      printable(url) + " -> host " + printable(u.host) + " target " + printable(u.target);
  FUZZ_CHECK(!u.host.empty() && u.host.find('@') == std::string::npos, where);
  for (char c : u.host) {
    FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "host not lowercase: " + where);
  }
  FUZZ_CHECK(u.port >= 1, "port 0: " + where);
  FUZZ_CHECK(u.target.starts_with('/') && u.target.find('#') == std::string::npos, "target: " + where);
  const std::string host_header = u.host_header();
  FUZZ_CHECK(!host_header.empty(), "empty Host: " + where);
  if (url_refused(url, true)) {
    return;  // only what registration accepts is ever sent: its header must be frameable
  }
  FUZZ_CHECK(http::frameable(host_header) && http::frameable(u.target),
             "unframeable Host or target: " + where);

  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(u.host, ec);
  if (!ec) {
    const std::string cls = consumers::refused_address_class(address);
    if (address.is_v4()) {
      const auto mapped = boost::asio::ip::make_address_v6(boost::asio::ip::v4_mapped, address.to_v4());
      FUZZ_CHECK(consumers::refused_address_class(mapped) == cls, "mapped form judged otherwise: " + where);
    }
  }
}

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keyledger::fuzz::run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
