// Secrets never leak (issue 13; README "Design decisions"), against the real binary: a full
// lifecycle at log level trace, then every place a secret could end up is scanned for every
// secret the run issued or presented — every log line (primary and a replica), the /metrics
// text, every response body and header except the one response that created a secret (for
// that secret), every webhook the agents received, every Kafka message on the events and
// state topics (key, value, headers), and the raw bytes of every file in the data
// directories except `pepper` and `bootstrap-token` themselves.
//
// A secret is searched in every form it could be written in: a key's 32 hex characters and
// its 16 raw bytes; a token's or webhook secret's base64url body and its 32 raw bytes; the
// pepper's hex (either case) and its 32 raw bytes.
#include <sodium.h>

#include <catch2/catch.hpp>

#include <deque>
#include <fstream>
#include <iterator>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "consumers/embedded_broker.h"
#include "consumers/kafka_reader.h"
#include "consumers/webhook_receiver.h"
#include "harness.h"

namespace keyledger::e2e {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string hex_to_bytes(const std::string& hex) {
  std::string out(hex.size() / 2, '\0');
  std::size_t len = 0;
  REQUIRE(sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), hex.data(), hex.size(),
                         nullptr, &len, nullptr) == 0);
  out.resize(len);
  return out;
}

// Empty if `text` is not canonical base64url.
std::string base64url_to_bytes(const std::string& text) {
  std::string out(text.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(),
                        nullptr, &len, nullptr, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return "";
  }
  out.resize(len);
  return out;
}

std::string upper(std::string s) {
  for (auto& c : s) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return s;
}

// One secret and the byte strings that would betray it.
struct Secret {
  std::string label;                                       // what it is, never the secret itself
  std::string text;                                        // as issued
  std::vector<std::pair<std::string, std::string>> forms;  // (form name, bytes)
};

// Every secret of the run, and where each may legitimately appear (its creation response).
class Secrets {
 public:
  const Secret& add(const std::string& label, const std::string& text) {
    if (const Secret* known = find(text)) {
      return *known;
    }
    Secret s{label, text, {}};
    if (text.rfind("cg_", 0) == 0 && text.size() == 35) {
      s.forms = {{"hex", text.substr(3)}, {"raw bytes", hex_to_bytes(text.substr(3))}};
    } else if (text.rfind("kls_", 0) == 0) {
      s.forms = {{"text", text.substr(4)}, {"raw bytes", base64url_to_bytes(text.substr(4))}};
    } else if (text.rfind("whsec_", 0) == 0) {
      s.forms = {{"text", text.substr(6)}, {"raw bytes", base64url_to_bytes(text.substr(6))}};
    } else {
      s.forms = {{"text", text}};
    }
    std::erase_if(s.forms, [](const auto& form) { return form.second.empty(); });
    all_.push_back(std::move(s));
    return all_.back();
  }
  void add_form(const std::string& text, const std::string& form, const std::string& bytes) {
    for (auto& s : all_) {
      if (s.text == text) {
        s.forms.emplace_back(form, bytes);
      }
    }
  }
  const Secret* find(const std::string& text) const {
    for (const auto& s : all_) {
      if (s.text == text) {
        return &s;
      }
    }
    return nullptr;
  }
  const std::deque<Secret>& all() const { return all_; }

 private:
  std::deque<Secret> all_;
};

// A place that was scanned: its name and its bytes, and the secrets allowed in it.
struct Haystack {
  std::string where;
  std::string bytes;
  std::set<std::string> allowed;  // Secret::text
};

// Every finding as "<secret label> (<form>) in <where> at offset N: …context…".
std::vector<std::string> scan(const Haystack& h, const Secrets& secrets) {
  std::vector<std::string> found;
  for (const auto& s : secrets.all()) {
    if (h.allowed.count(s.text) != 0) {
      continue;
    }
    for (const auto& [form, bytes] : s.forms) {
      for (auto at = h.bytes.find(bytes); at != std::string::npos; at = h.bytes.find(bytes, at + 1)) {
        std::string context = h.bytes.substr(at >= 40 ? at - 40 : 0, 80 + bytes.size());
        for (auto& c : context) {
          c = std::isprint(static_cast<unsigned char>(c)) ? c : '.';
        }
        found.push_back(s.label + " (" + form + ") in " + h.where + " at offset " + std::to_string(at) +
                        ": …" + context + "…");
      }
    }
  }
  return found;
}

