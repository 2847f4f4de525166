#include "consumers/address_policy.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace keyledger::consumers {
namespace {

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

std::string refused_address_class(const boost::asio::ip::address& address) {
  return address.is_v4() ? classify_v4(address.to_v4()) : classify_v6(address.to_v6());
}

}  // namespace keyledger::consumers
