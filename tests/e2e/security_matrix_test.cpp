// The security matrix (issue 13), against the real binary: every route of the contract (the
// route table of api/handlers.cpp) × every kind of credential → the status api/openapi.yaml says,
// on the primary and on a verifier replica fed from its embedded broker.
//
// The expected status of a cell is not typed by hand: it follows from the route's access rule
// (public, service token with one of its scopes, or an agent's own key) and the credential's
// kind, by expected_status() below. Every cell asserts its concrete status; a failing cell
// names the node, the route and the credential.
//
// Bodies are ones that succeed, so an allowed cell really reaches its 2xx. Commands change
// state, so a command route gets a fresh target (token, agent, key, failed delivery) for
// every cell on the primary, and a refused cell is checked to have changed nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <thread>

#include "consumers/kafka_reader.h"
#include "harness.h"

namespace keyledger::e2e {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

// Webhooks of every agent here go to loopback, which a server without
// --allow-private-webhooks refuses for good: each key event ends as a failed delivery at
// once (no network, and a failed delivery the retry route can retry).
constexpr const char* kRefusedWebhook = "https://127.0.0.1:9/keyledger-hook";
constexpr const char* kRetryPattern = "/v1/agents/{agent_id}/webhook-deliveries/{event_id}/retry";

enum class Node { kPrimary, kReplica };
enum class Access { kPublic, kToken, kAgentKey };

const char* node_name(Node node) { return node == Node::kPrimary ? "primary" : "replica"; }

struct Credential {
  enum class Kind {
    kRefused,      // missing, garbage, malformed, unknown, or no longer valid
    kAgentKey,     // an active cg_ key
    kServiceToken  // an active kls_ token with `scopes`
  };
  std::string name;
  std::optional<std::string> authorization;  // raw header value; none: no header
  Kind kind = Kind::kRefused;
  std::vector<std::string> scopes;  // kServiceToken
  std::string agent_id;             // kAgentKey: whose key
  std::string key_id;
};

// What a cell sends: the concrete path, its body, and what a check afterwards needs.
struct Target {
  std::string path;
  std::optional<Json> body;
  std::string agent_id;
  std::string key_id;
  std::string api_key;
  std::string token;
};

struct World;

struct Route {
  std::string method;
  std::string pattern;
  Access access;
  std::vector<std::string> scopes;  // Access::kToken: any of these
  unsigned success;                 // the status of an allowed call
  // A target for one cell; `fresh` (primary) builds new state, otherwise a stable one.
  std::function<Target(World&, bool fresh)> target;
  // After a cell on the primary with a fresh target: did the command take effect or not.
  std::function<void(World&, const Target&, bool allowed)> effect;
};

// README, Configuration: what a replica serves itself; every other route of the contract is 503.
bool served_by_replica(const Route& r) {
  static const std::vector<std::string> served = {"/healthz", "/readyz", "/metrics", "/v1/verify",
                                                  "/v1/auth"};
  return std::find(served.begin(), served.end(), r.pattern) != served.end();
}

// api/openapi.yaml: 401 for a missing or unknown credential, 403 for a valid one without the
// scope (an agent key is never a service token), an agent key only on its own routes.
unsigned expected_status(const Route& route, const Credential& c, Node node) {
  if (node == Node::kReplica && !served_by_replica(route)) {
    return 503;  // read_only_replica, whoever asks (README, Configuration; consumers/replica.cpp checks no credential)
  }
  switch (route.access) {
    case Access::kPublic:
      return route.success;
    case Access::kAgentKey:
      // A service token is not a cg_ key: for these routes it is an unknown credential.
      return c.kind == Credential::Kind::kAgentKey ? route.success : 401;
    case Access::kToken:
      if (c.kind == Credential::Kind::kRefused) {
        return 401;
      }
      if (c.kind == Credential::Kind::kAgentKey) {
        return 403;
      }
      for (const auto& s : route.scopes) {
        if (std::find(c.scopes.begin(), c.scopes.end(), s) != c.scopes.end()) {
          return route.success;
        }
      }
      return 403;
  }
  return 0;
}

std::string random_chars(std::size_t n, std::string_view alphabet) {
  static std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(alphabet[pick(rng)]);
  }
  return out;
}

Json agent_body(const std::string& name) {
  return {{"name", name},
          {"description", "An agent of the security matrix test."},
          {"skills", {"matrix"}},
          {"languages", {"en"}},
          {"webhook_url", kRefusedWebhook}};
}

