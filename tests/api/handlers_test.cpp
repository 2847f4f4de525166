// Every route of api/openapi.yaml through Api::handle, without sockets: a real event store in a
// temporary directory, a started projector, a manual clock and seeded randomness, wired the
// way `keyledger serve` wires them (main.cpp). The server adds X-Request-Id and calls
// on_response; here the test does both.
#include "api/handlers.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "api/api_fixture.h"

namespace keyledger::api {

using namespace std::chrono_literals;
using namespace test;

// --- routing ------------------------------------------------------------------------------

TEST_CASE("handlers: unknown routes answer 404 not_found, wrong methods 405 with Allow", "[handlers]") {
  World w;
  for (const std::string target :
       {"/v1/nothing", "/ui/nothing.js", "/ui", "/v1", "/v1/keys/a/b/c", "/v1/agents/x/keys/y"}) {
    INFO(target);
    w.expect_error(w.get(target, w.manage), 404, "not_found");
    w.expect_error(w.get(target, ""), 404, "not_found");
  }
  struct Case {
    std::string method, target, allow;
  };
  const std::vector<Case> cases = {
      {"DELETE", "/v1/agents", "POST"},
      {"GET", "/v1/agents", "POST"},
      {"GET", "/v1/keys/key_x/revoke", "POST"},
      {"GET", "/v1/keys/key_x/rotate", "POST"},
      {"GET", "/v1/keys/key_x/compromise", "POST"},
      {"POST", "/v1/agents/agt_x/rate-limit", "PUT"},
      {"PATCH", "/v1/agents/agt_x", "GET"},
      {"DELETE", "/v1/keys/key_x", "GET"},
      {"POST", "/healthz", "GET"},
      {"POST", "/readyz", "GET"},
      {"POST", "/metrics", "GET"},
      {"GET", "/v1/verify", "POST"},
      {"POST", "/v1/auth", "GET"},
      {"POST", "/v1/self", "GET"},
      {"GET", "/v1/leaks", "POST"},
      {"PUT", "/v1/audit", "GET"},
      {"GET", "/v1/tokens/tok_x/revoke", "POST"},
      {"POST", "/v1/tokens/self", "GET"},
      {"POST", "/", "GET"},
      {"POST", "/openapi.json", "GET"},
      {"GET", "/v1/leaks/github", "POST"},
  };
  for (const auto& c : cases) {
    INFO(c.method << " " << c.target);
    auto res = w.raw(c.method, c.target, "", "");
    w.expect_error(res, 405, "method_not_allowed");
    CHECK(header(res, "Allow") == c.allow);
  }
  // A path that two routes share lists both methods.
  auto both = w.raw("DELETE", "/v1/agents/agt_x/keys", "", w.manage);
  w.expect_error(both, 405, "method_not_allowed");
  const std::string allow = header(both, "Allow");
  CHECK(allow.find("GET") != std::string::npos);
  CHECK(allow.find("POST") != std::string::npos);
  auto tokens = w.raw("DELETE", "/v1/tokens", "", w.admin);
  w.expect_error(tokens, 405, "method_not_allowed");
  CHECK(header(tokens, "Allow").find("GET") != std::string::npos);
  CHECK(header(tokens, "Allow").find("POST") != std::string::npos);
  // HEAD on a GET route answers like GET without a body.
  auto head = w.raw("HEAD", "/healthz", "", "");
  CHECK(head.status == 200);
  CHECK(head.body.empty());
}

// --- credentials and scopes ---------------------------------------------------------------

TEST_CASE("handlers: every token route: 401 with WWW-Authenticate, 403 for other scopes", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const auto revoked = w.create_key(agent_id);
  REQUIRE(w.post("/v1/keys/" + revoked.key_id + "/revoke", Json::object(), w.manage).status == 200);
  const auto listed = parse(w.get("/v1/tokens", w.admin));
  const std::string token_id = listed["tokens"][0]["token_id"].get<std::string>();
  // A token that has been revoked.
  const std::string gone = w.token("gone", {"manage", "verify", "audit", "report_leaks", "admin"});
  {
    const Json tokens = parse(w.get("/v1/tokens", w.admin));
    std::string gone_id;
    for (const auto& t : tokens["tokens"]) {
      if (t["name"] == "gone") {
        gone_id = t["token_id"].get<std::string>();
      }
    }
    REQUIRE_FALSE(gone_id.empty());
    REQUIRE(w.post("/v1/tokens/" + gone_id + "/revoke", Json::object(), w.admin).status == 200);
  }

  struct Route {
    std::string method, target;
    std::set<std::string> scopes;
  };
  const std::vector<Route> routes = {
      {"POST", "/v1/tokens", {"admin"}},
      {"GET", "/v1/tokens", {"admin"}},
      {"GET", "/v1/tokens/self", {"admin", "manage", "audit", "verify", "report_leaks"}},
      {"POST", "/v1/tokens/" + token_id + "/revoke", {"admin"}},
      {"POST", "/v1/agents", {"manage"}},
      {"GET", "/v1/agents/" + agent_id, {"manage", "audit"}},
      {"PUT", "/v1/agents/" + agent_id + "/rate-limit", {"manage"}},
      {"POST", "/v1/agents/" + agent_id + "/keys", {"manage"}},
      {"GET", "/v1/agents/" + agent_id + "/keys", {"manage", "audit"}},
      {"GET", "/v1/agents/" + agent_id + "/webhook-deliveries", {"manage", "audit"}},
      {"GET", "/v1/keys/due-for-rotation", {"manage", "audit"}},
      {"GET", "/v1/keys/" + key.key_id, {"manage", "audit"}},
      {"POST", "/v1/keys/" + key.key_id + "/rotate", {"manage"}},
      {"POST", "/v1/keys/" + key.key_id + "/revoke", {"manage"}},
      {"POST", "/v1/keys/" + key.key_id + "/compromise", {"manage"}},
      {"POST", "/v1/verify", {"verify"}},
      {"GET", "/v1/audit", {"audit"}},
      {"POST", "/v1/leaks", {"report_leaks"}},
  };
  const std::map<std::string, std::string> by_scope = {{"admin", w.admin},
                                                       {"manage", w.manage},
                                                       {"audit", w.auditor},
                                                       {"verify", w.gateway},
                                                       {"report_leaks", w.scanner}};
  const auto before = w.store->last_position();
  for (const auto& r : routes) {
    INFO(r.method << " " << r.target);
    // A body with an unknown field: callers that get past the credential see 422, and
    // nothing changes.
    const bool writes = r.method != "GET";
    const std::string body = r.target == "/v1/leaks" ? R"([{"zzz": 1}])" : R"({"zzz": 1})";
    auto send = [&](const std::string& credential, std::map<std::string, std::string> headers = {}) {
      if (writes) {
        headers.emplace("Content-Type", "application/json");
      }
      return w.raw(r.method, r.target, writes ? body : "", credential, headers);
    };
    for (const auto& [what, credential] : std::vector<std::pair<std::string, std::string>>{
             {"none", ""},
             {"garbage kls_", "kls_garbagegarbagegarbagegarbagegarbagegarbage1"},
             {"short kls_", "kls_short"},
             {"not a token", "not-a-token"},
             {"revoked token", gone},
             {"revoked agent key", revoked.api_key},
             {"unknown agent key", "cg_00000000000000000000000000000000"}}) {
      INFO(what);
      auto res = send(credential);
      w.expect_error(res, 401, "unauthorized");
      CHECK(header(res, "WWW-Authenticate") == kRealm);
    }
    {
      INFO("Basic credential");
      auto res = w.raw(r.method, r.target, "", "", {{"Authorization", "Basic dXNlcjpwYXNz"}});
      w.expect_error(res, 401, "unauthorized");
      CHECK(header(res, "WWW-Authenticate") == kRealm);
    }
    {
      INFO("a working agent key is never a service token");
      w.expect_error(send(key.api_key), 403, "forbidden");
    }
    for (const auto& [scope, credential] : by_scope) {
      INFO("scope " << scope);
      auto res = send(credential);
      if (r.scopes.count(scope) != 0) {
        CHECK(res.status == (writes ? 422u : 200u));
      } else {
        w.expect_error(res, 403, "forbidden");
      }
    }
  }
  CHECK(w.store->last_position() == before);

  // Agent routes take the agent's own key: a missing or bad key is 401 invalid_token.
  for (const std::string target : {"/v1/auth", "/v1/self", "/v1/self/webhook-deliveries"}) {
    INFO(target);
    for (const std::string& credential : {std::string(), w.manage, revoked.api_key, std::string("cg_nope")}) {
      auto res = w.get(target, credential);
      CHECK(res.status == 401);
      CHECK(header(res, "WWW-Authenticate") == kInvalidToken);
    }
    CHECK(w.get(target, key.api_key).status == 200);
    CHECK(w.get(target, "", {{"X-Api-Key", key.api_key}}).status == 200);
  }
  // /v1/auth's 401 does not say why.
  const Json why = parse(w.get("/v1/auth", revoked.api_key));
  CHECK(why.dump().find("revoked") == std::string::npos);
}

// --- bodies: 415, 400, 422 ----------------------------------------------------------------

TEST_CASE("handlers: bodies that are not JSON: 415 and 400 invalid_json", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const std::map<std::string, std::string> json = {{"Content-Type", "application/json"}};

  SECTION("415 unsupported_media_type for POST and PUT bodies that are not application/json") {
    w.expect_error(
        w.raw("POST", "/v1/agents", agent_body().dump(), w.manage, {{"Content-Type", "text/plain"}}), 415,
        "unsupported_media_type");
    w.expect_error(w.raw("POST", "/v1/agents", agent_body().dump(), w.manage), 415, "unsupported_media_type");
    w.expect_error(w.raw("POST", "/v1/verify", R"({"api_key": "x"})", w.gateway,
                         {{"Content-Type", "application/x-www-form-urlencoded"}}),
                   415, "unsupported_media_type");
    w.expect_error(w.raw("PUT", "/v1/agents/" + agent_id + "/rate-limit", R"({"tier": "elevated"})", w.manage,
                         {{"Content-Type", "text/json"}}),
                   415, "unsupported_media_type");
    // Parameters and case do not matter.
    CHECK(w.raw("POST", "/v1/agents", agent_body("Second").dump(), w.manage,
                {{"Content-Type", "Application/JSON; charset=utf-8"}})
              .status == 201);
    // The credential is checked first.
    w.expect_error(w.raw("POST", "/v1/agents", "x", "", {{"Content-Type", "text/plain"}}), 401,
                   "unauthorized");
  }

  SECTION("400 invalid_json for malformed JSON and the wrong top-level type") {
    for (const std::string body :
         {"{nope", "{\"name\": ", "[1,2", "nul", "\"just a string\"", "42", "[]", "{\"a\":1}{\"b\":2}"}) {
      INFO(body);
      w.expect_error(w.raw("POST", "/v1/agents", body, w.manage, json), 400, "invalid_json");
      w.expect_error(w.raw("POST", "/v1/verify", body, w.gateway, json), 400, "invalid_json");
    }
    w.expect_error(w.raw("POST", "/v1/leaks", R"({"token": "cg_x"})", w.scanner, json), 400, "invalid_json");
    w.expect_error(w.raw("POST", "/v1/leaks", R"([1, 2])", w.scanner, json), 400, "invalid_json");
  }

  SECTION("400 invalid_json for wrong field types") {
    struct Case {
      std::string target;
      Json body;
      std::string credential;
    };
    const std::string keys = "/v1/agents/" + agent_id + "/keys";
    const std::string k = "/v1/keys/" + key.key_id;
    const std::vector<Case> cases = {
        {"/v1/agents", {{"name", 5}}, w.manage},
        {"/v1/agents", {{"skills", "pdf"}}, w.manage},
        {"/v1/agents", {{"skills", {"pdf", 7}}}, w.manage},
        {"/v1/agents", {{"languages", {{"en", true}}}}, w.manage},
        {"/v1/agents", {{"webhook_url", Json::array()}}, w.manage},
        {"/v1/agents", {{"environment", false}}, w.manage},
        {keys, {{"label", 5}}, w.manage},
        {keys, {{"expires_in_seconds", "soon"}}, w.manage},
        {keys, {{"expires_in_seconds", 1.5}}, w.manage},
        {k + "/rotate", {{"old_key_expires_in_seconds", true}}, w.manage},
        {k + "/rotate", {{"label", {{"a", 1}}}}, w.manage},
        {k + "/revoke", {{"reason", 3}}, w.manage},
        {k + "/compromise", {{"replace", "yes"}}, w.manage},
        {k + "/compromise", {{"note", 1}}, w.manage},
        {"/v1/verify", {{"api_key", 12}}, w.gateway},
        {"/v1/verify", {{"api_key", key.api_key}, {"cost", "1"}}, w.gateway},
        {"/v1/tokens", {{"name", "x"}, {"scopes", "manage"}}, w.admin},
        {"/v1/leaks", Json::array({{{"token", 1}, {"type", "clawgig_api_key"}}}), w.scanner},
    };
    const auto before = w.store->last_position();
    for (const auto& c : cases) {
      INFO(c.target << " " << c.body.dump());
      w.expect_error(w.post(c.target, c.body, c.credential), 400, "invalid_json");
    }
    w.expect_error(w.call("PUT", "/v1/agents/" + agent_id + "/rate-limit", Json{{"tier", 5}}, w.manage), 400,
                   "invalid_json");
    CHECK(w.store->last_position() == before);
  }

  SECTION("an empty body is an empty object") {
    CHECK(w.raw("POST", "/v1/agents/" + agent_id + "/keys", "", w.manage).status == 201);
  }
}

TEST_CASE("handlers: 422 validation_failed lists every broken field", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const auto before = w.store->last_position();

  SECTION("agent profile") {
    Json broken = agent_body();
    broken["name"] = "";
    broken["description"] = "too short";
    broken["skills"] = Json::array();
    broken["languages"] = {"en", "en", ""};
    broken["webhook_url"] = "http://agent.example.com/hooks";
    broken["environment"] = "prod";
    broken["owner_id"] = std::string(129, 'o');
    const Json body = w.expect_error(w.post("/v1/agents", broken, w.manage), 422, "validation_failed");
    CHECK(detail_fields(body) == std::set<std::string>{"name", "description", "skills", "languages[1]",
                                                       "languages[2]", "webhook_url", "environment",
                                                       "owner_id"});
    for (const auto& d : body["error"]["details"]) {
      CHECK(d["message"].is_string());
      CHECK_FALSE(d["message"].get<std::string>().empty());
    }
    Json long_name = agent_body(std::string(101, 'n'));
    long_name["description"] = std::string(2001, 'd');
    long_name["skills"] = Json::array();
    for (int i = 0; i < 51; ++i) {
      long_name["skills"].push_back("skill-" + std::to_string(i));
    }
    long_name["languages"] = {std::string(65, 'l')};
    long_name["webhook_url"] = "not a url";
    CHECK(
        detail_fields(w.expect_error(w.post("/v1/agents", long_name, w.manage), 422, "validation_failed")) ==
        std::set<std::string>{"name", "description", "skills", "languages[0]", "webhook_url"});
    // Missing required fields are broken fields too.
    CHECK(detail_fields(
              w.expect_error(w.post("/v1/agents", Json::object(), w.manage), 422, "validation_failed")) ==
          std::set<std::string>{"name", "description", "skills", "languages", "webhook_url"});
  }

  SECTION("unknown fields are rejected, every one named") {
    Json typo = agent_body();
    typo["nickname"] = "x";
    typo["skils"] = {"pdf"};
    const Json body = w.expect_error(w.post("/v1/agents", typo, w.manage), 422, "validation_failed");
    CHECK(detail_fields(body) == std::set<std::string>{"nickname", "skils"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/agents/" + agent_id + "/keys", {{"label", "a"}, {"expires_in", 60}}, w.manage), 422,
              "validation_failed")) == std::set<std::string>{"expires_in"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/keys/" + key.key_id + "/rotate", {{"old_key_expires_in", 0}}, w.manage), 422,
              "validation_failed")) == std::set<std::string>{"old_key_expires_in"});
    CHECK(
        detail_fields(w.expect_error(w.post("/v1/keys/" + key.key_id + "/revoke", {{"reson", "x"}}, w.manage),
                                     422, "validation_failed")) == std::set<std::string>{"reson"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/keys/" + key.key_id + "/compromise", {{"replace", true}, {"notes", "x"}}, w.manage),
              422, "validation_failed")) == std::set<std::string>{"notes"});
    CHECK(
        detail_fields(w.expect_error(w.post("/v1/verify", {{"api_key", key.api_key}, {"kost", 1}}, w.gateway),
                                     422, "validation_failed")) == std::set<std::string>{"kost"});
    CHECK(detail_fields(w.expect_error(w.call("PUT", "/v1/agents/" + agent_id + "/rate-limit",
                                              Json{{"tier", "elevated"}, {"teir", "x"}}, w.manage),
                                       422, "validation_failed")) == std::set<std::string>{"teir"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/tokens", {{"name", "x"}, {"scopes", {"verify"}}, {"scope", 1}}, w.admin), 422,
              "validation_failed")) == std::set<std::string>{"scope"});
    CHECK(w.store->last_position() == before);
  }

  SECTION("keys") {
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/agents/" + agent_id + "/keys",
                     {{"label", std::string(101, 'l')}, {"expires_in_seconds", 0}}, w.manage),
              422, "validation_failed")) == std::set<std::string>{"label", "expires_in_seconds"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/agents/" + agent_id + "/keys", {{"expires_in_seconds", -5}}, w.manage), 422,
              "validation_failed")) == std::set<std::string>{"expires_in_seconds"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/keys/" + key.key_id + "/rotate",
                     {{"label", std::string(101, 'l')}, {"old_key_expires_in_seconds", 604801}}, w.manage),
              422, "validation_failed")) == std::set<std::string>{"label", "old_key_expires_in_seconds"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/keys/" + key.key_id + "/rotate", {{"old_key_expires_in_seconds", -1}}, w.manage),
              422, "validation_failed")) == std::set<std::string>{"old_key_expires_in_seconds"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/keys/" + key.key_id + "/revoke", {{"reason", std::string(201, 'r')}}, w.manage),
              422, "validation_failed")) == std::set<std::string>{"reason"});
    CHECK(detail_fields(w.expect_error(
              w.post("/v1/keys/" + key.key_id + "/compromise",
                     {{"note", std::string(2001, 'n')}, {"source", std::string(201, 's')}}, w.manage),
              422, "validation_failed")) == std::set<std::string>{"note", "source"});
    CHECK(detail_fields(w.expect_error(w.get("/v1/agents/" + agent_id + "/keys?status=dead", w.manage), 422,
                                       "validation_failed")) == std::set<std::string>{"status"});
    CHECK(w.store->last_position() == before);
  }

  SECTION("verification, tokens, leaks, X-Actor") {
    CHECK(detail_fields(
              w.expect_error(w.post("/v1/verify", {{"api_key", key.api_key}, {"cost", 1001}}, w.gateway), 422,
                             "validation_failed")) == std::set<std::string>{"cost"});
    CHECK(detail_fields(
              w.expect_error(w.post("/v1/verify", {{"api_key", key.api_key}, {"cost", -1}}, w.gateway), 422,
                             "validation_failed")) == std::set<std::string>{"cost"});
    CHECK(detail_fields(
              w.expect_error(w.post("/v1/tokens", {{"name", ""}, {"scopes", {"root", "verify"}}}, w.admin),
                             422, "validation_failed")) == std::set<std::string>{"name", "scopes[0]"});
    CHECK(detail_fields(w.expect_error(w.post("/v1/tokens", Json::object(), w.admin), 422,
                                       "validation_failed")) == std::set<std::string>{"name", "scopes"});
    Json many = Json::array();
    for (int i = 0; i < 101; ++i) {
      many.push_back({{"token", "cg_nope"}, {"type", "clawgig_api_key"}});
    }
    w.expect_error(w.post("/v1/leaks", many, w.scanner), 422, "validation_failed");
    CHECK(
        detail_fields(w.expect_error(
            w.post("/v1/leaks", Json::array({{{"type", "clawgig_api_key"}}, {{"token", "cg_x"}}}), w.scanner),
            422, "validation_failed")) == std::set<std::string>{"[0].token"});
    CHECK(detail_fields(w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage,
                                              {{"X-Actor", std::string(129, 'a')}}),
                                       422, "validation_failed")) == std::set<std::string>{"X-Actor"});
    CHECK(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage,
                 {{"X-Actor", std::string(128, 'a')}})
              .status == 201);
  }
}

