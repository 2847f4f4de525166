// The offline subcommands of the real binary: `token create` and `rebuild-projections`,
// with the server stopped, and refused while a server holds the store.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "harness.h"

extern char** environ;

namespace keyledger::e2e {
namespace {

struct CliResult {
  int exit_code = -1;  // 128 + signal if killed
  std::string out;
  std::string err;
};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `keyledger args…` to completion (killed after 60 s), capturing stdout and stderr.
CliResult run_cli(const std::filesystem::path& scratch, std::vector<std::string> args) {
  static int counter = 0;
  const std::string tag = std::to_string(++counter);
  const std::filesystem::path out_file = scratch / ("cli-" + tag + ".out");
  const std::filesystem::path err_file = scratch / ("cli-" + tag + ".err");
  args.insert(args.begin(), binary());
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error("cannot start " + binary());
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CliResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_file(out_file);
  result.err = read_file(err_file);
  return result;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

Json agent_body() {
  return {{"name", "Invoice Parser"},
          {"description", "Extracts line items from PDF invoices."},
          {"skills", {"pdf"}},
          {"languages", {"en"}},
          {"webhook_url", "https://agent.example.com/hooks/clawgig"}};
}

const std::regex kServiceToken("^kls_[A-Za-z0-9_-]{43,}$");

}  // namespace

TEST_CASE("keyledger token create works offline and is refused while a server runs", "[e2e]") {
  testing::TempDir dir;
  const auto data = dir.path() / "data";
  const std::string data_dir = data.string();

  auto created = run_cli(dir.path(), {"token", "create", "--data-dir", data_dir, "--scope", "manage,audit",
                                      "--name", "dashboard"});
  INFO("stdout: " << created.out << "\nstderr: " << created.err);
  REQUIRE(created.exit_code == 0);
  const std::string token = trim(created.out);
  CHECK(std::regex_match(token, kServiceToken));
  CHECK(created.out == token + "\n");  // stdout holds the token and nothing else
  CHECK(created.err.find(token) == std::string::npos);
  auto verifier = run_cli(
      dir.path(), {"token", "create", "--data-dir", data_dir, "--scope", "verify", "--name", "gateway"});
  REQUIRE(verifier.exit_code == 0);
  const std::string gateway = trim(verifier.out);
  CHECK(std::regex_match(gateway, kServiceToken));
  CHECK(gateway != token);

  // Bad scopes are refused with a message, and print no token.
  auto bad =
      run_cli(dir.path(), {"token", "create", "--data-dir", data_dir, "--scope", "root", "--name", "x"});
  CHECK(bad.exit_code != 0);
  CHECK(trim(bad.out).empty());
  CHECK_FALSE(bad.err.empty());

  ServerProcess server(data, {"--disable-webhooks"});
  // The tokens made offline work against the server started on that directory.
  auto agent = server.request("POST", "/v1/agents", agent_body(), token);
  REQUIRE(agent.status == 201);
  const std::string agent_id = agent.json()["agent_id"];
  auto key = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), token);
  REQUIRE(key.status == 201);
  const std::string api_key = key.json()["api_key"];
  CHECK(server.get("/v1/audit", token).status == 200);
  CHECK(server.request("POST", "/v1/verify", {{"api_key", api_key}}, token).status == 403);
  CHECK(server.get("/v1/tokens", token).status == 403);
  auto valid = server.request("POST", "/v1/verify", {{"api_key", api_key}}, gateway);
  REQUIRE(valid.status == 200);
  CHECK(valid.json()["code"] == "VALID");
  const Json audit = server.get("/v1/audit?type=token.created", token).json();
  REQUIRE(audit["events"].size() >= 2u);
  CHECK(audit["events"][0]["actor"] == "system:cli");
  CHECK(audit["events"][0]["data"]["name"] == "dashboard");
  CHECK(audit.dump().find(token) == std::string::npos);

