// Regression tests for the findings of the first hostile review (issue 13): each one a way a
// single request could poison the log, slip past a rule or leak, now refused or made harmless.
#include <catch2/catch.hpp>

#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/api_fixture.h"
#include "domain/text.h"
#include "support/faulty_file_system.h"

namespace keyledger::api {

using namespace test;

namespace {

// Every event of the log, read back through the store: what every consumer would decode.
std::vector<v1::Event> whole_log(World& w) {
  auto events = w.store->read_all(1, 1'000'000);
  REQUIRE(events.ok());
  for (const auto& e : *events) {
    CHECK_FALSE(is_unreadable(e));
  }
  return *events;
}

}  // namespace

TEST_CASE("hardening: an X-Actor that is not valid one-line UTF-8 is refused and appends nothing",
          "[handlers][hardening]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const std::uint64_t before = w.store->last_position();
  for (const std::string& actor : {std::string("caf\xe9"), std::string("a\0b", 3), std::string("tab\there"),
                                  std::string("\xc3"), std::string(129, 'a')}) {
    INFO(actor);
    const auto res = w.post("/v1/keys/" + key.key_id + "/revoke", Json::object(), w.manage, {{"X-Actor", actor}});
    CHECK(detail_fields(w.expect_error(res, 422, "validation_failed")) == std::set<std::string>{"X-Actor"});
  }
  CHECK(w.store->last_position() == before);
  CHECK(w.code_of(key.api_key) == "VALID");
  // 128 characters are counted as characters, not bytes: 128 two-byte letters are fine.
  std::string accented;
  for (int i = 0; i < 128; ++i) {
    accented += "\xc3\xa9";
  }
  const auto res = w.post("/v1/keys/" + key.key_id + "/revoke", Json::object(), w.manage, {{"X-Actor", accented}});
  REQUIRE(res.status == 200);
  const auto log = whole_log(w);
  CHECK(log.back().actor() == "dashboard (" + accented + ")");
  CHECK(w.code_of(key.api_key) == "REVOKED");
}

TEST_CASE("hardening: the event store appends nothing that would not decode again", "[eventstore][hardening]") {
  World w;
  const std::string agent_id = w.register_agent();
  const std::uint64_t before = w.store->last_position();
  v1::Event bad;
  bad.set_event_id("evt-bad-utf8");
  bad.set_actor("caf\xe9");
  bad.mutable_key_revoked()->set_agent_id(agent_id);
  auto appended = w.store->append(agent_stream(agent_id), kAnyVersion, {bad});
  CHECK(appended.status().IsInvalidArgument());
  CHECK(w.store->last_position() == before);
  // The agent is untouched: it still reads, takes keys and is audited.
  CHECK(w.get("/v1/agents/" + agent_id, w.manage).status == 200);
  w.create_key(agent_id);
  CHECK(w.get("/v1/audit", w.auditor).status == 200);
}

TEST_CASE("hardening: control characters are refused in one-line fields, kept out of prose but for line breaks",
          "[handlers][hardening]") {
  World w;
  Json nul_name = agent_body(std::string("a\0b", 3));
  CHECK(detail_fields(w.expect_error(w.post("/v1/agents", nul_name, w.manage), 422, "validation_failed")) ==
        std::set<std::string>{"name"});
  Json escape_skill = agent_body();
  escape_skill["skills"] = {"pdf", "\x1b[31mred"};
  CHECK(detail_fields(w.expect_error(w.post("/v1/agents", escape_skill, w.manage), 422, "validation_failed")) ==
        std::set<std::string>{"skills[1]"});
  Json multiline = agent_body();
  multiline["description"] = "Extracts line items\nfrom PDF invoices.\tFast.";
  CHECK(w.post("/v1/agents", multiline, w.manage).status == 201);
  Json nul_description = agent_body();
  nul_description["description"] = std::string("Extracts line items from\0 PDF invoices.", 39);
  CHECK(detail_fields(w.expect_error(w.post("/v1/agents", nul_description, w.manage), 422,
                                     "validation_failed")) == std::set<std::string>{"description"});
  const std::string agent_id = w.register_agent();
  CHECK(detail_fields(w.expect_error(
            w.post("/v1/agents/" + agent_id + "/keys", Json{{"label", std::string("a\0", 2)}}, w.manage), 422,
            "validation_failed")) == std::set<std::string>{"label"});
}

TEST_CASE("hardening: a leak report revokes whatever its source says, with a bounded actor",
          "[handlers][hardening]") {
  World w;
  const std::string agent_id = w.register_agent();
  // A source that a byte cut at 200 would split inside a character, one far too long, one with
  // control characters.
  std::string split_me(199, 'x');
  split_me += "\xc3\xa9\xc3\xa9";
  const std::vector<std::string> sources = {split_me, std::string(60'000, 's'), std::string("a\0\x1b" "b", 4)};
  for (const auto& source : sources) {
    const auto key = w.create_key(agent_id);
    const Json report = Json::array({{{"token", key.api_key}, {"type", "clawgig_api_key"}, {"source", source}}});
    const auto res = w.post("/v1/leaks", report, w.scanner);
    INFO(res.body);
    REQUIRE(res.status == 200);
    CHECK(parse(res)[0]["result"] == "revoked");
    CHECK(w.code_of(key.api_key) == "COMPROMISED");
    const v1::Event last = whole_log(w).back();
    REQUIRE(last.has_key_compromised());
    CHECK(last.actor().rfind("leak:", 0) == 0);
    CHECK(count_text_characters(last.actor(), TextForm::kSingleLine).value_or(9999) <= kMaxActorChars);
    CHECK(count_text_characters(last.key_compromised().source(), TextForm::kSingleLine).value_or(9999) <=
          kMaxCompromiseSourceChars);
  }
}

TEST_CASE("hardening: error messages never quote what was asked for", "[handlers][hardening]") {
  World w;
  const std::string pasted_key = "cg_0123456789abcdef0123456789abcdef";
  for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/keys/" + pasted_key},
           {"POST", "/v1/keys/" + pasted_key + "/revoke"},
           {"GET", "/v1/agents/" + pasted_key},
           {"POST", "/v1/tokens/" + pasted_key + "/revoke"}}) {
    const std::string& credential = target.starts_with("/v1/tokens") ? w.admin : w.manage;
    const auto res = method == "GET" ? w.get(target, credential) : w.post(target, Json::object(), credential);
    INFO(method << " " << target << " -> " << res.body);
    CHECK(res.status == 404);
    CHECK(res.body.find(pasted_key) == std::string::npos);
    CHECK(res.body.find("0123456789abcdef") == std::string::npos);
  }
}

TEST_CASE("hardening: an agent key refused on a service route is not a use of it", "[handlers][hardening]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  w.clock.advance(std::chrono::seconds(5));
  CHECK(w.get("/v1/tokens", key.api_key).status == 403);
  CHECK(w.post("/v1/verify", Json{{"api_key", key.api_key}}, key.api_key).status == 403);
  CHECK(parse(w.get("/v1/keys/" + key.key_id, w.auditor))["last_used_at"].is_null());
  // Its own routes are a use.
  CHECK(w.get("/v1/self", key.api_key).status == 200);
  CHECK(parse(w.get("/v1/keys/" + key.key_id, w.auditor))["last_used_at"] == w.now_text());
}

TEST_CASE("hardening: a verification cost above the tier's burst is refused as such, not rate limited",
          "[handlers][hardening]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const auto res = w.post("/v1/verify", Json{{"api_key", key.api_key}, {"cost", 101}}, w.gateway);
  CHECK(detail_fields(w.expect_error(res, 422, "validation_failed")) == std::set<std::string>{"cost"});
  // The burst itself is admitted, once; then the bucket is empty and waiting helps.
  CHECK(w.verify(key.api_key, 100)["code"] == "VALID");
  const Json limited = w.verify(key.api_key, 100);
  CHECK(limited["code"] == "RATE_LIMITED");
  CHECK(limited["retry_after_seconds"] == 2);
}

TEST_CASE("hardening: /metrics labels come from known sets, whatever the method", "[handlers][hardening]") {
  World w;
  for (int i = 0; i < 50; ++i) {
    w.raw("M" + std::string(200, static_cast<char>('A' + i % 26)) + std::to_string(i), "/v1/tokens", "", "");
  }
  w.raw("GET", "/v1/tokens", "", "");
  const std::string metrics = w.get("/metrics", "").body;
  CHECK(metrics.find("AAAAAAAAAA") == std::string::npos);
  CHECK(metrics.find("method=\"OTHER\"") != std::string::npos);
  CHECK(metrics.size() < 16 * 1024);
}

TEST_CASE("hardening: concurrent commands on the same agents are serialised, never refused",
          "[handlers][hardening]") {
  World w;
  constexpr int kAgents = 8;
  constexpr int kCommandsPerAgent = 50;
  struct AgentPlan {
    std::string agent_id;
    std::vector<std::string> keys_to_revoke;
  };
  std::vector<AgentPlan> plans;
  for (int a = 0; a < kAgents; ++a) {
    AgentPlan plan{w.register_agent("Agent " + std::to_string(a)), {}};
    for (int k = 0; k < 5; ++k) {
      plan.keys_to_revoke.push_back(w.create_key(plan.agent_id).key_id);
    }
    plans.push_back(std::move(plan));
  }
  // Per agent: 5 revocations, 5 key creations (room for them whatever the order), 40 tier
  // changes, all at once from many threads. Api::handle is what the server's workers call.
  struct Outcome {
    unsigned status;
    std::string body;
  };
  std::vector<std::future<Outcome>> outcomes;
  for (const auto& plan : plans) {
    for (int i = 0; i < kCommandsPerAgent; ++i) {
      outcomes.push_back(std::async(std::launch::async, [&w, &plan, i] {
        http::Request req;
        req.method = i % 10 == 0 ? "POST" : (i % 10 == 1 ? "POST" : "PUT");
        std::string target;
        if (i % 10 == 0) {
          target = "/v1/keys/" + plan.keys_to_revoke[static_cast<std::size_t>(i / 10)] + "/revoke";
          req.body = "{}";
        } else if (i % 10 == 1) {
          target = "/v1/agents/" + plan.agent_id + "/keys";
          req.body = "{}";
        } else {
          target = "/v1/agents/" + plan.agent_id + "/rate-limit";
          req.body = i % 2 == 0 ? R"({"tier": "elevated"})" : R"({"tier": "standard"})";
        }
        REQUIRE(http::parse_target(target, req.path, req.query));
        req.headers.set("Authorization", "Bearer " + w.manage);
        req.headers.set("Content-Type", "application/json");
        req.request_id = "concurrent-" + std::to_string(i);
        http::Response res = w.api->handle(req);
        return Outcome{res.status, res.body};
      }));
    }
  }
  for (auto& f : outcomes) {
    const Outcome o = f.get();
    INFO(o.body);
    CHECK((o.status == 200 || o.status == 201));
  }
  for (const auto& plan : plans) {
    const Json agent = parse(w.get("/v1/agents/" + plan.agent_id, w.manage));
    CHECK(agent["active_key_count"] == 5);
    for (const auto& key_id : plan.keys_to_revoke) {
      CHECK(parse(w.get("/v1/keys/" + key_id, w.manage))["status"] == "revoked");
    }
  }
}

TEST_CASE("hardening: a full disk fails commands with 503, verification goes on, writes come back by themselves",
          "[handlers][hardening][faults]") {
  auto fs = std::make_shared<testing::FaultyFileSystem>();
  World w(fs);
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const std::uint64_t before = w.store->last_position();

  // The same Idempotency-Key all along: a failed attempt keeps no answer (the answer goes in
  // the events' WriteBatch), so the attempt that finally succeeds runs once and then replays.
  const std::map<std::string, std::string> once = {{"Idempotency-Key", "create-through-the-outage"}};
  fs->fail_writes = true;
  for (int i = 0; i < 3; ++i) {
    w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage, once), 503,
                   "storage_unavailable");
  }
  w.expect_error(w.post("/v1/keys/" + key.key_id + "/revoke", Json::object(), w.manage), 503, "storage_unavailable");
  CHECK(w.store->last_position() == before);
  CHECK(w.code_of(key.api_key) == "VALID");  // served from memory
  CHECK(w.get("/v1/auth", key.api_key).status == 200);
  CHECK(w.get("/readyz", "").status == 200);  // still verifying; commands say why they fail
  CHECK(w.store->write_health().IsUnavailable());

  fs->fail_writes = false;
  // Writes come back by themselves: RocksDB's recovery retries every 5 s, the writer resumes
  // once it is through. Until then commands keep answering 503 at once.
  std::optional<Json> created_body;
  for (int attempt = 0; attempt < 300 && !created_body; ++attempt) {
    const auto res = w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage, once);
    if (res.status == 201) {
      CHECK_FALSE(res.headers.get("Idempotent-Replayed"));
      created_body = parse(res);
    } else {
      w.expect_error(res, 503, "storage_unavailable");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  REQUIRE(created_body);
  const World::NewKey created{(*created_body)["key"]["key_id"].get<std::string>(),
                              (*created_body)["api_key"].get<std::string>(), (*created_body)["key"]};
  CHECK(w.code_of(created.api_key) == "VALID");
  CHECK(w.store->last_position() == before + 1);  // nothing of the failed commands was applied
  const auto replayed = w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage, once);
  CHECK(replayed.status == 201);
  CHECK(replayed.headers.get("Idempotent-Replayed") == std::optional<std::string_view>("true"));
  CHECK(parse(replayed)["key"]["key_id"] == created.key_id);
  CHECK(w.store->last_position() == before + 1);
  REQUIRE(w.post("/v1/keys/" + key.key_id + "/revoke", Json::object(), w.manage).status == 200);
  CHECK(w.code_of(key.api_key) == "REVOKED");
  CHECK(w.store->write_health().ok());
  // Positions stayed gap-free through it all.
  std::uint64_t expected = 1;
  for (const auto& e : whole_log(w)) {
    CHECK(e.position() == expected++);
  }
}

