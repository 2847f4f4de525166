#include <spdlog/spdlog.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/write.hpp>

#include "api/errors.h"
#include "api/request_id.h"
#include "api/response_head.h"
#include "api/server_internals.h"
#include "domain/thread_name.h"

namespace keyledger::api::server_detail {

Session::Session(Socket socket, Loop& loop, ServerContext& context)
    : context_(context), loop_(loop), socket_(std::move(socket)) {
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

Session::~Session() {
  if (registration_) {
    context_.sessions.remove(*registration_);
  }
}

// Called once, right after accept (on its loop's thread).
void Session::start() {
  registration_ = context_.sessions.add(weak_from_this());
  asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
    self->loop_.watch(self);
    self->do_read();
  });
}

// From stop(): close now if waiting for a request; otherwise finish the current one first.
void Session::drain() {
  asio::post(socket_.get_executor(), beast::bind_front_handler(&Session::on_drain, shared_from_this()));
}

// Only once no thread runs the loops any more: nothing else can touch the socket then.
void Session::close_now() {
  beast::error_code ec;
  socket_.close(ec);
}

// From the loop's sweep: ends the connection if its deadline passed.
void Session::enforce_deadline(SteadyClock::time_point now) {
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

// The loop's time may be one sweep old: adding a sweep interval makes a deadline never early
// (and at most two intervals late).
void Session::set_deadline(std::chrono::milliseconds after) {
  deadline_ = loop_.coarse_now() + loop_.sweep_interval() + after;
}

void Session::clear_deadline() { deadline_ = SteadyClock::time_point::max(); }

void Session::do_read() {
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

void Session::on_first_bytes(beast::error_code ec, std::size_t bytes) {
  if (ec == asio::error::eof) {
    return do_close();  // the client closed between requests: normal for keep-alive
  }
  if (ec) {
    return fail(ec, "read");
  }
  buffer_.commit(bytes);
  read_request();
}

void Session::read_request() {
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
  bhttp::async_read(socket_, buffer_, *parser_,
                    beast::bind_front_handler(&Session::on_read, shared_from_this()));
}

void Session::on_read(beast::error_code ec, std::size_t /*bytes*/) {
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

void Session::handle_request() {
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
    response_ = error_response(kBadRequest, "bad_request", "malformed or non-canonical request target",
                               request_.request_id);
    return write_response();
  }

  using Execution = Dispatcher::Execution;
  Execution execution = Execution::kWorker;
  try {
    execution = context_.dispatcher.execution(request_);
  } catch (...) {
    execution = Execution::kWorker;  // the worker pool is the safe place for a handler we know nothing about
  }
  if (execution == Execution::kInline) {
    invoke_dispatcher();
    return write_response();
  }
  if (execution == Execution::kLater) {
    return dispatch_later();
  }
  // No I/O is pending on this connection while the worker has the request, so the worker
  // may touch request_/response_; posting back to the loop orders it before the write.
  asio::post(*context_.workers, [self = shared_from_this()]() mutable {
    // The pool's threads start inside Asio: each names itself with its first command.
    thread_local const bool named = (name_this_thread("kl-worker"), true);
    (void)named;
    self->invoke_dispatcher();
    const Executor loop = self->socket_.get_executor();
    asio::post(loop, beast::bind_front_handler(&Session::write_response, std::move(self)));
  });
}

// The request waits for its reply holding no thread: the session is held by the server's
// pending replies (so it lives, though no I/O is pending), and the reply posts the answer to
// this session's loop, where write_response runs as after any handler.
void Session::dispatch_later() {
  const std::uint64_t id = context_.pending_replies->hold(shared_from_this());
  Dispatcher::Reply reply = [replies = context_.pending_replies, id](http::Response response) {
    replies->release(id, [&](std::shared_ptr<Session> session) {
      const Executor loop = session->socket_.get_executor();
      asio::post(loop, [session = std::move(session), response = std::move(response)]() mutable {
        session->response_ = std::move(response);
        session->write_response();
      });
    });
  };
  try {
    context_.dispatcher.handle_later(request_, reply);
  } catch (...) {
    spdlog::warn("request {} ({}): handler threw; answering 500", request_.request_id,
                 http::known_method_or_other(request_.method));
    reply(internal_error(request_.request_id));  // ignored if it had replied already
  }
}

void Session::invoke_dispatcher() {
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
void Session::answer_and_close(unsigned status, std::string_view code, std::string_view message) {
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

void Session::write_response() {
  phase_ = Phase::kWriting;
  const bool keep_alive =
      keep_alive_ && !close_after_write_ && !context_.draining.load(std::memory_order_relaxed);
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

void Session::on_write(beast::error_code ec, std::size_t /*bytes*/) {
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

void Session::linger_close() {
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

void Session::on_linger(beast::error_code ec, std::size_t bytes) {
  lingered_bytes_ += bytes;
  if (ec || lingered_bytes_ >= kLingerMaxBytes) {
    return;  // end of input, timeout or enough: ~Session closes the socket
  }
  socket_.async_read_some(buffer_.prepare(kReadChunkBytes),
                          beast::bind_front_handler(&Session::on_linger, shared_from_this()));
}

void Session::on_drain() {
  // Waiting for a request (or discarding input after an error answer): nothing in flight.
  // Any other phase ends by itself: write_response sees `draining` and closes afterwards.
  if (phase_ == Phase::kWaiting || phase_ == Phase::kClosing) {
    beast::error_code ec;
    socket_.close(ec);
  }
}

void Session::do_close() {
  phase_ = Phase::kClosing;
  clear_deadline();
  beast::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
  // ~Session closes the socket once the last handler lets go.
}

void Session::fail(beast::error_code ec, const char* what) {
  if (ec == asio::error::operation_aborted) {
    return;  // stop() or the deadline sweep closed the connection
  }
  spdlog::debug("connection from {}: {} failed: {}", remote_address_, what, ec.message());
}

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

}  // namespace keyledger::api::server_detail
