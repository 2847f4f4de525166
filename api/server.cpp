#include "api/server.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <csignal>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "api/connection_limit.h"
#include "api/errors.h"
#include "api/request_id.h"
#include "api/request_reader.h"
#include "api/response_head.h"
#include "domain/key_material.h"

namespace keyledger::api {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;  // `http` is keyledger's transport-free Request/Response
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

// How much one socket read asks for; a typical request arrives in a single read.
constexpr std::size_t kReadChunkBytes = 16 * 1024;
// stop() waits this long for in-flight requests before closing their connections.
constexpr std::chrono::seconds kDrainTimeout{2};
// After an error answer we read and discard what the client is still sending (at most this
// much, for at most this long) before closing: closing a socket with unread input makes the
// kernel send RST, which can destroy the answer before the client has read it.
constexpr std::chrono::milliseconds kLingerTimeout{1'000};
constexpr std::size_t kLingerMaxBytes = 1024 * 1024;
// A connection keeps its write buffer between responses up to this size.
constexpr std::size_t kKeptWriteBufferBytes = 64 * 1024;
// … and its request body buffer up to this size.
constexpr std::size_t kKeptRequestBodyBytes = 16 * 1024;
// A failed accept (out of file descriptors, say) is retried after this pause, not in a spin.
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};
// Connections refused over the limit are logged once per this many (a flood must not flood
// the log too).
constexpr std::uint64_t kRefusalLogEvery = 1000;

constexpr unsigned kBadRequest = 400;
constexpr unsigned kPayloadTooLarge = 413;
constexpr unsigned kHeadersTooLarge = 431;
constexpr unsigned kInternalServerError = 500;
// A handler's final answer: 1xx would leave the client waiting for another response.
constexpr unsigned kMinStatus = 200;
constexpr unsigned kMaxStatus = 999;

http::Response internal_error(const std::string& request_id) {
  return error_response(kInternalServerError, "internal_error", "internal error", request_id);
}

// Every Beast parse error (bad method, bad target, bad chunk, …) shares this category.
bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category();
}

