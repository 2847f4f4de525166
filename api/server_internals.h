#pragma once
// Inside the HTTP server (api/server.h): what its listener (api/server.cpp) and its
// connections (api/session.cpp) share: the event loops, the registry of live sessions and
// the Session itself. Not for use outside those two files.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "api/errors.h"
#include "api/request_reader.h"
#include "api/server.h"

namespace keyledger::api::server_detail {

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

inline http::Response internal_error(const std::string& request_id) {
  return error_response(kInternalServerError, "internal_error", "internal error", request_id);
}

// Every Beast parse error (bad method, bad target, bad chunk, …) shares this category.
inline bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category();
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

// Sessions whose request is out with a Dispatcher::handle_later, each held here until its
// reply comes: the reply then posts the answer to the session's loop. stop() closes this once
// no thread runs the loops, dropping what is still held while the loops (whose sockets the
// sessions own) exist; a reply after that is ignored.
class PendingReplies {
 public:
  std::uint64_t hold(std::shared_ptr<Session> session) {
    std::lock_guard lock(mutex_);
    held_.emplace(++last_id_, std::move(session));
    return last_id_;
  }
  // The held session's answer to its loop, unless it was answered already or stop() closed this.
  template <typename Post>
  void release(std::uint64_t id, Post post) {
    std::lock_guard lock(mutex_);  // held while posting: close() cannot run in between
    const auto it = held_.find(id);
    if (it == held_.end()) {
      return;
    }
    std::shared_ptr<Session> session = std::move(it->second);
    held_.erase(it);
    post(std::move(session));
  }
  void close() {
    std::unordered_map<std::uint64_t, std::shared_ptr<Session>> dropped;
    {
      std::lock_guard lock(mutex_);
      dropped.swap(held_);
    }
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Session>> held_;
  std::uint64_t last_id_ = 0;
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
  // Requests answered later (Dispatcher::Execution::kLater); shared with their replies,
  // which may outlive the server.
  std::shared_ptr<PendingReplies> pending_replies = std::make_shared<PendingReplies>();
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
// Timeouts (api/openapi.yaml: nothing for idle_timeout, or one request taking over request_timeout,
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
  Session(Socket socket, Loop& loop, ServerContext& context);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Called once, right after accept (on its loop's thread).
  void start();

  // From stop(): close now if waiting for a request; otherwise finish the current one first.
  void drain();

  // Only once no thread runs the loops any more: nothing else can touch the socket then.
  void close_now();

  // From the loop's sweep: ends the connection if its deadline passed.
  void enforce_deadline(SteadyClock::time_point now);

 private:
  enum class Phase { kWaiting, kReading, kHandling, kWriting, kClosing };

  // The loop's time may be one sweep old: adding a sweep interval makes a deadline never early
  // (and at most two intervals late).
  void set_deadline(std::chrono::milliseconds after);
  void clear_deadline();
  void do_read();
  void on_first_bytes(beast::error_code ec, std::size_t bytes);
  void read_request();
  void on_read(beast::error_code ec, std::size_t /*bytes*/);
  void handle_request();
  void invoke_dispatcher();
  void dispatch_later();

  // A request we could not read to the end: answer, then close (its remaining bytes, if any,
  // cannot be framed).
  void answer_and_close(unsigned status, std::string_view code, std::string_view message);
  void write_response();
  void on_write(beast::error_code ec, std::size_t /*bytes*/);
  void linger_close();
  void on_linger(beast::error_code ec, std::size_t bytes);
  void on_drain();
  void do_close();
  void fail(beast::error_code ec, const char* what);
  ServerContext& context_;
  Loop& loop_;
  Socket socket_;
  beast::flat_buffer buffer_;  // reused for every request of the connection
  http::Request request_;      // declared before the parser that fills it
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

}  // namespace keyledger::api::server_detail
