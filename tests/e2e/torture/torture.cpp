// Crash torture of the real keyledger binary (ops/torture; README "Reliability").
//
// The driver hosts a Kafka broker (librdkafka's mock cluster) that outlives every server, starts
// `keyledger serve --kafka-brokers <it>` on a temporary data directory, and repeats cycles:
//
//   load     client threads, each on its own keep-alive connection and owning its own agents,
//            register agents, create, rotate, revoke and compromise keys, change rate-limit
//            tiers, and verify keys (a key acknowledged as created must verify VALID at once,
//            one acknowledged as revoked or compromised must not);
//   kill     SIGKILL the server at a random moment, restart it on the same directory;
//   check    1. every acknowledged command has its effect, and a command left unanswered by
//               the kill has all of it or none of it (its unique label or name finds it);
//               nothing else exists; an acknowledged command's Idempotency-Key replays after
//               the restart; an unanswered one's retry takes effect exactly once (replayed
//               if the kill came after its events were durable, run if before);
//            2. the audit log (order=asc, paged by cursor) holds positions 1..N, no gap, no
//               duplicate, no repeated event id;
//            3. SIGTERM (clean exit), `keyledger rebuild-projections`, start again: the API
//               shows the same audit log, agents, keys and tokens as before the rebuild, and
//               verification answers the same;
//            4. the topic keyledger.key-events holds every position 1..N with the audit log's
//               event id, keyed by agent id, its value the same envelope, and per message key
//               the first appearances of positions in increasing order.
//
// Any violation is printed at once; the totals come at the end and the exit status is 1 if
// there was any (2 if the run itself broke down).

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "consumers/embedded_broker.h"
#include "consumers/kafka_client.h"
#include "domain/events.h"
#include "harness.h"
#include "support/temp_dir.h"

extern char** environ;

namespace keyledger::torture {
namespace {

namespace fs = std::filesystem;
using e2e::HttpResult;
using e2e::Json;
using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kShortCycles = 10;
constexpr int kLongCycles = 200;
// Keys an agent may hold active in the model; the product's limit is 10, and a command left
// unanswered may add one the model learns of only after the restart.
constexpr int kMaxActiveKeys = 8;
// An agent with this many keys takes no more commands (it is still checked every cycle), so
// the listings stay short as the log grows.
constexpr std::size_t kRetireAfterKeys = 24;
constexpr int kAuditPageLimit = 1000;
constexpr auto kReadyTimeout = 60s;
constexpr auto kKafkaTimeout = 60s;
// Keys whose verification is re-checked after each restart besides the ones touched in the cycle.
constexpr std::size_t kVerifySample = 40;

struct Options {
  std::string keyledger = KEYLEDGER_BINARY;  // the binary under test
  int cycles = kShortCycles;
  std::uint64_t seed = 0;
  int threads = 4;
  // Commands a client thread sends per cycle at most (it verifies keys after that, until the kill).
  int commands_per_thread = 60;
  // The kill comes this long after the load started: uniform in [min, max].
  int min_kill_ms = 50;
  int max_kill_ms = 1000;
};

void usage(std::ostream& out) {
  out << "usage: keyledger-torture [--keyledger PATH] [--cycles N | --long] [--seed S] [--threads T]\n"
         "                         [--commands-per-thread N] [--kill-after-ms MIN:MAX]\n"
         "  Kills `keyledger serve` at random moments under concurrent clients and checks what\n"
         "  survived (README \"Reliability\"). Default 10 cycles; --long is 200.\n";
}

// --- tally

// Counters and violations shared by every thread.
class Tally {
 public:
  void set_cycle(int cycle) { cycle_ = cycle; }
  void sent() { ++sent_; }
  void acknowledged() { ++acknowledged_; }
  void unanswered() { ++unanswered_; }

  // Counts one check of `category`; a failed one is printed with `detail()` and counted.
  bool check(bool ok, const std::string& category, const std::function<std::string()>& detail) {
    std::lock_guard lock(mutex_);
    ++checks_[category];
    if (!ok) {
      ++violations_by_category_[category];
      ++violations_;
      std::cerr << "VIOLATION [cycle " << cycle_ << "] " << category
                << ": " << detail() << std::endl;
    }
    return ok;
  }

  std::uint64_t violations() const {
    std::lock_guard lock(mutex_);
    return violations_;
  }
  std::uint64_t checks() const {
    std::lock_guard lock(mutex_);
    std::uint64_t n = 0;
    for (const auto& [category, count] : checks_) {
      n += count;
    }
    return n;
  }
  std::uint64_t acknowledged_count() const { return acknowledged_; }

  void print_totals(std::ostream& out) const {
    std::lock_guard lock(mutex_);
    out << "  commands: sent " << sent_ << ", acknowledged " << acknowledged_ << ", unanswered (killed) "
        << unanswered_ << "\n  checks by category:\n";
    for (const auto& [category, count] : checks_) {
      out << "    " << category << ": " << count;
      if (auto it = violations_by_category_.find(category); it != violations_by_category_.end()) {
        out << " (" << it->second << " violated)";
      }
      out << "\n";
    }
  }

 private:
  mutable std::mutex mutex_;
  std::atomic<int> cycle_{0};
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> acknowledged_{0};
  std::atomic<std::uint64_t> unanswered_{0};
  std::map<std::string, std::uint64_t> checks_;
  std::map<std::string, std::uint64_t> violations_by_category_;
  std::uint64_t violations_ = 0;
};

// --- processes

std::vector<std::string> serve_args(const Options& options, const fs::path& data_dir,
                                    const std::string& brokers) {
  return {options.keyledger, "serve",       "--data-dir",        data_dir.string(),
          "--listen",        "127.0.0.1:0", "--kafka-brokers",   brokers,
          "--log-level",     "warn",        "--disable-webhooks"};
}

// `keyledger serve`, started and waited for until it listens and /readyz says 200.
class Server : public e2e::ChildProcess {
 public:
  Server(const Options& options, const fs::path& data_dir, const fs::path& log_file,
         const std::string& brokers)
      : ChildProcess(serve_args(options, data_dir, brokers), log_file) {
    wait_until_ready(
        [this](const std::string& line) {
          if (line.rfind("keyledger listening on ", 0) != 0) {
            return false;
          }
          port_ = static_cast<std::uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
          return true;
        },
        "keyledger serve");
    const auto deadline = SteadyClock::now() + kReadyTimeout;
    for (;;) {
      try {
        if (e2e::http_request(port_, "GET", "/readyz").status == 200) {
          return;
        }
      } catch (const std::exception&) {
      }
      if (SteadyClock::now() > deadline) {
        throw std::runtime_error("keyledger did not become ready within 60 s");
      }
      std::this_thread::sleep_for(5ms);
    }
  }

