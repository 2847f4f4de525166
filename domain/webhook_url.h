#pragma once
// Webhook URLs (api/openapi.yaml, README "Webhooks"): one parser for registration (validate_profile) and delivery
// (consumers/webhook_client), so what registers can always be sent.

#include <cstdint>
#include <string>
#include <string_view>

#include "domain/status.h"

namespace keyledger {

// Longer URLs are refused by common HTTP stacks anyway; a cap keeps events small.
inline constexpr std::size_t kMaxWebhookUrlChars = 2048;

// An absolute http(s) URL split for a request.
struct WebhookUrl {
  bool tls = true;  // https
  std::string host;  // lowercase; IPv6 literals without brackets
  std::uint16_t port = 443;
  std::string target;  // path and query, "/" when empty
  // The Host header value: host, bracketed for IPv6, with ":port" when not the default.
  std::string host_header() const;
};

// The URL's parts, or InvalidArgument whose message says what is wrong, unless `url` is an
// absolute http or https URL of at most kMaxWebhookUrlChars printable ASCII characters (no
// spaces), without user info, with a host (a name of [A-Za-z0-9.-] not starting with '.' or
// '-', or a bracketed IPv6 literal as inet_pton reads it) and an optional port 1-65535. The
// fragment is dropped: it is never sent. Whether plain http is allowed is the caller's rule.
Result<WebhookUrl> parse_webhook_url(std::string_view url);

}  // namespace keyledger