struct World {
  testing::TempDir dir;
  std::filesystem::path primary_dir = dir.path() / "primary";
  std::unique_ptr<ServerProcess> primary;
  std::unique_ptr<ServerProcess> replica;
  std::string admin;  // the bootstrap token: every scope

  // Agent A ("own") with an active, an expired, a revoked and a compromised key; agent B
  // ("another agent") with an active key.
  std::string agent_a, agent_b;
  Target key_a, key_b, key_expired, key_revoked, key_compromised, key_spare;

  // Keys for command targets are made on pool agents, a few per agent (10 active at most).
  std::string pool_agent;
  int pool_used = 0;
  // Retries answered 409 delivery_pending for a delivery the log already showed as failed.
  int pending_races = 0;

  HttpResult call(std::uint16_t port, const std::string& method, const std::string& path,
                  const std::optional<Json>& body, const std::optional<std::string>& authorization) {
    std::map<std::string, std::string> headers;
    if (authorization) {
      headers["Authorization"] = *authorization;
    }
    std::string text;
    if (body) {
      headers["Content-Type"] = "application/json";
      text = body->dump();
    }
    return http_request(port, method, path, text, headers);
  }

  // A setup command with the bootstrap token; must succeed.
  Json admin_call(const std::string& method, const std::string& path, const Json& body) {
    auto res = primary->request(method, path, body, admin);
    INFO(method << " " << path << " -> " << res.status << " " << res.body);
    REQUIRE(res.status / 100 == 2);
    return res.json();
  }

  std::string register_agent(const std::string& name) {
    return admin_call("POST", "/v1/agents", agent_body(name))["agent_id"];
  }

  Target create_key(const std::string& agent_id, const Json& body = Json::object()) {
    const Json created = admin_call("POST", "/v1/agents/" + agent_id + "/keys", body);
    Target t;
    t.agent_id = agent_id;
    t.key_id = created["key"]["key_id"];
    t.api_key = created["api_key"];
    return t;
  }

  Target fresh_key() {
    if (pool_agent.empty() || pool_used == 4) {
      pool_agent = register_agent("pool");
      pool_used = 0;
    }
    ++pool_used;
    return create_key(pool_agent);
  }

  // A token to revoke: scope verify, so whether it still works is one call away.
  Target fresh_token() {
    const Json created =
        admin_call("POST", "/v1/tokens", {{"name", "matrix-target"}, {"scopes", {"verify"}}});
    Target t;
    t.key_id = created["token_id"];
    t.token = created["token"];
    return t;
  }

  std::string verify_code(ServerProcess& server, const std::string& api_key) {
    auto res = server.request("POST", "/v1/verify", {{"api_key", api_key}, {"cost", 0}}, admin);
    return res.status == 200 ? res.json()["code"].get<std::string>() : "HTTP " + std::to_string(res.status);
  }

  // The failed delivery of the key.created event of `key` (an event the retry route can retry).
  std::string failed_delivery_of(const Target& key) {
    const Json events = admin_call("GET", "/v1/audit?key_id=" + key.key_id + "&type=key.created", Json());
    REQUIRE(events["events"].size() == 1);
    const std::string event_id = events["events"][0]["event_id"];
    const bool failed = eventually(
        [&] {
          const Json log = primary->get("/v1/agents/" + key.agent_id + "/webhook-deliveries", admin).json();
          for (const auto& d : log["deliveries"]) {
            if (d["event_id"] == event_id && d["outcome"] == "failed") {
              return true;
            }
          }
          return false;
        },
        10s);
    REQUIRE(failed);
    return event_id;
  }
};