  // While the server holds the store, the CLI says so and exits non-zero.
  auto held =
      run_cli(dir.path(), {"token", "create", "--data-dir", data_dir, "--scope", "admin", "--name", "ops"});
  INFO("stdout: " << held.out << "\nstderr: " << held.err);
  CHECK(held.exit_code != 0);
  CHECK(trim(held.out).empty());
  CHECK(held.err.find("held by a running server") != std::string::npos);
  auto rebuild_held = run_cli(dir.path(), {"rebuild-projections", "--data-dir", data_dir});
  CHECK(rebuild_held.exit_code != 0);
  // The refused command changed nothing.
  CHECK(server.get("/v1/audit?type=token.created", token).json()["events"].size() == audit["events"].size());
  CHECK(server.request("POST", "/v1/verify", {{"api_key", api_key}}, gateway).json()["code"] == "VALID");
  CHECK(server.stop() == 0);

  // The server's log never shows the offline token.
  CHECK(server.log().find(token) == std::string::npos);
}

TEST_CASE("keyledger rebuild-projections on a stopped server's directory keeps every answer", "[e2e]") {
  testing::TempDir dir;
  const auto data = dir.path() / "data";
  const std::string data_dir = data.string();
  std::string admin;
  std::string manage;
  std::string verify;
  std::string audit_token;
  std::string agent_id;
  std::vector<std::string> live_keys;
  std::string revoked_key;
  std::string compromised_key;
  std::string audit_before;
  std::string keys_before;
  std::string agent_before;
  {
    ServerProcess server(data, {"--disable-webhooks"});
    admin = server.bootstrap_token();
    auto token = [&](const std::string& name, const std::vector<std::string>& scopes) {
      auto res = server.request("POST", "/v1/tokens", {{"name", name}, {"scopes", scopes}}, admin);
      REQUIRE(res.status == 201);
      return res.json()["token"].get<std::string>();
    };
    manage = token("dashboard", {"manage"});
    verify = token("gateway", {"verify"});
    audit_token = token("auditor", {"audit"});
    agent_id =
        server.request("POST", "/v1/agents", agent_body(), manage).json()["agent_id"].get<std::string>();
    std::vector<Json> made;
    for (int i = 0; i < 5; ++i) {
      auto res = server.request("POST", "/v1/agents/" + agent_id + "/keys",
                                {{"label", "k" + std::to_string(i)}}, manage);
      REQUIRE(res.status == 201);
      made.push_back(res.json());
    }
    live_keys = {made[0]["api_key"].get<std::string>(), made[1]["api_key"].get<std::string>()};
    revoked_key = made[2]["api_key"].get<std::string>();
    compromised_key = made[3]["api_key"].get<std::string>();
    REQUIRE(server
                .request("POST", "/v1/keys/" + made[2]["key"]["key_id"].get<std::string>() + "/revoke",
                         Json::object(), manage)
                .status == 200);
    REQUIRE(server
                .request("POST", "/v1/keys/" + made[3]["key"]["key_id"].get<std::string>() + "/compromise",
                         Json::object(), manage)
                .status == 200);
    auto rotated =
        server.request("POST", "/v1/keys/" + made[4]["key"]["key_id"].get<std::string>() + "/rotate",
                       {{"old_key_expires_in_seconds", 0}}, manage);
    REQUIRE(rotated.status == 201);
    live_keys.push_back(rotated.json()["api_key"].get<std::string>());
    revoked_key = made[4]["api_key"].get<std::string>();
    REQUIRE(server.request("PUT", "/v1/agents/" + agent_id + "/rate-limit", {{"tier", "elevated"}}, manage)
                .status == 200);

    auto audit = server.get("/v1/audit?limit=1000", audit_token);
    REQUIRE(audit.status == 200);
    audit_before = audit.json().dump();
    keys_before = server.get("/v1/agents/" + agent_id + "/keys", audit_token).json().dump();
    agent_before = server.get("/v1/agents/" + agent_id, audit_token).json().dump();
    CHECK(server.stop() == 0);
  }

  auto rebuilt = run_cli(dir.path(), {"rebuild-projections", "--data-dir", data_dir});
  INFO("stdout: " << rebuilt.out << "\nstderr: " << rebuilt.err);
  REQUIRE(rebuilt.exit_code == 0);
  CHECK(rebuilt.out.find("projections rebuilt") != std::string::npos);
  for (const auto& k : live_keys) {
    CHECK(rebuilt.out.find(k) == std::string::npos);
    CHECK(rebuilt.err.find(k) == std::string::npos);
  }
  // Twice is fine too.
  CHECK(run_cli(dir.path(), {"rebuild-projections", "--data-dir", data_dir}).exit_code == 0);

  ServerProcess server(data, {"--disable-webhooks"});
  CHECK(server.get("/readyz", "").status == 200);
  CHECK(server.get("/v1/audit?limit=1000", audit_token).json().dump() == audit_before);
  CHECK(server.get("/v1/agents/" + agent_id + "/keys", audit_token).json().dump() == keys_before);
  CHECK(server.get("/v1/agents/" + agent_id, audit_token).json().dump() == agent_before);
  for (const auto& k : live_keys) {
    auto res = server.request("POST", "/v1/verify", {{"api_key", k}}, verify);
    REQUIRE(res.status == 200);
    CHECK(res.json()["code"] == "VALID");
    CHECK(res.json()["ratelimit"]["limit"] == 1000);  // the tier survived the rebuild
    CHECK(server.get("/v1/auth", k).status == 200);
  }
  CHECK(server.request("POST", "/v1/verify", {{"api_key", revoked_key}}, verify).json()["code"] == "REVOKED");
  CHECK(server.request("POST", "/v1/verify", {{"api_key", compromised_key}}, verify).json()["code"] ==
        "COMPROMISED");
  CHECK(server.get("/v1/auth", revoked_key).status == 401);
  // Service tokens were rebuilt too: every one still works, and the bootstrap one is kept.
  CHECK(server.bootstrap_token() == admin);
  CHECK(server.get("/v1/tokens", admin).json()["tokens"].size() == 4u);
  // And the server goes on writing after the rebuilt checkpoint.
  auto more = server.request("POST", "/v1/agents/" + agent_id + "/keys", Json::object(), manage);
  REQUIRE(more.status == 201);
  CHECK(server.request("POST", "/v1/verify", {{"api_key", more.json()["api_key"].get<std::string>()}}, verify)
            .json()["code"] == "VALID");
  CHECK(server.stop() == 0);
}

