#pragma once
// The address of the client behind a request, for key usage's sources (api/openapi.yaml Usage).
// A request's peer is its client unless the peer is a trusted proxy (--trusted-proxies):
// then the client is the nearest untrusted address of X-Forwarded-For (read from the right,
// since every proxy appends the address it saw), else X-Real-IP. A header from an untrusted
// peer is ignored: anyone can send one.

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "domain/status.h"

namespace keyledger::api {

class TrustedProxies {
 public:
  TrustedProxies() = default;  // trusts no one

  // "10.0.0.0/8, 127.0.0.1, ::1": addresses and CIDR networks, comma-separated.
  // InvalidArgument naming the entry that is neither.
  static Result<TrustedProxies> parse(std::string_view list);

  bool trusts(const boost::asio::ip::address& address) const;

  // The client's address in canonical text form; the peer's when no trusted proxy says
  // otherwise (or what it says is not an address).
  std::string client_of(const http::Request& req) const;

 private:
  std::vector<boost::asio::ip::network_v4> v4_;
  std::vector<boost::asio::ip::network_v6> v6_;
};

}  // namespace keyledger::api
