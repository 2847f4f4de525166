#include "consumers/address_policy.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>

namespace keyledger::consumers {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool in_v4(std::uint32_t a, std::uint32_t net, int prefix) {
  const std::uint32_t mask = prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
  return (a & mask) == (net & mask);
}

constexpr std::uint32_t v4(std::uint32_t a, std::uint32_t b, std::uint32_t c, std::uint32_t d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

std::string classify_v4(const boost::asio::ip::address_v4& address) {
  const std::uint32_t a = address.to_uint();
  if (in_v4(a, v4(0, 0, 0, 0), 8)) {
    return "unspecified";
  }
  if (in_v4(a, v4(127, 0, 0, 0), 8)) {
    return "loopback";
  }
  if (in_v4(a, v4(10, 0, 0, 0), 8) || in_v4(a, v4(172, 16, 0, 0), 12) || in_v4(a, v4(192, 168, 0, 0), 16)) {
    return "private";
  }
  if (in_v4(a, v4(100, 64, 0, 0), 10)) {
    return "shared";
  }
  if (in_v4(a, v4(169, 254, 0, 0), 16)) {
    return "link-local";
  }
  if (in_v4(a, v4(224, 0, 0, 0), 4)) {
    return "multicast";
  }
  // IETF protocol assignments, benchmarking, and 240/4 (including broadcast).
  if (in_v4(a, v4(192, 0, 0, 0), 24) || in_v4(a, v4(198, 18, 0, 0), 15) || in_v4(a, v4(240, 0, 0, 0), 4)) {
    return "reserved";
  }
  return "";
}

// The IPv4 address carried in the last four bytes.
boost::asio::ip::address_v4 low_v4(const boost::asio::ip::address_v6::bytes_type& b) {
  return boost::asio::ip::address_v4({b[12], b[13], b[14], b[15]});
}

std::string classify_v6(const boost::asio::ip::address_v6& address) {
  const auto b = address.to_bytes();
  if (address.is_unspecified()) {
    return "unspecified";
  }
  if (address.is_loopback()) {
    return "loopback";
  }
  const bool first_ten_zero = std::all_of(b.begin(), b.begin() + 10, [](std::uint8_t x) { return x == 0; });
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
  if (first_ten_zero && ((b[10] == 0xff && b[11] == 0xff) || (b[10] == 0 && b[11] == 0))) {
    return classify_v4(low_v4(b));
  }
  // NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4 address.
  static constexpr std::array<std::uint8_t, 12> kNat64 = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(kNat64.begin(), kNat64.end(), b.begin())) {
    return classify_v4(low_v4(b));
  }
  // 6to4 2002:a.b.c.d::/48.
  if (b[0] == 0x20 && b[1] == 0x02) {
    return classify_v4(boost::asio::ip::address_v4({b[2], b[3], b[4], b[5]}));
  }
  if ((b[0] & 0xfe) == 0xfc) {
    return "unique-local";
  }
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) {
    return "link-local";
  }
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) {
    return "private";  // site-local, deprecated
  }
  if (b[0] == 0xff) {
    return "multicast";
  }
  return "";
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
  const auto invalid = [] { return Status::InvalidArgument("webhook_url must be an absolute http or https URL"); };
  WebhookUrl out;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return invalid();
  }
  const std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme == "https") {
    out.tls = true;
    out.port = 443;
  } else if (scheme == "http") {
    out.tls = false;
    out.port = 80;
  } else {
    return invalid();
  }
  // The fragment is never sent.
  std::string_view rest = url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find('#'));
  const std::size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  const std::string_view target = authority_end == std::string_view::npos ? "" : rest.substr(authority_end);
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return invalid();
  }
  std::string_view host;
  std::string_view port;
  if (authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return invalid();
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return invalid();
      }
      port = after.substr(1);
    }
    boost::system::error_code ec;
    const auto parsed = boost::asio::ip::make_address_v6(std::string(host), ec);
    if (ec) {
      return invalid();
    }
    (void)parsed;
  } else {
    const std::size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
    }
  }
  if (host.empty()) {
    return invalid();
  }
  if (!port.empty()) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return invalid();
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  out.host = lower(host);
  out.target = target.empty() || target.front() == '?' ? "/" + std::string(target) : std::string(target);
  return out;
}

std::string refused_address_class(const boost::asio::ip::address& address) {
  return address.is_v4() ? classify_v4(address.to_v4()) : classify_v6(address.to_v6());
}

}  // namespace keyledger::consumers