std::vector<Route> routes() {
  const std::vector<std::string> manage = {"manage"};
  const std::vector<std::string> read = {"manage", "audit"};
  const auto fixed = [](std::string path, std::optional<Json> body = std::nullopt) {
    return [path, body](World&, bool) { return Target{path, body, "", "", "", ""}; };
  };
  const auto on_key_a = [](std::string suffix) {
    return [suffix](World& w, bool) {
      return Target{"/v1/keys/" + w.key_a.key_id + suffix, std::nullopt, "", "", "", ""};
    };
  };
  const auto on_agent_a = [](std::string suffix) {
    return [suffix](World& w, bool) {
      return Target{"/v1/agents/" + w.agent_a + suffix, std::nullopt, "", "", "", ""};
    };
  };
  // A command on a fresh key (primary) or on a spare key the replica never acts on.
  const auto on_fresh_key = [](std::string suffix, Json body) {
    return [suffix, body](World& w, bool fresh) {
      Target t = fresh ? w.fresh_key() : w.key_spare;
      t.path = "/v1/keys/" + t.key_id + suffix;
      t.body = body;
      return t;
    };
  };
  // Whether the fresh key's verification code tells the command took effect.
  const auto key_code = [](std::string when_allowed) {
    return [when_allowed](World& w, const Target& t, bool allowed) {
      CHECK(w.verify_code(*w.primary, t.api_key) == (allowed ? when_allowed : "VALID"));
    };
  };

  return {
      {"GET", "/healthz", Access::kPublic, {}, 200, fixed("/healthz"), nullptr},
      {"GET", "/readyz", Access::kPublic, {}, 200, fixed("/readyz"), nullptr},
      {"GET", "/metrics", Access::kPublic, {}, 200, fixed("/metrics"), nullptr},
      {"POST",
       "/v1/tokens",
       Access::kToken,
       {"admin"},
       201,
       fixed("/v1/tokens", Json{{"name", "matrix-made"}, {"scopes", {"verify"}}}),
       nullptr},
      {"GET", "/v1/tokens", Access::kToken, {"admin"}, 200, fixed("/v1/tokens"), nullptr},
      {"POST",
       "/v1/tokens/{token_id}/revoke",
       Access::kToken,
       {"admin"},
       200,
       [](World& w, bool fresh) {
         Target t = fresh ? w.fresh_token() : Target{"", {}, "", "tok_spare", "", ""};
         t.path = "/v1/tokens/" + t.key_id + "/revoke";
         t.body = Json::object();
         return t;
       },
       [](World& w, const Target& t, bool allowed) {
         const auto res =
             w.primary->request("POST", "/v1/verify", {{"api_key", w.key_a.api_key}, {"cost", 0}}, t.token);
         CHECK(res.status == (allowed ? 401u : 200u));
       }},
      {"POST", "/v1/agents", Access::kToken, manage, 201, fixed("/v1/agents", agent_body("matrix-made")),
       nullptr},
      {"GET", "/v1/agents/{agent_id}", Access::kToken, read, 200, on_agent_a(""), nullptr},
      {"PUT", "/v1/agents/{agent_id}/rate-limit", Access::kToken, manage, 200,
       [](World& w, bool fresh) {
         Target t;
         t.agent_id = fresh ? w.register_agent("tier-target") : w.agent_b;
         t.path = "/v1/agents/" + t.agent_id + "/rate-limit";
         t.body = Json{{"tier", "elevated"}};
         return t;
       },
       [](World& w, const Target& t, bool allowed) {
         const Json agent = w.admin_call("GET", "/v1/agents/" + t.agent_id, Json());
         CHECK(agent["rate_limit_tier"] == (allowed ? "elevated" : "standard"));
       }},
      {"POST", "/v1/agents/{agent_id}/keys", Access::kToken, manage, 201,
       [](World& w, bool fresh) {
         Target t;
         t.agent_id = fresh ? w.register_agent("key-target") : w.agent_b;
         t.path = "/v1/agents/" + t.agent_id + "/keys";
         t.body = Json{{"label", "matrix"}};
         return t;
       },
       [](World& w, const Target& t, bool allowed) {
         const Json agent = w.admin_call("GET", "/v1/agents/" + t.agent_id, Json());
         CHECK(agent["active_key_count"] == (allowed ? 1 : 0));
       }},
      {"GET", "/v1/agents/{agent_id}/keys", Access::kToken, read, 200, on_agent_a("/keys?status=active"),
       nullptr},
      {"GET", "/v1/agents/{agent_id}/webhook-deliveries", Access::kToken, read, 200,
       on_agent_a("/webhook-deliveries"), nullptr},
      {"POST", kRetryPattern, Access::kToken, manage, 202,
       [](World& w, bool fresh) {
         Target t = fresh ? w.fresh_key() : w.key_spare;
         const std::string event_id = fresh ? w.failed_delivery_of(t) : std::string("evt_spare");
         t.path = "/v1/agents/" + t.agent_id + "/webhook-deliveries/" + event_id + "/retry";
         t.body = Json::object();
         return t;
       },
       nullptr},
      {"GET", "/v1/keys/due-for-rotation", Access::kToken, read, 200,
       fixed("/v1/keys/due-for-rotation?older_than_days=0"), nullptr},
      {"GET", "/v1/keys/{key_id}", Access::kToken, read, 200, on_key_a(""), nullptr},
      {"POST", "/v1/keys/{key_id}/rotate", Access::kToken, manage, 201,
       on_fresh_key("/rotate", Json{{"label", "matrix-rotated"}}),
       [](World& w, const Target& t, bool allowed) {
         const Json key = w.admin_call("GET", "/v1/keys/" + t.key_id, Json());
         CHECK(key["rotated_to"].is_null() == !allowed);
       }},
      {"POST", "/v1/keys/{key_id}/revoke", Access::kToken, manage, 200,
       on_fresh_key("/revoke", Json{{"reason", "security matrix"}}), key_code("REVOKED")},
      {"POST", "/v1/keys/{key_id}/compromise", Access::kToken, manage, 200,
       on_fresh_key("/compromise",
                    Json{{"note", "matrix"}, {"source", "security matrix"}, {"replace", true}}),
       key_code("COMPROMISED")},
      {"POST",
       "/v1/verify",
       Access::kToken,
       {"verify"},
       200,
       [](World& w, bool) {
         return Target{"/v1/verify", Json{{"api_key", w.key_a.api_key}}, "", "", "", ""};
       },
       nullptr},
      {"GET", "/v1/auth", Access::kAgentKey, {}, 200, fixed("/v1/auth"), nullptr},
      {"GET", "/v1/self", Access::kAgentKey, {}, 200, fixed("/v1/self"), nullptr},
      {"GET",
       "/v1/self/webhook-deliveries",
       Access::kAgentKey,
       {},
       200,
       fixed("/v1/self/webhook-deliveries"),
       nullptr},
      {"GET",
       "/v1/audit",
       Access::kToken,
       {"audit"},
       200,
       [](World& w, bool) {
         return Target{"/v1/audit?agent_id=" + w.agent_a + "&limit=5", {}, "", "", "", ""};
       },
       nullptr},
      {"POST",
       "/v1/leaks",
       Access::kToken,
       {"report_leaks"},
       200,
       [](World& w, bool fresh) {
         Target t = fresh ? w.fresh_key() : w.key_spare;
         t.path = "/v1/leaks";
         t.body = Json::array({Json{{"token", t.api_key},
                                    {"type", "clawgig_api_key"},
                                    {"url", "https://example.com/gist"},
                                    {"source", "content"}}});
         return t;
       },
       key_code("COMPROMISED")},
  };
}