// Secret-shaped text that is no secret the run knows of (text sources only).
std::vector<std::string> scan_shapes(const Haystack& h, const Secrets& secrets) {
  static const std::regex shapes("cg_[0-9a-f]{32}|kls_[A-Za-z0-9_-]{43}|whsec_[A-Za-z0-9_-]{43}");
  std::vector<std::string> found;
  for (std::sregex_iterator it(h.bytes.begin(), h.bytes.end(), shapes), end; it != end; ++it) {
    const std::string text = it->str();
    if (h.allowed.count(text) == 0 && secrets.find(text) == nullptr) {
      found.push_back("an unknown secret-shaped string in " + h.where + " at offset " +
                      std::to_string(it->position()));
    }
  }
  return found;
}

std::string headers_text(const HttpResult& res) {
  std::string out;
  for (const auto& [name, value] : res.headers) {
    out += name + ": " + value + "\n";
  }
  return out;
}

Json agent_body(const std::string& name, const std::string& url) {
  return {{"name", name},          {"description", "An agent whose secrets must never leak."},
          {"skills", {"secrets"}}, {"languages", {"en"}},
          {"webhook_url", url},    {"owner_id", "usr_leak_test"}};
}

// The run: a server, and every response it gave with the secrets each one created.
struct Run {
  testing::TempDir dir;
  std::filesystem::path data = dir.path() / "primary";
  testing::TestCa ca;
  testing::TestReceiver receiver{[](int) { return 200u; }, &ca};
  std::unique_ptr<ServerProcess> server;
  Secrets secrets;
  std::vector<Haystack> responses;

  HttpResult call(const std::string& label, const std::string& method, const std::string& path,
                  const Json& body, const std::string& credential,
                  std::map<std::string, std::string> headers = {}) {
    HttpResult res = server->request(method, path, body, credential, headers);
    Haystack h{"response #" + std::to_string(responses.size() + 1) + " (" + label + ": " + method + " " +
                   path + " -> " + std::to_string(res.status) + ")",
               headers_text(res) + "\n" + res.body,
               {}};
    // The secrets this response creates may appear in it, and only in it.
    const Json j = res.json();
    if (res.status / 100 == 2 && j.is_object()) {
      const auto created = [&](const Json* field, const std::string& what) {
        if (field != nullptr && field->is_string() && secrets.find(field->get<std::string>()) == nullptr) {
          const std::string text = field->get<std::string>();
          secrets.add(
              what + " issued by response #" + std::to_string(responses.size() + 1) + " (" + label + ")",
              text);
          h.allowed.insert(text);
        }
      };
      const auto field = [&](const Json& o, const char* name) {
        return o.contains(name) ? &o[name] : nullptr;
      };
      created(field(j, "token"), "service token");
      created(field(j, "api_key"), "agent key");
      created(field(j, "webhook_secret"), "webhook secret");
      if (j.contains("replacement") && j["replacement"].is_object()) {
        created(field(j["replacement"], "api_key"), "replacement agent key");
      }
    }
    responses.push_back(std::move(h));
    return res;
  }

  HttpResult ok(const std::string& label, const std::string& method, const std::string& path,
                const Json& body, const std::string& credential,
                std::map<std::string, std::string> headers = {}) {
    HttpResult res = call(label, method, path, body, credential, std::move(headers));
    INFO(label << ": " << method << " " << path << " -> " << res.status << " " << res.body);
    REQUIRE(res.status / 100 == 2);
    return res;
  }
};

std::string random_hex(std::size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back("0123456789abcdef"[rng() % 16]);
  }
  return out;
}

}  // namespace