// "host:port" or "[v6]:port"; host is an IP literal or "localhost" (taken as 127.0.0.1, so a
// client of "localhost" and the listener agree on the address family).
std::optional<tcp::endpoint> parse_listen(std::string_view listen) {
  std::string_view host;
  std::string_view port;
  if (!listen.empty() && listen.front() == '[') {
    const auto close = listen.find(']');
    if (close == std::string_view::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return std::nullopt;
    }
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    const auto colon = listen.rfind(':');
    if (colon == std::string_view::npos) {
      return std::nullopt;
    }
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  std::uint16_t port_number = 0;
  const auto [end, errc] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (port.empty() || errc != std::errc{} || end != port.data() + port.size()) {
    return std::nullopt;
  }
  if (host == "localhost") {
    return tcp::endpoint(asio::ip::address_v4::loopback(), port_number);
  }
  beast::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  if (ec) {
    return std::nullopt;
  }
  return tcp::endpoint(address, port_number);
}

class Session;

// The live connections, so stop() can reach them. Touched on accept and on close only, never
// per request.
class SessionRegistry {
 public:
  using Handle = std::list<std::weak_ptr<Session>>::iterator;

  Handle add(std::weak_ptr<Session> session) {
    std::lock_guard lock(mutex_);
    return sessions_.insert(sessions_.end(), std::move(session));
  }

  void remove(Handle handle) {
    std::lock_guard lock(mutex_);
    sessions_.erase(handle);
    if (sessions_.empty()) {
      empty_.notify_all();
    }
  }

  // Strong references to the live sessions. Taken under the lock but released by the caller
  // outside it: dropping the last reference runs ~Session, which calls remove().
  std::vector<std::shared_ptr<Session>> live() {
    std::vector<std::shared_ptr<Session>> out;
    std::lock_guard lock(mutex_);
    out.reserve(sessions_.size());
    for (const auto& weak : sessions_) {
      if (auto strong = weak.lock()) {
        out.push_back(std::move(strong));
      }
    }
    return out;
  }

  // True if every session ended before `deadline`.
  bool wait_until_empty(SteadyClock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return empty_.wait_until(lock, deadline, [&] { return sessions_.empty(); });
  }

  std::size_t size() {
    std::lock_guard lock(mutex_);
    return sessions_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable empty_;
  std::list<std::weak_ptr<Session>> sessions_;
};

// What every session shares with the server. Owned by Server::Impl and declared before its
// loops, so it outlives every session (sessions still queued in a stopped io_context are
// destroyed with it).
struct ServerContext {
  ServerContext(ServerOptions options_in, Dispatcher& dispatcher_in)
      : options(std::move(options_in)), dispatcher(dispatcher_in) {}

  const ServerOptions options;
  Dispatcher& dispatcher;
  SessionRegistry sessions;
  // Set by stop(): answer in-flight requests with Connection: close, start no new ones.
  std::atomic<bool> draining{false};
  // Handlers that may block (commands waiting on fsync). Created by start().
  std::optional<asio::thread_pool> workers;
};

using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Acceptor = asio::basic_socket_acceptor<tcp, Executor>;
using Timer = asio::basic_waitable_timer<SteadyClock, asio::wait_traits<SteadyClock>, Executor>;
// One io thread's event loop. Its io_context is run by that thread alone, so a connection's
// handlers need no strand and no lock. Deadlines are not timers per operation (each would be
// armed and cancelled on every read and write): a connection sets a deadline, and the loop's
// sweep closes the connections whose deadline passed.
class Loop {
 public:
  // Hint 1: one thread runs this io_context. The reactor keeps its per-socket locks, because
  // a session may be destroyed on another thread during stop().
  explicit Loop(std::chrono::milliseconds sweep_interval)
      : ioc_(1), sweep_(ioc_), acceptor_(ioc_), accept_retry_(ioc_), sweep_interval_(sweep_interval) {}

  asio::io_context& context() { return ioc_; }
  Executor executor() { return ioc_.get_executor(); }
  // This loop's own handle on the server's listening socket (see Server::Impl::start), and
  // the timer that retries a failed accept. On this loop's thread only, once it runs.
  Acceptor& acceptor() { return acceptor_; }
  Timer& accept_retry() { return accept_retry_; }
  // The time of the last sweep: deadlines are set from it, which saves a clock read per
  // operation and is exact to within one sweep interval, the sweep's own precision anyway.
  SteadyClock::time_point coarse_now() const { return now_; }
  std::chrono::milliseconds sweep_interval() const { return sweep_interval_; }

  // On this loop's thread only.
  void watch(std::weak_ptr<Session> session) { sessions_.push_back(std::move(session)); }

  void start_sweeping() {
    now_ = SteadyClock::now();
    sweep_.expires_after(sweep_interval_);
    sweep_.async_wait([this](beast::error_code ec) {
      if (ec) {
        return;
      }
      sweep();
      start_sweeping();
    });
  }
  void stop_sweeping() {
    asio::post(ioc_, [this] { sweep_.cancel(); });
  }

 private:
  void sweep();

  asio::io_context ioc_;
  Timer sweep_;
  Acceptor acceptor_;
  Timer accept_retry_;
  std::chrono::milliseconds sweep_interval_;
  std::vector<std::weak_ptr<Session>> sessions_;
  SteadyClock::time_point now_ = SteadyClock::now();
};

// One HTTP/1.1 connection, owned by one Loop: everything runs on that loop's thread except the
// dispatcher call of a non-inline request, which runs on the worker pool while no I/O is
// pending.
//
// Timeouts (API.md §3: nothing for idle_timeout, or one request taking over request_timeout,
// closes the connection), as a deadline the loop's sweep enforces by closing the socket:
//   1. Waiting for a request: one plain socket read with the deadline at idle_timeout. Its
//      completion means the first bytes of a request have arrived.
//   2. From those bytes on: the deadline moves to request_timeout and http::async_read reads
//      the whole request. However the client dribbles its header or body, the request must be
//      complete by then; idle_timeout no longer applies, so a slow but steady upload of a
//      legitimate request is not cut at idle_timeout.
//   Bytes already buffered (a pipelined next request) skip step 1: that request has begun.
//   Writing a response gets request_timeout too, so a client that never reads is dropped.
// The handler itself runs with no deadline (no I/O is pending then).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Socket socket, Loop& loop, ServerContext& context)
      : context_(context),
        loop_(loop),
        socket_(std::move(socket)) {
    beast::error_code ec;
    const tcp::endpoint remote = socket_.remote_endpoint(ec);
    if (!ec) {
      remote_address_ = remote.address().to_string();
    }
    // One write per response: Nagle would only delay it.
    socket_.set_option(tcp::no_delay(true), ec);
    // Responses are first written synchronously (write_response): a full send buffer must
    // then say would_block, not wait. Without that, every write goes through the loop.
    beast::error_code non_blocking;
    socket_.non_blocking(true, non_blocking);
    writes_first_ = !non_blocking;
  }

  ~Session() {
    if (registration_) {
      context_.sessions.remove(*registration_);
    }
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Called once, right after accept (on its loop's thread).
  void start() {
    registration_ = context_.sessions.add(weak_from_this());
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->loop_.watch(self);
      self->do_read();
    });
  }

  // From stop(): close now if waiting for a request; otherwise finish the current one first.
  void drain() {
    asio::post(socket_.get_executor(), beast::bind_front_handler(&Session::on_drain, shared_from_this()));
  }

  // Only once no thread runs the loops any more: nothing else can touch the socket then.
  void close_now() {
    beast::error_code ec;
    socket_.close(ec);
  }

  // From the loop's sweep: ends the connection if its deadline passed.
  void enforce_deadline(SteadyClock::time_point now) {
    if (now < deadline_ || timed_out_) {
      return;
    }
    timed_out_ = true;
    switch (phase_) {
      case Phase::kWaiting:
        spdlog::debug("connection from {} idle for {} ms; closing", remote_address_,
                      context_.options.idle_timeout.count());
        break;
      case Phase::kReading:
        spdlog::debug("request from {} incomplete after {} ms; closing", remote_address_,
                      context_.options.request_timeout.count());
        break;
      default:
        break;
    }
    beast::error_code ec;
    socket_.close(ec);  // the pending operation completes with operation_aborted
  }

 private:
  enum class Phase { kWaiting, kReading, kHandling, kWriting, kClosing };

  // The loop's time may be one sweep old: adding a sweep interval makes a deadline never early
  // (and at most two intervals late).
  void set_deadline(std::chrono::milliseconds after) {
    deadline_ = loop_.coarse_now() + loop_.sweep_interval() + after;
  }
  void clear_deadline() { deadline_ = SteadyClock::time_point::max(); }

  void do_read() {
    if (context_.draining.load(std::memory_order_relaxed)) {
      return do_close();
    }
    // A fresh parser per request, so the limits are reapplied and nothing carries over. The
    // Request is reused (its buffers keep their capacity): nothing of the previous request may
    // survive, least of all its cached route.
    request_.reset();
    parser_.reset();
    if (request_.body.capacity() > kKeptRequestBodyBytes) {
      request_.body = std::string();  // a big upload does not pin its memory
    }
    parser_.emplace(request_, context_.options.max_header_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(context_.options.max_header_bytes));
    parser_->body_limit(context_.options.max_body_bytes);
    close_after_write_ = false;
    if (buffer_.size() > 0) {
      return read_request();
    }
    phase_ = Phase::kWaiting;
    set_deadline(context_.options.idle_timeout);
    socket_.async_read_some(buffer_.prepare(kReadChunkBytes),
                            beast::bind_front_handler(&Session::on_first_bytes, shared_from_this()));
  }

  void on_first_bytes(beast::error_code ec, std::size_t bytes) {
    if (ec == asio::error::eof) {
      return do_close();  // the client closed between requests: normal for keep-alive
    }
    if (ec) {
      return fail(ec, "read");
    }
    buffer_.commit(bytes);
    read_request();
  }

  void read_request() {
    phase_ = Phase::kReading;
    set_deadline(context_.options.request_timeout);
    // A request usually arrives whole in one read: let the parser take what is buffered, and
    // read asynchronously only if it needs more.
    beast::error_code ec;
    while (buffer_.size() > 0 && !parser_->is_done()) {
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec || used == 0) {
        break;
      }
    }
    if (ec == bhttp::error::need_more) {
      ec = {};
    }
    if (ec || parser_->is_done()) {
      return on_read(ec, 0);
    }
    bhttp::async_read(socket_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t /*bytes*/) {
    if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) {
      return do_close();  // the client gave up mid-request: nobody to answer
    }
    if (ec == bhttp::error::body_limit) {
      return answer_and_close(kPayloadTooLarge, "payload_too_large", "request body is too large");
    }
    if (ec == bhttp::error::header_limit) {
      return answer_and_close(kHeadersTooLarge, "headers_too_large", "request header block is too large");
    }
    if (is_parse_error(ec)) {
      const std::string_view why = parser_->refusal();
      return answer_and_close(kBadRequest, "bad_request", why.empty() ? "malformed HTTP request" : why);
    }
    if (ec) {
      return fail(ec, "read");
    }
    handle_request();
  }

  void handle_request() {
    phase_ = Phase::kHandling;
    clear_deadline();
    version_ = parser_->version();
    keep_alive_ = parser_->keep_alive();
    request_id_for(request_.headers, request_.request_id);
    request_.remote_address = remote_address_;
    if (!parser_->target_ok()) {
      // The framing is intact, so the connection may stay open.
      request_.path.clear();
      request_.query.clear();
      response_ = error_response(kBadRequest, "bad_request", "malformed or non-canonical request target", request_.request_id);
      return write_response();
    }

    bool inline_handler = false;
    try {
      inline_handler = context_.dispatcher.runs_inline(request_);
    } catch (...) {
      inline_handler = false;  // the worker pool is the safe place for a handler we know nothing about
    }
    if (inline_handler) {
      invoke_dispatcher();
      return write_response();
    }
    // No I/O is pending on this connection while the worker has the request, so the worker
    // may touch request_/response_; posting back to the loop orders it before the write.
    asio::post(*context_.workers, [self = shared_from_this()]() mutable {
      self->invoke_dispatcher();
      const Executor loop = self->socket_.get_executor();
      asio::post(loop, beast::bind_front_handler(&Session::write_response, std::move(self)));
    });
  }

  void invoke_dispatcher() {
    try {
      response_ = context_.dispatcher.handle(request_);
    } catch (...) {
      // Not even the exception's text is logged: it may quote the request (a JSON parser's
      // "last read" excerpt of a body holding a key, say).
      // Nor the path: GET /v1/keys/{id} may carry a full key pasted by mistake.
      spdlog::warn("request {} ({}): handler threw; answering 500", request_.request_id,
                   http::known_method_or_other(request_.method));
      response_ = internal_error(request_.request_id);
    }
  }

  // A request we could not read to the end: answer, then close (its remaining bytes, if any,
  // cannot be framed).
  void answer_and_close(unsigned status, std::string_view code, std::string_view message) {
    phase_ = Phase::kHandling;
    clear_deadline();
    close_after_write_ = true;
    keep_alive_ = false;
    // Whatever the parser got to (its start line, complete fields) is already in the Request,
    // even when the header as a whole was refused (a Content-Length over the limit, say). The
    // route is not: the request was not read, so it is counted as unmatched.
    request_.path.clear();
    request_.query.clear();
    request_.body.clear();
    request_.remote_address = remote_address_;
    version_ = parser_->version();
    request_id_for(request_.headers, request_.request_id);
    response_ = error_response(status, code, message, request_.request_id);
    write_response();
  }

  void write_response() {
    phase_ = Phase::kWriting;
    const bool keep_alive = keep_alive_ && !close_after_write_ && !context_.draining.load(std::memory_order_relaxed);
    if (response_.status < kMinStatus || response_.status > kMaxStatus) {
      spdlog::warn("request {}: handler returned status {}; answering 500", request_.request_id,
                   response_.status);
      response_ = internal_error(request_.request_id);
    }
    out_.clear();
    auto head = write_response_head(response_, version_, request_.request_id, keep_alive, out_);
    if (!head.valid) {
      spdlog::warn("request {}: handler returned a header that cannot be framed; answering 500",
                   request_.request_id);
      response_ = internal_error(request_.request_id);
      out_.clear();
      head = write_response_head(response_, version_, request_.request_id, keep_alive, out_);
    }
    keep_alive_after_write_ = head.keep_alive;
    // Head and body go out in one gathered write: the body is not copied. A HEAD request gets
    // the head alone, also for the server's own answers (400, 500) that carry a body.
    const bool send_body = head.has_body && request_.method != "HEAD";
    const std::array<asio::const_buffer, 2> buffers{
        asio::buffer(out_), send_body ? asio::buffer(response_.body) : asio::const_buffer()};
    set_deadline(context_.options.request_timeout);
    // An answer almost always fits the socket's send buffer: send it now, without an operation
    // through the loop, and leave only what did not fit to async_write. Not while a pipelined
    // request is buffered: on_write would go straight on to it, and a long pipeline would
    // recurse.
    std::size_t sent = 0;
    if (writes_first_ && buffer_.size() == 0) {
      beast::error_code ec;
      sent = socket_.write_some(buffers, ec);  // 0 on an error
      if (ec != asio::error::would_block && (ec || sent == asio::buffer_size(buffers))) {
        return on_write(ec, sent);
      }
    }
    beast::buffers_suffix<std::array<asio::const_buffer, 2>> unsent(buffers);
    unsent.consume(sent);
    asio::async_write(socket_, unsent, beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t /*bytes*/) {
    if (out_.capacity() > kKeptWriteBufferBytes) {
      out_ = std::string();  // a big answer's head does not pin its memory
    }
    try {
      context_.dispatcher.on_response(request_, response_);
    } catch (...) {
      spdlog::warn("request {}: on_response threw", request_.request_id);
    }
    if (ec) {
      return fail(ec, "write");
    }
    if (close_after_write_) {
      return linger_close();
    }
    if (!keep_alive_after_write_) {
      return do_close();
    }
    do_read();
  }

  void linger_close() {
    phase_ = Phase::kClosing;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      return;  // the client is gone already; ~Session closes the socket
    }
    lingered_bytes_ = 0;
    buffer_.clear();
    set_deadline(kLingerTimeout);
    socket_.async_read_some(buffer_.prepare(kReadChunkBytes),
                            beast::bind_front_handler(&Session::on_linger, shared_from_this()));
  }

  void on_linger(beast::error_code ec, std::size_t bytes) {
    lingered_bytes_ += bytes;
    if (ec || lingered_bytes_ >= kLingerMaxBytes) {
      return;  // end of input, timeout or enough: ~Session closes the socket
    }
    socket_.async_read_some(buffer_.prepare(kReadChunkBytes),
                            beast::bind_front_handler(&Session::on_linger, shared_from_this()));
  }

  void on_drain() {
    // Waiting for a request (or discarding input after an error answer): nothing in flight.
    // Any other phase ends by itself: write_response sees `draining` and closes afterwards.
    if (phase_ == Phase::kWaiting || phase_ == Phase::kClosing) {
      beast::error_code ec;
      socket_.close(ec);
    }
  }

  void do_close() {
    phase_ = Phase::kClosing;
    clear_deadline();
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    // ~Session closes the socket once the last handler lets go.
  }

  void fail(beast::error_code ec, const char* what) {
    if (ec == asio::error::operation_aborted) {
      return;  // stop() or the deadline sweep closed the connection
    }
    spdlog::debug("connection from {}: {} failed: {}", remote_address_, what, ec.message());
  }

  ServerContext& context_;
  Loop& loop_;
  Socket socket_;
  beast::flat_buffer buffer_;  // reused for every request of the connection
  http::Request request_;  // declared before the parser that fills it
  std::optional<http::RequestReader> parser_;
  http::Response response_;
  std::string out_;  // the head of the response being written
  std::string remote_address_;
  std::optional<SessionRegistry::Handle> registration_;
  SteadyClock::time_point deadline_ = SteadyClock::time_point::max();
  std::size_t lingered_bytes_ = 0;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool keep_alive_after_write_ = true;
  bool close_after_write_ = false;
  bool writes_first_ = false;  // the socket is non-blocking for our own writes
  bool timed_out_ = false;
  Phase phase_ = Phase::kWaiting;
};

