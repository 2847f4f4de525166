// The whole key lifecycle against the real binary, over HTTP.
#include <catch2/catch.hpp>

#include <regex>
#include <set>
#include <thread>

#include "harness.h"

namespace keyledger::e2e {
namespace {

Json agent_body(const std::string& name = "Invoice Parser") {
  return {{"name", name},
          {"description", "Extracts line items from PDF invoices."},
          {"skills", {"pdf", "extraction"}},
          {"languages", {"en", "de"}},
          {"webhook_url", "https://agent.example.com/hooks/clawgig"},
          {"environment", "production"},
          {"owner_id", "usr_123"}};
}

struct Fixture {
  testing::TempDir dir;
  std::unique_ptr<ServerProcess> server = std::make_unique<ServerProcess>(dir.path() / "data");
  std::string admin = server->bootstrap_token();

  std::string token(const std::string& name, const std::vector<std::string>& scopes) {
    auto res = server->request("POST", "/v1/tokens", {{"name", name}, {"scopes", scopes}}, admin);
    REQUIRE(res.status == 201);
    return res.json()["token"];
  }
  Json verify(const std::string& verifier, const std::string& key) {
    auto res = server->request("POST", "/v1/verify", {{"api_key", key}}, verifier);
    REQUIRE(res.status == 200);
    return res.json();
  }
};

}  // namespace

TEST_CASE("create, rotate with overlap, revoke, compromise with replacement", "[e2e]") {
  Fixture f;
  REQUIRE(f.admin.rfind("kls_", 0) == 0);
  const std::string manage = f.token("dashboard", {"manage"});
  const std::string gateway = f.token("gateway-eu", {"verify"});
  const std::string auditor = f.token("auditor", {"audit"});

  auto agent = f.server->request("POST", "/v1/agents", agent_body(), manage);
  REQUIRE(agent.status == 201);
  const std::string agent_id = agent.json()["agent_id"];
  CHECK(agent.json()["webhook_secret"].get<std::string>().rfind("whsec_", 0) == 0);
  CHECK(agent.json()["rate_limit_tier"] == "standard");
  CHECK(!agent.header("x-request-id").empty());

  auto created = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", {{"label", "prod-2026-11"}}, manage);
  REQUIRE(created.status == 201);
  const std::string key1 = created.json()["api_key"];
  const std::string key1_id = created.json()["key"]["key_id"];
  CHECK(std::regex_match(key1, std::regex("^cg_[0-9a-f]{32}$")));
  CHECK(created.json()["key"]["hint"] == key1.substr(0, 7) + "…" + key1.substr(key1.size() - 4));
  CHECK(created.json()["key"]["status"] == "active");

  auto valid = f.verify(gateway, key1);
  CHECK(valid["valid"] == true);
  CHECK(valid["code"] == "VALID");
  CHECK(valid["agent_id"] == agent_id);
  CHECK(valid["key_id"] == key1_id);
  CHECK(valid["ratelimit"]["limit"] == 100);

  auto auth = f.server->get("/v1/auth", key1);
  CHECK(auth.status == 200);
  CHECK(auth.header("x-agent-id") == agent_id);
  CHECK(auth.header("x-key-id") == key1_id);
  CHECK(auth.header("x-agent-environment") == "production");
  CHECK(auth.header("ratelimit-policy") == "\"standard\";q=100;w=2");
  CHECK(!auth.header("x-ratelimit-remaining").empty());

  // Rotation without an expiry keeps both keys valid (zero-downtime overlap).
  auto rotated = f.server->request("POST", "/v1/keys/" + key1_id + "/rotate", Json::object(), manage);
  REQUIRE(rotated.status == 201);
  const std::string key2 = rotated.json()["api_key"];
  const std::string key2_id = rotated.json()["key"]["key_id"];
  CHECK(rotated.json()["key"]["rotated_from"] == key1_id);
  CHECK(rotated.json()["previous"]["rotated_to"] == key2_id);
  CHECK(f.verify(gateway, key1)["code"] == "VALID");
  CHECK(f.verify(gateway, key2)["code"] == "VALID");

  auto self = f.server->get("/v1/self", key2);
  REQUIRE(self.status == 200);
  CHECK(self.json()["agent"]["agent_id"] == agent_id);
  CHECK(self.json()["key"]["key_id"] == key2_id);
  CHECK(self.json()["agent"]["active_key_count"] == 2);

  // Revocation is effective for the very next verification.
  auto revoked = f.server->request("POST", "/v1/keys/" + key1_id + "/revoke", {{"reason", "rotated out"}}, manage);
  REQUIRE(revoked.status == 200);
  CHECK(revoked.json()["status"] == "revoked");
  CHECK(revoked.json()["revocation_reason"] == "manual");
  CHECK(f.verify(gateway, key1)["code"] == "REVOKED");
  auto denied = f.server->get("/v1/auth", key1);
  CHECK(denied.status == 401);
  CHECK(denied.header("www-authenticate") == "Bearer realm=\"keyledger\", error=\"invalid_token\"");
  auto again = f.server->request("POST", "/v1/keys/" + key1_id + "/revoke", Json::object(), manage);
  CHECK(again.status == 409);
  CHECK(again.json()["error"]["code"] == "key_not_active");

  // Compromise with a replacement.
  auto comp = f.server->request("POST", "/v1/keys/" + key2_id + "/compromise",
                                {{"note", "pasted in chat"}, {"source", "support"}, {"replace", true}}, manage);
  REQUIRE(comp.status == 200);
  CHECK(comp.json()["key"]["status"] == "revoked");
  CHECK(comp.json()["key"]["revocation_reason"] == "compromised");
  const std::string key3 = comp.json()["replacement"]["api_key"];
  CHECK(f.verify(gateway, key2)["code"] == "COMPROMISED");
  CHECK(f.verify(gateway, key3)["code"] == "VALID");
  auto twice = f.server->request("POST", "/v1/keys/" + key2_id + "/compromise", Json::object(), manage);
  CHECK(twice.status == 409);
  CHECK(twice.json()["error"]["code"] == "key_already_compromised");

  // Unknown and malformed keys.
  CHECK(f.verify(gateway, "cg_00000000000000000000000000000000")["code"] == "NOT_FOUND");
  CHECK(f.verify(gateway, "cg_XYZ")["code"] == "MALFORMED");

  // GETs for manage and audit; the key list never shows digests.
  auto keys = f.server->get("/v1/agents/" + agent_id + "/keys", auditor);
  REQUIRE(keys.status == 200);
  CHECK(keys.json()["keys"].size() == 3);
  CHECK(keys.body.find("digest") == std::string::npos);
  auto active = f.server->get("/v1/agents/" + agent_id + "/keys?status=active", manage);
  CHECK(active.json()["keys"].size() == 1);
  CHECK(f.server->get("/v1/keys/" + key1_id, auditor).json()["rotated_to"] == key2_id);
  CHECK(f.server->get("/v1/keys/key_000000000000000000000000", auditor).json()["error"]["code"] == "key_not_found");

  // The audit log saw everything, with actors.
  auto audit = f.server->get("/v1/audit?agent_id=" + agent_id + "&order=asc", auditor);
  REQUIRE(audit.status == 200);
  std::vector<std::string> types;
  const Json audit_body = audit.json();
  for (const auto& e : audit_body["events"]) {
    if (e["type"] == "webhook.delivery_recorded") {
      continue;  // attempts to reach agent.example.com, recorded in the background
    }
    types.push_back(e["type"]);
    CHECK(e["actor"] == "dashboard");
  }
  CHECK(types == std::vector<std::string>{"agent.registered", "key.created", "key.created", "key.rotated",
                                          "key.revoked", "key.compromised", "key.created"});
}

TEST_CASE("expiry is enforced at verification time", "[e2e]") {
  Fixture f;
  const std::string manage = f.token("dashboard", {"manage"});
  const std::string gateway = f.token("gateway", {"verify"});
  const std::string agent_id = f.server->request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
  auto created = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", {{"expires_in_seconds", 1}}, manage);
  REQUIRE(created.status == 201);
  const std::string key = created.json()["api_key"];
  CHECK(f.verify(gateway, key)["code"] == "VALID");
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  CHECK(f.verify(gateway, key)["code"] == "EXPIRED");
  CHECK(f.server->get("/v1/auth", key).status == 401);
  // The scheduler records the expiry as an event.
  const std::string auditor = f.token("auditor", {"audit"});
  bool recorded = false;
  for (int i = 0; i < 50 && !recorded; ++i) {
    recorded = !f.server->get("/v1/audit?type=key.expired", auditor).json()["events"].empty();
    if (!recorded) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  CHECK(recorded);
  auto key_id = created.json()["key"]["key_id"].get<std::string>();
  CHECK(f.server->get("/v1/keys/" + key_id, manage).json()["status"] == "expired");
}

TEST_CASE("restart with the same data directory keeps everything", "[e2e]") {
  testing::TempDir dir;
  std::string key;
  std::string admin;
  std::string revoked_key;
  {
    ServerProcess server(dir.path() / "data");
    admin = server.bootstrap_token();
    auto manage = server.request("POST", "/v1/tokens", {{"name", "dash"}, {"scopes", {"manage", "verify"}}}, admin)
                      .json()["token"].get<std::string>();
    const std::string agent_id = server.request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
    key = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage).json()["api_key"];
    auto second = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage).json();
    revoked_key = second["api_key"];
    REQUIRE(server.request("POST", "/v1/keys/" + second["key"]["key_id"].get<std::string>() + "/revoke",
                           Json::object(), manage).status == 200);
    CHECK(server.stop() == 0);
  }
  ServerProcess server(dir.path() / "data");
  CHECK(server.bootstrap_token() == admin);
  auto tokens = server.get("/v1/tokens", admin);
  REQUIRE(tokens.status == 200);
  CHECK(tokens.json()["tokens"].size() == 2);
  CHECK(tokens.body.find(admin) == std::string::npos);
  CHECK(server.get("/v1/auth", key).status == 200);
  CHECK(server.get("/v1/auth", revoked_key).status == 401);
  CHECK(server.get("/readyz", "").status == 200);
}

