#include "consumers/webhook_client.h"

#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <exception>

#include "consumers/address_policy.h"

namespace keyledger::consumers {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using SteadyTime = std::chrono::steady_clock::time_point;
using ErrorCode = boost::system::error_code;

// Response headers beyond this are a broken receiver; the body is never read.
constexpr std::uint32_t kMaxResponseHeaderBytes = 16 * 1024;
// Extra time the I/O loop may run past the deadline, for the timers to fire and complete.
constexpr std::chrono::seconds kDeadlineGrace{1};
constexpr std::string_view kUserAgent = "keyledger-webhooks/1";

// Starts one asynchronous operation with a handler recording its error, runs the I/O
// context until it completes, and returns that error (timeout if it never completed).
template <typename Start>
ErrorCode run_step(asio::io_context& ioc, SteadyTime deadline, Start&& start) {
  ErrorCode result;
  bool done = false;
  start([&](ErrorCode ec, auto&&...) {
    result = ec;
    done = true;
  });
  // One handler at a time, so a step ends as soon as its operation completes (the stream's
  // cancelled timers are left for later steps or the context's destruction).
  ioc.restart();
  const SteadyTime limit = deadline + kDeadlineGrace;
  while (!done && ioc.run_one_until(limit) > 0) {
  }
  return done ? result : ErrorCode(beast::error::timeout);
}

std::string describe(std::string_view step, const ErrorCode& ec) {
  if (ec == beast::error::timeout || ec == asio::error::timed_out) {
    return "timeout: " + std::string(step);
  }
  return std::string(step) + ": " + ec.message();
}

// Connects, writes the request and reads the response headers over `stream`.
template <typename Stream>
WebhookAttempt exchange(asio::io_context& ioc, Stream& stream, const std::vector<tcp::endpoint>& endpoints,
                        const http::request<http::string_body>& request, SteadyTime deadline, bool tls) {
  WebhookAttempt out;
  auto& socket = beast::get_lowest_layer(stream);
  socket.expires_at(deadline);
  ErrorCode ec = run_step(ioc, deadline, [&](auto handler) { socket.async_connect(endpoints, handler); });
  if (ec) {
    out.error = describe("connect", ec);
    return out;
  }
  if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
    if (tls) {
      socket.expires_at(deadline);
      ec = run_step(ioc, deadline,
                    [&](auto handler) { stream.async_handshake(ssl::stream_base::client, handler); });
      if (ec) {
        out.error = describe("tls", ec);
        return out;
      }
    }
  }
  socket.expires_at(deadline);
  ec = run_step(ioc, deadline, [&](auto handler) { http::async_write(stream, request, handler); });
  if (ec) {
    out.error = describe("write", ec);
    return out;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> parser;
  parser.header_limit(kMaxResponseHeaderBytes);
  socket.expires_at(deadline);
  ec = run_step(ioc, deadline,
                [&](auto handler) { http::async_read_header(stream, buffer, parser, handler); });
  if (ec) {
    out.error = describe("read", ec);
    return out;
  }
  out.status_code = parser.get().result_int();
  if (!out.delivered()) {
    out.error = "http_status: " + std::to_string(out.status_code);
  }
  ErrorCode ignored;
  socket.socket().shutdown(tcp::socket::shutdown_both, ignored);
  socket.close();
  return out;
}

}  // namespace

struct WebhookClient::Tls {
  ssl::context context{ssl::context::tls_client};
};

WebhookClient::WebhookClient(WebhookClientOptions options, std::unique_ptr<Tls> tls)
    : options_(std::move(options)), tls_(std::move(tls)) {}

WebhookClient::~WebhookClient() = default;

Result<std::unique_ptr<WebhookClient>> WebhookClient::create(WebhookClientOptions options) {
  std::unique_ptr<Tls> tls;
  try {
    tls = std::make_unique<Tls>();
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("TLS context: ") + e.what());
  }
  ErrorCode ec;
  tls->context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                               ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                           ec);
  if (ec) {
    return Status::Unavailable("TLS options: " + ec.message());
  }
  tls->context.set_verify_mode(ssl::verify_peer, ec);
  if (ec) {
    return Status::Unavailable("TLS verify mode: " + ec.message());
  }
  tls->context.set_default_verify_paths(ec);
  if (ec) {
    return Status::Unavailable("system CA store: " + ec.message());
  }
  if (!options.ca_file.empty()) {
    tls->context.load_verify_file(options.ca_file, ec);
    if (ec) {
      return Status::InvalidArgument("webhook CA file " + options.ca_file + ": " + ec.message());
    }
  }
  return std::unique_ptr<WebhookClient>(new WebhookClient(std::move(options), std::move(tls)));
}