void Loop::sweep() {
  const auto now = SteadyClock::now();
  std::erase_if(sessions_, [&](const std::weak_ptr<Session>& weak) {
    auto session = weak.lock();
    if (!session) {
      return true;
    }
    session->enforce_deadline(now);
    return false;
  });
}

// How often each loop looks for connections past their deadline: a tenth of the shortest
// timeout (so a deadline is enforced at most 10% late), between 5 ms and 1 s.
std::chrono::milliseconds sweep_interval(const ServerOptions& options) {
  const auto shortest = std::min(options.idle_timeout, options.request_timeout);
  return std::clamp(shortest / 10, std::chrono::milliseconds(5), std::chrono::milliseconds(1000));
}

}  // namespace

struct Server::Impl {
  Impl(ServerOptions options, Dispatcher& dispatcher) : context(std::move(options), dispatcher) {
    const std::size_t threads = std::max<std::size_t>(1, context.options.io_threads);
    for (std::size_t i = 0; i < threads; ++i) {
      loops.push_back(std::make_unique<Loop>(sweep_interval(context.options)));
    }
  }

  enum class State { kNew, kRunning, kStopped };

  Status start() {
    std::lock_guard lifecycle(lifecycle_mutex);
    if (state != State::kNew) {
      return Status::Unavailable("the server was already started");
    }
    const ServerOptions& options = context.options;
    if (options.io_threads == 0 || options.worker_threads == 0) {
      return Status::InvalidArgument("io_threads and worker_threads must be at least 1");
    }
    connection_limit = connection_limit_for(options.max_connections);
    // Request ids come from libsodium's CSPRNG; sodium_init() is idempotent and thread-safe.
    if (sodium_init() < 0) {
      return Status::Unavailable("libsodium failed to initialise");
    }
    const auto endpoint = parse_listen(options.listen);
    if (!endpoint) {
      return Status::InvalidArgument(
          "listen address must be host:port",
          {{"listen", "not an IP literal or localhost with a port: " + options.listen}});
    }

    beast::error_code ec;
    const auto failed = [&](std::string_view step) {
      close_acceptors();
      return Status::Unavailable("cannot listen on " + options.listen + " (" + std::string(step) +
                                 "): " + ec.message());
    };
    Acceptor& listener = loops.front()->acceptor();
    if (listener.open(endpoint->protocol(), ec); ec) {
      return failed("open");
    }
    if (listener.set_option(asio::socket_base::reuse_address(true), ec); ec) {
      return failed("set_option");
    }
    if (listener.bind(*endpoint, ec); ec) {
      return failed("bind");
    }
    if (listener.listen(asio::socket_base::max_listen_connections, ec); ec) {
      return failed("listen");
    }
    const tcp::endpoint bound = listener.local_endpoint(ec);
    if (ec) {
      return failed("local_endpoint");
    }
    // Every loop accepts for itself, from its own handle on the listening socket: a new
    // connection goes to the loop whose thread takes it first, and a loop busy in a handler
    // leaves it to the others. Dealt to the loops in turn instead (the first design),
    // connections more often had their answers wake a client thread on another CPU:
    // GET /v1/auth ran about 1/1.2 as fast with wrk on a 2-vCPU machine. Every handle is an
    // assigned duplicate, so closing one takes it out of its loop's epoll even while the
    // others stay open.
    const int listening = listener.release(ec);
    if (ec) {
      return failed("release");
    }
    for (std::size_t i = 0; i < loops.size(); ++i) {
      const int fd = i == 0 ? listening : ::fcntl(listening, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) {
        ec.assign(errno, boost::system::system_category());
        return failed("dup");
      }
      if (loops[i]->acceptor().assign(endpoint->protocol(), fd, ec); ec) {
        ::close(fd);
        return failed("assign");
      }
    }
    port = bound.port();

    context.workers.emplace(options.worker_threads);
    for (auto& loop : loops) {
      work.emplace_back(loop->executor());
      loop->start_sweeping();
    }
    for (auto& loop : loops) {
      do_accept(*loop);
    }
    io_threads.reserve(loops.size());
    for (auto& loop : loops) {
      io_threads.emplace_back([this, &loop = *loop] { run_io(loop); });
    }
    state = State::kRunning;
    spdlog::debug("listening on {}", options.listen);
    return Status::Ok();
  }

