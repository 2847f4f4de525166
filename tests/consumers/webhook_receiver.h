#pragma once
// Webhook receivers for tests: a small HTTP(S) server on 127.0.0.1 (Beast, one thread per
// connection so a hanging answer blocks nothing else), and a throwaway CA with a server
// certificate for localhost / 127.0.0.1, generated with the openssl CLI into a TempDir.

#include <catch2/catch.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "consumers/webhook_dispatcher.h"
#include "support/temp_dir.h"

namespace keyledger::testing {

namespace wh_asio = boost::asio;
namespace wh_http = boost::beast::http;

// A CA and a server certificate (SAN DNS:localhost, IP:127.0.0.1) valid for a day; the keys
// live only in the temporary directory.
class TestCa {
 public:
  TestCa() {
    const auto cnf = dir_.path() / "openssl.cnf";
    std::ofstream(cnf) << "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = keyledger test CA\n"
                          "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
                          "subjectKeyIdentifier = hash\n"
                          "[srv]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
                          "extendedKeyUsage = serverAuth\n";
    const std::string d = dir_.path().string();
    const std::string c = cnf.string();
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
    run("openssl req -x509 -config " + c + " -extensions v3_ca" + ec + "-keyout " + d + "/ca.key -out " + d +
        "/ca.pem -days 1");
    run("openssl req -new -config " + c + " -subj /CN=localhost" + ec + "-keyout " + d + "/srv.key -out " + d +
        "/srv.csr");
    run("openssl x509 -req -in " + d + "/srv.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -set_serial 1 -days 1 -out " +
        d + "/srv.pem -extfile " + c + " -extensions srv");
  }
  std::string ca_file() const { return (dir_.path() / "ca.pem").string(); }
  std::string cert_file() const { return (dir_.path() / "srv.pem").string(); }
  std::string key_file() const { return (dir_.path() / "srv.key").string(); }

 private:
  static void run(const std::string& command) {
    INFO(command);
    REQUIRE(std::system((command + " >/dev/null 2>&1").c_str()) == 0);
  }
  TempDir dir_;
};

struct ReceivedRequest {
  std::string target;
  std::string body;
  std::string content_type;
  std::string event_id;
  std::string signature;
  std::chrono::steady_clock::time_point at{};
};

class TestReceiver {
 public:
  // `reply(n)` is the status for the n-th request (from 1); 0 never answers (hangs until the
  // receiver is destroyed).
  using Reply = std::function<unsigned(int n)>;

  explicit TestReceiver(Reply reply, const TestCa* ca = nullptr) : reply_(std::move(reply)) {
    if (ca != nullptr) {
      tls_.emplace(wh_asio::ssl::context::tls_server);
      tls_->use_certificate_chain_file(ca->cert_file());
      tls_->use_private_key_file(ca->key_file(), wh_asio::ssl::context::pem);
    }
    acceptor_.open(wh_asio::ip::tcp::v4());
    acceptor_.bind({wh_asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    acceptor_thread_ = std::thread([this] { accept_loop(); });
  }

  ~TestReceiver() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    boost::system::error_code ec;
    wh_asio::ip::tcp::socket wake(ioc_);
    wake.connect({wh_asio::ip::make_address("127.0.0.1"), port_}, ec);
    acceptor_thread_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) {
      t.join();
    }
  }

  std::uint16_t port() const { return port_; }
  // The webhook URL; `host` may be "localhost" (the certificate names both).
  std::string url(const std::string& host = "127.0.0.1") const {
    return std::string(tls_ ? "https" : "http") + "://" + host + ":" + std::to_string(port_) + "/hooks/clawgig";
  }
  std::vector<ReceivedRequest> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  int connections() const {
    std::lock_guard lock(mu_);
    return connections_;
  }

 private:
  void accept_loop() {
    while (true) {
      wh_asio::ip::tcp::socket socket(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      std::lock_guard lock(mu_);
      if (stopping_) {
        return;
      }
      if (ec) {
        continue;
      }
      ++connections_;
      threads_.emplace_back([this, s = std::move(socket)]() mutable { serve(std::move(s)); });
    }
  }

  void serve(wh_asio::ip::tcp::socket socket) {
    if (!tls_) {
      handle(socket);
      return;
    }
    wh_asio::ssl::stream<wh_asio::ip::tcp::socket> stream(std::move(socket), *tls_);
    boost::system::error_code ec;
    stream.handshake(wh_asio::ssl::stream_base::server, ec);
    if (!ec) {
      handle(stream);
    }
  }

  template <typename Stream>
  void handle(Stream& stream) {
    boost::beast::flat_buffer buffer;
    wh_http::request<wh_http::string_body> req;
    boost::system::error_code ec;
    wh_http::read(stream, buffer, req, ec);
    if (ec) {
      return;
    }
    int n = 0;
    {
      std::lock_guard lock(mu_);
      requests_.push_back({std::string(req.target()), req.body(), std::string(req[wh_http::field::content_type]),
                           std::string(req["ClawGig-Event-Id"]), std::string(req["ClawGig-Signature"]),
                           std::chrono::steady_clock::now()});
      n = static_cast<int>(requests_.size());
    }
    const unsigned status = reply_(n);
    if (status == 0) {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_; });
      return;
    }
    wh_http::response<wh_http::string_body> res{static_cast<wh_http::status>(status), 11};
    res.prepare_payload();
    wh_http::write(stream, res, ec);
  }

  Reply reply_;
  wh_asio::io_context ioc_;
  wh_asio::ip::tcp::acceptor acceptor_{ioc_};
  std::optional<wh_asio::ssl::context> tls_;
  std::uint16_t port_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int connections_ = 0;
  std::vector<ReceivedRequest> requests_;
  std::vector<std::thread> threads_;
  std::thread acceptor_thread_;
};

// Polls `done` until it holds or `limit` passes; returns its last value.
template <typename Pred>
bool eventually(Pred done, std::chrono::milliseconds limit = std::chrono::seconds(15)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) {
      return done();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Dispatcher options for tests: loopback receivers and plain http allowed, fast retries.
inline consumers::WebhookDispatcherOptions fast_dispatcher_options() {
  using namespace std::chrono_literals;
  consumers::WebhookDispatcherOptions o;
  o.client.allow_private = true;
  o.client.allow_insecure = true;
  o.client.timeout = 2s;
  o.base_delay = 20ms;
  o.max_delay = 200ms;
  o.poll_interval = 10ms;
  return o;
}

// For the webhook benchmarks: the time from each event of `appended` (event id -> when it was
// appended) to its first attempt among `requests`, in milliseconds, sorted.
inline std::vector<double> first_attempt_latencies_ms(
    const std::vector<ReceivedRequest>& requests,
    const std::map<std::string, std::chrono::steady_clock::time_point>& appended) {
  std::vector<double> latencies;
  for (const auto& r : requests) {
    const auto it = appended.find(r.event_id);
    if (it != appended.end()) {
      latencies.push_back(std::chrono::duration<double, std::milli>(r.at - it->second).count());
    }
  }
  std::sort(latencies.begin(), latencies.end());
  return latencies;
}

// "latency append -> first attempt over N events: p50 X ms, p99 Y ms" of sorted latencies.
inline std::string latency_summary(const std::vector<double>& sorted_ms) {
  std::ostringstream out;
  out << "latency append -> first attempt over " << sorted_ms.size() << " events: p50 "
      << sorted_ms[sorted_ms.size() / 2] << " ms, p99 " << sorted_ms[sorted_ms.size() * 99 / 100] << " ms";
  return out.str();
}

}  // namespace keyledger::testing
