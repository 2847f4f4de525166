#pragma once
// Starts the real keyledger binary on 127.0.0.1:0 with a temporary data directory and talks
// to it over loopback HTTP.

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace keyledger::e2e {

using Json = nlohmann::json;

struct HttpResult {
  unsigned status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;

  Json json() const { return Json::parse(body, nullptr, false); }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A keep-alive HTTP/1.1 connection: every request() goes over the same socket.
class HttpConnection {
 public:
  explicit HttpConnection(std::uint16_t port);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  HttpResult request(const std::string& method, const std::string& target, const std::string& body = "",
                     const std::map<std::string, std::string>& headers = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One HTTP/1.1 request on a fresh connection.
HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body = "", const std::map<std::string, std::string>& headers = {});

// A keyledger process a test started (stderr to a log file, stdout read for its ready line);
// SIGKILLed when destroyed if still running.
class ChildProcess {
 public:
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // SIGTERM and wait; returns the exit status (0 on a clean shutdown).
  int stop();
  void kill_hard();
  // Sends `signal` (SIGHUP: reload) and returns at once.
  void send_signal(int signal) const;
  // Everything the process wrote to stderr so far.
  std::string log() const;

 protected:
  // Starts `args` with stderr appended to `log_file`.
  ChildProcess(const std::vector<std::string>& args, std::filesystem::path log_file);
  ~ChildProcess();
  // Reads stdout until ready(line) holds, then keeps draining it in the background. If stdout
  // ends first, kills the process and throws "<what> did not start" with its log. With
  // `keep_stdout`, what it writes to stdout afterwards goes to its log too.
  void wait_until_ready(const std::function<bool(const std::string&)>& ready, const std::string& what,
                        bool keep_stdout = false);

 private:
  std::filesystem::path log_file_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

// A Stoplight Prism validating proxy (`prism proxy DOCUMENT http://127.0.0.1:UPSTREAM`) on a
// free port of 127.0.0.1. Prism forwards every request, also one that breaks the document, and
// names what broke it in an `sl-violations` response header.
class ValidatingProxy : public ChildProcess {
 public:
  ValidatingProxy(const std::string& prism, const std::string& document, std::uint16_t upstream,
                  const std::filesystem::path& log_file);
  std::uint16_t port() const { return port_; }
  // Throws if Prism found that `result` (the answer to METHOD TARGET) breaks the document;
  // removes Prism's header from it either way. Request violations are the test's business:
  // tests send bad requests on purpose.
  static void check(const std::string& method, const std::string& target, HttpResult& result);

 private:
  std::uint16_t port_ = 0;
};

class ServerProcess : public ChildProcess {
 public:
  // Starts `keyledger serve --data-dir DIR --listen 127.0.0.1:0 --kafka-brokers BROKERS` plus
  // `extra_args`, and waits for its "listening on" line.
  explicit ServerProcess(const std::filesystem::path& data_dir, std::vector<std::string> extra_args = {},
                         const std::string& kafka_brokers = "none");

  std::uint16_t port() const { return port_; }
  // The embedded Kafka broker's bootstrap address ("" unless started with "embedded").
  const std::string& kafka_bootstrap() const { return kafka_bootstrap_; }
  std::string bootstrap_token() const;

  // request() and get() go through a ValidatingProxy when KEYLEDGER_E2E_PRISM names Prism's
  // executable (and KEYLEDGER_E2E_OPENAPI the document): every answer they return then matches
  // the OpenAPI document, or the call throws. port() is always the server's own.
  HttpResult request(const std::string& method, const std::string& target, const Json& body,
                     const std::string& token, std::map<std::string, std::string> headers = {}) const;
  HttpResult get(const std::string& target, const std::string& token,
                 std::map<std::string, std::string> headers = {}) const;

 private:
  // The port request() sends to: the proxy's, started on first use, or the server's.
  std::uint16_t request_port() const;

  std::filesystem::path data_dir_;
  std::uint16_t port_ = 0;
  std::string kafka_bootstrap_;
  mutable std::unique_ptr<ValidatingProxy> proxy_;
};

// Starts `keyledger webhooks --data-dir STATE_DIR` plus `args` (stderr to STATE_DIR.log) and
// waits for its "keyledger webhooks ready" line.
class WebhooksProcess : public ChildProcess {
 public:
  WebhooksProcess(const std::filesystem::path& state_dir, std::vector<std::string> args);
};

// Runs the keyledger binary with `args` to completion; returns its exit status and stderr.
std::pair<int, std::string> run_binary(const std::vector<std::string>& args);

// Path of the keyledger binary under test.
std::string binary();

}  // namespace keyledger::e2e