  void stop() {
    request_stop();
    std::lock_guard lifecycle(lifecycle_mutex);
    if (state != State::kRunning) {
      state = State::kStopped;
      return;
    }
    state = State::kStopped;

    // 1. Stop accepting. Sessions accepted from now on see `draining` and close at once.
    context.draining.store(true);
    for (auto& loop : loops) {
      asio::post(loop->context(), [&loop = *loop] {
        beast::error_code ignored;
        loop.acceptor().close(ignored);
        loop.accept_retry().cancel();
      });
    }
    // 2. Drain: idle connections close now, busy ones after their response.
    for (const auto& session : context.sessions.live()) {
      session->drain();
    }
    if (!context.sessions.wait_until_empty(SteadyClock::now() + kDrainTimeout)) {
      spdlog::warn("{} connection(s) still busy after {} s; closing them", context.sessions.size(),
                   kDrainTimeout.count());
    }
    // 3. Stop the threads. A handler still running on a worker finishes first (it may be in
    // the middle of an fsync); its write is then dropped with the stopped io_context.
    work.clear();
    for (auto& loop : loops) {
      loop->stop_sweeping();
      loop->context().stop();
    }
    for (auto& thread : io_threads) {
      thread.join();
    }
    io_threads.clear();
    context.workers->join();
    // 4. No thread touches the sockets any more: close what is left, so clients see the end
    // now rather than when the Server is destroyed.
    close_acceptors();
    for (const auto& session : context.sessions.live()) {
      session->close_now();
    }
  }