TEST_CASE("hardening: a failed fsync stops writes until a restart and says so on /readyz",
          "[handlers][hardening][faults]") {
  auto fs = std::make_shared<testing::FaultyFileSystem>();
  World w(fs);
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);

  fs->fail_syncs = true;
  w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage), 503, "storage_unavailable");
  fs->fail_syncs = false;  // a later fsync that works proves nothing: still refused
  w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage), 503, "storage_unavailable");
  const auto ready = w.get("/readyz", "");
  CHECK(ready.status == 503);
  CHECK(ready.body.find("restart") != std::string::npos);
  CHECK(w.code_of(key.api_key) == "VALID");
}

TEST_CASE("hardening: the wall clock jumping an hour either way reorders nothing and breaks no bucket",
          "[handlers][hardening][faults]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id, Json{{"expires_in_seconds", 7200}});
  // Empty the bucket, then jump back an hour: the bucket refills at its rate from the new
  // time on (it is neither stuck until the old time comes back nor refilled by the jump).
  CHECK(w.verify(key.api_key, 100)["code"] == "VALID");
  w.clock.advance(-std::chrono::hours(1));
  CHECK(w.verify(key.api_key, 1)["code"] == "RATE_LIMITED");
  w.clock.advance(std::chrono::seconds(1));
  const Json refilled = w.verify(key.api_key, 40);
  CHECK(refilled["code"] == "VALID");
  CHECK(refilled["ratelimit"]["remaining"] == 10);
  // Commands made while the clock is behind come later in the log all the same.
  const auto second = w.create_key(agent_id);
  w.clock.advance(std::chrono::hours(2));
  const auto third = w.create_key(agent_id);
  std::uint64_t previous = 0;
  for (const auto& e : whole_log(w)) {
    CHECK(e.position() == previous + 1);
    previous = e.position();
  }
  // The clock is now 1 h after issue: a 2-hour key is not expired early by the jumps.
  CHECK(w.code_of(key.api_key) == "VALID");
  w.clock.advance(std::chrono::seconds(3600));
  CHECK(w.code_of(key.api_key) == "EXPIRED");  // 2 h + 1 s after issue
  w.clock.advance(-std::chrono::seconds(2));
  CHECK(w.code_of(key.api_key) == "VALID");  // expiry is checked against the clock, not cached
  CHECK(w.code_of(second.api_key) == "VALID");
  CHECK(w.code_of(third.api_key) == "VALID");
}

}  // namespace keyledger::api