// --- agents and keys ----------------------------------------------------------------------

TEST_CASE("handlers: agents are registered, read, and missing ones are agent_not_found", "[handlers]") {
  World w;
  auto res = w.post("/v1/agents", agent_body(), w.manage);
  REQUIRE(res.status == 201);
  const Json agent = parse(res);
  const std::string agent_id = agent["agent_id"].get<std::string>();
  CHECK(agent_id.rfind("agt_", 0) == 0);
  CHECK(agent["name"] == "Invoice Parser");
  CHECK(agent["description"] == "Extracts line items from PDF invoices.");
  CHECK(agent["skills"] == Json({"pdf", "extraction"}));
  CHECK(agent["languages"] == Json({"en", "de"}));
  CHECK(agent["webhook_url"] == "https://agent.example.com/hooks/clawgig");
  CHECK(agent["environment"] == "production");
  CHECK(agent["owner_id"] == "usr_123");
  CHECK(agent["rate_limit_tier"] == "standard");
  CHECK(agent["created_at"] == "2026-11-26T10:00:00Z");
  const std::string secret = agent["webhook_secret"].get<std::string>();
  CHECK(secret.rfind("whsec_", 0) == 0);

  auto got = w.get("/v1/agents/" + agent_id, w.auditor);
  REQUIRE(got.status == 200);
  const Json read = parse(got);
  CHECK(read["agent_id"] == agent_id);
  CHECK(read["active_key_count"] == 0);
  CHECK_FALSE(read.contains("webhook_secret"));
  CHECK(got.body.find(secret) == std::string::npos);
  CHECK(w.get("/v1/agents/" + agent_id, w.manage).status == 200);

  // Defaults: production, no owner.
  Json minimal = agent_body("Minimal");
  minimal.erase("environment");
  minimal.erase("owner_id");
  const Json m = parse(w.post("/v1/agents", minimal, w.manage));
  CHECK(m["environment"] == "production");
  CHECK(m["owner_id"].is_null());
  Json staging = agent_body("Staging");
  staging["environment"] = "staging";
  const Json s = parse(w.post("/v1/agents", staging, w.manage));
  REQUIRE(s.contains("agent_id"));
  const auto skey = w.create_key(s["agent_id"].get<std::string>());
  CHECK(w.verify(skey.api_key)["environment"] == "staging");
  CHECK(header(w.get("/v1/auth", skey.api_key), "X-Agent-Environment") == "staging");

  const std::string missing = "agt_000000000000000000000000";
  w.expect_error(w.get("/v1/agents/" + missing, w.manage), 404, "agent_not_found");
  w.expect_error(w.get("/v1/agents/" + missing + "/keys", w.manage), 404, "agent_not_found");
  w.expect_error(w.post("/v1/agents/" + missing + "/keys", Json::object(), w.manage), 404, "agent_not_found");
  w.expect_error(w.call("PUT", "/v1/agents/" + missing + "/rate-limit", Json{{"tier", "elevated"}}, w.manage),
                 404, "agent_not_found");
  w.expect_error(w.get("/v1/agents/" + missing + "/webhook-deliveries", w.auditor), 404, "agent_not_found");
  w.expect_error(w.get("/v1/agents/not-even-an-id", w.manage), 404, "agent_not_found");
}

