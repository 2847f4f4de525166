#include "api/client_address.h"

#include <algorithm>

namespace keyledger::api {
namespace {

namespace ip = boost::asio::ip;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<ip::address> address_of(std::string_view text) {
  boost::system::error_code ec;
  ip::address address = ip::make_address(std::string(trim(text)), ec);
  if (ec) {
    return std::nullopt;
  }
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = ip::make_address_v4(ip::v4_mapped, address.to_v6());
  }
  return address;
}

}  // namespace

Result<TrustedProxies> TrustedProxies::parse(std::string_view list) {
  TrustedProxies proxies;
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string entry(trim(list.substr(0, comma)));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (entry.empty()) {
      continue;
    }
    boost::system::error_code ec;
    const std::string cidr = entry.find('/') == std::string::npos
                                 ? entry + (entry.find(':') == std::string::npos ? "/32" : "/128")
                                 : entry;
    if (cidr.find(':') == std::string::npos) {
      const ip::network_v4 network = ip::make_network_v4(cidr, ec);
      if (!ec) {
        proxies.v4_.push_back(network.canonical());
        continue;
      }
    } else {
      const ip::network_v6 network = ip::make_network_v6(cidr, ec);
      if (!ec) {
        proxies.v6_.push_back(network.canonical());
        continue;
      }
    }
    return Status::InvalidArgument("--trusted-proxies: '" + entry +
                                   "' is neither an address nor a CIDR network");
  }
  return proxies;
}

bool TrustedProxies::trusts(const ip::address& address) const {
  if (address.is_v4()) {
    const ip::network_v4 host(address.to_v4(), 32);
    return std::any_of(v4_.begin(), v4_.end(),
                       [&](const auto& n) { return host == n || host.is_subnet_of(n); });
  }
  const ip::network_v6 host(address.to_v6(), 128);
  return std::any_of(v6_.begin(), v6_.end(),
                     [&](const auto& n) { return host == n || host.is_subnet_of(n); });
}

std::string TrustedProxies::client_of(const http::Request& req) const {
  const std::optional<ip::address> peer = address_of(req.remote_address);
  if (!peer) {
    return req.remote_address;
  }
  if ((v4_.empty() && v6_.empty()) || !trusts(*peer)) {
    return peer->to_string();
  }
  // Repeated X-Forwarded-For lines are one list, in order (RFC 9110 §5.3): a proxy may add a
  // line of its own instead of appending to the client's.
  std::string joined;
  for (const auto& [name, value] : req.headers.all()) {
    if (name == "x-forwarded-for") {
      joined += (joined.empty() ? "" : ", ") + std::string(value);
    }
  }
  if (!joined.empty()) {
    std::string_view rest = joined;
    // From the right: each hop appended the address it saw; the first one not a trusted
    // proxy is the client.
    while (!rest.empty()) {
      const std::size_t comma = rest.rfind(',');
      const std::string_view hop = comma == std::string_view::npos ? rest : rest.substr(comma + 1);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
      const std::optional<ip::address> address = address_of(hop);
      if (!address) {
        break;  // a garbled header says nothing trustworthy
      }
      if (!trusts(*address) || rest.empty()) {
        return address->to_string();
      }
    }
  }
  if (const auto real_ip = req.headers.get("x-real-ip")) {
    if (const std::optional<ip::address> address = address_of(*real_ip)) {
      return address->to_string();
    }
  }
  return peer->to_string();
}

}  // namespace keyledger::api