TEST_CASE("credentials and scopes on every kind of route", "[e2e]") {
  Fixture f;
  const std::string manage = f.token("dashboard", {"manage"});
  const std::string verify = f.token("gateway", {"verify"});
  const std::string audit = f.token("auditor", {"audit"});
  const std::string leaks = f.token("scanner", {"report_leaks"});
  const std::string agent_id = f.server->request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
  const std::string key = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage)
                              .json()["api_key"];

  struct Case {
    std::string method, target;
    Json body;
    std::string allowed;  // the token that may call it
  };
  const std::vector<Case> cases = {
      {"POST", "/v1/agents", agent_body(), manage},
      {"GET", "/v1/agents/" + agent_id, Json(), audit},
      {"POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage},
      {"POST", "/v1/verify", {{"api_key", key}}, verify},
      {"GET", "/v1/audit", Json(), audit},
      {"POST", "/v1/leaks", Json::array(), leaks},
      {"GET", "/v1/tokens", Json(), f.admin},
  };
  for (const auto& c : cases) {
    INFO(c.method << " " << c.target);
    auto none = f.server->request(c.method, c.target, c.body, "");
    CHECK(none.status == 401);
    CHECK(none.header("www-authenticate") == "Bearer realm=\"keyledger\"");
    CHECK(none.json()["error"]["code"].is_string());
    CHECK(f.server->request(c.method, c.target, c.body, "kls_garbagegarbagegarbagegarbagegarbagegarbage1").status == 401);
    CHECK(f.server->request(c.method, c.target, c.body, "not-a-token").status == 401);
    CHECK(f.server->request(c.method, c.target, c.body, key).status == 403);
    for (const auto& t : {manage, verify, audit, leaks}) {
      const auto res = f.server->request(c.method, c.target, c.body, t);
      if (t == c.allowed) {
        CHECK(res.status < 300);
      } else if (!(t == manage && c.method == "GET" && c.target.find("/v1/agents/") == 0)) {
        CHECK(res.status == 403);
      }
    }
  }
  CHECK(f.server->get("/v1/self", "").status == 401);
  CHECK(f.server->get("/v1/self", manage).status == 401);
  CHECK(f.server->get("/v1/self", key).status == 200);
  CHECK(f.server->get("/v1/auth", "", {{"X-Api-Key", key}}).status == 200);
}