namespace {

// The addresses a webhook goes to: the literal, or what its name resolves to (once; the
// connection goes to exactly these, checked, addresses).
struct Resolved {
  std::vector<tcp::endpoint> endpoints;
  bool literal = false;
  std::string error;  // empty when resolved
};

Resolved resolve(asio::io_context& ioc, const WebhookUrl& target, SteadyTime deadline) {
  Resolved out;
  ErrorCode ec;
  const asio::ip::address literal = asio::ip::make_address(target.host, ec);
  if (!ec) {
    out.literal = true;
    out.endpoints.emplace_back(literal, target.port);
    return out;
  }
  tcp::resolver resolver(ioc);
  tcp::resolver::results_type results;
  ec = run_step(ioc, deadline, [&](auto handler) {
    resolver.async_resolve(target.host, std::to_string(target.port),
                           [&results, handler](ErrorCode e, tcp::resolver::results_type r) mutable {
                             results = std::move(r);
                             handler(e);
                           });
  });
  if (ec) {
    resolver.cancel();
    out.error = describe("resolve", ec);
    return out;
  }
  for (const auto& entry : results) {
    out.endpoints.push_back(entry.endpoint());
  }
  if (out.endpoints.empty()) {
    out.error = "resolve: no addresses";
  }
  return out;
}

// Why the target is refused, or empty. One refused address refuses the target: a name mixing
// public and private addresses is exactly what a rebinding attack looks like.
std::string refused_target(const WebhookUrl& target, const std::vector<tcp::endpoint>& endpoints) {
  for (const auto& endpoint : endpoints) {
    if (std::string why = refused_address_class(endpoint.address()); !why.empty()) {
      return "address_refused: " + target.host + " is " + endpoint.address().to_string() + " (" + why + ")";
    }
  }
  return "";
}

http::request<http::string_body> webhook_request(
    const WebhookUrl& target, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  http::request<http::string_body> request{http::verb::post, target.target, 11};
  request.set(http::field::host, target.host_header());
  request.set(http::field::user_agent, std::string(kUserAgent));
  for (const auto& [name, value] : headers) {
    request.set(name, value);
  }
  request.set(http::field::connection, "close");
  request.body() = body;
  request.prepare_payload();
  return request;
}

}  // namespace

WebhookAttempt WebhookClient::post(const std::string& url, const std::string& body,
                                   const std::vector<std::pair<std::string, std::string>>& headers) const {
  const auto start = std::chrono::steady_clock::now();
  const SteadyTime deadline = start + options_.timeout;
  const auto finish = [&](WebhookAttempt attempt) {
    attempt.duration =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    return attempt;
  };
  const auto failed = [&](std::string error, bool permanent = false) {
    WebhookAttempt attempt;
    attempt.error = std::move(error);
    attempt.permanent = permanent;
    return finish(std::move(attempt));
  };

  auto parsed = parse_webhook_url(url);
  if (!parsed.ok()) {
    return failed("invalid_url", true);
  }
  const WebhookUrl& target = *parsed;
  if (!target.tls && !options_.allow_insecure) {
    return failed("insecure_url: plain http webhooks are not allowed", true);
  }

  try {
    asio::io_context ioc;
    const Resolved resolved = resolve(ioc, target, deadline);
    if (!resolved.error.empty()) {
      return failed(resolved.error);
    }
    if (!options_.allow_private) {
      if (std::string refused = refused_target(target, resolved.endpoints); !refused.empty()) {
        return failed(std::move(refused), true);
      }
    }
    const auto request = webhook_request(target, body, headers);
    if (!target.tls) {
      beast::tcp_stream stream(ioc);
      return finish(exchange(ioc, stream, resolved.endpoints, request, deadline, false));
    }
    beast::ssl_stream<beast::tcp_stream> stream(ioc, tls_->context);
    if (!resolved.literal && SSL_set_tlsext_host_name(stream.native_handle(), target.host.c_str()) != 1) {
      return failed("tls: cannot set SNI");
    }
    ErrorCode ec;
    stream.set_verify_callback(ssl::host_name_verification(target.host), ec);
    if (ec) {
      return failed(describe("tls", ec));
    }
    return finish(exchange(ioc, stream, resolved.endpoints, request, deadline, true));
  } catch (const std::exception& e) {
    // Beast and Asio report through error codes here; this is a last line for allocation
    // failures and the like.
    return failed(std::string("internal: ") + e.what());
  }
}

}  // namespace keyledger::consumers
