#include "domain/webhook_url.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace keyledger {

namespace {

constexpr std::string_view kExpected = "must be an absolute http or https URL with a host";

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

Status invalid(std::string_view why = kExpected) { return Status::InvalidArgument(std::string(why)); }

// Splits "host[:port]" or "[v6][:port]" into `host` (brackets removed) and `port`.
Status split_authority(std::string_view authority, std::string_view& host, std::string_view& port) {
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) {
      return invalid();
    }
    host = authority.substr(1, close - 1);
    // An IPv6 literal exactly as delivery resolves it (inet_pton, which Asio uses too).
    in6_addr ignored{};
    if (inet_pton(AF_INET6, std::string(host).c_str(), &ignored) != 1) {
      return invalid();
    }
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':') || after.size() == 1) {
        return invalid();
      }
      port = after.substr(1);
    }
    return Status::Ok();
  }
  const std::size_t colon = authority.find(':');
  host = authority.substr(0, colon);
  if (colon != std::string_view::npos) {
    port = authority.substr(colon + 1);
    if (port.empty()) {
      return invalid();
    }
  }
  if (host.empty() || host.starts_with('.') || host.starts_with('-') ||
      !std::all_of(host.begin(), host.end(), is_host_char)) {
    return invalid();
  }
  return Status::Ok();
}

}  // namespace

std::string WebhookUrl::host_header() const {
  std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80)) {
    out += ":" + std::to_string(port);
  }
  return out;
}

Result<WebhookUrl> parse_webhook_url(std::string_view url) {
  if (url.size() > kMaxWebhookUrlChars) {
    return invalid("must be at most " + std::to_string(kMaxWebhookUrlChars) + " characters");
  }
  for (const char c : url) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7F) {
      return invalid("must not contain spaces, control or non-ASCII characters");
    }
  }
  WebhookUrl out;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return invalid();
  }
  const std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme != "https" && scheme != "http") {
    return invalid();
  }
  out.tls = scheme == "https";
  out.port = out.tls ? 443 : 80;
  std::string_view rest = url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find('#'));
  const std::size_t authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  const std::string_view target = authority_end == std::string_view::npos ? "" : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    return invalid("must not contain credentials");
  }
  std::string_view host;
  std::string_view port;
  if (Status s = split_authority(authority, host, port); !s.ok()) {
    return s;
  }
  if (!port.empty()) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return invalid("has an invalid port");
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  out.host = lower(host);
  out.target = target.empty() || target.front() == '?' ? "/" + std::string(target) : std::string(target);
  return out;
}

}  // namespace keyledger