TEST_CASE("one keep-alive connection carries requests to different routes", "[e2e]") {
  Fixture f;
  HttpConnection conn(f.server->port());
  const std::map<std::string, std::string> auth = {{"Authorization", "Bearer " + f.admin},
                                                   {"Content-Type", "application/json"}};

  auto agent = conn.request("POST", "/v1/agents", agent_body().dump(), auth);
  REQUIRE(agent.status == 201);
  const std::string agent_id = agent.json()["agent_id"];

  // Each request must be routed on its own: a body valid for this route, not the last one.
  auto created = conn.request("POST", "/v1/agents/" + agent_id + "/keys", Json{{"label", "one"}}.dump(), auth);
  REQUIRE(created.status == 201);
  const std::string key_id = created.json()["key"]["key_id"];
  const std::string api_key = created.json()["api_key"];

  auto key = conn.request("GET", "/v1/keys/" + key_id, "", auth);
  REQUIRE(key.status == 200);
  CHECK(key.json()["label"] == "one");
  auto listed = conn.request("GET", "/v1/agents/" + agent_id + "/keys", "", auth);
  REQUIRE(listed.status == 200);
  CHECK(listed.json()["keys"].size() == 1);
  auto verified = conn.request("POST", "/v1/verify", Json{{"api_key", api_key}}.dump(), auth);
  REQUIRE(verified.status == 200);
  CHECK(verified.json()["code"] == "VALID");
  auto self = conn.request("GET", "/v1/self", "", {{"Authorization", "Bearer " + api_key}});
  REQUIRE(self.status == 200);
  CHECK(self.json()["key"]["key_id"] == key_id);
  auto missing = conn.request("GET", "/v1/nothing-here", "", auth);
  CHECK(missing.status == 404);
  auto health = conn.request("GET", "/healthz");
  CHECK(health.status == 200);
  // Request ids are per request, not per connection.
  CHECK(key.header("x-request-id") != listed.header("x-request-id"));
}