std::vector<Credential> credentials(World& w) {
  using Kind = Credential::Kind;
  std::string last_token_id;
  auto token = [&](const std::string& name, const std::vector<std::string>& scopes) {
    const Json created = w.admin_call("POST", "/v1/tokens", {{"name", name}, {"scopes", scopes}});
    last_token_id = created["token_id"];
    return Credential{name, "Bearer " + created["token"].get<std::string>(), Kind::kServiceToken, scopes, "",
                      ""};
  };
  auto refused_key = [](const std::string& name, const Target& key) {
    return Credential{name, "Bearer " + key.api_key, Kind::kRefused, {}, "", ""};
  };
  std::vector<Credential> out = {
      {"no credential", std::nullopt, Kind::kRefused, {}, "", ""},
      {"garbage bearer", "Bearer xyzzy-this-is-not-a-credential", Kind::kRefused, {}, "", ""},
      {"empty bearer", "Bearer ", Kind::kRefused, {}, "", ""},
      {"Basic scheme", "Basic dXNlcjpwYXNzd29yZA==", Kind::kRefused, {}, "", ""},
      {"malformed cg_ key",
       "Bearer cg_" + random_chars(31, "0123456789ABCDEF") + "!",
       Kind::kRefused,
       {},
       "",
       ""},
      {"unknown well-formed agent key",
       "Bearer cg_" + random_chars(32, "0123456789abcdef"),
       Kind::kRefused,
       {},
       "",
       ""},
      {"unknown well-formed service token",
       "Bearer kls_" + random_chars(43, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
       Kind::kRefused,
       {},
       "",
       ""},
      refused_key("expired agent key", w.key_expired),
      refused_key("revoked agent key", w.key_revoked),
      refused_key("compromised agent key", w.key_compromised),
      {"active agent key (agent A)",
       "Bearer " + w.key_a.api_key,
       Kind::kAgentKey,
       {},
       w.agent_a,
       w.key_a.key_id},
      {"active agent key of another agent (B)",
       "Bearer " + w.key_b.api_key,
       Kind::kAgentKey,
       {},
       w.agent_b,
       w.key_b.key_id},
  };
  for (const std::string scope : {"manage", "verify", "audit", "report_leaks", "admin"}) {
    out.push_back(token("scope " + scope, {scope}));
  }
  Credential revoked =
      token("revoked token (had every scope)", {"manage", "verify", "audit", "report_leaks", "admin"});
  const std::string revoked_id = last_token_id;
  w.admin_call("POST", "/v1/tokens/" + revoked_id + "/revoke", Json::object());
  revoked.kind = Kind::kRefused;
  revoked.scopes.clear();
  out.push_back(revoked);
  out.push_back(token("every scope", {"manage", "verify", "audit", "report_leaks", "admin"}));
  return out;
}

void set_up(World& w) {
  w.primary = std::make_unique<ServerProcess>(w.primary_dir, std::vector<std::string>{}, "embedded");
  REQUIRE_FALSE(w.primary->kafka_bootstrap().empty());
  w.admin = w.primary->bootstrap_token();
  w.agent_a = w.register_agent("Agent A");
  w.agent_b = w.register_agent("Agent B");
  w.key_expired = w.create_key(w.agent_a, {{"label", "expiring"}, {"expires_in_seconds", 1}});
  w.key_a = w.create_key(w.agent_a, {{"label", "active"}});
  w.key_revoked = w.create_key(w.agent_a, {{"label", "revoked"}});
  w.admin_call("POST", "/v1/keys/" + w.key_revoked.key_id + "/revoke", {{"reason", "matrix"}});
  w.key_compromised = w.create_key(w.agent_a, {{"label", "compromised"}});
  w.admin_call("POST", "/v1/keys/" + w.key_compromised.key_id + "/compromise", {{"note", "matrix"}});
  w.key_spare = w.create_key(w.agent_a, {{"label", "replica targets"}});
  w.key_b = w.create_key(w.agent_b, {{"label", "active"}});
  // Both agents have deliveries in their logs (failed ones), so /v1/self/webhook-deliveries
  // has something to leak if it were not scoped to the caller.
  w.failed_delivery_of(w.key_a);
  w.failed_delivery_of(w.key_b);
  REQUIRE(eventually([&] { return w.verify_code(*w.primary, w.key_expired.api_key) == "EXPIRED"; }, 5s));
}

// Runs every cell of `node`; returns the number of cells.
std::size_t run_matrix(World& w, Node node, const std::vector<Route>& table,
                       const std::vector<Credential>& creds) {
  ServerProcess& server = node == Node::kPrimary ? *w.primary : *w.replica;
  std::size_t cells = 0;
  for (const Route& route : table) {
    for (const Credential& cred : creds) {
      ++cells;
      const unsigned expected = expected_status(route, cred, node);
      const bool fresh = node == Node::kPrimary;
      const Target target = route.target(w, fresh);
      HttpResult res = w.call(server.port(), route.method, target.path, target.body, cred.authorization);
      if (route.pattern == kRetryPattern && res.status == 409 &&
          res.json()["error"]["code"] == "delivery_pending") {
        // KNOWN BUG (race, not authorisation): the dispatcher appends the "failed" record
        // before it drops the delivery from its schedule (consumers/webhook_dispatcher.cpp
        // attempt(): record() then finish()), so for a moment the delivery log says failed
        // while a retry answers 409 delivery_pending. The caller was authorised (that check
        // comes first); ask again until the schedule catches up, and count it.
        ++w.pending_races;
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (res.status == 409 && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(5ms);
          res = w.call(server.port(), route.method, target.path, target.body, cred.authorization);
        }
      }
      const std::string cell =
          std::string(node_name(node)) + " | " + route.method + " " + route.pattern + " | " + cred.name;
      INFO("cell: " << cell << "\n  request: " << route.method << " " << target.path << "\n  expected "
                    << expected << ", got " << res.status << ": " << res.body.substr(0, 300));
      CHECK(res.status == expected);
      CHECK_FALSE(res.header("x-request-id").empty());
      Json body = res.json();  // non-const: a missing member reads as null
      if (res.status == 401) {
        CHECK(res.header("www-authenticate").rfind("Bearer realm=\"keyledger\"", 0) == 0);
      }
      if (res.status == 403) {
        CHECK(body["error"]["code"] == "forbidden");
      }
      if (res.status == 503 && node == Node::kReplica) {
        CHECK(body["error"]["code"] == "read_only_replica");
      }
      const bool allowed = expected / 100 == 2 && res.status == expected;
      if (allowed && route.access == Access::kAgentKey) {
        // An agent sees itself and nothing of the other agent.
        const std::string other = cred.agent_id == w.agent_a ? w.agent_b : w.agent_a;
        CHECK(res.body.find(other) == std::string::npos);
        if (route.pattern == "/v1/auth") {
          CHECK(res.header("x-agent-id") == cred.agent_id);
          CHECK(res.header("x-key-id") == cred.key_id);
        } else if (route.pattern == "/v1/self") {
          CHECK(body["agent"]["agent_id"] == cred.agent_id);
          CHECK(body["key"]["key_id"] == cred.key_id);
        } else {
          CHECK_FALSE(body["deliveries"].empty());
          for (const auto& d : body["deliveries"]) {
            CHECK(d["agent_id"] == cred.agent_id);
          }
        }
      }
      if (allowed && route.pattern == "/v1/verify") {
        CHECK(body["code"] == "VALID");
        CHECK(body["agent_id"] == w.agent_a);
      }
      if (fresh && route.effect) {
        route.effect(w, target, expected / 100 == 2);
      }
    }
  }
  return cells;
}

}  // namespace