TEST_CASE("handlers: keys are created once, listed, read, and missing ones are key_not_found", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  w.clock.advance(5s);
  auto res = w.post("/v1/agents/" + agent_id + "/keys",
                    {{"label", "prod-2026-11"}, {"expires_in_seconds", 7776000}}, w.manage);
  REQUIRE(res.status == 201);
  const Json created = parse(res);
  const std::string api_key = created["api_key"].get<std::string>();
  const Json key = created["key"];
  const std::string key_id = key["key_id"].get<std::string>();
  CHECK(api_key.size() == 35);
  CHECK(api_key.rfind("cg_", 0) == 0);
  CHECK(std::all_of(api_key.begin() + 3, api_key.end(),
                    [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }));
  CHECK(key_id.rfind("key_", 0) == 0);
  CHECK(key["agent_id"] == agent_id);
  CHECK(key["label"] == "prod-2026-11");
  CHECK(key["hint"] == api_key.substr(0, 7) + "\xE2\x80\xA6" + api_key.substr(api_key.size() - 4));
  CHECK(key["status"] == "active");
  CHECK(key["created_at"] == "2026-11-26T10:00:05Z");
  CHECK(key["expires_at"] == "2027-02-24T10:00:05Z");
  for (const char* field :
       {"revoked_at", "revocation_reason", "rotated_from", "rotated_to", "compromised_at", "last_used_at"}) {
    INFO(field);
    REQUIRE(key.contains(field));
    CHECK(key[field].is_null());
  }

  // The full key is never shown again.
  for (const auto& again :
       {w.get("/v1/keys/" + key_id, w.auditor), w.get("/v1/agents/" + agent_id + "/keys", w.manage),
        w.get("/v1/audit", w.auditor), w.get("/v1/keys/due-for-rotation?older_than_days=0", w.manage)}) {
    CHECK(again.status == 200);
    CHECK(again.body.find(api_key) == std::string::npos);
    CHECK(again.body.find(api_key.substr(3)) == std::string::npos);
    CHECK(again.body.find("digest") == std::string::npos);
  }
  const Json read = parse(w.get("/v1/keys/" + key_id, w.auditor));
  CHECK(read["key_id"] == key_id);
  CHECK(read["hint"] == key["hint"]);
  CHECK(read["last_used_at"].is_null());

  // last_used_at follows a successful verification.
  w.clock.advance(10s);
  CHECK(w.code_of(api_key) == "VALID");
  CHECK(parse(w.get("/v1/keys/" + key_id, w.auditor))["last_used_at"] == "2026-11-26T10:00:15Z");

  const auto second = w.create_key(agent_id);
  CHECK(second.key["label"].is_null());
  CHECK(second.key["expires_at"].is_null());
  REQUIRE(w.post("/v1/keys/" + second.key_id + "/revoke", {{"reason", "not needed"}}, w.manage).status ==
          200);
  const Json all = parse(w.get("/v1/agents/" + agent_id + "/keys", w.auditor));
  REQUIRE(all["keys"].size() == 2u);
  CHECK(all["keys"][0]["key_id"] == key_id);
  CHECK(all["keys"][1]["key_id"] == second.key_id);
  const Json active = parse(w.get("/v1/agents/" + agent_id + "/keys?status=active", w.auditor));
  REQUIRE(active["keys"].size() == 1u);
  CHECK(active["keys"][0]["key_id"] == key_id);
  const Json gone = parse(w.get("/v1/agents/" + agent_id + "/keys?status=revoked", w.auditor));
  REQUIRE(gone["keys"].size() == 1u);
  CHECK(gone["keys"][0]["key_id"] == second.key_id);
  CHECK(gone["keys"][0]["revocation_reason"] == "manual");
  CHECK(parse(w.get("/v1/agents/" + agent_id + "/keys?status=expired", w.auditor))["keys"].empty());
  CHECK(parse(w.get("/v1/agents/" + agent_id, w.auditor))["active_key_count"] == 1);

  const std::string missing = "key_000000000000000000000000";
  w.expect_error(w.get("/v1/keys/" + missing, w.auditor), 404, "key_not_found");
  w.expect_error(w.post("/v1/keys/" + missing + "/rotate", Json::object(), w.manage), 404, "key_not_found");
  w.expect_error(w.post("/v1/keys/" + missing + "/revoke", Json::object(), w.manage), 404, "key_not_found");
  w.expect_error(w.post("/v1/keys/" + missing + "/compromise", Json::object(), w.manage), 404,
                 "key_not_found");
}

TEST_CASE("handlers: an agent holds at most 10 active keys", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(w.create_key(agent_id, {{"label", "k" + std::to_string(i)}}).key_id);
  }
  const auto before = w.store->last_position();
  w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage), 409,
                 "too_many_active_keys");
  // A rotation that keeps the old key would make 11; revoking it at once does not.
  w.expect_error(w.post("/v1/keys/" + ids[0] + "/rotate", Json::object(), w.manage), 409,
                 "too_many_active_keys");
  w.expect_error(w.post("/v1/keys/" + ids[0] + "/rotate", {{"old_key_expires_in_seconds", 60}}, w.manage),
                 409, "too_many_active_keys");
  CHECK(w.store->last_position() == before);
  CHECK(w.post("/v1/keys/" + ids[0] + "/rotate", {{"old_key_expires_in_seconds", 0}}, w.manage).status ==
        201);
  CHECK(parse(w.get("/v1/agents/" + agent_id, w.manage))["active_key_count"] == 10);
  // Revoking one frees a slot.
  REQUIRE(w.post("/v1/keys/" + ids[1] + "/revoke", Json::object(), w.manage).status == 200);
  w.create_key(agent_id);
  w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage), 409,
                 "too_many_active_keys");
  // An expired key does not count, even before its KeyExpired event is written.
  REQUIRE(w.post("/v1/keys/" + ids[2] + "/revoke", Json::object(), w.manage).status == 200);
  w.create_key(agent_id, {{"expires_in_seconds", 30}});
  w.expect_error(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage), 409,
                 "too_many_active_keys");
  w.clock.advance(30s);
  CHECK(w.post("/v1/agents/" + agent_id + "/keys", Json::object(), w.manage).status == 201);
}

TEST_CASE("handlers: key_not_active and key_already_compromised", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  REQUIRE(w.post("/v1/keys/" + key.key_id + "/revoke", {{"reason", "left the team"}}, w.manage).status ==
          200);
  const auto before = w.store->last_position();
  w.expect_error(w.post("/v1/keys/" + key.key_id + "/revoke", Json::object(), w.manage), 409,
                 "key_not_active");
  w.expect_error(w.post("/v1/keys/" + key.key_id + "/rotate", Json::object(), w.manage), 409,
                 "key_not_active");
  CHECK(w.store->last_position() == before);

  // A revoked key can still be marked compromised, once.
  auto comp = w.post("/v1/keys/" + key.key_id + "/compromise",
                     {{"note", "seen in a paste"}, {"source", "support"}}, w.manage);
  REQUIRE(comp.status == 200);
  const Json c = parse(comp);
  CHECK(c["key"]["compromised_at"] == w.now_text());
  CHECK_FALSE(c.contains("replacement"));
  CHECK(w.code_of(key.api_key) == "COMPROMISED");
  w.expect_error(w.post("/v1/keys/" + key.key_id + "/compromise", Json::object(), w.manage), 409,
                 "key_already_compromised");

  // An expired key is not active either.
  const auto short_lived = w.create_key(agent_id, {{"expires_in_seconds", 10}});
  w.clock.advance(10s);
  w.expect_error(w.post("/v1/keys/" + short_lived.key_id + "/revoke", Json::object(), w.manage), 409,
                 "key_not_active");
  w.expect_error(w.post("/v1/keys/" + short_lived.key_id + "/rotate", Json::object(), w.manage), 409,
                 "key_not_active");

  // Compromising an active key with a replacement.
  const auto live = w.create_key(agent_id, {{"label", "live"}});
  auto replaced = w.post("/v1/keys/" + live.key_id + "/compromise",
                         {{"note", "pasted in chat"}, {"source", "support"}, {"replace", true}}, w.manage);
  REQUIRE(replaced.status == 200);
  const Json r = parse(replaced);
  CHECK(r["key"]["status"] == "revoked");
  CHECK(r["key"]["revocation_reason"] == "compromised");
  const std::string replacement = r["replacement"]["api_key"].get<std::string>();
  CHECK(r["replacement"]["key"]["rotated_from"] == live.key_id);
  CHECK(r["replacement"]["key"]["label"] == "live");
  CHECK(w.code_of(live.api_key) == "COMPROMISED");
  CHECK(w.code_of(replacement) == "VALID");
}

// --- verification -------------------------------------------------------------------------

