#pragma once
// Where a webhook may be sent (README, Webhooks): the URL's parts, and which addresses are refused
// as server-side request forgery targets unless --allow-private-webhooks is set.

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "domain/status.h"
#include "domain/webhook_url.h"

namespace keyledger::consumers {

// The URL's parts come from the domain's parser, which registration uses too.
using keyledger::parse_webhook_url;
using keyledger::WebhookUrl;

// Why a webhook may not be sent to `address` without --allow-private-webhooks: "loopback",
// "private", "shared" (100.64/10), "link-local" (includes 169.254.169.254, the cloud metadata
// service), "multicast", "unspecified", "reserved", "unique-local" (fc00::/7); "" when the
// address is public. IPv4-mapped and IPv4-compatible IPv6 addresses are judged as their IPv4
// address.
std::string refused_address_class(const boost::asio::ip::address& address);

}  // namespace keyledger::consumers
