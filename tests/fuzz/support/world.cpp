#include "support/world.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "api/rate_limiter.h"
#include "support/checks.h"

namespace keyledger::fuzz {

namespace {

namespace fs = std::filesystem;

// 2026-11-26T10:00:00Z.
TimePoint epoch() {
  using namespace std::chrono;
  return sys_days{year{2026} / November / 26} + hours{10};
}

Pepper fixed_pepper() {
  std::array<std::uint8_t, Pepper::kSize> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::uint8_t>(0x5a ^ i);
  }
  return Pepper(bytes);
}

std::string world_dir() {
  const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : nullptr;
  const fs::path root = base != nullptr ? fs::path(base) : fs::temp_directory_path();
  std::string pattern = (root / "keyledger-fuzz-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    fail("cannot create the world's temporary directory", pattern);
  }
  return pattern;
}

std::string& dir_to_remove() {
  static std::string dir;
  return dir;
}

void remove_dir_at_exit() {
  std::error_code ec;
  fs::remove_all(dir_to_remove(), ec);
}

const std::vector<std::string> kTierNames = {"standard", "elevated"};

}  // namespace

World& World::get() {
  // Never destroyed: RocksDB's threads may still run when libFuzzer calls exit().
  static World* world = new World();
  return *world;
}

World::World() : dir_(world_dir()), clock_(epoch()), pepper_(fixed_pepper()) {
  if (!crypto_init()) {
    fail("libsodium cannot be initialised");
  }
  dir_to_remove() = dir_;
  std::atexit(remove_dir_at_exit);

  EventStoreOptions options;
  options.path = fs::path(dir_) / "log";
  options.sync = false;
  options.extra_column_families = projection_column_families();
  options.extra_column_families.emplace_back(api::kIdempotencyColumnFamily);
  auto opened = EventStore::open(options);
  if (!opened.ok()) {
    fail("cannot open the event store", opened.status().ToString());
  }
  store_ = std::move(opened).value();
  projector_ = std::make_unique<Projector>(*store_, kTierNames);
  if (const Status started = projector_->start(); !started.ok()) {
    fail("cannot start the projector", started.ToString());
  }
  commits_ = store_->subscribe([this](const std::vector<v1::Event>& events) { on_commit(events); });
  verifier_ = std::make_unique<api::Verifier>(projector_->key_table(), hasher_, api::default_tiers(), clock_);
  auto idempotency_records = store_->extra_column_family(api::kIdempotencyColumnFamily);
  if (!idempotency_records.ok()) {
    fail("cannot open the idempotency records", idempotency_records.status().ToString());
  }
  idempotency_ = std::make_unique<api::IdempotencyStore>(*idempotency_records, clock_);
  CommandServiceOptions command_options;
  command_options.tiers = kTierNames;
  commands_ = std::make_unique<CommandService>(*store_, *projector_, clock_, random_, hasher_, secrets_,
                                               command_options);
  api_ = std::make_unique<api::Api>(api::ApiContext{*projector_, *commands_, *verifier_, *idempotency_,
                                                    metrics_, clock_, hasher_, [] { return true; }});
  const auto token = [&](const std::string& name, const std::string& scope) {
    auto created = commands_->create_token(name, {scope}, "system:fuzz");
    if (!created.ok()) {
      fail("cannot create a service token", created.status().ToString());
    }
    return created->token;
  };
  admin = token("ops", "admin");
  manage = token("dashboard", "manage");
  auditor = token("auditor", "audit");
  gateway = token("gateway", "verify");
  scanner = token("scanner", "report_leaks");
  take_appended();
}

void World::on_commit(const std::vector<v1::Event>& events) {
  metrics_.count_events_appended(events.size());
  std::lock_guard lock(appended_mutex_);
  for (const auto& e : events) {
    check_appended_event(e);
    appended_.push_back(e);
  }
}

std::vector<v1::Event> World::take_appended() {
  std::lock_guard lock(appended_mutex_);
  return std::exchange(appended_, {});
}

std::optional<http::Response> World::call(const Call& call) {
  http::Request req;
  req.method = call.method;
  if (!http::parse_target(call.target, req.path, req.query)) {
    return std::nullopt;
  }
  if (!call.credential.empty()) {
    req.headers.add_folded("authorization", "Bearer " + call.credential);
  }
  if (call.json && !call.body.empty()) {
    req.headers.add_folded("content-type", "application/json");
  }
  for (const auto& [name, value] : call.headers) {
    std::string lower = name;
    for (auto& c : lower) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    req.headers.add_folded(lower, value);
  }
  req.body = call.body;
  return handle(req);
}

http::Response World::handle(http::Request& req) {
  req.request_id = "req-" + std::to_string(++requests_);
  req.remote_address = "127.0.0.1";
  last_request_id_ = req.request_id;
  clock_.advance(std::chrono::seconds(1));
  http::Response res = api_->handle(req);
  api_->on_response(req, res);
  check_response(res, req.request_id, req.method == "HEAD");
  return res;
}

std::string World::register_agent() {
  const std::string body =
      R"({"name": "Fuzz Agent", "description": "Registered by the fuzz harness.", "skills": ["fuzz"],)"
      R"( "languages": ["en"], "webhook_url": "https://agent.example.com/hooks"})";
  auto res = call({"POST", "/v1/agents", body, manage, {}, true});
  if (!res || res->status != 201) {
    fail("cannot register an agent", res ? res->body : "");
  }
  return api::Json::parse(res->body)["agent_id"].get<std::string>();
}

World::IssuedKey World::create_key(std::string& agent_id) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto res = call({"POST", "/v1/agents/" + agent_id + "/keys", "", manage, {}, true});
    if (res && res->status == 201) {
      const auto body = api::Json::parse(res->body);
      return {body["key"]["key_id"].get<std::string>(), body["api_key"].get<std::string>()};
    }
    agent_id = register_agent();  // no room for another active key (or the agent is gone)
  }
  fail("cannot create a key");
}

}  // namespace keyledger::fuzz