namespace keyledger::api {

TEST_CASE("hardening: an agent key given twice, differently, is no credential; a junk method is not quoted",
          "[handlers][hardening]") {
  using namespace test;
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const auto other = w.create_key(agent_id);
  CHECK(w.get("/v1/auth", key.api_key, {{"X-Api-Key", key.api_key}}).status == 200);
  CHECK(w.get("/v1/auth", "", {{"X-Api-Key", key.api_key}}).status == 200);
  CHECK(w.get("/v1/auth", key.api_key, {{"X-Api-Key", other.api_key}}).status == 401);
  CHECK(w.get("/v1/self", other.api_key, {{"X-Api-Key", key.api_key}}).status == 401);

  const std::string junk(3000, 'Q');
  const auto res = w.call(junk, "/v1/tokens", std::nullopt, w.admin);
  const Json error = w.expect_error(res, 405, "method_not_allowed");
  CHECK(error["error"]["message"].get<std::string>().find("QQQ") == std::string::npos);
  CHECK(error["error"]["message"].get<std::string>().find("OTHER") != std::string::npos);
}

TEST_CASE("hardening: an address with too many failed authentications gets 429 until its window ends",
          "[handlers][hardening]") {
  using namespace test;
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);

  w.remote_address = "203.0.113.7";
  for (int i = 0; i < 5; ++i) {
    CHECK(w.get("/v1/tokens", "kl_not_a_token").status == 401);
  }
  // Over the limit: refused before the credential is looked at, whatever it is, on every
  // route that needs one; public routes still answer.
  const auto refused = w.get("/v1/tokens", w.admin);
  w.expect_error(refused, 429, "rate_limited");
  CHECK(refused.headers.get("Retry-After") == std::optional<std::string_view>("60"));
  w.expect_error(w.get("/v1/self", key.api_key), 429, "rate_limited");
  w.expect_error(w.post("/v1/verify", Json{{"api_key", key.api_key}}, w.gateway), 429, "rate_limited");
  CHECK(w.get("/healthz", "").status == 200);