TEST_CASE("errors of section 3", "[e2e]") {
  Fixture f;
  const std::string manage = f.token("dashboard", {"manage"});
  auto not_json = http_request(f.server->port(), "POST", "/v1/agents", "{nope",
                               {{"Authorization", "Bearer " + manage}, {"Content-Type", "application/json"}});
  CHECK(not_json.status == 400);
  CHECK(not_json.json()["error"]["code"] == "invalid_json");
  CHECK(not_json.json()["error"]["request_id"] == not_json.header("x-request-id"));

  auto wrong_type = f.server->request("POST", "/v1/agents", {{"name", 5}}, manage);
  CHECK(wrong_type.status == 400);

  Json broken = agent_body();
  broken["name"] = "";
  broken["description"] = "too short";
  broken["skills"] = Json::array();
  broken["webhook_url"] = "http://insecure.example.com";
  broken["nickname"] = "x";
  auto unknown = f.server->request("POST", "/v1/agents", broken, manage);
  CHECK(unknown.status == 422);
  broken.erase("nickname");
  auto invalid = f.server->request("POST", "/v1/agents", broken, manage);
  REQUIRE(invalid.status == 422);
  CHECK(invalid.json()["error"]["code"] == "validation_failed");
  std::set<std::string> fields;
  const Json invalid_body = invalid.json();
  for (const auto& d : invalid_body["error"]["details"]) {
    fields.insert(d["field"]);
  }
  CHECK(fields == std::set<std::string>{"name", "description", "skills", "webhook_url"});

  CHECK(f.server->get("/v1/nothing", manage).json()["error"]["code"] == "not_found");
  auto method = f.server->request("DELETE", "/v1/agents", Json(), manage);
  CHECK(method.status == 405);
  CHECK(method.header("allow") == "POST");
  auto media = http_request(f.server->port(), "POST", "/v1/agents", agent_body().dump(),
                            {{"Authorization", "Bearer " + manage}, {"Content-Type", "text/plain"}});
  CHECK(media.status == 415);
  auto big = http_request(f.server->port(), "POST", "/v1/agents", std::string(70 * 1024, 'x'),
                          {{"Authorization", "Bearer " + manage}, {"Content-Type", "application/json"}});
  CHECK(big.status == 413);
  CHECK(big.json()["error"]["code"] == "payload_too_large");
  auto headers = http_request(f.server->port(), "GET", "/healthz", "", {{"X-Padding", std::string(9000, 'a')}});
  CHECK(headers.status == 431);
  CHECK(f.server->get("/v1/agents/agt_000000000000000000000000", manage).json()["error"]["code"] ==
        "agent_not_found");
}

TEST_CASE("idempotency keys replay the first response without the secret", "[e2e]") {
  Fixture f;
  const std::string manage = f.token("dashboard", {"manage"});
  const std::string agent_id = f.server->request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
  const std::map<std::string, std::string> idem = {{"Idempotency-Key", "create-1"}};
  auto first = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", {{"label", "a"}}, manage, idem);
  REQUIRE(first.status == 201);
  CHECK(first.json().contains("api_key"));
  auto second = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", {{"label", "a"}}, manage, idem);
  CHECK(second.status == 201);
  CHECK(second.header("idempotent-replayed") == "true");
  CHECK(second.json()["key"]["key_id"] == first.json()["key"]["key_id"]);
  CHECK_FALSE(second.json().contains("api_key"));
  auto reused = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", {{"label", "b"}}, manage, idem);
  CHECK(reused.status == 422);
  CHECK(reused.json()["error"]["code"] == "idempotency_key_reused");
  CHECK(f.server->get("/v1/agents/" + agent_id, manage).json()["active_key_count"] == 1);
}

