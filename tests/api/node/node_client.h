#pragma once
// A loopback HTTP client and a configuration for tests of the composed node (a Primary
// built in-process).
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "api/node/config.h"

namespace keyledger::api::test {

// A node for tests: port 0 on loopback, no Kafka, no webhook delivery, small thread pools.
inline Config node_config(const std::filesystem::path& data_dir) {
  Config config;
  config.data_dir = data_dir;
  config.listen = "127.0.0.1:0";
  config.kafka_brokers = "none";
  config.disable_webhooks = true;
  config.io_threads = 1;
  config.worker_threads = 2;
  return config;
}

struct Answer {
  unsigned status = 0;
  nlohmann::json body;  // discarded when the body is not JSON
  std::map<std::string, std::string> headers;
  std::string text;  // the body as sent
};

// One request on a fresh connection to 127.0.0.1:`port`. A JSON `body` is sent as such; a
// string `raw_body` (with its own Content-Type header) as given.
inline Answer call(std::uint16_t port, boost::beast::http::verb verb, const std::string& target,
                   const std::map<std::string, std::string>& headers, const nlohmann::json& body = nullptr,
                   const std::string* raw_body = nullptr) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace bhttp = beast::http;
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::string_body> req{verb, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  for (const auto& [name, value] : headers) {
    req.set(name, value);
  }
  if (raw_body != nullptr) {
    req.body() = *raw_body;
  } else if (!body.is_null()) {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body.dump();
  }
  req.prepare_payload();
  bhttp::write(stream, req);
  beast::flat_buffer buffer;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(stream, buffer, res);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  Answer answer{res.result_int(), nlohmann::json::parse(res.body(), nullptr, false), {}, res.body()};
  for (const auto& field : res) {
    answer.headers[std::string(field.name_string())] = std::string(field.value());
  }
  return answer;
}

inline std::string read_token(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string token;
  std::getline(in, token);
  return token;
}

}  // namespace keyledger::api::test