TEST_CASE("handlers: POST /v1/verify answers every code with 200", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id, {{"expires_in_seconds", 3600}});
  const Json valid = w.verify(key.api_key);
  CHECK(valid["valid"] == true);
  CHECK(valid["code"] == "VALID");
  CHECK(valid["agent_id"] == agent_id);
  CHECK(valid["key_id"] == key.key_id);
  CHECK(valid["environment"] == "production");
  CHECK(valid["expires_at"] == "2026-11-26T11:00:00Z");
  CHECK(valid["ratelimit"]["limit"] == 100);
  CHECK(valid["ratelimit"]["remaining"] == 99);
  CHECK(valid["ratelimit"]["reset_ms"] == 20);
  CHECK(valid.dump().find(key.api_key) == std::string::npos);
  // cost 0 only reads the bucket.
  CHECK(w.verify(key.api_key, 0)["ratelimit"]["remaining"] == 99);
  CHECK(w.verify(key.api_key, 9)["ratelimit"]["remaining"] == 90);

  auto code = [&](const std::string& k) {
    const Json out = w.verify(k);
    CHECK(out["valid"] == (out["code"] == "VALID"));
    if (out["code"] != "VALID") {
      CHECK_FALSE(out.contains("agent_id"));
      CHECK_FALSE(out.contains("key_id"));
    }
    return out["code"].get<std::string>();
  };
  CHECK(code("cg_XYZ") == "MALFORMED");
  CHECK(code("") == "MALFORMED");
  CHECK(code("cg_" + std::string(32, 'A')) == "MALFORMED");
  CHECK(code("cg_" + std::string(33, 'a')) == "MALFORMED");
  CHECK(code(" " + key.api_key) == "MALFORMED");
  CHECK(code(w.manage) == "MALFORMED");
  CHECK(code("cg_" + std::string(32, '0')) == "NOT_FOUND");
  // Without a key there is nothing to verify: MALFORMED, still 200 (the gateway forwards
  // whatever the client sent).
  CHECK(parse(w.post("/v1/verify", Json::object(), w.gateway))["code"] == "MALFORMED");
  CHECK(parse(w.post("/v1/verify", {{"api_key", nullptr}}, w.gateway))["code"] == "MALFORMED");

  const auto revoked = w.create_key(agent_id);
  REQUIRE(w.post("/v1/keys/" + revoked.key_id + "/revoke", Json::object(), w.manage).status == 200);
  CHECK(code(revoked.api_key) == "REVOKED");
  const auto comp = w.create_key(agent_id);
  REQUIRE(w.post("/v1/keys/" + comp.key_id + "/compromise", Json::object(), w.manage).status == 200);
  CHECK(code(comp.api_key) == "COMPROMISED");
  w.clock.advance(3600s);
  CHECK(code(key.api_key) == "EXPIRED");
}

TEST_CASE("handlers: expiry is exact to the second, before and after the KeyExpired event", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id, {{"expires_in_seconds", 60}});
  const std::string expires_at = key.key["expires_at"].get<std::string>();
  CHECK(expires_at == "2026-11-26T10:01:00Z");

  w.clock.advance(59s);
  CHECK(w.code_of(key.api_key) == "VALID");
  CHECK(w.get("/v1/auth", key.api_key).status == 200);
  CHECK(w.get("/v1/self", key.api_key).status == 200);
  CHECK(parse(w.get("/v1/keys/" + key.key_id, w.manage))["status"] == "active");
  CHECK(w.commands->expire_due(100).value() == 0u);

  w.clock.advance(999ms);
  CHECK(w.code_of(key.api_key) == "VALID");

  w.clock.advance(1ms);  // exactly expires_at
  CHECK(w.code_of(key.api_key) == "EXPIRED");
  auto denied = w.get("/v1/auth", key.api_key);
  CHECK(denied.status == 401);
  CHECK(header(denied, "WWW-Authenticate") == kInvalidToken);
  const Json before_event = parse(w.get("/v1/keys/" + key.key_id, w.manage));
  CHECK(before_event["status"] == "expired");
  CHECK(before_event["revocation_reason"] == "expired");
  CHECK(parse(w.get("/v1/agents/" + agent_id, w.manage))["active_key_count"] == 0);
  CHECK(parse(w.get("/v1/agents/" + agent_id + "/keys?status=expired", w.manage))["keys"].size() == 1u);
  CHECK(parse(w.get("/v1/agents/" + agent_id + "/keys?status=active", w.manage))["keys"].empty());

  // The scheduler's command records it; nothing changes for verification.
  CHECK(w.commands->expire_due(100).value() == 1u);
  CHECK(w.commands->expire_due(100).value() == 0u);
  const Json audit = parse(w.get("/v1/audit?type=key.expired", w.auditor));
  REQUIRE(audit["events"].size() == 1u);
  CHECK(audit["events"][0]["key_id"] == key.key_id);
  CHECK(audit["events"][0]["agent_id"] == agent_id);
  CHECK(w.code_of(key.api_key) == "EXPIRED");
  CHECK(parse(w.get("/v1/keys/" + key.key_id, w.manage))["status"] == "expired");
}

TEST_CASE("handlers: rotation and the old key's overlap", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto old = w.create_key(agent_id, {{"label", "prod"}});
  w.clock.advance(1s);

  SECTION("old_key_expires_in_seconds = 0 revokes the old key at once (reason rotated)") {
    auto res = w.post("/v1/keys/" + old.key_id + "/rotate", {{"old_key_expires_in_seconds", 0}}, w.manage);
    REQUIRE(res.status == 201);
    const Json r = parse(res);
    const std::string fresh = r["api_key"].get<std::string>();
    CHECK(r["key"]["rotated_from"] == old.key_id);
    CHECK(r["key"]["label"] == "prod");
    CHECK(r["key"]["status"] == "active");
    CHECK(r["previous"]["key_id"] == old.key_id);
    CHECK(r["previous"]["rotated_to"] == r["key"]["key_id"]);
    CHECK(r["previous"]["status"] == "revoked");
    CHECK(r["previous"]["revocation_reason"] == "rotated");
    CHECK(r["previous"]["revoked_at"] == w.now_text());
    CHECK_FALSE(r["previous"].contains("api_key"));
    CHECK(w.code_of(old.api_key) == "REVOKED");
    CHECK(w.code_of(fresh) == "VALID");
    CHECK(parse(w.get("/v1/agents/" + agent_id, w.manage))["active_key_count"] == 1);
  }

  SECTION("old_key_expires_in_seconds = N keeps the old key valid for exactly N seconds") {
    auto res = w.post("/v1/keys/" + old.key_id + "/rotate",
                      {{"old_key_expires_in_seconds", 300}, {"label", "next"}}, w.manage);
    REQUIRE(res.status == 201);
    const Json r = parse(res);
    const std::string fresh = r["api_key"].get<std::string>();
    CHECK(r["key"]["label"] == "next");
    CHECK(r["previous"]["status"] == "active");
    CHECK(r["previous"]["expires_at"] == format_rfc3339(w.clock.now() + 300s));
    CHECK(r["previous"]["rotated_to"] == r["key"]["key_id"]);
    CHECK(w.code_of(old.api_key) == "VALID");
    w.clock.advance(299s);
    CHECK(w.code_of(old.api_key) == "VALID");
    w.clock.advance(1s);
    CHECK(w.code_of(old.api_key) == "EXPIRED");
    CHECK(w.code_of(fresh) == "VALID");
    CHECK(parse(w.get("/v1/keys/" + old.key_id, w.manage))["status"] == "expired");
    // Rotating again from the expired key is refused.
    w.expect_error(w.post("/v1/keys/" + old.key_id + "/rotate", Json::object(), w.manage), 409,
                   "key_not_active");
  }

  SECTION("without N both keys stay valid until the old one is revoked") {
    auto res = w.post("/v1/keys/" + old.key_id + "/rotate", Json::object(), w.manage);
    REQUIRE(res.status == 201);
    const Json r = parse(res);
    CHECK(r["previous"]["status"] == "active");
    CHECK(r["previous"]["expires_at"].is_null());
    w.clock.advance(std::chrono::hours(24 * 30));
    CHECK(w.code_of(old.api_key) == "VALID");
    CHECK(w.code_of(r["api_key"].get<std::string>()) == "VALID");
    CHECK(parse(w.get("/v1/agents/" + agent_id, w.manage))["active_key_count"] == 2);
  }

  SECTION("a rotated key with a lifetime passes it on") {
    const auto limited = w.create_key(agent_id, {{"expires_in_seconds", 1000}});
    w.clock.advance(100s);
    auto res =
        w.post("/v1/keys/" + limited.key_id + "/rotate", {{"old_key_expires_in_seconds", 5000}}, w.manage);
    REQUIRE(res.status == 201);
    const Json r = parse(res);
    CHECK(r["key"]["expires_at"] == format_rfc3339(w.clock.now() + 1000s));
    // Never later than it already would.
    CHECK(r["previous"]["expires_at"] == limited.key["expires_at"]);
  }
}

TEST_CASE("handlers: due-for-rotation lists active keys older than N days", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto old = w.create_key(agent_id, {{"label", "old"}});
  const auto old_revoked = w.create_key(agent_id, {{"label", "old-revoked"}});
  REQUIRE(w.post("/v1/keys/" + old_revoked.key_id + "/revoke", Json::object(), w.manage).status == 200);
  w.clock.advance(std::chrono::hours(24 * 10));
  const auto fresh = w.create_key(agent_id, {{"label", "fresh"}});
  // One second past whole days, so no key sits exactly on a boundary.
  w.clock.advance(std::chrono::hours(24) + 1s);

  auto ids = [&](const std::string& query) {
    auto res = w.get("/v1/keys/due-for-rotation" + query, w.auditor);
    INFO(query << " -> " << res.body);
    REQUIRE(res.status == 200);
    const Json body = parse(res);
    std::vector<std::string> out;
    for (const auto& k : body["keys"]) {
      CHECK(k["status"] == "active");
      out.push_back(k["key_id"].get<std::string>());
    }
    return out;
  };
  CHECK(ids("?older_than_days=5") == std::vector<std::string>{old.key_id});
  CHECK(ids("?older_than_days=11") == std::vector<std::string>{old.key_id});
  CHECK(ids("?older_than_days=12").empty());
  CHECK(ids("?older_than_days=0") == std::vector<std::string>{old.key_id, fresh.key_id});
  CHECK(ids("?older_than_days=1") == std::vector<std::string>{old.key_id, fresh.key_id});
  CHECK(ids("").empty());  // default 90 days
  w.clock.advance(std::chrono::hours(24 * 80));
  CHECK(ids("") == std::vector<std::string>{old.key_id});
  CHECK(w.get("/v1/keys/due-for-rotation?older_than_days=1", w.manage).status == 200);
  for (const std::string bad : {"abc", "-1", "1.5", "", "99999999999999999999"}) {
    INFO(bad);
    CHECK(detail_fields(w.expect_error(w.get("/v1/keys/due-for-rotation?older_than_days=" + bad, w.manage),
                                       422, "validation_failed")) ==
          std::set<std::string>{"older_than_days"});
  }
}

// --- rate limits --------------------------------------------------------------------------