TEST_CASE("rate limits answer 429 with Retry-After", "[e2e]") {
  Fixture f;
  // The standard tier refilling one request a second: the checks below need far less than a
  // second between the draining call and the refused ones, through a validating proxy too.
  f.server.reset();
  f.server = std::make_unique<ServerProcess>(
      f.dir.path() / "slow", std::vector<std::string>{"--rate-limit-tiers", "standard:1:100,elevated:500:1000"});
  f.admin = f.server->bootstrap_token();
  const std::string manage = f.token("dashboard", {"manage"});
  const std::string gateway = f.token("gateway", {"verify"});
  const std::string agent_id = f.server->request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
  const std::string key = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage)
                              .json()["api_key"];
  // One verification costing the whole burst, then the bucket is empty.
  auto drain = f.server->request("POST", "/v1/verify", {{"api_key", key}, {"cost", 100}}, gateway);
  CHECK(drain.json()["code"] == "VALID");
  CHECK(drain.json()["ratelimit"]["remaining"] == 0);
  auto limited = f.server->request("POST", "/v1/verify", {{"api_key", key}, {"cost", 100}}, gateway);
  CHECK(limited.json()["code"] == "RATE_LIMITED");
  CHECK(limited.json()["retry_after_seconds"].get<int>() >= 1);
  auto auth = f.server->get("/v1/auth", key);
  CHECK(auth.status == 429);
  CHECK(std::stoi(auth.header("retry-after")) >= 1);
  CHECK(!auth.header("ratelimit").empty());
  CHECK(f.server->request("POST", "/v1/verify", {{"api_key", key}, {"cost", 1001}}, gateway).status == 422);
}

TEST_CASE("leak reports revoke known keys and never echo tokens", "[e2e]") {
  Fixture f;
  const std::string manage = f.token("dashboard", {"manage"});
  const std::string scanner = f.token("scanner", {"report_leaks"});
  const std::string gateway = f.token("gateway", {"verify"});
  const std::string agent_id = f.server->request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
  const std::string key = f.server->request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage)
                              .json()["api_key"];
  const Json report = Json::array({
      {{"token", key}, {"type", "clawgig_api_key"}, {"url", "https://github.com/x/y"}, {"source", "content"}},
      {{"token", "cg_11111111111111111111111111111111"}, {"type", "clawgig_api_key"}, {"url", "https://x"}, {"source", "content"}},
      {{"token", "cg_nope"}, {"type", "clawgig_api_key"}, {"url", "https://x"}, {"source", "content"}},
      {{"token", key}, {"type", "clawgig_api_key"}, {"url", "https://github.com/x/z"}, {"source", "content"}},
  });
  auto res = f.server->request("POST", "/v1/leaks", report, scanner);
  REQUIRE(res.status == 200);
  const Json results = res.json();
  REQUIRE(results.size() == 4);
  CHECK(results[0]["label"] == "true_positive");
  CHECK(results[0]["result"] == "revoked");
  CHECK(results[0]["token_type"] == "clawgig_api_key");
  CHECK(results[0]["token_hash"].get<std::string>().size() == 64);
  CHECK(results[1]["result"] == "unknown");
  CHECK(results[1]["label"] == "false_positive");
  CHECK(results[2]["result"] == "malformed");
  CHECK(results[3]["result"] == "already_inactive");
  CHECK(res.body.find(key) == std::string::npos);
  CHECK(f.verify(gateway, key)["code"] == "COMPROMISED");
  const std::string auditor = f.token("auditor", {"audit"});
  auto audit = f.server->get("/v1/audit?type=key.compromised", auditor).json();
  REQUIRE(audit["events"].size() == 1);
  CHECK(audit["events"][0]["actor"] == "leak:content");
}

TEST_CASE("the server log never holds a full key or token", "[e2e]") {
  testing::TempDir dir;
  std::string log;
  {
    ServerProcess server(dir.path() / "data", {"--log-level", "debug"});
    const std::string admin = server.bootstrap_token();
    auto manage = server.request("POST", "/v1/tokens", {{"name", "dash"}, {"scopes", {"manage"}}}, admin)
                      .json()["token"].get<std::string>();
    const std::string agent_id = server.request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"];
    const std::string key = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage)
                                .json()["api_key"];
    server.get("/v1/auth", key);
    server.get("/v1/auth", "cg_" + std::string(32, 'a'));
    CHECK(server.stop() == 0);
    log = server.log();
  }
  CHECK(!log.empty());
  CHECK_FALSE(std::regex_search(log, std::regex("cg_[0-9a-f]{32}")));
  CHECK_FALSE(std::regex_search(log, std::regex("kls_[A-Za-z0-9_-]{43}")));
  CHECK_FALSE(std::regex_search(log, std::regex("whsec_[A-Za-z0-9_-]{20}")));
}

}  // namespace keyledger::e2e