  void run_until_signal() {
    {
      std::lock_guard lifecycle(lifecycle_mutex);
      if (state != State::kRunning) {
        return;
      }
    }
    // The handler runs on an io thread, which must not join itself: it only wakes us, and we
    // call stop() from here.
    asio::signal_set signals(loops.front()->context(), SIGINT, SIGTERM);
    signals.async_wait([this](const beast::error_code& ec, int signal_number) {
      if (ec) {
        return;
      }
      spdlog::warn("signal {} received; shutting down", signal_number);
      request_stop();
    });
    // A signal that arrived before (blocked by the process until now) is delivered here.
    sigset_t termination;
    sigemptyset(&termination);
    sigaddset(&termination, SIGINT);
    sigaddset(&termination, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &termination, nullptr);
    {
      std::unique_lock lock(stop_request_mutex);
      stop_request_cv.wait(lock, [&] { return stop_requested; });
    }
    stop();
    // `signals` is destroyed after the io threads are joined: no concurrent use.
  }

  void request_stop() {
    {
      std::lock_guard lock(stop_request_mutex);
      stop_requested = true;
    }
    stop_request_cv.notify_all();
  }

  // Each loop accepts the connections it will serve.
  void do_accept(Loop& loop) {
    loop.acceptor().async_accept(loop.context(), [this, &loop](beast::error_code ec, Socket socket) {
      on_accept(ec, std::move(socket), loop);
    });
  }