TEST_CASE("no secret reaches logs, metrics, later responses, webhooks, Kafka or the data files",
          "[e2e][security]") {
  const auto started = std::chrono::steady_clock::now();
  Run run;
  run.server = std::make_unique<ServerProcess>(
      run.data,
      std::vector<std::string>{"--log-level", "trace", "--allow-private-webhooks", "--webhook-ca-file",
                               run.ca.ca_file()},
      "embedded");
  ServerProcess& server = *run.server;
  const std::string admin = server.bootstrap_token();
  run.secrets.add("bootstrap token", admin);
  const std::string pepper_text = slurp(run.data / "pepper");
  REQUIRE(pepper_text.size() >= 64);
  const std::string pepper_hex = pepper_text.substr(0, 64);
  run.secrets.add("pepper", pepper_hex);
  run.secrets.add_form(pepper_hex, "upper-case hex", upper(pepper_hex));
  run.secrets.add_form(pepper_hex, "raw bytes", hex_to_bytes(pepper_hex));

  // Service tokens, one of them revoked and then presented.
  const auto token_of = [&](const HttpResult& r) { return r.json()["token"].get<std::string>(); };
  const std::string manage = token_of(
      run.ok("token", "POST", "/v1/tokens", {{"name", "dashboard"}, {"scopes", {"manage", "audit"}}}, admin));
  const std::string gateway =
      token_of(run.ok("token", "POST", "/v1/tokens", {{"name", "gateway"}, {"scopes", {"verify"}}}, admin));
  const std::string scanner =
      token_of(run.ok("token", "POST", "/v1/tokens", {{"name", "scanner"}, {"scopes", {"report_leaks"}}},
                      admin, {{"Idempotency-Key", "scanner-token"}}));
  // A replay answers the first response without the secret.
  auto replayed =
      run.ok("token replay", "POST", "/v1/tokens", {{"name", "scanner"}, {"scopes", {"report_leaks"}}}, admin,
             {{"Idempotency-Key", "scanner-token"}});
  CHECK(replayed.header("idempotent-replayed") == "true");
  auto temp =
      run.ok("token", "POST", "/v1/tokens", {{"name", "temporary"}, {"scopes", {"manage", "verify"}}}, admin);
  const std::string temp_token = token_of(temp);
  run.ok("revoke token", "POST", "/v1/tokens/" + temp.json()["token_id"].get<std::string>() + "/revoke",
         Json::object(), admin);
  CHECK(run.call("revoked token", "GET", "/v1/agents/agt_x", Json(), temp_token).status == 401);
  run.ok("list tokens", "GET", "/v1/tokens", Json(), admin);

  // A replica: its log and data directory are scanned too.
  ServerProcess replica(
      run.dir.path() / "replica",
      {"--replica", "--pepper-file", (run.data / "pepper").string(), "--log-level", "trace"},
      server.kafka_bootstrap());

  // Agents (webhook secrets) and keys, with an on-behalf-of actor and idempotency.
  auto agent =
      run.ok("register", "POST", "/v1/agents", agent_body("Leak Test", run.receiver.url("localhost")), manage,
             {{"X-Actor", "alice@example.com"}});
  const std::string agent_id = agent.json()["agent_id"];
  const std::string other_id =
      run.ok("register", "POST", "/v1/agents", agent_body("Other", run.receiver.url("localhost")), manage)
          .json()["agent_id"];
  auto created = run.ok("create key", "POST", "/v1/agents/" + agent_id + "/keys", {{"label", "first"}},
                        manage, {{"Idempotency-Key", "first-key"}});
  const std::string key1 = created.json()["api_key"];
  const std::string key1_id = created.json()["key"]["key_id"];
  auto again = run.ok("create key replay", "POST", "/v1/agents/" + agent_id + "/keys", {{"label", "first"}},
                      manage, {{"Idempotency-Key", "first-key"}});
  CHECK(again.header("idempotent-replayed") == "true");
  const std::string other_key =
      run.ok("create key", "POST", "/v1/agents/" + other_id + "/keys", Json::object(), manage)
          .json()["api_key"];

  // Verification and the agent's own routes, successful and failed.
  CHECK(run.ok("verify", "POST", "/v1/verify", {{"api_key", key1}}, gateway).json()["code"] == "VALID");
  run.ok("auth", "GET", "/v1/auth", Json(), key1);
  run.ok("auth by X-Api-Key", "GET", "/v1/auth", Json(), "", {{"X-Api-Key", key1}});
  run.ok("self", "GET", "/v1/self", Json(), key1);
  run.ok("set tier", "PUT", "/v1/agents/" + agent_id + "/rate-limit", {{"tier", "elevated"}}, manage);

  // Rotation (overlap, then immediate), revocation, compromise with a replacement.
  auto rotated = run.ok("rotate", "POST", "/v1/keys/" + key1_id + "/rotate",
                        {{"label", "second"}, {"old_key_expires_in_seconds", 3600}}, manage);
  const std::string key2 = rotated.json()["api_key"];
  const std::string key2_id = rotated.json()["key"]["key_id"];
  auto rotated_now = run.ok("rotate at once", "POST", "/v1/keys/" + key2_id + "/rotate",
                            {{"label", "third"}, {"old_key_expires_in_seconds", 0}}, manage);
  const std::string key3 = rotated_now.json()["api_key"];
  const std::string key3_id = rotated_now.json()["key"]["key_id"];
  run.ok("revoke", "POST", "/v1/keys/" + key1_id + "/revoke", {{"reason", "rotated out"}}, manage);
  auto compromised = run.ok("compromise", "POST", "/v1/keys/" + key3_id + "/compromise",
                            {{"note", "pasted in a gist"}, {"source", "support"}, {"replace", true}}, manage);
  const std::string replacement = compromised.json()["replacement"]["api_key"];
  const std::string replacement_id = compromised.json()["replacement"]["key"]["key_id"];

  // A leak report: a known active key (revoked now), a revoked one, an unknown and a malformed one.
  const std::string leaked =
      run.ok("create key", "POST", "/v1/agents/" + agent_id + "/keys", {{"label", "to leak"}}, manage)
          .json()["api_key"];
  const std::string unknown_key = "cg_" + random_hex(32);
  run.secrets.add("a well-formed key nobody issued (presented)", unknown_key);
  const std::string unknown_token = "kls_" + std::string("Zq") + random_hex(41);
  run.secrets.add("a well-formed service token nobody issued (presented)", unknown_token);
  const Json report = Json::array({
      {{"token", leaked},
       {"type", "clawgig_api_key"},
       {"url", "https://example.com/gist"},
       {"source", "content"}},
      {{"token", key1},
       {"type", "clawgig_api_key"},
       {"url", "https://example.com/gist"},
       {"source", "commit"}},
      {{"token", unknown_key},
       {"type", "clawgig_api_key"},
       {"url", "https://example.com/gist"},
       {"source", "x"}},
      {{"token", "cg_NOTAKEY"},
       {"type", "clawgig_api_key"},
       {"url", "https://example.com/gist"},
       {"source", "x"}},
  });
  auto leak = run.ok("leak report", "POST", "/v1/leaks", report, scanner);
  REQUIRE(leak.json().size() == 4);
  CHECK(leak.json()[0]["result"] == "revoked");
  CHECK(leak.json()[1]["result"] == "already_inactive");
  CHECK(leak.json()[2]["result"] == "unknown");

  // Failed verifications of every kind, and credentials presented where they do not belong.
  for (const auto& [key, code] :
       std::vector<std::pair<std::string, std::string>>{{key1, "REVOKED"},
                                                        {key3, "COMPROMISED"},
                                                        {leaked, "COMPROMISED"},
                                                        {unknown_key, "NOT_FOUND"},
                                                        {"cg_NOTAKEY", "MALFORMED"}}) {
    CHECK(run.ok("failed verify", "POST", "/v1/verify", {{"api_key", key}}, gateway).json()["code"] == code);
    CHECK(run.call("failed auth", "GET", "/v1/auth", Json(), key).status == 401);
    CHECK(run.call("failed self", "GET", "/v1/self", Json(), key).status == 401);
  }
  CHECK(run.call("agent key as service token", "GET", "/v1/tokens", Json(), replacement).status == 403);
  CHECK(run.call("revoked key as service token", "GET", "/v1/tokens", Json(), key1).status == 401);
  CHECK(run.call("service token as agent key", "GET", "/v1/auth", Json(), manage).status == 401);
  CHECK(run.call("unknown service token", "GET", "/v1/tokens", Json(), unknown_token).status == 401);
  CHECK(run.call("wrong scope", "POST", "/v1/verify", {{"api_key", key2}}, manage).status == 403);
  // A full key pasted where an id belongs is not echoed back (issue 13).
  CHECK(run.call("key pasted as key id", "GET", "/v1/keys/" + key2, Json(), manage).status == 404);
  CHECK(run.call("key pasted as agent id", "GET", "/v1/agents/" + key2 + "/keys", Json(), manage).status ==
        404);
  CHECK(run.call("key pasted in a query", "GET", "/v1/audit?key_id=" + key2, Json(), manage).status == 200);
  CHECK(run.call("key as a body field", "POST", "/v1/agents/" + agent_id + "/keys",
                 {{"label", key2}, {"bogus", key2}}, manage)
            .status == 422);

  // Webhooks delivered, the reads, the delivery logs.
  REQUIRE(eventually([&] { return run.receiver.requests().size() >= 8; }, 20s));
  run.ok("agent", "GET", "/v1/agents/" + agent_id, Json(), manage);
  run.ok("keys", "GET", "/v1/agents/" + agent_id + "/keys", Json(), manage);
  run.ok("key", "GET", "/v1/keys/" + replacement_id, Json(), manage);
  run.ok("due", "GET", "/v1/keys/due-for-rotation?older_than_days=0", Json(), manage);
  run.ok("deliveries", "GET", "/v1/agents/" + agent_id + "/webhook-deliveries", Json(), manage);
  run.ok("self deliveries", "GET", "/v1/self/webhook-deliveries", Json(), replacement);
  run.ok("self", "GET", "/v1/self", Json(), other_key);
  const Json audit = run.ok("audit", "GET", "/v1/audit?limit=1000", Json(), manage).json();
  run.ok("audit desc", "GET", "/v1/audit?order=desc&agent_id=" + agent_id, Json(), manage);
  // Ready once the projections have applied every event (the webhook consumers may still be
  // appending some: readiness is a probe, polled).
  REQUIRE(eventually([&] { return run.call("readyz", "GET", "/readyz", Json(), "").status == 200; }, 10s));

  // Kafka: everything the relay published (it caught up with the log).
  const std::size_t events = audit["events"].size();
  std::vector<testing::KafkaRecord> key_events;
  REQUIRE(eventually(
      [&] {
        key_events = testing::read_topic(server.kafka_bootstrap(), consumers::kEventsTopic);
        return key_events.size() >= events;
      },
      20s));
  const auto key_state = testing::read_topic(server.kafka_bootstrap(), consumers::kStateTopic);
  CHECK(!key_state.empty());
  // The replica applied it all (its tables were built from those messages).
  REQUIRE(eventually(
      [&] {
        const auto res =
            replica.request("POST", "/v1/verify", {{"api_key", replacement}, {"cost", 0}}, gateway);
        return res.status == 200 && res.json()["code"] == "VALID";
      },
      20s));
  CHECK(replica.request("POST", "/v1/verify", {{"api_key", leaked}}, gateway).json()["code"] ==
        "COMPROMISED");
  CHECK(replica.get("/v1/auth", unknown_key).status == 401);
  CHECK(replica.get("/v1/auth", replacement).status == 200);
  const std::string replica_metrics = replica.get("/metrics", "").body;
  const std::string metrics = run.ok("metrics", "GET", "/metrics", Json(), "").body;

  CHECK(replica.stop() == 0);
  CHECK(server.stop() == 0);
  // A restart recovers the write-ahead log into table files (RocksDB flushes on recovery), so
  // the scan below covers both forms of the store; its log goes to the same file.
  {
    ServerProcess restarted(run.data, {"--log-level", "trace"}, "none");
    CHECK(restarted.get("/v1/tokens", admin).status == 200);
    CHECK(restarted.stop() == 0);
  }

  // Everything to scan.
  std::vector<Haystack> text_sources = run.responses;
  text_sources.push_back({"primary /metrics text", metrics, {}});
  text_sources.push_back({"replica /metrics text", replica_metrics, {}});
  for (const auto& [name, log] : {std::pair<std::string, std::string>{"primary log", server.log()},
                                  std::pair<std::string, std::string>{"replica log", replica.log()}}) {
    CHECK(!log.empty());
    std::istringstream lines(log);
    std::string line;
    for (int n = 1; std::getline(lines, line); ++n) {
      text_sources.push_back({name + " line " + std::to_string(n), line, {}});
    }
  }
  const auto webhooks = run.receiver.requests();
  for (std::size_t i = 0; i < webhooks.size(); ++i) {
    text_sources.push_back({"webhook #" + std::to_string(i + 1) + " received (" + webhooks[i].event_id + ")",
                            webhooks[i].target + "\n" + webhooks[i].signature + "\n" + webhooks[i].body,
                            {}});
  }
  for (const auto& [topic, records] : {std::pair{std::string(consumers::kEventsTopic), key_events},
                                       std::pair{std::string(consumers::kStateTopic), key_state}}) {
    for (const auto& r : records) {
      std::string bytes = r.key + "\n" + r.value;
      for (const auto& [name, value] : r.headers) {
        bytes += "\n" + name + "=" + value;
      }
      text_sources.push_back({"Kafka " + topic + " partition " + std::to_string(r.partition) + " offset " +
                                  std::to_string(r.offset),
                              bytes,
                              {}});
    }
  }
  std::vector<Haystack> files;
  for (const auto& root : {run.data, run.dir.path() / "replica"}) {
    if (!std::filesystem::exists(root)) {
      continue;
    }
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
      const auto name = entry.path().filename();
      if (!entry.is_regular_file() || (root == run.data && (name == "pepper" || name == "bootstrap-token"))) {
        continue;
      }
      files.push_back({"file " + std::filesystem::relative(entry.path(), run.dir.path()).string(),
                       slurp(entry.path()),
                       {}});
    }
  }

  std::vector<std::string> findings;
  std::size_t scanned_bytes = 0;
  for (const auto& h : text_sources) {
    scanned_bytes += h.bytes.size();
    for (auto& f : scan(h, run.secrets)) {
      findings.push_back(std::move(f));
    }
    for (auto& f : scan_shapes(h, run.secrets)) {
      findings.push_back(std::move(f));
    }
  }
  for (const auto& h : files) {
    scanned_bytes += h.bytes.size();
    for (auto& f : scan(h, run.secrets)) {
      findings.push_back(std::move(f));
    }
  }
  // The scan saw what it should: secrets of every kind, every source non-empty, the files'
  // plain text (an agent's name is in the log files), and a secret where it was issued.
  const bool names_in_files = std::any_of(files.begin(), files.end(), [](const Haystack& h) {
    return h.bytes.find("Leak Test") != std::string::npos;
  });
  CHECK(names_in_files);
  CHECK(std::any_of(files.begin(), files.end(), [](const Haystack& h) { return h.where.ends_with(".sst"); }));
  Haystack creation = *std::find_if(run.responses.begin(), run.responses.end(),
                                    [&](const Haystack& h) { return h.allowed.count(key1) != 0; });
  creation.allowed.clear();
  CHECK(scan(creation, run.secrets).size() == 1);
  INFO("files scanned: " << [&] {
    std::string names;
    for (const auto& h : files) {
      names += h.where + " (" + std::to_string(h.bytes.size()) + " bytes) ";
    }
    return names;
  }());
  CHECK(run.secrets.all().size() >= 12);
  CHECK(files.size() >= 3);
  CHECK(!key_events.empty());
  CHECK(webhooks.size() >= 8);
  for (const auto& f : findings) {
    FAIL_CHECK("secret found: " << f);
  }
  CHECK(findings.empty());
  const auto seconds =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started)
          .count() /
      1000.0;
  WARN("scanned " << text_sources.size() << " text sources and " << files.size() << " files ("
                  << scanned_bytes << " bytes) for " << run.secrets.all().size() << " secrets in " << seconds
                  << " s");
}

}  // namespace keyledger::e2e
