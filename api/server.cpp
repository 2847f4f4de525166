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
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "api/connection_limit.h"
#include "api/errors.h"
#include "api/request_id.h"
#include "api/request_reader.h"
#include "api/response_head.h"
#include "api/server_internals.h"
#include "domain/key_material.h"
#include "domain/thread_name.h"

namespace keyledger::api {

namespace {

using namespace server_detail;

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

  // Binds the listening socket and gives every loop its own handle on it; sets port.
  Status open_acceptors(const tcp::endpoint& endpoint) {
    const ServerOptions& options = context.options;
    beast::error_code ec;
    const auto failed = [&](std::string_view step) {
      close_acceptors();
      return Status::Unavailable("cannot listen on " + options.listen + " (" + std::string(step) +
                                 "): " + ec.message());
    };
    Acceptor& listener = loops.front()->acceptor();
    if (listener.open(endpoint.protocol(), ec); ec) {
      return failed("open");
    }
    if (listener.set_option(asio::socket_base::reuse_address(true), ec); ec) {
      return failed("set_option");
    }
    if (listener.bind(endpoint, ec); ec) {
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
      if (loops[i]->acceptor().assign(endpoint.protocol(), fd, ec); ec) {
        ::close(fd);
        return failed("assign");
      }
    }
    port = bound.port();
    return Status::Ok();
  }

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

    if (Status listening = open_acceptors(*endpoint); !listening.ok()) {
      return listening;
    }
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
      io_threads.emplace_back([this, &loop = *loop] {
        name_this_thread("kl-io");
        run_io(loop);
      });
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
    context.pending_replies->close();
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
    asio::signal_set hangups(loops.front()->context());
    std::function<void()> await_hangup = [&] {
      hangups.async_wait([&](const beast::error_code& ec, int) {
        if (ec) {
          return;
        }
        hangup();
        await_hangup();
      });
    };
    if (hangup) {
      hangups.add(SIGHUP);
      await_hangup();
    }
    // A signal that arrived before (blocked by the process until now) is delivered here.
    sigset_t termination;
    sigemptyset(&termination);
    sigaddset(&termination, SIGINT);
    sigaddset(&termination, SIGTERM);
    if (hangup) {
      sigaddset(&termination, SIGHUP);
    }
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
  std::function<void()> hangup;  // SIGHUP (Server::on_hangup)
};

Server::Server(ServerOptions options, Dispatcher& dispatcher)
    : impl_(std::make_unique<Impl>(std::move(options), dispatcher)) {}

Server::~Server() { stop(); }

Status Server::start() { return impl_->start(); }

std::uint16_t Server::port() const { return impl_->port.load(); }

void Server::stop() { impl_->stop(); }

void Server::run_until_signal() { impl_->run_until_signal(); }

void Server::on_hangup(std::function<void()> reload) { impl_->hangup = std::move(reload); }

}  // namespace keyledger::api