TEST_CASE("handlers: rate limits: 429 with Retry-After and RateLimit headers, refilled by the clock",
          "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const auto epoch_s =
      std::chrono::duration_cast<std::chrono::seconds>(w.clock.now().time_since_epoch()).count();

  auto first = w.get("/v1/auth", key.api_key);
  REQUIRE(first.status == 200);
  CHECK(first.body.empty());
  CHECK(header(first, "X-Agent-Id") == agent_id);
  CHECK(header(first, "X-Key-Id") == key.key_id);
  CHECK(header(first, "X-Agent-Environment") == "production");
  CHECK(header(first, "RateLimit-Policy") == "\"standard\";q=100;w=2");
  CHECK(header(first, "RateLimit") == "\"standard\";r=99;t=1");
  CHECK(header(first, "X-RateLimit-Limit") == "100");
  CHECK(header(first, "X-RateLimit-Remaining") == "99");
  CHECK(header(first, "X-RateLimit-Reset") == std::to_string(epoch_s + 1));

  for (int i = 1; i < 100; ++i) {
    auto res = w.get(i % 2 == 0 ? "/v1/auth" : "/v1/self", key.api_key);
    REQUIRE(res.status == 200);
    CHECK(header(res, "X-RateLimit-Remaining") == std::to_string(99 - i));
  }
  auto limited = w.get("/v1/auth", key.api_key);
  w.expect_error(limited, 429, "rate_limited");
  CHECK(header(limited, "Retry-After") == "1");
  CHECK(header(limited, "RateLimit-Policy") == "\"standard\";q=100;w=2");
  CHECK(header(limited, "RateLimit") == "\"standard\";r=0;t=2");
  CHECK(header(limited, "X-RateLimit-Remaining") == "0");
  CHECK(header(limited, "X-RateLimit-Limit") == "100");
  w.expect_error(w.get("/v1/self", key.api_key), 429, "rate_limited");
  w.expect_error(w.get("/v1/self/webhook-deliveries", key.api_key), 429, "rate_limited");
  const Json v = w.verify(key.api_key);
  CHECK(v["valid"] == false);
  CHECK(v["code"] == "RATE_LIMITED");
  CHECK(v["retry_after_seconds"] == 1);
  CHECK(v["ratelimit"]["remaining"] == 0);

  // 50 tokens a second: one token after 20 ms.
  w.clock.advance(20ms);
  CHECK(w.get("/v1/auth", key.api_key).status == 200);
  CHECK(w.get("/v1/auth", key.api_key).status == 429);
  // A cost the bucket cannot hold yet: Retry-After counts the wait for all of it.
  w.clock.advance(1s);
  const Json big = w.verify(key.api_key, 100);
  CHECK(big["code"] == "RATE_LIMITED");
  CHECK(big["retry_after_seconds"] == 1);
  w.clock.advance(1s);
  const Json full = w.verify(key.api_key, 100);
  CHECK(full["code"] == "VALID");
  CHECK(full["ratelimit"]["remaining"] == 0);
  // Buckets are per key: another key of the same agent is untouched.
  const auto other = w.create_key(agent_id);
  CHECK(header(w.get("/v1/auth", other.api_key), "X-RateLimit-Remaining") == "99");
  // A cost over the burst can never pass: it is refused as such (422), not rate limited.
  w.clock.advance(10s);
  CHECK(detail_fields(
            w.expect_error(w.post("/v1/verify", {{"api_key", other.api_key}, {"cost", 101}}, w.gateway), 422,
                           "validation_failed")) == std::set<std::string>{"cost"});
  CHECK(w.verify(other.api_key, 100)["code"] == "VALID");
}

TEST_CASE("handlers: PUT rate-limit sets the agent's tier", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  CHECK(header(w.get("/v1/auth", key.api_key), "RateLimit-Policy") == "\"standard\";q=100;w=2");
  const std::string target = "/v1/agents/" + agent_id + "/rate-limit";
  const auto before = w.store->last_position();
  CHECK(detail_fields(w.expect_error(w.call("PUT", target, Json{{"tier", "platinum"}}, w.manage), 422,
                                     "validation_failed")) == std::set<std::string>{"tier"});
  CHECK(detail_fields(w.expect_error(w.call("PUT", target, Json::object(), w.manage), 422,
                                     "validation_failed")) == std::set<std::string>{"tier"});
  CHECK(w.store->last_position() == before);

  auto res = w.call("PUT", target, Json{{"tier", "elevated"}}, w.manage, {{"X-Actor", "alice@example.com"}});
  REQUIRE(res.status == 200);
  CHECK(parse(res)["rate_limit_tier"] == "elevated");
  CHECK(parse(res)["agent_id"] == agent_id);
  CHECK(parse(w.get("/v1/agents/" + agent_id, w.auditor))["rate_limit_tier"] == "elevated");

  auto auth = w.get("/v1/auth", key.api_key);
  REQUIRE(auth.status == 200);
  CHECK(header(auth, "RateLimit-Policy") == "\"elevated\";q=1000;w=2");
  CHECK(header(auth, "X-RateLimit-Limit") == "1000");
  CHECK(header(auth, "RateLimit").rfind("\"elevated\";r=", 0) == 0);
  CHECK(w.verify(key.api_key)["ratelimit"]["limit"] == 1000);
  const auto later = w.create_key(agent_id);
  CHECK(header(w.get("/v1/auth", later.api_key), "RateLimit-Policy") == "\"elevated\";q=1000;w=2");
  // The elevated burst really is there.
  w.clock.advance(5s);
  CHECK(w.verify(later.api_key, 1000)["code"] == "VALID");

  const Json audit = parse(w.get("/v1/audit?type=agent.rate_limit_changed", w.auditor));
  REQUIRE(audit["events"].size() == 1u);
  CHECK(audit["events"][0]["agent_id"] == agent_id);
  CHECK(audit["events"][0]["data"]["tier"] == "elevated");
  CHECK(audit["events"][0]["data"]["previous_tier"] == "standard");
  CHECK(audit["events"][0]["actor"].get<std::string>().find("alice@example.com") != std::string::npos);

  // And back.
  REQUIRE(w.call("PUT", target, Json{{"tier", "standard"}}, w.manage).status == 200);
  CHECK(header(w.get("/v1/auth", key.api_key), "RateLimit-Policy") == "\"standard\";q=100;w=2");
}

// --- idempotency --------------------------------------------------------------------------

TEST_CASE("handlers: commands without Idempotency-Key are answered later, like any other", "[handlers]") {
  World w;
  const auto execution = [&](const std::string& method, const std::string& path, bool idempotency_key) {
    http::Request req;  // a request remembers its route: one per question
    req.method = method;
    req.path = path;
    if (idempotency_key) {
      req.headers.set("Idempotency-Key", "k");
    }
    return w.api->execution(req);
  };
  using E = Dispatcher::Execution;
  CHECK(execution("POST", "/v1/agents", false) == E::kLater);
  CHECK(execution("POST", "/v1/agents", true) == E::kWorker);  // its lock is held across the command
  for (const char* path : {"/v1/agents/agt_1/keys", "/v1/keys/key_1/rotate", "/v1/keys/key_1/revoke",
                           "/v1/keys/key_1/compromise"}) {
    CHECK(execution("POST", path, false) == E::kLater);
    CHECK(execution("POST", path, true) == E::kWorker);
  }
  CHECK(execution("PUT", "/v1/agents/agt_1/rate-limit", false) == E::kWorker);
  CHECK(execution("POST", "/v1/leaks", false) == E::kWorker);
  CHECK(execution("GET", "/v1/auth", false) == E::kInline);
  CHECK(execution("GET", "/v1/nothing", false) == E::kInline);  // the router's 404

  // Answered from the store's syncer: the 201 with the secret once, the agent readable at once.
  const int before = w.answered_later;
  auto res = w.post("/v1/agents", agent_body("Later Agent"), w.manage);
  CHECK(w.answered_later == before + 1);
  REQUIRE(res.status == 201);
  const Json created = parse(res);
  CHECK(created["webhook_secret"].is_string());
  CHECK(parse(w.get("/v1/agents/" + created["agent_id"].get<std::string>(), w.manage))["name"] ==
        "Later Agent");
  // Refusals come the same way, before anything is appended.
  const std::uint64_t logged = w.store->last_position();
  w.expect_error(w.post("/v1/agents", Json{{"name", "x"}}, w.manage), 422, "validation_failed");
  w.expect_error(w.post("/v1/agents", agent_body("No Scope"), w.auditor), 403, "forbidden");
  w.expect_error(w.post("/v1/agents", agent_body("No Token"), ""), 401, "unauthorized");
  CHECK(w.answered_later == before + 4);
  CHECK(w.store->last_position() == logged);
}

TEST_CASE("handlers: Idempotency-Key replays the first response without its secret", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const std::string keys = "/v1/agents/" + agent_id + "/keys";

  SECTION("key creation") {
    const std::map<std::string, std::string> idem = {{"Idempotency-Key", "create-1"}};
    auto first = w.post(keys, {{"label", "a"}}, w.manage, idem);
    REQUIRE(first.status == 201);
    CHECK_FALSE(first.headers.get("Idempotent-Replayed").has_value());
    const Json a = parse(first);
    REQUIRE(a.contains("api_key"));
    const auto position = w.store->last_position();
    w.clock.advance(std::chrono::hours(23));
    auto second = w.post(keys, {{"label", "a"}}, w.manage, idem);
    CHECK(second.status == 201);
    CHECK(header(second, "Idempotent-Replayed") == "true");
    const Json b = parse(second);
    CHECK(b["key"]["key_id"] == a["key"]["key_id"]);
    CHECK(b["key"]["created_at"] == a["key"]["created_at"]);
    CHECK_FALSE(b.contains("api_key"));
    CHECK(second.body.find(a["api_key"].get<std::string>()) == std::string::npos);
    CHECK(w.store->last_position() == position);
    CHECK(parse(w.get("/v1/agents/" + agent_id, w.manage))["active_key_count"] == 1);

    auto reused = w.post(keys, {{"label", "b"}}, w.manage, idem);
    w.expect_error(reused, 422, "idempotency_key_reused");
    CHECK(w.store->last_position() == position);
    // Another key, or no key, makes a new resource.
    CHECK(parse(w.post(keys, {{"label", "a"}}, w.manage,
                       {{"Idempotency-Key", "create-2"}}))["key"]["key_id"] != a["key"]["key_id"]);
    CHECK(parse(w.post(keys, {{"label", "a"}}, w.manage))["key"]["key_id"] != a["key"]["key_id"]);
    // The same key on another route is another request.
    const std::string other = w.register_agent("Other");
    CHECK(w.post("/v1/agents/" + other + "/keys", {{"label", "a"}}, w.manage, idem).status == 201);
  }

  SECTION("a replayed revoke answers 200 again, not key_not_active") {
    const auto key = w.create_key(agent_id);
    const std::map<std::string, std::string> idem = {{"Idempotency-Key", "revoke-" + key.key_id}};
    const std::string target = "/v1/keys/" + key.key_id + "/revoke";
    auto first = w.post(target, {{"reason", "x"}}, w.manage, idem);
    REQUIRE(first.status == 200);
    const auto position = w.store->last_position();
    auto again = w.post(target, {{"reason", "x"}}, w.manage, idem);
    CHECK(again.status == 200);
    CHECK(header(again, "Idempotent-Replayed") == "true");
    CHECK(parse(again) == parse(first));
    CHECK(w.store->last_position() == position);
    w.expect_error(w.post(target, {{"reason", "x"}}, w.manage), 409, "key_not_active");
  }

  SECTION("registration and token creation do not repeat their secrets") {
    const std::map<std::string, std::string> idem = {{"Idempotency-Key", "agent-1"}};
    const Json a = parse(w.post("/v1/agents", agent_body("Once"), w.manage, idem));
    REQUIRE(a.contains("webhook_secret"));
    auto b = w.post("/v1/agents", agent_body("Once"), w.manage, idem);
    CHECK(b.status == 201);
    CHECK(header(b, "Idempotent-Replayed") == "true");
    CHECK(parse(b)["agent_id"] == a["agent_id"]);
    CHECK_FALSE(parse(b).contains("webhook_secret"));

    const Json body = {{"name", "gw"}, {"scopes", {"verify"}}};
    const Json t1 = parse(w.post("/v1/tokens", body, w.admin, {{"Idempotency-Key", "tok-1"}}));
    REQUIRE(t1.contains("token"));
    auto t2 = w.post("/v1/tokens", body, w.admin, {{"Idempotency-Key", "tok-1"}});
    CHECK(t2.status == 201);
    CHECK(parse(t2)["token_id"] == t1["token_id"]);
    CHECK_FALSE(parse(t2).contains("token"));
    CHECK(t2.body.find(t1["token"].get<std::string>()) == std::string::npos);
    CHECK(parse(w.get("/v1/tokens", w.admin))["tokens"].size() == 6u);
  }

  SECTION("rotation and compromise replay too") {
    const auto key = w.create_key(agent_id);
    const std::map<std::string, std::string> idem = {{"Idempotency-Key", "rot"}};
    const Json r1 = parse(w.post("/v1/keys/" + key.key_id + "/rotate", Json::object(), w.manage, idem));
    const Json r2 = parse(w.post("/v1/keys/" + key.key_id + "/rotate", Json::object(), w.manage, idem));
    CHECK(r2["key"]["key_id"] == r1["key"]["key_id"]);
    CHECK_FALSE(r2.contains("api_key"));
    const std::map<std::string, std::string> cidem = {{"Idempotency-Key", "comp"}};
    const Json body = {{"replace", true}};
    const Json c1 = parse(w.post("/v1/keys/" + key.key_id + "/compromise", body, w.manage, cidem));
    REQUIRE(c1["replacement"].contains("api_key"));
    const Json c2 = parse(w.post("/v1/keys/" + key.key_id + "/compromise", body, w.manage, cidem));
    CHECK(c2["replacement"]["key"]["key_id"] == c1["replacement"]["key"]["key_id"]);
    CHECK_FALSE(c2["replacement"].contains("api_key"));
  }

  SECTION("a repeated leak report replays its first answer") {
    const auto key = w.create_key(agent_id);
    const Json report =
        Json::array({{{"token", key.api_key}, {"type", "clawgig_api_key"}, {"source", "content"}}});
    const std::map<std::string, std::string> idem = {{"Idempotency-Key", "leak-1"}};
    auto first = w.post("/v1/leaks", report, w.scanner, idem);
    REQUIRE(first.status == 200);
    CHECK(parse(first)[0]["result"] == "revoked");
    const auto position = w.store->last_position();
    auto again = w.post("/v1/leaks", report, w.scanner, idem);
    CHECK(again.status == 200);
    CHECK(header(again, "Idempotent-Replayed") == "true");
    CHECK(parse(again) == parse(first));
    CHECK(w.store->last_position() == position);
    w.expect_error(w.post("/v1/leaks", Json::array(), w.scanner, idem), 422, "idempotency_key_reused");
  }

  SECTION("the key's length is limited") {
    w.expect_error(w.post(keys, Json::object(), w.manage, {{"Idempotency-Key", std::string(256, 'k')}}), 422,
                   "validation_failed");
    CHECK(w.post(keys, Json::object(), w.manage, {{"Idempotency-Key", std::string(255, 'k')}}).status == 201);
  }
}

