#pragma once
// The HTTP/1.1 server (Boost.Beast on a multi-threaded io_context). It only reads, writes and
// enforces limits; what a request means is the Dispatcher's business.
//
// Limits (api/openapi.yaml), reapplied before every read:
//   - header block over max_header_bytes -> 431 headers_too_large, connection closed
//   - body over max_body_bytes           -> 413 payload_too_large, connection closed
//   - nothing received for idle_timeout on a connection -> closed
//   - one request taking over request_timeout to arrive -> closed
// Every response carries X-Request-Id (the client's, if it sent a sane one, else generated).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/http.h"
#include "domain/status.h"

namespace keyledger::api {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see Server::port()). Default 127.0.0.1:8080.
  std::string listen = "127.0.0.1:8080";
  // Threads running the io_context (reads, writes, fast handlers). Default 2.
  std::size_t io_threads = 2;
  // Threads for handlers that block on the event store's fsync (commands): as many commands share
  // one fsync as wait at once. Default 64.
  std::size_t worker_threads = 64;
  // Largest request body. Default 64 KiB.
  std::size_t max_body_bytes = 64 * 1024;
  // Largest request header block. Default 8 KiB.
  std::size_t max_header_bytes = 8 * 1024;
  // A connection that sends nothing for this long is closed. Default 10 s.
  std::chrono::milliseconds idle_timeout{10'000};
  // A request that takes longer than this to arrive is closed. Default 30 s.
  std::chrono::milliseconds request_timeout{30'000};
  // Open connections at most; one accepted beyond that is closed at once (nginx's
  // worker_connections does the same), so a flood of idle connections cannot exhaust file
  // descriptors or memory. Default 10 000.
  std::size_t max_connections = 10'000;
};

class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // Handles one request. Must not throw.
  virtual http::Response handle(http::Request& request) = 0;
  // Where a request runs.
  enum class Execution {
    kInline,  // handle() answers from memory (verification, health, metrics): on the io thread
    kWorker,  // handle() may block (a command waiting for its fsync): on the worker pool
    kLater,   // handle_later() starts it on the io thread and answers once it is done
  };
  virtual Execution execution(const http::Request& request) const = 0;
  // How a request of Execution::kLater is answered: exactly once, from any thread (a second
  // call is ignored). The connection waits, holding no thread, until it comes.
  using Reply = std::function<void(http::Response)>;
  // For Execution::kLater: starts the request on the io thread without blocking (a command
  // decides and hands its events to the store, whose syncer replies once they are durable).
  // Must not throw.
  virtual void handle_later(http::Request& request, Reply reply) { reply(handle(request)); }
  // Called after each response is written (metrics); may be a no-op.
  virtual void on_response(const http::Request& request, const http::Response& response) = 0;
};

class Server {
 public:
  Server(ServerOptions options, Dispatcher& dispatcher);
  ~Server();  // stops and joins if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the io and worker threads. Fails if the address cannot be bound.
  Status start();
  // The bound port (after start()).
  std::uint16_t port() const;
  // Stops accepting, lets in-flight requests finish (up to a few seconds), closes
  // connections, joins threads. Idempotent; safe from any thread except the server's own.
  void stop();
  // Blocks until SIGINT or SIGTERM arrives (or stop() is called), then stops. A process
  // that blocks both signals before it starts any thread (so none of them dies of one)
  // loses none sent meanwhile: they stay pending until this unblocks them on its thread.
  void run_until_signal();
  // Called on an io thread for each SIGHUP that arrives while run_until_signal() waits
  // (configuration reloads). Set before run_until_signal().
  void on_hangup(std::function<void()> reload);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyledger::api
