// The audit log over HTTP: small pages in both orders, filters combined, every event exactly
// once, and no next_cursor on the last page.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "domain/events.h"
#include "harness.h"

namespace keyledger::e2e {
namespace {

Json agent_body(const std::string& name) {
  return {{"name", name},
          {"description", "Extracts line items from PDF invoices."},
          {"skills", {"pdf", "extraction"}},
          {"languages", {"en"}},
          {"webhook_url", "https://agent.example.com/hooks/clawgig"}};
}

// Position of the last acknowledged event, from the keyledger_log_position gauge.
std::uint64_t log_position(const ServerProcess& server) {
  auto res = server.get("/metrics", "");
  REQUIRE(res.status == 200);
  std::smatch m;
  REQUIRE(std::regex_search(res.body, m, std::regex("\nkeyledger_log_position ([0-9.e+]+)\n")));
  return static_cast<std::uint64_t>(std::stod(m[1].str()));
}

struct Walk {
  std::vector<Json> events;
  std::size_t pages = 0;
};

// Follows next_cursor from the first page of `query` with `limit`, checking each page.
Walk walk(const ServerProcess& server, const std::string& token, const std::string& query,
          std::size_t limit) {
  Walk out;
  std::string cursor;
  for (int guard = 0; guard < 1000; ++guard) {
    std::string target = "/v1/audit?limit=" + std::to_string(limit) + (query.empty() ? "" : "&" + query);
    if (!cursor.empty()) {
      target += "&cursor=" + cursor;
    }
    auto res = server.get(target, token);
    INFO(target << " -> " << res.status << " " << res.body);
    REQUIRE(res.status == 200);
    const Json page = res.json();
    REQUIRE(page["events"].is_array());
    ++out.pages;
    CHECK(page["events"].size() <= limit);
    for (const auto& e : page["events"]) {
      out.events.push_back(e);
    }
    if (!page.contains("next_cursor")) {
      return out;
    }
    // A page that promises more is full.
    CHECK(page["events"].size() == limit);
    cursor = page["next_cursor"].get<std::string>();
    REQUIRE_FALSE(cursor.empty());
  }
  FAIL("the cursor never ended");
  return out;
}

std::vector<std::uint64_t> positions(const std::vector<Json>& events) {
  std::vector<std::uint64_t> out;
  for (const auto& e : events) {
    out.push_back(e["position"].get<std::uint64_t>());
  }
  return out;
}

TimePoint occurred(const Json& e) {
  TimePoint t;
  REQUIRE(parse_rfc3339(e["occurred_at"].get<std::string>(), t));
  return t;
}

}  // namespace

TEST_CASE("audit pagination covers every event exactly once in both orders", "[e2e]") {
  testing::TempDir dir;
  ServerProcess server(dir.path() / "data", {"--disable-webhooks"});
  const std::string admin = server.bootstrap_token();
  auto token = [&](const std::string& name, const std::vector<std::string>& scopes) {
    auto res = server.request("POST", "/v1/tokens", {{"name", name}, {"scopes", scopes}}, admin);
    REQUIRE(res.status == 201);
    return res.json()["token"].get<std::string>();
  };
  const std::string dashboard = token("dashboard", {"manage"});
  const std::string console = token("console", {"manage"});
  const std::string auditor = token("auditor", {"audit"});

  // Three agents; keys created, rotated and revoked by two callers, one with X-Actor.
  std::vector<std::string> agents;
  std::vector<std::string> keys;
  for (int a = 0; a < 3; ++a) {
    auto res = server.request("POST", "/v1/agents", agent_body("Agent " + std::to_string(a)), dashboard);
    REQUIRE(res.status == 201);
    agents.push_back(res.json()["agent_id"].get<std::string>());
    for (int k = 0; k < 3; ++k) {
      auto key = server.request("POST", "/v1/agents/" + agents.back() + "/keys",
                                {{"label", "k" + std::to_string(k)}}, k == 1 ? console : dashboard);
      REQUIRE(key.status == 201);
      keys.push_back(key.json()["key"]["key_id"].get<std::string>());
    }
  }
  auto rotated = server.request("POST", "/v1/keys/" + keys[0] + "/rotate",
                                {{"old_key_expires_in_seconds", 0}}, console, {{"X-Actor", "alice"}});
  REQUIRE(rotated.status == 201);
  const std::string new_key = rotated.json()["key"]["key_id"].get<std::string>();
  REQUIRE(server.request("POST", "/v1/keys/" + keys[4] + "/revoke", {{"reason", "x"}}, dashboard).status ==
          200);
  REQUIRE(
      server.request("POST", "/v1/keys/" + keys[5] + "/compromise", {{"replace", true}}, console).status ==
      200);
  REQUIRE(server.request("PUT", "/v1/agents/" + agents[2] + "/rate-limit", {{"tier", "elevated"}}, dashboard)
              .status == 200);

  // The whole log in one page: positions 1..last, once each.
  const std::uint64_t last = log_position(server);
  auto full = server.get("/v1/audit?limit=1000", auditor);
  REQUIRE(full.status == 200);
  CHECK(full.body.find("digest") == std::string::npos);
  const Json full_body = full.json();
  CHECK_FALSE(full_body.contains("next_cursor"));
  std::vector<Json> all;
  for (const auto& e : full_body["events"]) {
    all.push_back(e);
  }
  std::vector<std::uint64_t> every;
  for (std::uint64_t p = 1; p <= last; ++p) {
    every.push_back(p);
  }
  REQUIRE(positions(all) == every);
  REQUIRE(all.size() >= 20u);
  std::set<std::string> ids;
  for (const auto& e : all) {
    ids.insert(e["event_id"].get<std::string>());
  }
  CHECK(ids.size() == all.size());

  // Times for range filters: the occurred_at of events a third and two thirds in.
  const TimePoint since = occurred(all[all.size() / 3]);
  const TimePoint until = occurred(all[2 * all.size() / 3]);
  const std::string since_text = format_rfc3339(since);
  const std::string until_text = format_rfc3339(until);

  // An event's own occurred_at, used as since and until, selects it.
  for (const Json& e : {all[all.size() / 3], all[2 * all.size() / 3], all.back()}) {
    const std::string at = e["occurred_at"].get<std::string>();
    INFO("event " << e["position"] << " occurred_at " << at);
    auto res = server.get("/v1/audit?limit=1000&since=" + at + "&until=" + at, auditor);
    REQUIRE(res.status == 200);
    const Json page = res.json();
    std::set<std::uint64_t> got;
    for (const auto& x : page["events"]) {
      got.insert(x["position"].get<std::uint64_t>());
    }
    CHECK(got.count(e["position"].get<std::uint64_t>()) == 1u);
  }

  struct Filter {
    std::string query;
    std::function<bool(const Json&)> keep;
  };
  const std::vector<Filter> filters = {
      {"", [](const Json&) { return true; }},
      {"agent_id=" + agents[0], [&](const Json& e) { return e["agent_id"] == agents[0]; }},
      {"agent_id=" + agents[1] + "&type=key.created",
       [&](const Json& e) { return e["agent_id"] == agents[1] && e["type"] == "key.created"; }},
      {"actor=console", [](const Json& e) { return e["actor"] == "console"; }},
      {"actor=console&type=key.created",
       [](const Json& e) { return e["actor"] == "console" && e["type"] == "key.created"; }},
      {"key_id=" + keys[0],
       [&](const Json& e) {
         return e["key_id"] == keys[0] || (e["type"] == "key.rotated" && e["data"]["new_key_id"] == keys[0]);
       }},
      {"key_id=" + new_key + "&agent_id=" + agents[0],
       [&](const Json& e) {
         return e["agent_id"] == agents[0] &&
                (e["key_id"] == new_key ||
                 (e["type"] == "key.rotated" && e["data"]["new_key_id"] == new_key));
       }},
      {"type=token.created", [](const Json& e) { return e["type"] == "token.created"; }},
      {"since=" + since_text, [&](const Json& e) { return occurred(e) >= since; }},
      {"until=" + until_text, [&](const Json& e) { return occurred(e) <= until; }},
      {"since=" + since_text + "&until=" + until_text + "&type=key.created",
       [&](const Json& e) {
         return occurred(e) >= since && occurred(e) <= until && e["type"] == "key.created";
       }},
      {"agent_id=" + agents[2] + "&actor=dashboard&since=" + since_text,
       [&](const Json& e) {
         return e["agent_id"] == agents[2] && e["actor"] == "dashboard" && occurred(e) >= since;
       }},
      {"type=key.expired", [](const Json&) { return false; }},
  };
  for (const auto& f : filters) {
    std::vector<std::uint64_t> expected;
    for (const auto& e : all) {
      if (f.keep(e)) {
        expected.push_back(e["position"].get<std::uint64_t>());
      }
    }
    const std::vector<std::uint64_t> reversed(expected.rbegin(), expected.rend());
    const std::string sep = f.query.empty() ? "" : "&";
    for (const std::size_t limit : {1u, 2u, 3u, 7u}) {
      INFO("filter '" << f.query << "' limit " << limit << " expects " << expected.size());
      const Walk asc = walk(server, auditor, f.query + sep + "order=asc", limit);
      CHECK(positions(asc.events) == expected);
      CHECK(asc.pages == std::max<std::size_t>(1, (expected.size() + limit - 1) / limit));
      const Walk desc = walk(server, auditor, f.query + sep + "order=desc", limit);
      CHECK(positions(desc.events) == reversed);
      CHECK(desc.pages == std::max<std::size_t>(1, (expected.size() + limit - 1) / limit));
    }
  }
  // Events appended while paging show up at the end of an ascending walk, never twice.
  auto first = server.get("/v1/audit?order=asc&limit=5&agent_id=" + agents[1], auditor);
  REQUIRE(first.status == 200);
  const Json first_page = first.json();
  REQUIRE(first_page.contains("next_cursor"));
  REQUIRE(server.request("POST", "/v1/agents/" + agents[1] + "/keys", Json::object(), dashboard).status ==
          201);
  std::vector<std::uint64_t> seen =
      positions(std::vector<Json>(first_page["events"].begin(), first_page["events"].end()));
  std::string cursor = first_page["next_cursor"].get<std::string>();
  while (!cursor.empty()) {
    auto res = server.get("/v1/audit?order=asc&limit=5&agent_id=" + agents[1] + "&cursor=" + cursor, auditor);
    REQUIRE(res.status == 200);
    const Json page = res.json();
    for (const auto& e : page["events"]) {
      seen.push_back(e["position"].get<std::uint64_t>());
    }
    cursor = page.contains("next_cursor") ? page["next_cursor"].get<std::string>() : "";
  }
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(std::set<std::uint64_t>(seen.begin(), seen.end()).size() == seen.size());
  CHECK(seen.back() == log_position(server));

  // A cursor is tied to its order; junk is refused.
  const std::string asc_cursor = first_page["next_cursor"].get<std::string>();
  auto mixed = server.get("/v1/audit?order=desc&limit=5&cursor=" + asc_cursor, auditor);
  CHECK(mixed.status == 422);
  CHECK(mixed.json()["error"]["code"] == "validation_failed");
  CHECK(server.get("/v1/audit?cursor=abc", auditor).status == 422);
  CHECK(server.get("/v1/audit?limit=1001", auditor).status == 422);
  CHECK(server.get("/v1/audit?limit=0", auditor).status == 422);
}

}  // namespace keyledger::e2e
