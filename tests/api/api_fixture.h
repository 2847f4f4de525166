#pragma once
// The API without sockets, wired the way `keyledger serve` wires it (main.cpp): a real event
// store in a temporary directory, a started projector, a manual clock and seeded randomness.
// The server adds X-Request-Id and calls on_response; World::raw does both.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/handlers.h"
#include "api/rate_limiter.h"
#include "api/views.h"
#include "domain/events.h"
#include "support/temp_dir.h"

namespace keyledger::api::test {

// 2026-11-26T10:00:00Z: whole seconds, so expiry boundaries are exact.
inline TimePoint test_epoch() {
  using namespace std::chrono;
  return sys_days{year{2026} / November / 26} + hours{10};
}

inline Pepper fixed_pepper() {
  std::array<std::uint8_t, Pepper::kSize> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::uint8_t>(0x21 + 3 * i);
  }
  return Pepper(bytes);
}

inline Json agent_body(const std::string& name = "Invoice Parser") {
  return {{"name", name},
          {"description", "Extracts line items from PDF invoices."},
          {"skills", {"pdf", "extraction"}},
          {"languages", {"en", "de"}},
          {"webhook_url", "https://agent.example.com/hooks/clawgig"},
          {"environment", "production"},
          {"owner_id", "usr_123"}};
}

inline Json parse(const http::Response& res) { return Json::parse(res.body, nullptr, false); }

inline std::string header(const http::Response& res, std::string_view name) {
  auto v = res.headers.get(name);
  return v ? std::string(*v) : std::string();
}

inline std::set<std::string> detail_fields(const Json& body) {
  std::set<std::string> fields;
  if (!body.contains("error") || !body["error"].contains("details")) {
    return fields;
  }
  for (const auto& d : body["error"]["details"]) {
    fields.insert(d["field"].get<std::string>());
  }
  return fields;
}

inline constexpr const char* kRealm = "Bearer realm=\"keyledger\"";
inline constexpr const char* kInvalidToken = "Bearer realm=\"keyledger\", error=\"invalid_token\"";

// The service, wired as in main.cpp `serve`.
class World {
 public:
  inline static const std::vector<std::string> kTierNames = {"standard", "elevated"};

  // `file_system`: what RocksDB writes through (a FaultyFileSystem in the storage-fault tests).
  explicit World(std::shared_ptr<rocksdb::FileSystem> file_system = nullptr) {
    EventStoreOptions options;
    options.path = dir_.path() / "log";
    options.file_system = std::move(file_system);
    options.extra_column_families = projection_column_families();
    options.extra_column_families.emplace_back(kIdempotencyColumnFamily);
    auto opened = EventStore::open(options);
    INFO(opened.status().ToString());
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    projector = std::make_unique<Projector>(*store, kTierNames);
    const Status started = projector->start();
    INFO(started.ToString());
    REQUIRE(started.ok());
    count_appends = store->subscribe(
        [this](const std::vector<v1::Event>& events) { metrics.count_events_appended(events.size()); });
    verifier = std::make_unique<Verifier>(projector->key_table(), hasher, default_tiers(), clock);
    auto idempotency_records = store->extra_column_family(kIdempotencyColumnFamily);
    REQUIRE(idempotency_records.ok());
    idempotency = std::make_unique<IdempotencyStore>(*idempotency_records, clock);
    CommandServiceOptions command_options;
    command_options.tiers = kTierNames;
    commands =
        std::make_unique<CommandService>(*store, *projector, clock, random, hasher, secrets, command_options);
    api = std::make_unique<Api>(ApiContext{*projector, *commands, *verifier, *idempotency, metrics, clock,
                                           hasher, [this] { return ready.load(); }, &auth_failures});
    admin = token("ops", {"admin"});
    manage = token("dashboard", {"manage"});
    auditor = token("auditor", {"audit"});
    gateway = token("gateway-eu", {"verify"});
    scanner = token("scanner", {"report_leaks"});
  }

  // A service token made through the command service (as `keyledger token create` does).
  std::string token(const std::string& name, const std::vector<std::string>& scopes) {
    auto created = commands->create_token(name, scopes, "system:test");
    INFO(created.status().ToString());
    REQUIRE(created.ok());
    return created->token;
  }

  // One request through Api::handle (or Api::handle_later, for what the server answers later),
  // then on_response as the server would call it.
  http::Response call(const std::string& method, const std::string& target, const std::optional<Json>& body,
                      const std::string& credential, const std::map<std::string, std::string>& headers = {}) {
    std::string text;
    if (body) {
      text = body->dump();
    }
    std::map<std::string, std::string> all = headers;
    if (body) {
      all.emplace("Content-Type", "application/json");
    }
    return raw(method, target, text, credential, all);
  }