  void on_accept(beast::error_code ec, Socket socket, Loop& loop) {
    if (ec == asio::error::operation_aborted || !loop.acceptor().is_open()) {
      return;
    }
    if (ec) {
      spdlog::warn("accept failed: {}; retrying", ec.message());
      loop.accept_retry().expires_after(kAcceptRetryDelay);
      loop.accept_retry().async_wait([this, &loop](beast::error_code timer_ec) {
        if (!timer_ec && loop.acceptor().is_open()) {
          do_accept(loop);
        }
      });
      return;
    }
    if (context.sessions.size() >= connection_limit) {
      beast::error_code ignored;
      socket.close(ignored);
      if (refused_connections.fetch_add(1, std::memory_order_relaxed) % kRefusalLogEvery == 0) {
        spdlog::warn("{} open connections, the limit: refusing new ones (refused so far: {})",
                     connection_limit, refused_connections.load(std::memory_order_relaxed));
      }
    } else if (!context.draining.load()) {
      std::make_shared<Session>(std::move(socket), loop, context)->start();
    }
    do_accept(loop);
  }

  // Closes every loop's handle on the listening socket. Only while no io thread runs.
  void close_acceptors() {
    for (auto& loop : loops) {
      beast::error_code ignored;
      loop->acceptor().close(ignored);
    }
  }