  std::uint16_t port() const { return port_; }

 private:
  std::uint16_t port_ = 0;
};

// Runs `args` to completion with stdout and stderr appended to `log_file`; the exit status.
int run_to_end(std::vector<std::string> args, const fs::path& log_file) {
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error("cannot start " + args.front());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string tail_of(const fs::path& file, std::size_t lines) {
  std::ifstream in(file);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) {
    all.push_back(line);
  }
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += all[i] + "\n";
  }
  return out;
}

// --- HTTP

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// One keep-alive connection with the bootstrap token (every scope). Throws when the server is
// gone (connect, write or read failing).
class Client {
 public:
  Client(std::uint16_t port, std::string token) : connection_(port), token_(std::move(token)) {}

  HttpResult send(const std::string& method, const std::string& target, const Json& body,
                  const std::string& idempotency_key = "") {
    std::map<std::string, std::string> headers = {{"Authorization", "Bearer " + token_}};
    std::string text;
    if (!body.is_null()) {
      headers["Content-Type"] = "application/json";
      text = body.dump();
    }
    if (!idempotency_key.empty()) {
      headers["Idempotency-Key"] = idempotency_key;
    }
    return connection_.request(method, target, text, headers);
  }
  HttpResult get(const std::string& target) { return send("GET", target, Json()); }

  // GET that must answer 200 with JSON (the checks read state through it).
  Json get_json(const std::string& target) {
    HttpResult res = get(target);
    Json j = res.json();
    if (res.status != 200 || j.is_discarded()) {
      throw std::runtime_error("GET " + target + " answered " + std::to_string(res.status) + ": " + res.body);
    }
    return j;
  }

 private:
  e2e::HttpConnection connection_;
  std::string token_;
};

// --- the model: what the clients were told

std::string text_of(const Json& j, const char* field) {
  auto it = j.find(field);
  return it == j.end() || !it->is_string() ? std::string() : it->get<std::string>();
}
bool present(const Json& j, const char* field) {
  auto it = j.find(field);
  return it != j.end() && !it->is_null();
}

struct Key {
  std::string id;
  std::string label;
  std::string api_key;  // empty when the client never saw it (learnt after a kill, or replayed)
  bool active = true;
  bool compromised = false;
  std::string reason;  // revocation_reason, "" while active
  bool expires = false;
  std::string rotated_from;
  std::string rotated_to;
};

Key key_from_json(const Json& j, std::string api_key = "") {
  Key k;
  k.id = text_of(j, "key_id");
  k.label = text_of(j, "label");
  k.api_key = std::move(api_key);
  k.active = text_of(j, "status") == "active";
  k.compromised = present(j, "compromised_at");
  k.reason = text_of(j, "revocation_reason");
  k.expires = present(j, "expires_at");
  k.rotated_from = text_of(j, "rotated_from");
  k.rotated_to = text_of(j, "rotated_to");
  return k;
}

// "" when `got` is what the model holds, else what differs.
std::string key_diff(const Key& want, const Key& got) {
  std::ostringstream out;
  auto field = [&](const char* name, const auto& w, const auto& g) {
    if (!(w == g)) {
      out << " " << name << ": expected " << w << ", got " << g << ";";
    }
  };
  field("label", want.label, got.label);
  field("active", want.active, got.active);
  field("compromised", want.compromised, got.compromised);
  field("revocation_reason", want.reason, got.reason);
  field("has expires_at", want.expires, got.expires);
  field("rotated_from", want.rotated_from, got.rotated_from);
  field("rotated_to", want.rotated_to, got.rotated_to);
  return out.str();
}

struct Agent {
  std::string id;
  std::string name;
  std::string tier = "standard";
  std::map<std::string, Key> keys;
  bool retired = false;

  int active() const {
    return static_cast<int>(
        std::count_if(keys.begin(), keys.end(), [](const auto& k) { return k.second.active; }));
  }
};

enum class Op { kRegister, kCreate, kRotate, kRevoke, kCompromise, kTier };

const char* op_name(Op op) {
  switch (op) {
    case Op::kRegister:
      return "register agent";
    case Op::kCreate:
      return "create key";
    case Op::kRotate:
      return "rotate key";
    case Op::kRevoke:
      return "revoke key";
    case Op::kCompromise:
      return "compromise key";
    case Op::kTier:
      return "set rate-limit tier";
  }
  return "?";
}

struct Command {
  Op op = Op::kCreate;
  std::string method = "POST";
  std::string target;
  Json body;
  std::string idempotency_key;  // every POST carries a unique one
  std::string agent_id;
  std::string key_id;  // rotate, revoke, compromise
  std::string label;   // create, rotate: unique, so the key is found after a kill
  std::string name;    // register: unique
  std::string tier;
  std::optional<std::int64_t> old_expiry;  // rotate
  bool replace = false;                    // compromise

  std::string describe() const {
    return std::string(op_name(op)) + " (" + method + " " + target + " " + body.dump() +
           (idempotency_key.empty() ? "" : ", Idempotency-Key " + idempotency_key) + ")";
  }
};

// What one client thread owns: its agents and their keys as the server acknowledged them.
struct World {
  int index = 0;
  std::mt19937_64 rng;
  std::uint64_t seq = 0;
  std::vector<Agent> agents;
  // Sent, no answer: the kill came first. Resolved against the restarted server.
  std::optional<Command> in_flight;
  // An unanswered command, resolved: sent again with its Idempotency-Key first thing next cycle.
  std::optional<Command> retry;
  bool retry_happened = false;
  // The last acknowledged POST and its status: sent again next cycle, it must be replayed.
  std::optional<std::pair<Command, unsigned>> last_acked;
  // Keys whose state changed this cycle: their verification is checked after the restart.
  std::set<std::string> touched;