  SECTION("GET /v1/auth is not limited: its client is a gateway speaking for many users") {
    CHECK(w.get("/v1/auth", key.api_key).status == 200);
    CHECK(w.get("/v1/auth", "cg_nonsense").status == 401);
  }
  SECTION("another address, the same /64 of IPv6, and loopback") {
    w.remote_address = "203.0.113.8";
    CHECK(w.get("/v1/tokens", w.admin).status == 200);
    w.remote_address = "2001:db8:1:2::5";
    for (int i = 0; i < 5; ++i) {
      CHECK(w.get("/v1/tokens", "").status == 401);
    }
    w.remote_address = "2001:db8:1:2:ffff::9";  // same /64: one host's allocation
    w.expect_error(w.get("/v1/tokens", w.admin), 429, "rate_limited");
    w.remote_address = "2001:db8:1:3::5";
    CHECK(w.get("/v1/tokens", w.admin).status == 200);
    w.remote_address = "127.0.0.1";
    for (int i = 0; i < 20; ++i) {
      CHECK(w.get("/v1/tokens", "").status == 401);
    }
    CHECK(w.get("/v1/tokens", w.admin).status == 200);
    w.remote_address = "::ffff:127.0.0.1";
    CHECK(w.get("/v1/tokens", w.admin).status == 200);
  }
  SECTION("the window ends: the address starts afresh") {
    w.clock.advance(std::chrono::seconds(59));
    CHECK(w.get("/v1/tokens", w.admin).headers.get("Retry-After") == std::optional<std::string_view>("1"));
    w.clock.advance(std::chrono::seconds(1));
    CHECK(w.get("/v1/tokens", w.admin).status == 200);
  }
  SECTION("a wrong scope (403) is not a failed authentication") {
    w.remote_address = "198.51.100.1";
    for (int i = 0; i < 10; ++i) {
      CHECK(w.get("/v1/tokens", w.gateway).status == 403);
    }
    CHECK(w.get("/v1/tokens", w.admin).status == 200);
  }
}

