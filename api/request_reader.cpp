#include "api/request_reader.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>

namespace keyledger::http {

namespace {

namespace bhttp = boost::beast::http;

std::string_view view(boost::beast::string_view s) { return {s.data(), s.size()}; }

// "name: value\r\n" on the wire.
constexpr std::size_t kFieldLineOverhead = 4;

// True if the field value is exactly "chunked" (any case, optional white space around it).
// Anything else (another coding, chunked not last, chunked twice, an empty list, bytes a list
// parser would stop at) is refused: keyledger decodes no other coding, and a proxy in front
// must not read the field differently from us.
bool is_only_chunked(std::string_view value) {
  const auto first = value.find_first_not_of(" \t");
  if (first == std::string_view::npos) {
    return false;
  }
  const auto last = value.find_last_not_of(" \t");
  return equals_ignoring_case(value.substr(first, last - first + 1), "chunked");
}

}  // namespace

void RequestReader::on_request_impl(bhttp::verb /*method*/, string_view method_text, string_view target,
                                    int version, error_code& /*ec*/) {
  request_.method.assign(method_text.data(), method_text.size());
  target_ok_ = http::parse_target(view(target), request_.path, request_.query);
  version_ = version == 10 ? 10 : 11;
}

void RequestReader::on_response_impl(int /*code*/, string_view /*reason*/, int /*version*/, error_code& /*ec*/) {}

void RequestReader::on_field_impl(bhttp::field name, string_view name_text, string_view value, error_code& ec) {
  if (in_trailer_) {
    trailer_bytes_ += name_text.size() + value.size() + kFieldLineOverhead;
    if (trailer_bytes_ > max_trailer_bytes_) {
      ec = bhttp::error::header_limit;
    }
    return;
  }
  if (name == bhttp::field::transfer_encoding && !is_only_chunked(view(value))) {
    refusal_ = "Transfer-Encoding other than chunked is not supported";
    ec = bhttp::error::bad_transfer_encoding;
    return;
  }
  if (name == bhttp::field::authorization) {
    if (has_authorization_) {
      refusal_ = "more than one Authorization header";
      ec = bhttp::error::bad_field;
      return;
    }
    has_authorization_ = true;
  }
  if (boost::beast::iequals(name_text, "x-api-key")) {
    if (has_api_key_) {
      refusal_ = "more than one X-Api-Key header";
      ec = bhttp::error::bad_field;
      return;
    }
    has_api_key_ = true;
  }
  request_.headers.add_folded(view(name_text), view(value));
}

void RequestReader::on_header_impl(error_code& /*ec*/) {}

void RequestReader::on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code& /*ec*/) {
  // The parser has already refused a Content-Length over the body limit.
  if (length) {
    request_.body.reserve(static_cast<std::size_t>(*length));
  }
}

std::size_t RequestReader::on_body_impl(string_view body, error_code& /*ec*/) {
  request_.body.append(body.data(), body.size());
  return body.size();
}

void RequestReader::on_chunk_header_impl(std::uint64_t size, string_view /*extensions*/, error_code& /*ec*/) {
  in_trailer_ = in_trailer_ || size == 0;  // the last chunk: what follows is the trailer
}

std::size_t RequestReader::on_chunk_body_impl(std::uint64_t /*remain*/, string_view body, error_code& /*ec*/) {
  request_.body.append(body.data(), body.size());
  return body.size();
}

void RequestReader::on_finish_impl(error_code& /*ec*/) {}

}  // namespace keyledger::http