  Agent* agent(const std::string& id) {
    for (auto& a : agents) {
      if (a.id == id) {
        return &a;
      }
    }
    return nullptr;
  }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
  template <typename T>
  const T& pick(const std::vector<T>& from) {
    return from[std::uniform_int_distribution<std::size_t>(0, from.size() - 1)(rng)];
  }
};

// --- client threads

Json agent_body(const std::string& name, int thread) {
  return {{"name", name},
          {"description", "An agent of the crash torture; it exists to be killed."},
          {"skills", {"torture", "crash"}},
          {"languages", {"en"}},
          {"webhook_url", "https://agent.example.com/hooks/" + std::to_string(thread)},
          {"owner_id", "usr_torture"}};
}

std::optional<Command> next_command(World& w) {
  std::vector<std::size_t> live;
  for (std::size_t i = 0; i < w.agents.size(); ++i) {
    if (!w.agents[i].retired) {
      live.push_back(i);
    }
  }
  const std::string tag = "t" + std::to_string(w.index) + "-" + std::to_string(++w.seq);
  Command c;
  c.idempotency_key = "torture-" + tag;
  if (live.size() < 2 || (live.size() < 4 && w.chance(0.03))) {
    c.op = Op::kRegister;
    c.name = "torture agent " + tag;
    c.target = "/v1/agents";
    c.body = agent_body(c.name, w.index);
    return c;
  }
  Agent& a = w.agents[w.pick(live)];
  if (a.keys.size() >= kRetireAfterKeys) {
    a.retired = true;
    return next_command(w);
  }
  c.agent_id = a.id;
  std::vector<const Key*> active, rotatable, compromisable;
  for (const auto& [id, k] : a.keys) {
    if (k.active) {
      active.push_back(&k);
      if (k.rotated_to.empty()) {
        rotatable.push_back(&k);
      }
    }
    if (!k.compromised) {
      compromisable.push_back(&k);
    }
  }
  const bool room = a.active() < kMaxActiveKeys;
  std::vector<std::pair<Op, int>> weights;
  if (room) {
    weights.emplace_back(Op::kCreate, 30);
  }
  if (room && !rotatable.empty()) {
    weights.emplace_back(Op::kRotate, 20);
  }
  if (!active.empty()) {
    weights.emplace_back(Op::kRevoke, 15);
  }
  if (!compromisable.empty()) {
    weights.emplace_back(Op::kCompromise, 10);
  }
  weights.emplace_back(Op::kTier, 5);
  int total = 0;
  for (const auto& [op, weight] : weights) {
    total += weight;
  }
  int roll = std::uniform_int_distribution<int>(0, total - 1)(w.rng);
  c.op = weights.back().first;
  for (const auto& [op, weight] : weights) {
    if (roll < weight) {
      c.op = op;
      break;
    }
    roll -= weight;
  }
  switch (c.op) {
    case Op::kRegister:
      break;
    case Op::kCreate:
      c.label = "key " + tag;
      c.target = "/v1/agents/" + a.id + "/keys";
      c.body = {{"label", c.label}};
      if (w.chance(0.3)) {
        c.body["expires_in_seconds"] = 7776000;
      }
      break;
    case Op::kRotate: {
      c.key_id = w.pick(rotatable)->id;
      c.label = "key " + tag;
      c.target = "/v1/keys/" + c.key_id + "/rotate";
      c.body = {{"label", c.label}};
      const int mode = std::uniform_int_distribution<int>(0, 2)(w.rng);
      if (mode > 0) {
        c.old_expiry = mode == 1 ? 0 : 86400;
        c.body["old_key_expires_in_seconds"] = *c.old_expiry;
      }
      break;
    }
    case Op::kRevoke:
      c.key_id = w.pick(active)->id;
      c.target = "/v1/keys/" + c.key_id + "/revoke";
      c.body = {{"reason", "torture " + tag}};
      break;
    case Op::kCompromise:
      c.key_id = w.pick(compromisable)->id;
      c.replace = room && w.chance(0.5);
      c.target = "/v1/keys/" + c.key_id + "/compromise";
      c.body = {{"note", "torture " + tag}, {"source", "ops/torture"}, {"replace", c.replace}};
      break;
    case Op::kTier:
      c.method = "PUT";
      c.idempotency_key.clear();
      c.tier = a.tier == "standard" ? "elevated" : "standard";
      c.target = "/v1/agents/" + a.id + "/rate-limit";
      c.body = {{"tier", c.tier}};
      break;
  }
  return c;
}

// Verifies `key` and checks the answer against the model. Throws when the server is gone.
void verify_expect(Client& client, const Key& key, Tally& tally, const std::string& when) {
  if (key.api_key.empty()) {
    return;
  }
  HttpResult res = client.send("POST", "/v1/verify", Json{{"api_key", key.api_key}});
  const Json j = res.json();
  const std::string code = res.status == 200 && !j.is_discarded() ? text_of(j, "code") : "";
  if (code == "RATE_LIMITED") {
    return;  // says nothing about the key's state
  }
  const std::string want = key.active ? "VALID" : key.compromised ? "COMPROMISED" : "REVOKED";
  tally.check(code == want, "verification", [&] {
    return "key " + key.id + " (" + when + ") verified " + std::to_string(res.status) + " " + res.body +
           ", expected " + want;
  });
}

bool is_2xx(unsigned status) { return status >= 200 && status < 300; }

// Applies an acknowledged command's answer to the model and checks what it says. Throws when the
// server is gone (during the verifications that follow a change).
void apply(World& w, const Command& c, const HttpResult& res, Client& client, Tally& tally) {
  const Json j = res.json();
  const std::string what = c.describe() + " answered " + std::to_string(res.status) + " " + res.body;
  if (!tally.check(!j.is_discarded(), "acknowledged answer", [&] { return "not JSON: " + what; })) {
    return;
  }
  Agent* a = w.agent(c.agent_id);
  std::vector<Key> to_verify;
  switch (c.op) {
    case Op::kRegister: {
      Agent fresh;
      fresh.id = text_of(j, "agent_id");
      fresh.name = c.name;
      fresh.tier = text_of(j, "rate_limit_tier");
      tally.check(!fresh.id.empty() && text_of(j, "name") == c.name, "acknowledged answer",
                  [&] { return "unexpected: " + what; });
      w.agents.push_back(std::move(fresh));
      return;
    }
    case Op::kCreate: {
      Key k = key_from_json(j["key"], text_of(j, "api_key"));
      tally.check(k.active && k.label == c.label && k.rotated_from.empty(), "acknowledged answer",
                  [&] { return "unexpected: " + what; });
      a->keys[k.id] = k;
      to_verify.push_back(k);
      break;
    }
    case Op::kRotate: {
      Key fresh = key_from_json(j["key"], text_of(j, "api_key"));
      Key old = key_from_json(j["previous"], a->keys[c.key_id].api_key);
      tally.check(fresh.active && fresh.label == c.label && fresh.rotated_from == c.key_id &&
                      old.rotated_to == fresh.id && old.active == (c.old_expiry != 0),
                  "acknowledged answer", [&] { return "unexpected: " + what; });
      a->keys[fresh.id] = fresh;
      a->keys[c.key_id] = old;
      to_verify = {fresh, old};
      break;
    }
    case Op::kRevoke: {
      Key k = key_from_json(j, a->keys[c.key_id].api_key);
      tally.check(!k.active && k.reason == "manual", "acknowledged answer",
                  [&] { return "unexpected: " + what; });
      a->keys[c.key_id] = k;
      to_verify.push_back(k);
      break;
    }
    case Op::kCompromise: {
      Key k = key_from_json(j["key"], a->keys[c.key_id].api_key);
      tally.check(!k.active && k.compromised, "acknowledged answer", [&] { return "unexpected: " + what; });
      a->keys[c.key_id] = k;
      to_verify.push_back(k);
      if (c.replace) {
        Key r = key_from_json(j["replacement"]["key"], text_of(j["replacement"], "api_key"));
        tally.check(r.active && r.rotated_from == c.key_id, "acknowledged answer",
                    [&] { return "unexpected replacement: " + what; });
        a->keys[r.id] = r;
        to_verify.push_back(r);
      }
      break;
    }
    case Op::kTier:
      tally.check(text_of(j, "rate_limit_tier") == c.tier, "acknowledged answer",
                  [&] { return "unexpected: " + what; });
      a->tier = c.tier;
      return;
  }
  for (const Key& k : to_verify) {
    w.touched.insert(k.id);
    verify_expect(client, k, tally, "just after " + std::string(op_name(c.op)) + " was acknowledged");
  }
}

// A command the kill left unanswered, sent again with its Idempotency-Key after the restart, must
// be replayed if it took effect and take effect if it did not (keyledger keeps the answer for an
// Idempotency-Key in the WriteBatch of the command's events, so the two survive together).
constexpr const char* kRetryCategory = "idempotent retry of an unanswered command";

// Sends the previous cycle's commands again with their Idempotency-Keys.
void retry_previous(World& w, Client& client, Tally& tally) {
  if (w.retry) {
    const Command c = *w.retry;
    w.retry.reset();
    HttpResult res;
    try {
      tally.sent();
      res = client.send(c.method, c.target, c.body, c.idempotency_key);
    } catch (const std::exception&) {
      tally.unanswered();
      w.in_flight = c;  // killed again: still either way
      throw;
    }
    const bool replayed = res.header("idempotent-replayed") == "true";
    if (c.op == Op::kTier) {
      if (tally.check(res.status == 200, kRetryCategory,
                      [&] { return c.describe() + " sent again answered " + std::to_string(res.status); })) {
        tally.acknowledged();
        apply(w, c, res, client, tally);
      }
    } else if (w.retry_happened) {
      tally.check(is_2xx(res.status) && replayed, kRetryCategory, [&] {
        return c.describe() +
               " took effect before the kill (no answer came); sent again with its "
               "Idempotency-Key it answered " +
               std::to_string(res.status) + (replayed ? " (replayed) " : " (not a replay) ") + res.body;
      });
      if (is_2xx(res.status) && !replayed) {
        apply(w, c, res, client, tally);  // done twice: the model follows the server
      }
    } else {
      tally.check(is_2xx(res.status) && !replayed, kRetryCategory, [&] {
        return c.describe() +
               " had no effect before the kill; sent again with its Idempotency-Key it answered " +
               std::to_string(res.status) +
               (replayed ? " (replayed: a stored answer without its effect) " : " ") + res.body;
      });
      if (is_2xx(res.status) && !replayed) {
        tally.acknowledged();
        apply(w, c, res, client, tally);
      }
    }
  }
  if (w.last_acked) {
    const Command c = w.last_acked->first;
    const unsigned status = w.last_acked->second;
    w.last_acked.reset();
    HttpResult res = client.send(c.method, c.target, c.body, c.idempotency_key);
    const bool replayed = res.header("idempotent-replayed") == "true";
    tally.check(res.status == status && replayed, "idempotent replay after restart", [&] {
      return c.describe() + " was acknowledged " + std::to_string(status) +
             " before the kill; sent again it answered " + std::to_string(res.status) +
             (replayed ? " (replayed) " : " (not a replay) ") + res.body;
    });
    if (is_2xx(res.status) && !replayed) {
      apply(w, c, res, client, tally);
    }
  }
}

// One client thread's cycle: retries, then commands and verifications until the server dies.
void run_client(World& w, std::uint16_t port, const std::string& token, const Options& options,
                Tally& tally) {
  std::unique_ptr<Client> client;
  try {
    client = std::make_unique<Client>(port, token);
    retry_previous(w, *client, tally);
  } catch (const std::exception&) {
    return;
  }
  for (int n = 0;;) {
    if (n >= options.commands_per_thread || w.chance(0.2)) {
      // Verify a random key of this thread's: the verification path, killed too.
      try {
        std::vector<const Key*> keys;
        for (const auto& a : w.agents) {
          for (const auto& [id, k] : a.keys) {
            if (!k.api_key.empty()) {
              keys.push_back(&k);
            }
          }
        }
        if (!keys.empty()) {
          verify_expect(*client, *w.pick(keys), tally, "during the load");
        } else {
          (void)client->get("/healthz");
        }
      } catch (const std::exception&) {
        return;
      }
      if (n >= options.commands_per_thread) {
        std::this_thread::sleep_for(2ms);
      }
      continue;
    }
    std::optional<Command> c = next_command(w);
    if (!c) {
      continue;
    }
    ++n;
    HttpResult res;
    try {
      tally.sent();
      res = client->send(c->method, c->target, c->body, c->idempotency_key);
    } catch (const std::exception&) {
      tally.unanswered();
      w.in_flight = *c;
      return;
    }
    if (!tally.check(is_2xx(res.status), "command answer", [&] {
          return c->describe() + " answered " + std::to_string(res.status) + " " + res.body;
        })) {
      continue;  // the world check finds any effect it had anyway
    }
    tally.acknowledged();
    if (c->method == "POST") {
      w.last_acked = {*c, res.status};
    }
    try {
      apply(w, *c, res, *client, tally);
    } catch (const std::exception&) {
      return;
    }
  }
}

// --- what the server shows

struct Snapshot {
  std::vector<Json> audit;                                  // every event, ascending
  std::map<std::string, Json> agents;                       // GET /v1/agents/{id}
  std::map<std::string, std::map<std::string, Json>> keys;  // agent → key id → key
  Json tokens;
};

Snapshot take_snapshot(Client& client) {
  Snapshot s;
  std::string cursor;
  for (;;) {
    std::string target = "/v1/audit?order=asc&limit=" + std::to_string(kAuditPageLimit);
    if (!cursor.empty()) {
      target += "&cursor=" + url_encode(cursor);
    }
    const Json page = client.get_json(target);
    for (const auto& e : page["events"]) {
      s.audit.push_back(e);
    }
    cursor = text_of(page, "next_cursor");
    if (cursor.empty()) {
      break;
    }
  }
  for (const auto& e : s.audit) {
    if (text_of(e, "type") != "agent.registered") {
      continue;
    }
    const std::string id = text_of(e, "agent_id");
    s.agents[id] = client.get_json("/v1/agents/" + id);
    s.keys[id];  // an agent without keys lists none
    const Json listed = client.get_json("/v1/agents/" + id + "/keys");
    for (auto k : listed["keys"]) {
      k.erase("last_used_at");  // usage data, not an event: a rebuild need not keep it
      s.keys[id][text_of(k, "key_id")] = k;
    }
  }
  s.tokens = client.get_json("/v1/tokens");
  return s;
}

// Check 2: positions 1..N in order, once each, event ids unique.
void check_positions(const Snapshot& s, Tally& tally) {
  std::set<std::string> ids;
  for (std::size_t i = 0; i < s.audit.size(); ++i) {
    const Json& e = s.audit[i];
    const std::uint64_t position = e.value("position", std::uint64_t{0});
    tally.check(position == i + 1, "audit positions gap-free", [&] {
      return "the audit log's entry #" + std::to_string(i + 1) + " has position " + std::to_string(position) +
             " (previous " + (i == 0 ? std::string("none") : s.audit[i - 1]["position"].dump()) + ")";
    });
    tally.check(ids.insert(text_of(e, "event_id")).second, "audit positions gap-free", [&] {
      return "event id " + text_of(e, "event_id") + " appears twice (position " + e["position"].dump() + ")";
    });
  }
}

// Keys of `agent` in the snapshot that the model does not know.
std::vector<Key> unknown_keys(const Snapshot& s, const Agent& agent) {
  std::vector<Key> out;
  auto it = s.keys.find(agent.id);
  if (it == s.keys.end()) {
    return out;
  }
  for (const auto& [id, j] : it->second) {
    if (agent.keys.count(id) == 0) {
      out.push_back(key_from_json(j));
    }
  }
  return out;
}

// Check 1, for a command the kill left unanswered: all of its effect or none, found by its
// unique name or label; the model takes what the server shows. Returns whether it happened.
bool resolve_unanswered(std::vector<World>& worlds, World& w, const Command& c, const Snapshot& s,
                        Tally& tally) {
  const std::string what = c.describe() + ", unanswered at the kill";
  auto fail = [&](const std::string& why) {
    tally.check(false, "unanswered command all-or-nothing", [&] { return what + ": " + why; });
  };
  auto ok = [&] { tally.check(true, "unanswered command all-or-nothing", [] { return ""; }); };
  if (c.op == Op::kRegister) {
    std::vector<std::string> found;
    for (const auto& [id, j] : s.agents) {
      bool known = false;
      for (auto& other : worlds) {
        known = known || other.agent(id) != nullptr;
      }
      if (!known && text_of(j, "name") == c.name) {
        found.push_back(id);
      }
    }
    if (found.size() > 1) {
      fail(std::to_string(found.size()) + " agents carry its name");
    } else {
      ok();
    }
    for (const auto& id : found) {
      Agent a;
      a.id = id;
      a.name = c.name;
      a.tier = text_of(s.agents.at(id), "rate_limit_tier");
      w.agents.push_back(std::move(a));
    }
    return !found.empty();
  }
  Agent* a = w.agent(c.agent_id);
  if (s.agents.count(a->id) == 0) {
    fail("its agent " + a->id + " is missing");
    return false;
  }
  const auto unknown = unknown_keys(s, *a);
  auto with_label = [&](const std::string& label) {
    std::vector<Key> out;
    for (const auto& k : unknown) {
      if (k.label == label) {
        out.push_back(k);
      }
    }
    return out;
  };
  auto replacing = [&](const std::string& key_id) {
    std::vector<Key> out;
    for (const auto& k : unknown) {
      if (k.rotated_from == key_id) {
        out.push_back(k);
      }
    }
    return out;
  };
  auto shown = [&](const std::string& key_id) -> std::optional<Key> {
    const auto& keys = s.keys.at(a->id);
    auto it = keys.find(key_id);
    if (it == keys.end()) {
      return std::nullopt;
    }
    return key_from_json(it->second);
  };
  auto adopt = [&](Key k) {
    if (auto it = a->keys.find(k.id); it != a->keys.end()) {
      k.api_key = it->second.api_key;
    }
    w.touched.insert(k.id);
    a->keys[k.id] = std::move(k);
  };
  const Key* before = c.key_id.empty() ? nullptr : &a->keys.at(c.key_id);
  const std::optional<Key> now = c.key_id.empty() ? std::nullopt : shown(c.key_id);
  if (before != nullptr && !now) {
    fail("key " + c.key_id + " is gone");
    return false;
  }
  switch (c.op) {
    case Op::kRegister:
      break;
    case Op::kCreate: {
      const auto found = with_label(c.label);
      if (found.size() > 1) {
        fail(std::to_string(found.size()) + " keys carry its label");
      } else if (found.size() == 1 && (!found[0].active || !found[0].rotated_from.empty())) {
        Key want;
        want.label = c.label;
        fail("the key it created shows" + key_diff(want, found[0]));
      } else {
        ok();
      }
      for (const auto& k : found) {
        adopt(k);
      }
      return !found.empty();
    }
    case Op::kRotate: {
      const bool happened = !now->rotated_to.empty();
      const auto found = with_label(c.label);
      if (!happened) {
        if (!found.empty() || !key_diff(*before, *now).empty()) {
          fail("the old key was not rotated, yet " + std::to_string(found.size()) +
               " new keys carry the label;" + key_diff(*before, *now));
        } else {
          ok();
        }
        return false;
      }
      const bool old_ok = c.old_expiry == 0 ? (!now->active && now->reason == "rotated")
                                            : (now->active && (!c.old_expiry || now->expires));
      if (found.size() != 1 || found[0].id != now->rotated_to || found[0].rotated_from != c.key_id ||
          !found[0].active || !old_ok) {
        fail("the old key shows rotated_to " + now->rotated_to + " active " + std::to_string(now->active) +
             " reason '" + now->reason + "'; " + std::to_string(found.size()) + " new keys carry the label" +
             (found.empty() ? ""
                            : " (first " + found[0].id + ", rotated_from " + found[0].rotated_from + ")"));
      } else {
        ok();
      }
      adopt(*now);
      for (const auto& k : found) {
        adopt(k);
      }
      return true;
    }
    case Op::kRevoke: {
      const bool happened = !now->active;
      if (happened ? now->reason != "manual" : !key_diff(*before, *now).empty()) {
        fail("the key shows" + key_diff(*before, *now));
      } else {
        ok();
      }
      adopt(*now);
      return happened;
    }
    case Op::kCompromise: {
      const bool happened = now->compromised;
      const auto found = replacing(c.key_id);
      if (!happened) {
        if (!found.empty() || !key_diff(*before, *now).empty()) {
          fail("not compromised, yet " + std::to_string(found.size()) + " unknown keys replace it;" +
               key_diff(*before, *now));
        } else {
          ok();
        }
        return false;
      }
      const bool revoked_ok = !now->active && (!before->active || now->reason == "compromised");
      if (!revoked_ok || found.size() != (c.replace ? 1u : 0u) || (c.replace && !found[0].active)) {
        fail("compromised; active " + std::to_string(now->active) + " reason '" + now->reason + "', " +
             std::to_string(found.size()) + " unknown keys replace it (replace " + std::to_string(c.replace) +
             ")");
      } else {
        ok();
      }
      adopt(*now);
      for (const auto& k : found) {
        adopt(k);
      }
      return true;
    }
    case Op::kTier: {
      auto it = s.agents.find(a->id);
      const std::string tier = it == s.agents.end() ? "" : text_of(it->second, "rate_limit_tier");
      if (tier != a->tier && tier != c.tier) {
        fail("the agent's tier is '" + tier + "'");
      } else {
        ok();
      }
      const bool happened = tier == c.tier;
      a->tier = tier;
      return happened;
    }
  }
  return false;
}

// Check 1: every agent and key of the model is what the server shows, and nothing else exists.
// The model follows the server after a reported difference, so one loss is reported once.
void check_world(std::vector<World>& worlds, const Snapshot& s, Tally& tally) {
  std::set<std::string> known_agents;
  for (auto& w : worlds) {
    for (auto& a : w.agents) {
      known_agents.insert(a.id);
      auto it = s.agents.find(a.id);
      if (!tally.check(it != s.agents.end(), "acknowledged effects",
                       [&] { return "acknowledged agent " + a.id + " (" + a.name + ") is missing"; })) {
        continue;
      }
      const Json& shown = it->second;
      tally.check(text_of(shown, "name") == a.name && text_of(shown, "rate_limit_tier") == a.tier &&
                      shown.value("active_key_count", -1) == a.active(),
                  "acknowledged effects", [&] {
                    return "agent " + a.id + " shows " + shown.dump() + ", expected name '" + a.name +
                           "', tier " + a.tier + ", " + std::to_string(a.active()) + " active keys";
                  });
      a.tier = text_of(shown, "rate_limit_tier");
      const auto keys_it = s.keys.find(a.id);
      for (auto& [id, k] : a.keys) {
        const Json* got = nullptr;
        if (keys_it != s.keys.end()) {
          if (auto kit = keys_it->second.find(id); kit != keys_it->second.end()) {
            got = &kit->second;
          }
        }
        if (!tally.check(got != nullptr, "acknowledged effects",
                         [&] { return "acknowledged key " + id + " of agent " + a.id + " is missing"; })) {
          continue;
        }
        Key shown_key = key_from_json(*got, k.api_key);
        const std::string diff = key_diff(k, shown_key);
        if (!tally.check(diff.empty(), "acknowledged effects", [&] {
              return "key " + id + " of agent " + a.id + ":" + diff + " shown " + got->dump();
            })) {
          k = shown_key;
        }
      }
      for (const Key& phantom : unknown_keys(s, a)) {
        tally.check(false, "acknowledged effects", [&] {
          return "key " + phantom.id + " (label '" + phantom.label + "') of agent " + a.id +
                 " exists, but no command that could have made it was sent";
        });
        a.keys[phantom.id] = phantom;
      }
    }
  }
  for (const auto& [id, shown] : s.agents) {
    tally.check(known_agents.count(id) == 1, "acknowledged effects", [&] {
      return "agent " + id + " (" + text_of(shown, "name") +
             ") exists, but no command that could have made it was sent";
    });
  }
}

// Verification answers for the keys touched this cycle and a random sample of the others.
void check_verification(std::vector<World>& worlds, Client& client, std::mt19937_64& rng, Tally& tally,
                        const std::string& when) {
  std::vector<const Key*> all;
  for (auto& w : worlds) {
    for (auto& a : w.agents) {
      for (auto& [id, k] : a.keys) {
        if (k.api_key.empty()) {
          continue;
        }
        if (w.touched.count(id) != 0) {
          verify_expect(client, k, tally, when);
        } else {
          all.push_back(&k);
        }
      }
    }
  }
  std::shuffle(all.begin(), all.end(), rng);
  for (std::size_t i = 0; i < all.size() && i < kVerifySample; ++i) {
    verify_expect(client, *all[i], tally, when);
  }
}

// Check 3: what the API shows after a rebuild of the projections is what it showed before.
void compare_snapshots(const Snapshot& before, const Snapshot& after, Tally& tally) {
  const std::string category = "projections equal a rebuild";
  tally.check(before.audit.size() == after.audit.size(), category, [&] {
    return "the audit log had " + std::to_string(before.audit.size()) + " events before the rebuild, " +
           std::to_string(after.audit.size()) + " after";
  });
  for (std::size_t i = 0; i < before.audit.size() && i < after.audit.size(); ++i) {
    tally.check(before.audit[i] == after.audit[i], category, [&] {
      return "audit entry #" + std::to_string(i + 1) + " before: " + before.audit[i].dump() +
             " after: " + after.audit[i].dump();
    });
  }
  for (const auto& [id, agent] : before.agents) {
    auto it = after.agents.find(id);
    tally.check(it != after.agents.end() && it->second == agent, category, [&] {
      return "agent " + id + " before: " + agent.dump() +
             " after: " + (it == after.agents.end() ? std::string("missing") : it->second.dump());
    });
  }
  tally.check(before.agents.size() == after.agents.size(), category,
              [&] { return "the number of agents changed"; });
  for (const auto& [agent, keys] : before.keys) {
    auto ait = after.keys.find(agent);
    for (const auto& [id, key] : keys) {
      const Json* got = nullptr;
      if (ait != after.keys.end()) {
        if (auto kit = ait->second.find(id); kit != ait->second.end()) {
          got = &kit->second;
        }
      }
      tally.check(got != nullptr && *got == key, category, [&] {
        return "key " + id + " before: " + key.dump() +
               " after: " + (got ? got->dump() : std::string("missing"));
      });
    }
    tally.check(ait != after.keys.end() && ait->second.size() == keys.size(), category,
                [&] { return "agent " + agent + " lists another number of keys after the rebuild"; });
  }
  tally.check(before.tokens == after.tokens, category,
              [&] { return "tokens before: " + before.tokens.dump() + " after: " + after.tokens.dump(); });
}

// --- Kafka

// A consumer of keyledger.key-events that lives through every cycle and remembers what it read,
// so the mock broker's eviction of old message sets cannot hide anything already checked.
class TopicWatch {
 public:
  TopicWatch(const std::string& brokers, Tally& tally) : tally_(tally) {
    using namespace consumers;
    auto conf = make_kafka_conf({{"bootstrap.servers", brokers},
                                 {"group.id", unique_group_id("keyledger-torture")},
                                 {"enable.auto.commit", "false"},
                                 {"auto.offset.reset", "earliest"},
                                 {"fetch.wait.max.ms", "10"},
                                 {"log_level", "3"}});
    if (!conf.ok()) {
      throw std::runtime_error("kafka consumer configuration: " + conf.status().message());
    }
    auto client = make_kafka_client(RD_KAFKA_CONSUMER, std::move(conf).value());
    if (!client.ok()) {
      throw std::runtime_error("kafka consumer: " + client.status().message());
    }
    rk_ = std::move(client).value();
    auto partitions = topic_partitions(rk_.get(), kEventsTopic, 10'000);
    if (!partitions.ok()) {
      throw std::runtime_error("kafka topic: " + partitions.status().message());
    }
    KafkaPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(partitions->size())));
    for (const auto& p : *partitions) {
      rd_kafka_topic_partition_list_add(list.get(), kEventsTopic, p.id)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    if (rd_kafka_assign(rk_.get(), list.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("cannot assign the topic's partitions");
    }
  }
  ~TopicWatch() { (void)rd_kafka_consumer_close(rk_.get()); }
  TopicWatch(const TopicWatch&) = delete;
  TopicWatch& operator=(const TopicWatch&) = delete;

  std::uint64_t records() const { return records_; }

  // Check 4: reads until every position of the audit log arrived (or the timeout), then checks
  // each new one against it.
  void check(const std::vector<Json>& audit) {
    const auto deadline = SteadyClock::now() + kKafkaTimeout;
    while (!has_all(audit.size()) && SteadyClock::now() < deadline) {
      poll(100);
    }
    for (std::uint64_t p = checked_ + 1; p <= audit.size(); ++p) {
      const Json& e = audit[p - 1];
      auto it = seen_.find(p);
      if (!tally_.check(it != seen_.end(), "kafka", [&] {
            return "position " + std::to_string(p) + " (" + text_of(e, "type") + ", event " +
                   text_of(e, "event_id") + ") never reached " + consumers::kEventsTopic + " within 60 s";
          })) {
        continue;
      }
      const std::string agent = text_of(e, "agent_id");
      const std::string want_key = agent.empty() ? "tokens" : agent;
      tally_.check(it->second.event_id == text_of(e, "event_id") && it->second.message_key == want_key,
                   "kafka", [&] {
                     return "position " + std::to_string(p) + " on the topic: event id " +
                            it->second.event_id + ", key " + it->second.message_key +
                            "; the audit log says event id " + text_of(e, "event_id") + ", key " + want_key;
                   });
    }
    checked_ = std::max<std::uint64_t>(checked_, audit.size());
  }

 private:
  struct Seen {
    std::string event_id;
    std::string message_key;
  };

  bool has_all(std::size_t n) const {
    for (std::uint64_t p = checked_ + 1; p <= n; ++p) {
      if (seen_.count(p) == 0) {
        return false;
      }
    }
    return true;
  }

  void poll(int timeout_ms) {
    for (;;) {
      consumers::KafkaMessage m(rd_kafka_consumer_poll(rk_.get(), timeout_ms));
      if (!m) {
        return;
      }
      timeout_ms = 0;
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        continue;
      }
      take(*m);
    }
  }

