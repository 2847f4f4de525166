#pragma once
// One webhook attempt: an HTTP(S) POST through Boost.Beast with a total deadline, TLS
// verified against the system store (plus an optional CA file) with SNI and host name
// checks, the target's addresses checked against the SSRF policy after resolution and the
// connection made to the checked addresses only (no second lookup). Redirects are not
// followed: a 3xx is just a non-2xx answer.

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "domain/status.h"

namespace keyledger::consumers {

struct WebhookClientOptions {
  // Deadline of one attempt: resolution, connection, TLS handshake, request and response
  // headers. Default: 10 s (README, Webhooks). (A DNS lookup cannot be cancelled: one hanging past
  // the deadline fails the attempt as a timeout, but post() returns only when getaddrinfo does.)
  std::chrono::milliseconds timeout{10'000};
  // Allow plain http URLs (--allow-insecure-webhooks). Default: false.
  bool allow_insecure = false;
  // Allow loopback, private, link-local, … targets (--allow-private-webhooks). Default: false.
  bool allow_private = false;
  // A PEM file of extra trusted CAs (--webhook-ca-file), besides the system store. Default: none.
  std::string ca_file;
};

struct WebhookAttempt {
  unsigned status_code = 0;  // 0 when no HTTP answer came
  // Empty on a 2xx; otherwise why the attempt failed ("http_status: 503", "timeout", …).
  std::string error;
  // The attempt cannot succeed by trying again (bad URL, refused address, http without
  // --allow-insecure-webhooks): retrying is pointless.
  bool permanent = false;
  std::chrono::milliseconds duration{0};

  bool delivered() const { return status_code >= 200 && status_code < 300; }
};

class WebhookClient {
 public:
  // Fails with InvalidArgument when the CA file cannot be loaded, Unavailable when the
  // OpenSSL context cannot be set up.
  static Result<std::unique_ptr<WebhookClient>> create(WebhookClientOptions options);
  ~WebhookClient();
  WebhookClient(const WebhookClient&) = delete;
  WebhookClient& operator=(const WebhookClient&) = delete;

  // POSTs `body` to `url` with `headers` (plus Host, Content-Length, User-Agent). Never
  // throws; every failure is described in the result. Thread-safe: each call has its own
  // connection and I/O context.
  WebhookAttempt post(const std::string& url, const std::string& body,
                      const std::vector<std::pair<std::string, std::string>>& headers) const;

  const WebhookClientOptions& options() const { return options_; }

 private:
  struct Tls;
  WebhookClient(WebhookClientOptions options, std::unique_ptr<Tls> tls);
  WebhookClientOptions options_;
  std::unique_ptr<Tls> tls_;
};

}  // namespace keyledger::consumers