TEST_CASE("auth failure limiter: buckets, off switch, bounded memory", "[api][hardening]") {
  ManualClock clock{test::test_epoch()};
  CHECK(AuthFailureLimiter::bucket_of("127.0.0.9").empty());
  CHECK(AuthFailureLimiter::bucket_of("::1").empty());
  CHECK(AuthFailureLimiter::bucket_of("::ffff:10.1.2.3") == "10.1.2.3");
  CHECK(AuthFailureLimiter::bucket_of("2001:db8::1") == "2001:db8::/64");

  AuthFailureLimiter off(clock, {.max_failures = 0});
  for (int i = 0; i < 1000; ++i) {
    off.failed("192.0.2.1");
  }
  CHECK_FALSE(off.retry_after("192.0.2.1"));

  // Full of live entries: a new address is not tracked, the limited ones stay limited.
  AuthFailureLimiter small(clock, {.max_failures = 1, .window = std::chrono::seconds(60), .max_tracked = 16});
  for (int i = 0; i < 200; ++i) {
    small.failed("10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250));
  }
  int limited = 0;
  for (int i = 0; i < 200; ++i) {
    limited += small.retry_after("10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250)) ? 1 : 0;
  }
  CHECK(limited > 0);
  CHECK(limited <= 16 + 16);  // at most max_tracked/shards + 1 per shard
  clock.advance(std::chrono::seconds(61));
  small.failed("10.9.9.9");  // expired entries make room
  CHECK(small.retry_after("10.9.9.9"));
}

}  // namespace keyledger::api