  // Per record: headers and value agree, a position never carries two event ids, and per message
  // key the first appearances of positions increase.
  void take(const rd_kafka_message_t& m) {
    ++records_;
    std::map<std::string, std::string> headers;
    rd_kafka_headers_t* hdrs = nullptr;
    if (rd_kafka_message_headers(&m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      std::size_t size = 0;
      for (std::size_t i = 0;
           rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
        headers[name] = std::string(static_cast<const char*>(value), size);
      }
    }
    const std::string key(static_cast<const char*>(m.key), m.key_len);
    v1::Event event;
    const bool parsed = event.ParseFromArray(m.payload, static_cast<int>(m.len));
    std::uint64_t position = 0;
    try {
      position = std::stoull(headers["position"]);
    } catch (const std::exception&) {
    }
    const std::string where = "partition " + std::to_string(m.partition) + " offset " +
                              std::to_string(m.offset) + " (key " + key + ")";
    if (!tally_.check(parsed && position != 0 && event.position() == position &&
                          event.event_id() == headers["event-id"] && event.type() == headers["event-type"],
                      "kafka", [&] {
                        return "record at " + where + ": headers position '" + headers["position"] +
                               "' event-id '" + headers["event-id"] + "' event-type '" +
                               headers["event-type"] + "' do not match its value (parsed " +
                               std::to_string(parsed) + ", position " + std::to_string(event.position()) +
                               ", id " + event.event_id() + ")";
                      })) {
      return;
    }
    auto [it, first] = seen_.try_emplace(position, Seen{event.event_id(), key});
    if (!first) {
      tally_.check(it->second.event_id == event.event_id() && it->second.message_key == key, "kafka", [&] {
        return "position " + std::to_string(position) + " arrived again at " + where + " with event id " +
               event.event_id() + ", first with " + it->second.event_id + " key " + it->second.message_key;
      });
      return;
    }
    std::uint64_t& highest = highest_first_[key];
    tally_.check(position > highest, "kafka", [&] {
      return "position " + std::to_string(position) + " first appeared at " + where + " after position " +
             std::to_string(highest) + " of the same key";
    });
    highest = std::max(highest, position);
  }

  Tally& tally_;
  consumers::KafkaHandle rk_;
  std::map<std::uint64_t, Seen> seen_;
  std::map<std::string, std::uint64_t> highest_first_;
  std::uint64_t checked_ = 0;
  std::uint64_t records_ = 0;
};

// --- the run

std::string read_token(const fs::path& data_dir) {
  std::ifstream in(data_dir / "bootstrap-token");
  std::string token;
  std::getline(in, token);
  return token;
}

double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

int run(const Options& options) {
  const auto started = SteadyClock::now();
  Tally tally;
  std::cout << "torture: seed " << options.seed << ", " << options.cycles << " cycles, " << options.threads
            << " client threads, binary " << options.keyledger << "\n  replay: ops/torture --keyledger "
            << options.keyledger << " --cycles " << options.cycles << " --seed " << options.seed << std::endl;

  auto broker = consumers::EmbeddedBroker::start();
  if (!broker.ok()) {
    throw std::runtime_error("cannot start the Kafka mock cluster: " + broker.status().message());
  }
  const std::string brokers = (*broker)->bootstrap_servers();
  keyledger::testing::TempDir temp;
  const fs::path data_dir = temp.path() / "data";
  const fs::path log_file = temp.path() / "keyledger.log";
  TopicWatch topic(brokers, tally);

  std::mt19937_64 rng(options.seed);
  std::vector<World> worlds(static_cast<std::size_t>(options.threads));
  for (int i = 0; i < options.threads; ++i) {
    worlds[static_cast<std::size_t>(i)].index = i;
    worlds[static_cast<std::size_t>(i)].rng.seed(options.seed * 1000003 + static_cast<std::uint64_t>(i));
  }

  try {
    auto server = std::make_unique<Server>(options, data_dir, log_file, brokers);
    const std::string token = read_token(data_dir);
    for (int cycle = 1; cycle <= options.cycles; ++cycle) {
      tally.set_cycle(cycle);
      const auto cycle_started = SteadyClock::now();
      const std::uint64_t acked_before = tally.acknowledged_count();
      for (auto& w : worlds) {
        w.touched.clear();
      }

      // Load, then the kill.
      std::vector<std::thread> clients;
      for (auto& w : worlds) {
        clients.emplace_back([&, port = server->port()] { run_client(w, port, token, options, tally); });
      }
      const int kill_after =
          std::uniform_int_distribution<int>(options.min_kill_ms, options.max_kill_ms)(rng);
      std::this_thread::sleep_for(std::chrono::milliseconds(kill_after));
      bool alive = false;
      try {
        alive = e2e::http_request(server->port(), "GET", "/healthz").status == 200;
      } catch (const std::exception&) {
      }
      tally.check(alive, "server alive until the kill", [&] {
        return "keyledger stopped answering before the SIGKILL; log:\n" + tail_of(log_file, 30);
      });
      server->kill_hard();
      for (auto& t : clients) {
        t.join();
      }

      // Restart and check.
      server = std::make_unique<Server>(options, data_dir, log_file, brokers);
      Snapshot before;
      {
        Client client(server->port(), token);
        before = take_snapshot(client);
        check_positions(before, tally);
        for (auto& w : worlds) {
          if (w.in_flight) {
            w.retry = *w.in_flight;
            w.in_flight.reset();
            w.retry_happened = resolve_unanswered(worlds, w, *w.retry, before, tally);
          }
        }
        check_world(worlds, before, tally);
        check_verification(worlds, client, rng, tally, "after the restart");
        topic.check(before.audit);
      }

      // Rebuild the projections and compare.
      tally.check(server->stop() == 0, "clean shutdown",
                  [&] { return "SIGTERM: non-zero exit; log:\n" + tail_of(log_file, 30); });
      server.reset();
      const int rebuilt =
          run_to_end({options.keyledger, "rebuild-projections", "--data-dir", data_dir.string()}, log_file);
      tally.check(rebuilt == 0, "projections equal a rebuild", [&] {
        return "rebuild-projections exited " + std::to_string(rebuilt) + "; log:\n" + tail_of(log_file, 30);
      });
      server = std::make_unique<Server>(options, data_dir, log_file, brokers);
      {
        Client client(server->port(), token);
        const Snapshot after = take_snapshot(client);
        compare_snapshots(before, after, tally);
        check_verification(worlds, client, rng, tally, "after the rebuild");
      }

      std::cout << "cycle " << cycle << "/" << options.cycles << ": killed after " << kill_after << " ms, "
                << (tally.acknowledged_count() - acked_before) << " acknowledged, log at position "
                << before.audit.size() << ", " << before.agents.size() << " agents, checks " << tally.checks()
                << ", violations " << tally.violations() << " ("
                << static_cast<int>(seconds_since(cycle_started) * 1000) << " ms)" << std::endl;
    }
    tally.check(server->stop() == 0, "clean shutdown", [&] { return "SIGTERM: non-zero exit"; });
  } catch (const std::exception& e) {
    std::cerr << "torture: the run broke down: " << e.what() << "\nserver log (last 40 lines):\n"
              << tail_of(log_file, 40);
    std::cerr << "torture: seed " << options.seed << std::endl;
    return 2;
  }

  std::cout << "torture totals: cycles " << options.cycles << ", commands acknowledged "
            << tally.acknowledged_count() << ", checks " << tally.checks() << ", violations "
            << tally.violations() << ", wall "
            << static_cast<int>(seconds_since(started)) << " s, kafka records read " << topic.records()
            << ", seed " << options.seed << "\n";
  tally.print_totals(std::cout);
  std::cout << std::flush;
  return tally.violations() == 0 ? 0 : 1;
}

std::optional<Options> parse(int argc, char** argv) {
  Options o;
  o.seed = std::random_device{}() ^ static_cast<std::uint64_t>(SteadyClock::now().time_since_epoch().count());
  o.seed %= 1'000'000'000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        throw std::invalid_argument(arg + " needs a value");
      }
      return argv[++i];
    };
    if (arg == "--keyledger") {
      o.keyledger = fs::absolute(value()).string();
    } else if (arg == "--cycles") {
      o.cycles = std::stoi(value());
    } else if (arg == "--long") {
      o.cycles = kLongCycles;
    } else if (arg == "--seed") {
      o.seed = std::stoull(value());
    } else if (arg == "--threads") {
      o.threads = std::stoi(value());
    } else if (arg == "--commands-per-thread") {
      o.commands_per_thread = std::stoi(value());
    } else if (arg == "--kill-after-ms") {
      const std::string v = value();
      const auto colon = v.find(':');
      o.min_kill_ms = std::stoi(v.substr(0, colon));
      o.max_kill_ms = colon == std::string::npos ? o.min_kill_ms : std::stoi(v.substr(colon + 1));
    } else if (arg == "-h" || arg == "--help") {
      usage(std::cout);
      return std::nullopt;
    } else {
      throw std::invalid_argument("unknown argument " + arg);
    }
  }
  if (o.cycles < 1 || o.threads < 1 || o.min_kill_ms < 0 || o.max_kill_ms < o.min_kill_ms) {
    throw std::invalid_argument(
        "--cycles and --threads must be positive, --kill-after-ms MIN:MAX with MIN <= MAX");
  }
  return o;
}

}  // namespace
}  // namespace keyledger::torture

int main(int argc, char** argv) {
  std::optional<keyledger::torture::Options> options;
  try {
    options = keyledger::torture::parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "keyledger-torture: " << e.what() << "\n";
    keyledger::torture::usage(std::cerr);
    return 2;
  }
  if (!options) {
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  return keyledger::torture::run(*options);
}