  http::Response raw(const std::string& method, const std::string& target, const std::string& body,
                     const std::string& credential, const std::map<std::string, std::string>& headers = {}) {
    http::Request req;
    req.method = method;
    REQUIRE(http::parse_target(target, req.path, req.query));
    if (!credential.empty()) {
      req.headers.set("Authorization", "Bearer " + credential);
    }
    for (const auto& [name, value] : headers) {
      req.headers.set(name, value);
    }
    req.body = body;
    req.request_id = "req-" + std::to_string(++requests_);
    req.remote_address = remote_address;
    last_request_id = req.request_id;
    http::Response res;
    if (api->execution(req) == Dispatcher::Execution::kLater) {
      // As the server runs it: started here, answered from the store's syncer.
      // Shared: set_value may still be finishing on the store's thread when get() returns.
      auto replied = std::make_shared<std::promise<http::Response>>();
      auto answer = replied->get_future();
      api->handle_later(req, [replied](http::Response r) { replied->set_value(std::move(r)); });
      REQUIRE(answer.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
      res = answer.get();
      ++answered_later;
    } else {
      res = api->handle(req);
    }
    api->on_response(req, res);
    return res;
  }

  http::Response get(const std::string& target, const std::string& credential,
                     const std::map<std::string, std::string>& headers = {}) {
    return call("GET", target, std::nullopt, credential, headers);
  }
  http::Response post(const std::string& target, const Json& body, const std::string& credential,
                      const std::map<std::string, std::string>& headers = {}) {
    return call("POST", target, body, credential, headers);
  }

  // Checks the error body of api/openapi.yaml and returns it.
  Json expect_error(const http::Response& res, unsigned status, const std::string& code) {
    INFO("status " << res.status << " body " << res.body);
    CHECK(res.status == status);
    const Json body = parse(res);
    REQUIRE(body.is_object());
    REQUIRE(body.contains("error"));
    CHECK(body["error"]["code"] == code);
    CHECK(body["error"]["message"].is_string());
    CHECK_FALSE(body["error"]["message"].get<std::string>().empty());
    CHECK(body["error"]["request_id"] == last_request_id);
    CHECK(res.content_type == "application/json");
    if (code != "validation_failed" && code != "idempotency_key_reused") {
      CHECK_FALSE(body["error"].contains("details"));
    }
    return body;
  }

  std::string register_agent(const std::string& name = "Invoice Parser",
                             const std::map<std::string, std::string>& headers = {}) {
    auto res = post("/v1/agents", agent_body(name), manage, headers);
    INFO(res.body);
    REQUIRE(res.status == 201);
    return parse(res)["agent_id"].get<std::string>();
  }

  struct NewKey {
    std::string key_id;
    std::string api_key;
    Json key;
  };
  NewKey create_key(const std::string& agent_id, const Json& body = Json::object(),
                    const std::map<std::string, std::string>& headers = {}) {
    auto res = post("/v1/agents/" + agent_id + "/keys", body, manage, headers);
    INFO(res.body);
    REQUIRE(res.status == 201);
    const Json out = parse(res);
    return {out["key"]["key_id"].get<std::string>(), out["api_key"].get<std::string>(), out["key"]};
  }

  Json verify(const std::string& key, std::optional<std::int64_t> cost = std::nullopt) {
    Json body = {{"api_key", key}};
    if (cost) {
      body["cost"] = *cost;
    }
    auto res = post("/v1/verify", body, gateway);
    INFO(res.body);
    REQUIRE(res.status == 200);
    return parse(res);
  }

  std::string code_of(const std::string& key) { return verify(key)["code"].get<std::string>(); }

  // Every audit event of `query` (without limit/cursor), following cursors with `limit`.
  std::vector<Json> audit_all(const std::string& query, std::size_t limit, std::size_t* pages = nullptr) {
    std::vector<Json> events;
    std::string cursor;
    std::size_t n = 0;
    for (int guard = 0; guard < 10000; ++guard) {
      std::string target = "/v1/audit?limit=" + std::to_string(limit) + (query.empty() ? "" : "&" + query);
      if (!cursor.empty()) {
        target += "&cursor=" + cursor;
      }
      auto res = get(target, auditor);
      INFO(target << " -> " << res.body);
      REQUIRE(res.status == 200);
      const Json page = parse(res);
      ++n;
      CHECK(page["events"].size() <= limit);
      for (const auto& e : page["events"]) {
        events.push_back(e);
      }
      if (!page.contains("next_cursor")) {
        break;
      }
      REQUIRE(page["next_cursor"].is_string());
      cursor = page["next_cursor"].get<std::string>();
      REQUIRE_FALSE(cursor.empty());
    }
    if (pages != nullptr) {
      *pages = n;
    }
    return events;
  }

  std::string now_text() const { return format_rfc3339(clock.now()); }

 private:
  testing::TempDir dir_;
  std::uint64_t requests_ = 0;

 public:
  ManualClock clock{test_epoch()};
  SeededRandom random{1234};
  Pepper pepper = fixed_pepper();
  KeyHasher hasher{pepper};
  SecretBox secrets{pepper};
  Metrics metrics;  // before count_appends, which uses it
  std::atomic<bool> ready{true};
  // A small limit, so tests can reach it; requests come from `remote_address`.
  AuthFailureLimiter auth_failures{clock, {.max_failures = 5, .window = std::chrono::seconds(60)}};
  std::string remote_address = "127.0.0.1";
  std::unique_ptr<EventStore> store;
  std::unique_ptr<Projector> projector;
  CommitSubscription count_appends;
  std::unique_ptr<Verifier> verifier;
  std::unique_ptr<IdempotencyStore> idempotency;
  std::unique_ptr<CommandService> commands;
  std::unique_ptr<Api> api;
  std::string last_request_id;
  // Requests answered through Api::handle_later.
  int answered_later = 0;
  std::string admin, manage, auditor, gateway, scanner;
};

inline std::vector<std::uint64_t> positions_of(const std::vector<Json>& events) {
  std::vector<std::uint64_t> out;
  for (const auto& e : events) {
    out.push_back(e["position"].get<std::uint64_t>());
  }
  return out;
}

}  // namespace keyledger::api::test
