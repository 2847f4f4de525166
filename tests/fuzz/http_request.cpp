// HTTP request parsing and routing as the server does them: the bytes of a connection go
// through http::RequestReader (api/request_reader.h: Beast's parser plus keyledger's framing
// rules) with the server's limits, and a request it completes goes through the real dispatcher
// (Api::handle, no credential: routing, 404/405, 401). The first byte of the input picks the
// size of the pieces the rest is fed in (1–64 bytes, or all at once).
//
// Checked: fed in pieces or all at once, the reader gives the same request or refuses both
// times; a completed request has a method, HTTP/1.0 or 1.1, frameable headers, at most one
// Authorization field, no Transfer-Encoding but "chunked", a body within the limit, and a
// canonical path when its target was accepted; the dispatcher's answer is one of the contract
// (support/checks.h); /metrics stays bounded whatever methods and paths clients send.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "api/request_reader.h"
#include "api/auth.h"
#include "api/json_body.h"
#include "api/operations.h"
#include "api/verify_responses.h"
#include "support/checks.h"
#include "support/world.h"

namespace keyledger::fuzz {
namespace {

// The server's defaults (api/server.h ServerOptions).
constexpr std::size_t kMaxHeaderBytes = 8 * 1024;
constexpr std::size_t kMaxBodyBytes = 64 * 1024;
// /metrics with every method label, route and status there is stays well under this.
constexpr std::size_t kMaxMetricsBytes = 1 << 20;

struct Parsed {
  http::Request request;
  bool done = false;
  bool target_ok = false;
  unsigned version = 0;
};

// Feeds `wire` to a reader `piece` bytes at a time (0: all at once), as the server's reads do.
void parse(std::string_view wire, std::size_t piece, Parsed& out) {
  http::RequestReader reader(out.request, kMaxHeaderBytes);
  reader.header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
  reader.body_limit(kMaxBodyBytes);
  reader.eager(true);
  std::size_t available = piece == 0 ? wire.size() : std::min(piece, wire.size());
  std::size_t used = 0;
  for (int rounds = 0; rounds < 100000 && !reader.is_done(); ++rounds) {
    boost::system::error_code ec;
    const std::size_t n = reader.put(boost::asio::buffer(wire.data() + used, available - used), ec);
    used += n;
    // Beast asks for more with need_more, or just stops when it used all it had (a chunk's
    // body): either way the next read's bytes are added.
    if (ec == boost::beast::http::error::need_more ||
        (!ec && !reader.is_done() && (n == 0 || used == available))) {
      if (available == wire.size()) {
        return;  // the connection would wait for more (or time out)
      }
      available = std::min(wire.size(), available + (piece == 0 ? wire.size() : piece));
      continue;
    }
    if (ec) {
      return;
    }
  }
  out.done = reader.is_done();
  out.target_ok = reader.target_ok();
  out.version = reader.version();
}

std::string describe(const Parsed& p) {
  std::string out = std::to_string(p.done) + std::to_string(p.target_ok) + " " + p.request.method + " " +
                    p.request.path + " v" + std::to_string(p.version);
  for (const auto& [name, value] : p.request.query) {
    out += " q:" + name + "=" + value;
  }
  return printable(out + "\n" + std::string(p.request.headers.wire()) + "\n" + p.request.body);
}

void run(std::string_view input) {
  if (input.empty()) {
    return;
  }
  const std::size_t piece = static_cast<unsigned char>(input[0]) % 65;
  const std::string_view wire = input.substr(1);

  Parsed whole;
  parse(wire, 0, whole);
  Parsed pieces;
  parse(wire, piece, pieces);
  const std::string where = printable(wire);
  FUZZ_CHECK(whole.done == pieces.done, "pieces of " + std::to_string(piece) + " parse otherwise: " + where);
  if (!whole.done) {
    return;
  }
  FUZZ_CHECK(describe(whole) == describe(pieces), "pieces of " + std::to_string(piece) +
                                                      " give another request: " + describe(whole) + " vs " +
                                                      describe(pieces));

  http::Request& req = whole.request;
  FUZZ_CHECK(!req.method.empty() && (whole.version == 10 || whole.version == 11), "request line: " + where);
  FUZZ_CHECK(req.headers.frameable(), "unframeable request header accepted: " + where);
  FUZZ_CHECK(req.body.size() <= kMaxBodyBytes, "body over the limit: " + where);
  std::size_t authorizations = 0;
  for (const auto& [name, value] : req.headers.all()) {
    authorizations += name == "authorization" ? 1 : 0;
    if (name == "transfer-encoding") {
      std::string_view v = value;
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.front() == ',')) {
        v.remove_prefix(1);
      }
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == ',')) {
        v.remove_suffix(1);
      }
      FUZZ_CHECK(http::equals_ignoring_case(v, "chunked"), "Transfer-Encoding accepted: " + where);
    }
  }
  FUZZ_CHECK(authorizations <= 1, "two Authorization fields accepted: " + where);
  if (!whole.target_ok) {
    return;  // the server answers 400 itself
  }
  FUZZ_CHECK(http::is_canonical_path(req.path), "non-canonical path accepted: " + where);

  World& world = World::get();
  world.handle(req);
  static std::uint64_t requests = 0;
  if (++requests % 512 == 0) {
    const std::size_t size = api::metrics_response(world.metrics()).body.size();
    FUZZ_CHECK(size < kMaxMetricsBytes, "/metrics grew to " + std::to_string(size) + " bytes");
  }
}

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keyledger::fuzz::run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