// --- service tokens -----------------------------------------------------------------------

TEST_CASE("handlers: service tokens: create, list without secrets, revoke at once", "[handlers]") {
  World w;
  auto res = w.post("/v1/tokens", {{"name", "gateway-us"}, {"scopes", {"verify", "audit"}}}, w.admin);
  REQUIRE(res.status == 201);
  const Json created = parse(res);
  const std::string token = created["token"].get<std::string>();
  const std::string token_id = created["token_id"].get<std::string>();
  CHECK(token.rfind("kls_", 0) == 0);
  CHECK(token.size() >= 4 + 43);
  CHECK(token_id.rfind("tok_", 0) == 0);
  CHECK(created["name"] == "gateway-us");
  CHECK(created["scopes"] == Json({"verify", "audit"}));
  CHECK(created["created_at"] == w.now_text());

  auto list = w.get("/v1/tokens", w.admin);
  REQUIRE(list.status == 200);
  const Json tokens = parse(list);
  CHECK(tokens["tokens"].size() == 6u);
  for (const auto& secret : {token, w.admin, w.manage, w.auditor, w.gateway, w.scanner}) {
    CHECK(list.body.find(secret) == std::string::npos);
    CHECK(list.body.find(secret.substr(4)) == std::string::npos);
  }
  CHECK(list.body.find("digest") == std::string::npos);
  bool found = false;
  for (const auto& t : tokens["tokens"]) {
    CHECK_FALSE(t.contains("token"));
    if (t["token_id"] == token_id) {
      found = true;
      CHECK(t["name"] == "gateway-us");
      CHECK(t["scopes"] == Json({"verify", "audit"}));
    }
  }
  CHECK(found);

  // The token works for its scopes at once.
  CHECK(w.get("/v1/audit", token).status == 200);
  CHECK(w.post("/v1/verify", {{"api_key", "cg_nope"}}, token).status == 200);
  w.expect_error(w.post("/v1/agents", agent_body(), token), 403, "forbidden");

  auto revoked = w.post("/v1/tokens/" + token_id + "/revoke", Json::object(), w.admin);
  REQUIRE(revoked.status == 200);
  CHECK(parse(revoked)["token_id"] == token_id);
  CHECK(parse(revoked)["status"] == "revoked");
  CHECK(revoked.body.find(token) == std::string::npos);
  auto after = w.get("/v1/audit", token);
  w.expect_error(after, 401, "unauthorized");
  CHECK(header(after, "WWW-Authenticate") == kRealm);
  w.expect_error(w.post("/v1/verify", {{"api_key", "cg_nope"}}, token), 401, "unauthorized");

  w.expect_error(w.post("/v1/tokens/" + token_id + "/revoke", Json::object(), w.admin), 409,
                 "token_not_active");
  w.expect_error(w.post("/v1/tokens/tok_000000000000000000000000/revoke", Json::object(), w.admin), 404,
                 "token_not_found");

  // Token events are audited without their digest; X-Actor counts only for manage callers.
  auto audit = w.get("/v1/audit?type=token.created", w.auditor);
  REQUIRE(audit.status == 200);
  CHECK(audit.body.find("digest") == std::string::npos);
  CHECK(audit.body.find(token) == std::string::npos);
  const Json created_events = parse(audit);
  CHECK(created_events["events"].size() == 6u);
  const Json revoked_events = parse(w.get("/v1/audit?type=token.revoked", w.auditor));
  REQUIRE(revoked_events["events"].size() == 1u);
  CHECK(revoked_events["events"][0]["actor"] == "ops");
  CHECK(revoked_events["events"][0]["data"]["token_id"] == token_id);
  CHECK(revoked_events["events"][0]["agent_id"].is_null());

  // An admin token can revoke itself; the next request fails.
  const Json self = parse(w.get("/v1/tokens", w.admin));
  std::string ops_id;
  for (const auto& t : self["tokens"]) {
    if (t["name"] == "ops") {
      ops_id = t["token_id"].get<std::string>();
    }
  }
  REQUIRE_FALSE(ops_id.empty());
  REQUIRE(
      w.post("/v1/tokens/" + ops_id + "/revoke", Json::object(), w.admin, {{"X-Actor", "ignored"}}).status ==
      200);
  w.expect_error(w.get("/v1/tokens", w.admin), 401, "unauthorized");
  const Json last = parse(w.get("/v1/audit?type=token.revoked&order=desc&limit=1", w.auditor));
  CHECK(last["events"][0]["actor"] == "ops");
}

TEST_CASE("handlers: GET /v1/tokens/self answers the caller's own entry of GET /v1/tokens",
          "[handlers][tokens]") {
  World w;
  const std::string both = w.token("ops-and-audit", {"audit", "manage"});
  const Json listed = parse(w.get("/v1/tokens", w.admin));
  for (const auto& [name, credential] :
       std::vector<std::pair<std::string, std::string>>{{"ops", w.admin},
                                                        {"dashboard", w.manage},
                                                        {"auditor", w.auditor},
                                                        {"gateway-eu", w.gateway},
                                                        {"scanner", w.scanner},
                                                        {"ops-and-audit", both}}) {
    INFO(name);
    const auto res = w.get("/v1/tokens/self", credential);
    REQUIRE(res.status == 200);
    CHECK(res.content_type == "application/json");
    const Json self = parse(res);
    Json entry;
    for (const auto& t : listed["tokens"]) {
      if (t["name"] == name) {
        entry = t;
      }
    }
    REQUIRE(entry.is_object());
    CHECK(self == entry);  // exactly the shape of one entry: no secret, no digest
    CHECK(self["status"] == "active");
    CHECK(res.body.find(credential) == std::string::npos);
    CHECK(res.body.find(credential.substr(4)) == std::string::npos);
    CHECK(res.body.find("digest") == std::string::npos);
    // X-Actor does not change the answer, and HEAD answers the same without a body.
    CHECK(parse(w.get("/v1/tokens/self", credential, {{"X-Actor", "alice@example.com"}})) == self);
    const auto head = w.raw("HEAD", "/v1/tokens/self", "", credential);
    CHECK(head.status == 200);
    CHECK(head.body.empty());
  }
  // It reads: nothing is appended.
  const auto before = w.store->last_position();
  CHECK(w.get("/v1/tokens/self", w.gateway).status == 200);
  CHECK(w.store->last_position() == before);

  // A revoked token is unknown at once.
  std::string both_id;
  for (const auto& t : listed["tokens"]) {
    if (t["name"] == "ops-and-audit") {
      both_id = t["token_id"].get<std::string>();
    }
  }
  REQUIRE(w.post("/v1/tokens/" + both_id + "/revoke", Json::object(), w.admin).status == 200);
  auto revoked = w.get("/v1/tokens/self", both);
  w.expect_error(revoked, 401, "unauthorized");
  CHECK(header(revoked, "WWW-Authenticate") == kRealm);
  // An agent's key is not a service token.
  const auto key = w.create_key(w.register_agent());
  w.expect_error(w.get("/v1/tokens/self", key.api_key), 403, "forbidden");
  w.expect_error(w.get("/v1/tokens/self", "", {{"X-Api-Key", key.api_key}}), 401, "unauthorized");
}

// --- actors and audit ---------------------------------------------------------------------

TEST_CASE("handlers: the actor of every event, including X-Actor", "[handlers]") {
  World w;
  const std::map<std::string, std::string> alice = {{"X-Actor", "alice@example.com"}};
  const std::string agent_id = w.register_agent("Invoice Parser", alice);
  const auto key = w.create_key(agent_id, Json::object(), alice);
  const auto plain = w.create_key(agent_id);
  REQUIRE(w.post("/v1/keys/" + key.key_id + "/revoke", Json::object(), w.manage, alice).status == 200);
  const std::string leaked_source = "github";
  auto leak = w.post("/v1/leaks",
                     Json::array({{{"token", plain.api_key},
                                   {"type", "clawgig_api_key"},
                                   {"url", "https://github.com/x/y"},
                                   {"source", leaked_source}}}),
                     w.scanner, {{"X-Actor", "mallory"}});
  REQUIRE(leak.status == 200);

  const Json audit = parse(w.get("/v1/audit?agent_id=" + agent_id, w.auditor));
  REQUIRE(audit["events"].size() == 5u);
  std::vector<std::string> actors;
  for (const auto& e : audit["events"]) {
    actors.push_back(e["actor"].get<std::string>());
  }
  for (int i : {0, 1, 3}) {
    INFO(actors[static_cast<std::size_t>(i)]);
    CHECK(actors[static_cast<std::size_t>(i)].find("dashboard") != std::string::npos);
    CHECK(actors[static_cast<std::size_t>(i)].find("alice@example.com") != std::string::npos);
  }
  CHECK(actors[2] == "dashboard");
  CHECK(actors[4] == "leak:github");
}

