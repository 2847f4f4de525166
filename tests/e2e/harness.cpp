#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace keyledger::e2e {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string binary() { return KEYLEDGER_BINARY; }

namespace {

// Starts `args` with stdout on a pipe (returned in `stdout_fd`) and stderr appended to
// `log_file`.
pid_t spawn(std::vector<std::string> args, const std::filesystem::path& log_file, int& stdout_fd) {
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  int out[2];
  if (pipe(out) != 0) {
    throw std::runtime_error("pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    throw std::runtime_error("cannot start " + args.front());
  }
  stdout_fd = out[0];
  return pid;
}

// Reads stdout lines until `done(line)` holds or the pipe closes; false if it closed first.
template <typename Done>
bool read_lines_until(int fd, Done done) {
  std::string line;
  char c = 0;
  while (read(fd, &c, 1) == 1) {
    if (c != '\n') {
      line.push_back(c);
      continue;
    }
    if (done(line)) {
      return true;
    }
    line.clear();
  }
  return false;
}

// Keeps draining stdout in the background so the child never blocks on it; appends what it
// reads to `keep_in` unless that is empty.
void drain_in_background(int fd, std::filesystem::path keep_in = {}) {
  std::thread([fd, keep_in = std::move(keep_in)] {
    std::ofstream keep;
    if (!keep_in.empty()) {
      keep.open(keep_in, std::ios::app);
    }
    char buf[4096];
    ssize_t n = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
      if (keep.is_open()) {
        keep.write(buf, n).flush();
      }
    }
    close(fd);
  }).detach();
}

int wait_for_exit(pid_t& pid, int signal) {
  if (pid <= 0) {
    return -1;
  }
  ::kill(pid, signal);
  int status = 0;
  waitpid(pid, &status, 0);
  pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

struct HttpConnection::Impl {
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
};

HttpConnection::HttpConnection(std::uint16_t port) : impl_(std::make_unique<Impl>()) {
  impl_->stream.expires_after(std::chrono::seconds(20));
  impl_->stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
}

HttpConnection::~HttpConnection() {
  beast::error_code ignored;
  impl_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

HttpResult HttpConnection::request(const std::string& method, const std::string& target,
                                   const std::string& body,
                                   const std::map<std::string, std::string>& headers) {
  impl_->stream.expires_after(std::chrono::seconds(20));
  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, "127.0.0.1");
  for (const auto& [name, value] : headers) {
    req.set(name, value);
  }
  if (!body.empty()) {
    req.body() = body;
  }
  req.prepare_payload();
  bhttp::write(impl_->stream, req);
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  parser.skip(method == "HEAD");
  bhttp::read(impl_->stream, impl_->buffer, parser);
  const auto& res = parser.get();
  HttpResult out;
  out.status = res.result_int();
  for (const auto& field : res) {
    std::string name(field.name_string());
    for (auto& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    out.headers[name] = std::string(field.value());
  }
  out.body = res.body();
  return out;
}

HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body, const std::map<std::string, std::string>& headers) {
  return HttpConnection(port).request(method, target, body, headers);
}

ChildProcess::ChildProcess(const std::vector<std::string>& args, std::filesystem::path log_file)
    : log_file_(std::move(log_file)) {
  pid_ = spawn(args, log_file_, stdout_fd_);
}

ChildProcess::~ChildProcess() { kill_hard(); }

void ChildProcess::wait_until_ready(const std::function<bool(const std::string&)>& ready,
                                    const std::string& what, bool keep_stdout) {
  const bool started = read_lines_until(stdout_fd_, ready);
  drain_in_background(stdout_fd_, keep_stdout ? log_file_ : std::filesystem::path());
  if (!started) {
    kill_hard();
    throw std::runtime_error(what + " did not start; log:\n" + log());
  }
}

int ChildProcess::stop() { return wait_for_exit(pid_, SIGTERM); }

void ChildProcess::kill_hard() { (void)wait_for_exit(pid_, SIGKILL); }

void ChildProcess::send_signal(int signal) const { ::kill(pid_, signal); }

std::string ChildProcess::log() const { return read_file(log_file_); }

namespace {

std::vector<std::string> serve_args(const std::filesystem::path& data_dir,
                                    const std::vector<std::string>& extra_args,
                                    const std::string& kafka_brokers) {
  std::vector<std::string> args = {binary(),   "serve",       "--data-dir",      data_dir.string(),
                                   "--listen", "127.0.0.1:0", "--kafka-brokers", kafka_brokers};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return args;
}

std::vector<std::string> webhooks_args(const std::filesystem::path& state_dir,
                                       const std::vector<std::string>& args) {
  std::vector<std::string> all = {binary(), "webhooks", "--data-dir", state_dir.string()};
  all.insert(all.end(), args.begin(), args.end());
  return all;
}

}  // namespace

ServerProcess::ServerProcess(const std::filesystem::path& data_dir, std::vector<std::string> extra_args,
                             const std::string& kafka_brokers)
    : ChildProcess(serve_args(data_dir, extra_args, kafka_brokers), data_dir.string() + ".log"),
      data_dir_(data_dir) {
  // Read stdout until the "listening on host:port" line.
  wait_until_ready(
      [&](const std::string& line) {
        if (const auto kafka = line.find("kafka bootstrap "); kafka != std::string::npos) {
          kafka_bootstrap_ = line.substr(kafka + 16);
        }
        if (line.rfind("keyledger listening on ", 0) == std::string::npos) {
          return false;
        }
        port_ = static_cast<std::uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
        return true;
      },
      "keyledger");
}

WebhooksProcess::WebhooksProcess(const std::filesystem::path& state_dir, std::vector<std::string> args)
    : ChildProcess(webhooks_args(state_dir, args), state_dir.string() + ".log") {
  wait_until_ready([](const std::string& line) { return line == "keyledger webhooks ready"; },
                   "keyledger webhooks");
}

std::pair<int, std::string> run_binary(const std::vector<std::string>& args) {
  std::vector<std::string> all = {binary()};
  all.insert(all.end(), args.begin(), args.end());
  const std::filesystem::path log_file =
      std::filesystem::temp_directory_path() / ("keyledger-run-" + std::to_string(::getpid()) + ".log");
  std::filesystem::remove(log_file);
  int out = -1;
  pid_t pid = spawn(all, log_file, out);
  drain_in_background(out);
  int status = 0;
  waitpid(pid, &status, 0);
  std::string log = read_file(log_file);
  std::filesystem::remove(log_file);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log};
}

ValidatingProxy::ValidatingProxy(const std::string& prism, const std::string& document,
                                 std::uint16_t upstream, const std::filesystem::path& log_file)
    : ChildProcess(
          [&] {
            // A free port: bound and released here, taken by Prism a moment later.
            net::io_context ioc;
            tcp::acceptor probe(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
            const std::uint16_t port = probe.local_endpoint().port();
            return std::vector<std::string>{
                prism, "proxy",     document, "http://127.0.0.1:" + std::to_string(upstream),
                "-h",  "127.0.0.1", "-p",     std::to_string(port)};
          }(),
          log_file) {
  wait_until_ready(
      [&](const std::string& line) {
        const auto at = line.find("Prism is listening on http://127.0.0.1:");
        if (at == std::string::npos) {
          return false;
        }
        port_ = static_cast<std::uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
        return true;
      },
      "prism proxy", /*keep_stdout=*/true);
}

void ValidatingProxy::check(const std::string& method, const std::string& target, HttpResult& result) {
  const auto header = result.headers.find("sl-violations");
  if (header == result.headers.end()) {
    return;
  }
  const std::string raw = header->second;
  result.headers.erase(header);
  const Json violations = Json::parse(raw, nullptr, false);
  if (!violations.is_array()) {
    // "Too many violations! …": which side broke is not certain, so neither is the answer.
    if (raw.find("\"response\"") != std::string::npos) {
      throw std::runtime_error(method + " " + target + ": the answer (" + std::to_string(result.status) +
                               ") breaks api/openapi.yaml: " + raw.substr(0, 1500));
    }
    return;
  }
  Json broken = Json::array();
  for (const Json& violation : violations) {
    const Json location = violation.value("location", Json::array());
    if (location.is_array() && !location.empty() && location.front() == "response") {
      broken.push_back(violation);
    }
  }
  if (!broken.empty()) {
    // The body as far as it can be shown: a secret shown once (a new key, token or webhook
    // secret) stays out of the test's output.
    Json body = Json::parse(result.body, nullptr, false);
    if (body.is_object()) {
      for (const char* secret : {"api_key", "token", "webhook_secret"}) {
        if (body.contains(secret)) {
          body[secret] = "(withheld)";
        }
      }
    }
    throw std::runtime_error(method + " " + target + ": the answer (" + std::to_string(result.status) +
                             ") breaks api/openapi.yaml: " + broken.dump().substr(0, 1500) +
                             "\nbody: " + (body.is_discarded() ? result.body : body.dump()).substr(0, 500));
  }
}

std::uint16_t ServerProcess::request_port() const {
  const char* prism = std::getenv("KEYLEDGER_E2E_PRISM");
  if (prism == nullptr || *prism == '\0') {
    return port_;
  }
  if (!proxy_) {
    const char* document = std::getenv("KEYLEDGER_E2E_OPENAPI");
    if (document == nullptr || *document == '\0') {
      throw std::runtime_error("KEYLEDGER_E2E_PRISM is set without KEYLEDGER_E2E_OPENAPI");
    }
    // The proxy's port is picked free and released just before Prism takes it: another
    // process may take it in between, so a proxy that does not start is tried again.
    for (int attempt = 1; !proxy_; ++attempt) {
      try {
        proxy_ = std::make_unique<ValidatingProxy>(prism, document, port_, data_dir_.string() + ".prism.log");
      } catch (const std::exception&) {
        if (attempt == 3) {
          throw;
        }
      }
    }
  }
  return proxy_->port();
}

std::string ServerProcess::bootstrap_token() const {
  std::ifstream in(data_dir_ / "bootstrap-token");
  std::string token;
  std::getline(in, token);
  return token;
}

HttpResult ServerProcess::request(const std::string& method, const std::string& target, const Json& body,
                                  const std::string& token,
                                  std::map<std::string, std::string> headers) const {
  if (!token.empty()) {
    headers["Authorization"] = "Bearer " + token;
  }
  std::string text;
  if (!body.is_null()) {
    headers.emplace("Content-Type", "application/json");
    text = body.dump();
  }
  const std::uint16_t port = request_port();
  if (port == port_) {
    return http_request(port, method, target, text, headers);
  }
  HttpResult result;
  try {
    result = http_request(port, method, target, text, headers);
  } catch (const std::exception& e) {
    const std::string log = proxy_->log();
    throw std::runtime_error(method + " " + target + " through prism: " + e.what() + "; prism's log ends:\n" +
                             log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
  }
  ValidatingProxy::check(method, target, result);
  return result;
}

HttpResult ServerProcess::get(const std::string& target, const std::string& token,
                              std::map<std::string, std::string> headers) const {
  return request("GET", target, Json(), token, std::move(headers));
}

}  // namespace keyledger::e2e