TEST_CASE("security matrix: every route × every credential, on the primary and on a replica",
          "[e2e][security]") {
  const auto started = std::chrono::steady_clock::now();
  World w;
  set_up(w);
  const std::vector<Route> table = routes();
  const std::vector<Credential> creds = credentials(w);

  // The replica catches up while the primary's cells run.
  w.replica = std::make_unique<ServerProcess>(
      w.dir.path() / "replica",
      std::vector<std::string>{"--replica", "--pepper-file", (w.primary_dir / "pepper").string()},
      w.primary->kafka_bootstrap());

  std::size_t cells = run_matrix(w, Node::kPrimary, table, creds);

  // Caught up: ready, every key in its state, every token known, the revoked one revoked.
  REQUIRE(eventually([&] { return w.replica->get("/readyz", "").status == 200; }, 30s));
  const std::vector<std::pair<const Target*, std::string>> states = {{&w.key_a, "VALID"},
                                                                     {&w.key_b, "VALID"},
                                                                     {&w.key_expired, "EXPIRED"},
                                                                     {&w.key_revoked, "REVOKED"},
                                                                     {&w.key_compromised, "COMPROMISED"}};
  for (const auto& [key, code] : states) {
    INFO("replica state of " << key->key_id << " should be " << code);
    REQUIRE(eventually([&] { return w.verify_code(*w.replica, key->api_key) == code; }, 20s));
  }
  for (const Credential& c : creds) {
    if (c.kind == Credential::Kind::kServiceToken || c.name.rfind("revoked token", 0) == 0) {
      const unsigned want = c.kind == Credential::Kind::kRefused ? 401 : 0;
      INFO("replica knows token " << c.name);
      REQUIRE(eventually(
          [&] {
            const auto res = w.call(w.replica->port(), "POST", "/v1/verify",
                                    Json{{"api_key", w.key_a.api_key}}, c.authorization);
            return want != 0 ? res.status == want : res.status != 401;
          },
          20s));
    }
  }

  cells += run_matrix(w, Node::kReplica, table, creds);
  const auto seconds =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started)
          .count() /
      1000.0;
  WARN(table.size() << " routes x " << creds.size() << " credentials x 2 nodes = " << cells << " cells in "
                    << seconds << " s");
  CHECK(cells == table.size() * creds.size() * 2);
  if (w.pending_races > 0) {
    WARN("KNOWN BUG: "
         << w.pending_races
         << " manual retries of a delivery logged as failed answered 409 delivery_pending first");
  }
  CHECK(w.replica->stop() == 0);
  CHECK(w.primary->stop() == 0);
}

}  // namespace keyledger::e2e