TEST_CASE("handlers: audit filters, orders and cursors cover every event exactly once", "[handlers]") {
  World w;
  // Two agents, keys, rotations, revocations, by two callers, a minute apart.
  const std::string carol = w.token("carol-console", {"manage"});
  std::vector<std::string> agents;
  std::vector<std::string> key_ids;
  std::string rotated_old;
  std::string rotated_new;
  TimePoint middle{};
  for (int a = 0; a < 2; ++a) {
    w.clock.advance(60s);
    agents.push_back(w.register_agent("Agent " + std::to_string(a)));
    for (int k = 0; k < 3; ++k) {
      w.clock.advance(60s);
      key_ids.push_back(w.create_key(agents.back()).key_id);
    }
    if (a == 0) {
      middle = w.clock.now() + 30s;
    }
  }
  w.clock.advance(60s);
  auto rot = w.post("/v1/keys/" + key_ids[0] + "/rotate", {{"old_key_expires_in_seconds", 0}}, carol);
  REQUIRE(rot.status == 201);
  rotated_old = key_ids[0];
  rotated_new = parse(rot)["key"]["key_id"].get<std::string>();
  w.clock.advance(60s);
  REQUIRE(w.post("/v1/keys/" + key_ids[4] + "/revoke", Json::object(), carol).status == 200);
  w.clock.advance(60s);
  REQUIRE(
      w.call("PUT", "/v1/agents/" + agents[1] + "/rate-limit", Json{{"tier", "elevated"}}, w.manage).status ==
      200);
  const TimePoint end = w.clock.now();

  // The whole log, in one page, is every position once, ascending.
  const std::uint64_t last = w.store->last_position();
  auto full_res = w.get("/v1/audit?limit=1000", w.auditor);
  REQUIRE(full_res.status == 200);
  CHECK(full_res.body.find("digest") == std::string::npos);
  const Json full_body = parse(full_res);
  CHECK_FALSE(full_body.contains("next_cursor"));
  std::vector<Json> all;
  for (const auto& e : full_body["events"]) {
    all.push_back(e);
  }
  std::vector<std::uint64_t> expected_positions;
  for (std::uint64_t p = 1; p <= last; ++p) {
    expected_positions.push_back(p);
  }
  REQUIRE(positions_of(all) == expected_positions);
  for (const auto& e : all) {
    CHECK(e["event_id"].get<std::string>().size() == 36u);
    CHECK(e["type"].is_string());
    CHECK(e["actor"].is_string());
    CHECK(e["occurred_at"].is_string());
    CHECK(e["data"].is_object());
  }
  // Default order is ascending; the default limit is 100.
  CHECK(positions_of(w.audit_all("", 100)) == expected_positions);

  // Expected results of each filter, computed from the whole log.
  auto occurred = [](const Json& e) {
    TimePoint t;
    REQUIRE(parse_rfc3339(e["occurred_at"].get<std::string>(), t));
    return t;
  };
  using Pred = std::function<bool(const Json&)>;
  struct Filter {
    std::string query;
    Pred keep;
  };
  const std::vector<Filter> filters = {
      {"", [](const Json&) { return true; }},
      {"agent_id=" + agents[0], [&](const Json& e) { return e["agent_id"] == agents[0]; }},
      {"agent_id=" + agents[1], [&](const Json& e) { return e["agent_id"] == agents[1]; }},
      {"key_id=" + rotated_old,
       [&](const Json& e) {
         return e["key_id"] == rotated_old ||
                (e["type"] == "key.rotated" && e["data"]["new_key_id"] == rotated_old);
       }},
      {"key_id=" + rotated_new,
       [&](const Json& e) {
         return e["key_id"] == rotated_new ||
                (e["type"] == "key.rotated" && e["data"]["new_key_id"] == rotated_new);
       }},
      {"type=key.created", [](const Json& e) { return e["type"] == "key.created"; }},
      {"type=token.created", [](const Json& e) { return e["type"] == "token.created"; }},
      {"actor=carol-console", [](const Json& e) { return e["actor"] == "carol-console"; }},
      {"actor=dashboard", [](const Json& e) { return e["actor"] == "dashboard"; }},
      {"since=" + format_rfc3339(middle), [&](const Json& e) { return occurred(e) >= middle; }},
      {"until=" + format_rfc3339(middle), [&](const Json& e) { return occurred(e) <= middle; }},
      {"since=" + format_rfc3339(end), [&](const Json& e) { return occurred(e) >= end; }},
      {"agent_id=" + agents[0] + "&type=key.created",
       [&](const Json& e) { return e["agent_id"] == agents[0] && e["type"] == "key.created"; }},
      {"agent_id=" + agents[1] + "&actor=dashboard&since=" + format_rfc3339(middle) +
           "&until=" + format_rfc3339(end - 60s),
       [&](const Json& e) {
         return e["agent_id"] == agents[1] && e["actor"] == "dashboard" && occurred(e) >= middle &&
                occurred(e) <= end - 60s;
       }},
      {"type=key.revoked&actor=carol-console",
       [](const Json& e) { return e["type"] == "key.revoked" && e["actor"] == "carol-console"; }},
      {"type=key.expired", [](const Json&) { return false; }},
      {"agent_id=agt_000000000000000000000000", [](const Json&) { return false; }},
      {"actor=", [](const Json&) { return false; }},
  };
  for (const auto& f : filters) {
    std::vector<std::uint64_t> expected;
    for (const auto& e : all) {
      if (f.keep(e)) {
        expected.push_back(e["position"].get<std::uint64_t>());
      }
    }
    INFO("filter '" << f.query << "' expects " << expected.size() << " events");
    if (f.query == "agent_id=" + agents[0] || f.query.rfind("type=key.created", 0) == 0 ||
        f.query == "key_id=" + rotated_old) {
      CHECK(expected.size() >= 3u);  // the filter is not trivially empty
    }
    const std::string sep = f.query.empty() ? "" : "&";
    std::size_t pages = 0;
    CHECK(positions_of(w.audit_all(f.query + sep + "order=asc", 1000)) == expected);
    CHECK(positions_of(w.audit_all(f.query + sep + "order=asc", 2, &pages)) == expected);
    CHECK(pages == std::max<std::size_t>(1, (expected.size() + 1) / 2));
    std::vector<std::uint64_t> reversed(expected.rbegin(), expected.rend());
    CHECK(positions_of(w.audit_all(f.query + sep + "order=desc", 2, &pages)) == reversed);
    CHECK(pages == std::max<std::size_t>(1, (expected.size() + 1) / 2));
    CHECK(positions_of(w.audit_all(f.query + sep + "order=desc", 3)) == reversed);
  }
  // The key filter matches a rotation by both keys.
  const Json rotated = parse(w.get("/v1/audit?type=key.rotated", w.auditor));
  REQUIRE(rotated["events"].size() == 1u);
  CHECK(rotated["events"][0]["key_id"] == rotated_old);
  CHECK(rotated["events"][0]["data"]["new_key_id"] == rotated_new);
  CHECK(rotated["events"][0]["actor"] == "carol-console");

  // Bad queries.
  auto first_page = parse(w.get("/v1/audit?limit=2&order=asc", w.auditor));
  REQUIRE(first_page.contains("next_cursor"));
  const std::string asc_cursor = first_page["next_cursor"].get<std::string>();
  const std::vector<std::string> bad_queries = {"limit=0",
                                                "limit=1001",
                                                "limit=abc",
                                                "limit=-1",
                                                "limit=",
                                                "order=sideways",
                                                "since=yesterday",
                                                "until=2026-13-01T00:00:00Z",
                                                "cursor=not-a-cursor",
                                                "cursor=",
                                                "order=desc&cursor=" + asc_cursor,
                                                "agnet_id=x"};
  for (const std::string& bad : bad_queries) {
    INFO(bad);
    const Json body = w.expect_error(w.get("/v1/audit?" + bad, w.auditor), 422, "validation_failed");
    CHECK(detail_fields(body).size() == 1u);
  }
  CHECK(detail_fields(w.expect_error(w.get("/v1/audit?limit=0&order=up", w.auditor), 422,
                                     "validation_failed")) == std::set<std::string>{"limit", "order"});
  // A cursor stays valid with the same order.
  CHECK(w.get("/v1/audit?order=asc&limit=2&cursor=" + asc_cursor, w.auditor).status == 200);
}

TEST_CASE("handlers: audit since and until include an event at the occurred_at it is shown with",
          "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  // Events carry sub-millisecond times; occurred_at shows milliseconds.
  w.clock.advance(1500us);
  w.create_key(agent_id);
  const Json created = parse(w.get("/v1/audit?type=key.created", w.auditor));
  REQUIRE(created["events"].size() == 1u);
  const std::string shown = created["events"][0]["occurred_at"].get<std::string>();
  CHECK(shown == "2026-11-26T10:00:00.001Z");
  // A client that narrows the log to this event's own timestamp must still get it.
  CHECK(parse(w.get("/v1/audit?type=key.created&since=" + shown, w.auditor))["events"].size() == 1u);
  CHECK(parse(w.get("/v1/audit?type=key.created&until=" + shown, w.auditor))["events"].size() == 1u);
  CHECK(parse(w.get("/v1/audit?type=key.created&since=" + shown + "&until=" + shown, w.auditor))["events"]
            .size() == 1u);
  CHECK(parse(w.get("/v1/audit?until=" + shown, w.auditor))["events"].size() == w.store->last_position());
}

// --- operations, metrics, deliveries, leaks -----------------------------------------------