  void run_io(Loop& loop) {
    // Handlers do not throw (dispatcher exceptions are caught in the session); should one
    // anyway, keep the thread serving rather than terminate the process.
    for (;;) {
      try {
        loop.context().run();
        return;
      } catch (const std::exception& e) {
        spdlog::warn("io thread: unexpected exception: {}", e.what());
      }
    }
  }

  // Declared first: sessions still queued in a loop's io_context use it while it is destroyed.
  ServerContext context;
  std::vector<std::unique_ptr<Loop>> loops;
  std::atomic<std::uint64_t> refused_connections{0};  // over connection_limit
  std::size_t connection_limit = 0;  // max_connections, or less if descriptors are short; set by start()
  std::vector<asio::executor_work_guard<Executor>> work;
  std::vector<std::thread> io_threads;
  std::atomic<std::uint16_t> port{0};

  std::mutex lifecycle_mutex;  // serialises start() and stop()
  State state = State::kNew;

  std::mutex stop_request_mutex;
  std::condition_variable stop_request_cv;
  bool stop_requested = false;
};

Server::Server(ServerOptions options, Dispatcher& dispatcher)
    : impl_(std::make_unique<Impl>(std::move(options), dispatcher)) {}

Server::~Server() { stop(); }

Status Server::start() { return impl_->start(); }

std::uint16_t Server::port() const { return impl_->port.load(); }

void Server::stop() { impl_->stop(); }

void Server::run_until_signal() { impl_->run_until_signal(); }

}  // namespace keyledger::api
