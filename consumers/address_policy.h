#pragma once
// Where a webhook may be sent (API.md §6): the URL's parts, and which addresses are refused
// as server-side request forgery targets unless --allow-private-webhooks is set.

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "domain/status.h"

namespace keyledger::consumers {

// An absolute http(s) URL split for a request.
struct WebhookUrl {
  bool tls = true;       // https
  std::string host;      // without brackets for IPv6 literals, lowercase
  std::uint16_t port = 443;
  std::string target;    // path and query, "/" when empty
  // The Host header value: host, bracketed for IPv6, with ":port" when not the default.
  std::string host_header() const;
};

// InvalidArgument when `url` is not an absolute http or https URL with a host, or carries
// user info. A fragment is dropped (it is never sent).
Result<WebhookUrl> parse_webhook_url(std::string_view url);

// Why a webhook may not be sent to `address` without --allow-private-webhooks: "loopback",
// "private", "shared" (100.64/10), "link-local" (includes 169.254.169.254, the cloud metadata
// service), "multicast", "unspecified", "reserved", "unique-local" (fc00::/7); "" when the
// address is public. IPv4-mapped and IPv4-compatible IPv6 addresses are judged as their IPv4
// address.
std::string refused_address_class(const boost::asio::ip::address& address);

}  // namespace keyledger::consumers