TEST_CASE("handlers: /healthz, /readyz and /metrics", "[handlers]") {
  World w;
  auto health = w.get("/healthz", "");
  CHECK(health.status == 200);
  CHECK(parse(health)["status"] == "ok");
  CHECK(w.get("/readyz", "").status == 200);
  w.ready = false;
  w.expect_error(w.get("/readyz", ""), 503, "not_ready");
  CHECK(w.get("/healthz", "").status == 200);
  w.ready = true;
  CHECK(w.get("/readyz", "").status == 200);
  // No credential needed, and a bad one does not hurt.
  CHECK(w.get("/healthz", "kls_garbage").status == 200);

  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  CHECK(w.code_of(key.api_key) == "VALID");
  CHECK(w.code_of(key.api_key) == "VALID");
  CHECK(w.code_of("cg_nope") == "MALFORMED");
  CHECK(w.get("/v1/auth", "cg_" + std::string(32, '1')).status == 401);
  CHECK(w.get("/v1/keys/" + key.key_id, w.manage).status == 200);

  auto metrics = w.get("/metrics", "");
  REQUIRE(metrics.status == 200);
  CHECK(metrics.content_type.rfind("text/plain", 0) == 0);
  const std::string& text = metrics.body;
  INFO(text);
  CHECK(text.find("keyledger_events_appended_total " + std::to_string(w.store->last_position()) + "\n") !=
        std::string::npos);
  CHECK(text.find("keyledger_verifications_total{code=\"VALID\"} 2\n") != std::string::npos);
  CHECK(text.find("keyledger_verifications_total{code=\"MALFORMED\"} 1\n") != std::string::npos);
  CHECK(text.find("keyledger_verifications_total{code=\"NOT_FOUND\"} 1\n") != std::string::npos);
  CHECK(text.find("keyledger_verification_duration_seconds_count 4\n") != std::string::npos);
  CHECK(text.find("# TYPE keyledger_http_requests_total counter") != std::string::npos);
  CHECK(text.find(
            "keyledger_http_requests_total{method=\"GET\",route=\"/v1/keys/{key_id}\",status=\"200\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("keyledger_http_requests_total{method=\"POST\",route=\"/v1/verify\",status=\"200\"} 3\n") !=
        std::string::npos);
  CHECK(text.find("keyledger_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"503\"} 1\n") !=
        std::string::npos);
  // Routes are patterns, never raw paths (no unbounded labels, no ids).
  CHECK(text.find(key.key_id) == std::string::npos);
  CHECK(text.find(agent_id) == std::string::npos);
  CHECK(text.find(key.api_key) == std::string::npos);
  w.get("/v1/whatever/" + key.key_id, "");
  CHECK(w.get("/metrics", "").body.find("route=\"unmatched\",status=\"404\"") != std::string::npos);
  CHECK(w.api->route_of([] {
    http::Request r;
    r.method = "POST";
    r.path = "/v1/keys/key_abc/rotate";
    return r;
  }()) == "/v1/keys/{key_id}/rotate");
  const auto route = [&](std::string method, std::string path) {
    http::Request r;
    r.method = std::move(method);
    r.path = std::move(path);
    return std::string(w.api->route_of(r));
  };
  // Literal routes are found by exact path; others, and near misses, by pattern.
  CHECK(route("GET", "/v1/keys/due-for-rotation") == "/v1/keys/due-for-rotation");
  CHECK(route("GET", "/v1/keys/key_abc") == "/v1/keys/{key_id}");
  CHECK(route("HEAD", "/v1/auth") == "/v1/auth");
  CHECK(route("GET", "//v1//auth") == "/v1/auth");
  CHECK(route("POST", "/v1/auth") == "unmatched");
  CHECK(route("GET", "/v1/tokens") == "/v1/tokens");
  CHECK(route("POST", "/v1/tokens") == "/v1/tokens");
}

TEST_CASE("handlers: webhook delivery logs answer 200 with an empty list", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  for (const auto& credential : {w.manage, w.auditor}) {
    auto res = w.get("/v1/agents/" + agent_id + "/webhook-deliveries", credential);
    REQUIRE(res.status == 200);
    const Json body = parse(res);
    REQUIRE(body["deliveries"].is_array());
    CHECK(body["deliveries"].empty());
    CHECK_FALSE(body.contains("next_cursor"));
  }
  auto self = w.get("/v1/self/webhook-deliveries?limit=10", key.api_key);
  REQUIRE(self.status == 200);
  CHECK(parse(self)["deliveries"].empty());
  CHECK(header(self, "RateLimit-Policy") == "\"standard\";q=100;w=2");
  CHECK_FALSE(header(self, "X-RateLimit-Remaining").empty());
  w.expect_error(w.get("/v1/agents/" + agent_id + "/webhook-deliveries?limit=0", w.auditor), 422,
                 "validation_failed");
  w.expect_error(w.get("/v1/agents/" + agent_id + "/webhook-deliveries?cursor=zzz", w.auditor), 422,
                 "validation_failed");
  w.expect_error(w.get("/v1/self/webhook-deliveries?limit=5000", key.api_key), 422, "validation_failed");

  auto me = w.get("/v1/self", key.api_key);
  REQUIRE(me.status == 200);
  const Json mine = parse(me);
  CHECK(mine["agent"]["agent_id"] == agent_id);
  CHECK(mine["key"]["key_id"] == key.key_id);
  CHECK_FALSE(mine["agent"].contains("webhook_secret"));
  CHECK(me.body.find(key.api_key) == std::string::npos);
  CHECK(header(me, "RateLimit-Policy") == "\"standard\";q=100;w=2");
}

TEST_CASE("handlers: POST /v1/leaks answers one result per item in order", "[handlers]") {
  World w;
  const std::string agent_id = w.register_agent();
  const auto key = w.create_key(agent_id);
  const auto revoked = w.create_key(agent_id);
  REQUIRE(w.post("/v1/keys/" + revoked.key_id + "/revoke", Json::object(), w.manage).status == 200);
  const Json report = Json::array({
      {{"token", key.api_key},
       {"type", "clawgig_api_key"},
       {"url", "https://github.com/x/y"},
       {"source", "content"}},
      {{"token", "cg_11111111111111111111111111111111"}, {"type", "clawgig_api_key"}, {"url", "https://x"}},
      {{"token", "cg_nope"}, {"type", "clawgig_api_key"}},
      {{"token", revoked.api_key}, {"type", "clawgig_api_key"}, {"source", "commit"}},
      {{"token", key.api_key}, {"type", "clawgig_api_key"}, {"source", "content"}},
  });
  auto res = w.post("/v1/leaks", report, w.scanner);
  REQUIRE(res.status == 200);
  const Json results = parse(res);
  REQUIRE(results.is_array());
  REQUIRE(results.size() == 5u);
  CHECK(results[0]["token_hash"] == sha256_hex(key.api_key));
  CHECK(results[0]["token_type"] == "clawgig_api_key");
  CHECK(results[0]["label"] == "true_positive");
  CHECK(results[0]["result"] == "revoked");
  CHECK(results[1]["label"] == "false_positive");
  CHECK(results[1]["result"] == "unknown");
  CHECK(results[2]["label"] == "false_positive");
  CHECK(results[2]["result"] == "malformed");
  CHECK(results[3]["label"] == "true_positive");
  CHECK(results[3]["result"] == "already_inactive");
  CHECK(results[4]["result"] == "already_inactive");
  for (const auto& secret : {key.api_key, revoked.api_key}) {
    CHECK(res.body.find(secret) == std::string::npos);
  }
  CHECK(w.code_of(key.api_key) == "COMPROMISED");
  const Json audit = parse(w.get("/v1/audit?type=key.compromised", w.auditor));
  REQUIRE(audit["events"].size() == 1u);
  CHECK(audit["events"][0]["actor"] == "leak:content");
  CHECK(audit["events"][0]["key_id"] == key.key_id);
  // An empty report is fine.
  auto empty = w.post("/v1/leaks", Json::array(), w.scanner);
  CHECK(empty.status == 200);
  CHECK(parse(empty) == Json::array());
}

// --- documents and dashboard ------------------------------------------------------------------

TEST_CASE("handlers: /openapi.json and the dashboard are served from the binary, without a credential",
          "[handlers][documents]") {
  World w;
  const auto document = w.get("/openapi.json", "");
  REQUIRE(document.status == 200);
  CHECK(document.content_type == "application/json");
  const Json parsed = Json::parse(document.body, nullptr, false);
  REQUIRE(parsed.is_object());
  CHECK(parsed["openapi"].get<std::string>().starts_with("3.1"));

  const auto page = w.get("/", "");
  REQUIRE(page.status == 200);
  CHECK(page.content_type.starts_with("text/html"));
  const std::string policy = header(page, "Content-Security-Policy");
  CHECK(policy.starts_with("default-src 'self'"));
  CHECK(policy.find("frame-ancestors 'none'") != std::string::npos);
  CHECK(policy.find("unsafe-inline") == std::string::npos);
  CHECK(header(page, "X-Content-Type-Options") == "nosniff");
  CHECK(header(page, "Referrer-Policy") == "no-referrer");
  // Every asset the page names is served, with the same headers and its own type.
  for (const std::string asset : {"/ui/app.js", "/ui/app.css"}) {
    INFO(asset);
    CHECK(page.body.find(asset) != std::string::npos);
    const auto res = w.get(asset, "");
    CHECK(res.status == 200);
    CHECK(header(res, "Content-Security-Policy") == policy);
  }
  CHECK(w.get("/ui/app.js", "").content_type.starts_with("text/javascript"));
}

TEST_CASE("handlers: a missing dashboard file is 404 under the dashboard's security headers",
          "[handlers][documents]") {
  World w;
  const std::string policy = header(w.get("/", ""), "Content-Security-Policy");
  REQUIRE_FALSE(policy.empty());
  for (const std::string target : {"/ui/nothing.js", "/ui/no-such-dir/x.css", "/ui/api/nothing.html"}) {
    INFO(target);
    const auto res = w.get(target, "");
    w.expect_error(res, 404, "not_found");
    CHECK(header(res, "Content-Security-Policy") == policy);
    CHECK(header(res, "X-Content-Type-Options") == "nosniff");
    CHECK(header(res, "Referrer-Policy") == "no-referrer");
    CHECK(header(res, "X-Frame-Options") == "DENY");
  }
  // What no route takes under the dashboard's paths (answered by the router) too.
  const auto deep = w.get("/ui/a/b/c.js", "");
  w.expect_error(deep, 404, "not_found");
  CHECK(header(deep, "Content-Security-Policy") == policy);
  CHECK(header(deep, "X-Content-Type-Options") == "nosniff");
  for (const std::string target : {"/", "/ui/app.js"}) {
    INFO(target);
    const auto posted = w.raw("POST", target, "", "", {});
    w.expect_error(posted, 405, "method_not_allowed");
    CHECK(header(posted, "Content-Security-Policy") == policy);
    CHECK(header(posted, "Referrer-Policy") == "no-referrer");
  }
  // The API's own 404s are JSON answers to API clients: no dashboard policy there.
  CHECK(header(w.get("/v1/nothing", ""), "Content-Security-Policy").empty());
}

TEST_CASE("handlers: --dashboard off: / and /ui/ answer 404, the API still works", "[handlers][documents]") {
  World w;
  // The API as `keyledger serve --dashboard off` wires it (api/node/primary.cpp).
  w.api = std::make_unique<Api>(ApiContext{.projector = *w.projector,
                                           .commands = *w.commands,
                                           .verifier = *w.verifier,
                                           .idempotency = *w.idempotency,
                                           .metrics = w.metrics,
                                           .clock = w.clock,
                                           .hasher = w.hasher,
                                           .ready = [] { return true; },
                                           .auth_failures = &w.auth_failures,
                                           .dashboard = false});
  for (const std::string target : {"/", "/ui/app.js", "/ui/app.css", "/ui/index.html"}) {
    INFO(target);
    const auto res = w.get(target, "");
    w.expect_error(res, 404, "not_found");
    CHECK(parse(res)["error"]["message"].get<std::string>().find("--dashboard off") != std::string::npos);
    CHECK(res.body.find("<html") == std::string::npos);
    CHECK(header(res, "X-Content-Type-Options") == "nosniff");
  }
  CHECK(w.get("/openapi.json", "").status == 200);
  CHECK(w.get("/healthz", "").status == 200);
  const std::string agent_id = w.register_agent();
  CHECK(w.get("/v1/agents/" + agent_id, w.manage).status == 200);
  CHECK(w.get("/v1/tokens/self", w.auditor).status == 200);
}

}  // namespace keyledger::api