TEST_CASE("keyledger --help and every subcommand's --help print the options and exit 0", "[e2e]") {
  testing::TempDir dir;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"serve", "--help"}, {"serve", "-h"}, {"rebuild-projections", "--help"},
        {"token", "create", "--help"}, {"webhooks", "--help"}}) {
    const auto result = run_cli(dir.path(), args);
    INFO(args.front() << " " << args.back() << ": " << result.err);
    CHECK(result.exit_code == 0);
    CHECK(result.out.find("--data-dir") != std::string::npos);
  }
  CHECK(run_cli(dir.path(), {"serve", "--no-such-flag"}).exit_code == 2);
  // Nothing was started: no data directory appeared.
  CHECK_FALSE(std::filesystem::exists(dir.path() / "keyledger-data"));
}

TEST_CASE("the data directory and every file in it are owner-only", "[e2e]") {
  namespace fs = std::filesystem;
  testing::TempDir dir;
  const fs::path data_dir = dir.path() / "data";
  fs::create_directories(data_dir);
  fs::permissions(data_dir, fs::perms::all);  // 0777: tightened at start
  {
    ServerProcess server(data_dir);
    const auto token = server.bootstrap_token();
    CHECK(server.request("POST", "/v1/agents", agent_body(), token).status == 201);
  }
  const fs::perms open_to_others = fs::perms::group_all | fs::perms::others_all;
  CHECK((fs::status(data_dir).permissions() & open_to_others) == fs::perms::none);
  std::size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(data_dir)) {
    INFO(entry.path());
    CHECK((fs::symlink_status(entry.path()).permissions() & open_to_others) == fs::perms::none);
    ++files;
  }
  CHECK(files > 5);  // the pepper, the bootstrap token, RocksDB's files
}

}  // namespace keyledger::e2e
