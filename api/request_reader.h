#pragma once
// Reads one HTTP/1.1 request straight into an http::Request. Beast parses (framing, limits,
// chunked bodies) and hands over each piece as it is parsed; the method, target, fields and
// body land in the Request with no Beast message in between, and a reused Request keeps its
// buffers.
//
// On top of Beast, the framing rules of RFC 9112 that Beast 1.74 leaves to the application
// (api/openapi.yaml), each refused as a parse error (the server answers 400 and closes, since what
// follows on the connection cannot be framed):
//   - a Transfer-Encoding other than exactly "chunked": Beast reads a request whose final
//     coding is not chunked (`gzip`, `chunked, identity`, `xchunked`) as having no body, so
//     its "body" would be parsed as a second request (request smuggling);
//   - a second Authorization or X-Api-Key field (which credential wins would depend on who
//     reads it).
// Conflicting Content-Lengths, and Content-Length beside Transfer-Encoding, Beast refuses.
//
// Trailer fields of a chunked body are not headers: they are dropped, and counted against the
// header limit (Beast applies neither limit to them), so they cannot smuggle in a credential
// or grow without bound.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <boost/beast/http/basic_parser.hpp>

#include "api/http.h"

namespace keyledger::http {

class RequestReader final : public boost::beast::http::basic_parser<true> {
 public:
  RequestReader(Request& request, std::size_t max_trailer_bytes)
      : request_(request), max_trailer_bytes_(max_trailer_bytes) {}

  unsigned version() const { return version_; }
  // False if the request target is not a canonical path with a well-formed query (api/openapi.yaml:
  // 400). The framing is intact then: the connection may stay open.
  bool target_ok() const { return target_ok_; }
  // Why the last put() failed with a parse error, in words a client can act on; empty when
  // Beast's own message is all there is ("malformed HTTP request").
  std::string_view refusal() const { return refusal_; }

 private:
  using string_view = boost::beast::string_view;
  using error_code = boost::beast::error_code;

  void on_request_impl(boost::beast::http::verb method, string_view method_text, string_view target, int version,
                       error_code& ec) override;
  void on_response_impl(int code, string_view reason, int version, error_code& ec) override;
  void on_field_impl(boost::beast::http::field name, string_view name_text, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code& ec) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code& ec) override;
  std::size_t on_body_impl(string_view body, error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t size, string_view extensions, error_code& ec) override;
  std::size_t on_chunk_body_impl(std::uint64_t remain, string_view body, error_code& ec) override;
  void on_finish_impl(error_code& ec) override;

  Request& request_;
  std::size_t max_trailer_bytes_;
  std::size_t trailer_bytes_ = 0;
  unsigned version_ = 11;
  bool target_ok_ = true;
  bool in_trailer_ = false;
  bool has_authorization_ = false;
  bool has_api_key_ = false;
  std::string_view refusal_;
};

}  // namespace keyledger::http
