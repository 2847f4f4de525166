// Many concurrent clients against the real binary: writers create and revoke keys while
// readers verify them. Once a revoke's 200 has been received, no verification of that key
// started afterwards may answer VALID, and no request ever gets a 5xx.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace keyledger::e2e {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kWriters = 4;
constexpr int kReaders = 4;
constexpr int kKeysPerWriter = 25;
constexpr int kReadsPerReader = 500;

Json agent_body(const std::string& name) {
  return {{"name", name},
          {"description", "Extracts line items from PDF invoices."},
          {"skills", {"pdf"}},
          {"languages", {"en"}},
          {"webhook_url", "https://agent.example.com/hooks/clawgig"}};
}

// A key some writer created; `revoked_at` is set once its revoke's 200 has been received.
struct SharedKey {
  std::string api_key;
  std::string key_id;
  std::optional<Clock::time_point> revoked_at;
};

struct Observation {
  std::size_t key = 0;
  Clock::time_point started;
  std::string outcome;  // VALID, REVOKED, … or "auth:<status>"
};

class Board {
 public:
  std::size_t add(SharedKey key) {
    std::lock_guard lock(mutex_);
    keys_.push_back(std::move(key));
    return keys_.size() - 1;
  }
  void revoked(std::size_t index, Clock::time_point at) {
    std::lock_guard lock(mutex_);
    keys_[index].revoked_at = at;
  }
  std::optional<std::pair<std::size_t, SharedKey>> pick(std::mt19937& rng) const {
    std::lock_guard lock(mutex_);
    if (keys_.empty()) {
      return std::nullopt;
    }
    // Favour recent keys: they are the ones being revoked right now.
    const std::size_t n = keys_.size();
    const std::size_t window = std::min<std::size_t>(n, 6);
    std::uniform_int_distribution<std::size_t> recent(n - window, n - 1);
    std::uniform_int_distribution<std::size_t> any(0, n - 1);
    const std::size_t i = (rng() % 4 == 0) ? any(rng) : recent(rng);
    return std::make_pair(i, keys_[i]);
  }
  std::vector<SharedKey> snapshot() const {
    std::lock_guard lock(mutex_);
    return keys_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<SharedKey> keys_;
};

}  // namespace

TEST_CASE("concurrent clients never see a revoked key as valid", "[e2e]") {
  testing::TempDir dir;
  ServerProcess server(dir.path() / "data", {"--disable-webhooks"});
  const std::string admin = server.bootstrap_token();
  auto created =
      server.request("POST", "/v1/tokens", {{"name", "dash"}, {"scopes", {"manage", "verify"}}}, admin);
  REQUIRE(created.status == 201);
  const std::string token = created.json()["token"];
  const std::uint16_t port = server.port();
  const std::map<std::string, std::string> json_auth = {{"Authorization", "Bearer " + token},
                                                        {"Content-Type", "application/json"}};

  std::vector<std::string> agents;
  for (int i = 0; i < kWriters; ++i) {
    auto res = server.request("POST", "/v1/agents", agent_body("Agent " + std::to_string(i)), token);
    REQUIRE(res.status == 201);
    agents.push_back(res.json()["agent_id"]);
  }

  Board board;
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  auto fail = [&](const std::string& what) {
    std::lock_guard lock(failures_mutex);
    failures.push_back(what);
  };
  std::atomic<int> server_errors{0};
  std::atomic<int> writers_done{0};
  std::mutex observations_mutex;
  std::vector<Observation> observations;

  // One verification, over POST /v1/verify or GET /v1/auth; the outcome, or "" on error.
  auto verify_once = [&](const std::string& api_key, bool forward_auth) -> std::string {
    try {
      if (forward_auth) {
        auto res = http_request(port, "GET", "/v1/auth", "", {{"X-Api-Key", api_key}});
        if (res.status >= 500) {
          ++server_errors;
          fail("GET /v1/auth answered " + std::to_string(res.status));
        }
        return "auth:" + std::to_string(res.status);
      }
      auto res = http_request(port, "POST", "/v1/verify", Json{{"api_key", api_key}}.dump(), json_auth);
      if (res.status != 200) {
        if (res.status >= 500) {
          ++server_errors;
        }
        fail("POST /v1/verify answered " + std::to_string(res.status) + " " + res.body);
        return "";
      }
      const Json body = res.json();
      return body.value("code", std::string("?"));
    } catch (const std::exception& e) {
      fail(std::string("verification request failed: ") + e.what());
      return "";
    }
  };
  auto record = [&](std::size_t key, Clock::time_point started, std::string outcome) {
    std::lock_guard lock(observations_mutex);
    observations.push_back({key, started, std::move(outcome)});
  };

  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      const std::string keys_target = "/v1/agents/" + agents[static_cast<std::size_t>(w)] + "/keys";
      for (int i = 0; i < kKeysPerWriter; ++i) {
        try {
          auto res = http_request(port, "POST", keys_target, Json{{"label", "k" + std::to_string(i)}}.dump(),
                                  json_auth);
          if (res.status != 201) {
            if (res.status >= 500) {
              ++server_errors;
            }
            fail("create answered " + std::to_string(res.status) + " " + res.body);
            continue;
          }
          const Json body = res.json();
          SharedKey key;
          key.api_key = body["api_key"].get<std::string>();
          key.key_id = body["key"]["key_id"].get<std::string>();
          const std::size_t index = board.add(key);
          // Give readers a moment with the live key.
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          const auto started = Clock::now();
          record(index, started, verify_once(key.api_key, false));
          auto revoke = http_request(port, "POST", "/v1/keys/" + key.key_id + "/revoke",
                                     Json{{"reason", "concurrency test"}}.dump(), json_auth);
          if (revoke.status != 200) {
            if (revoke.status >= 500) {
              ++server_errors;
            }
            fail("revoke answered " + std::to_string(revoke.status) + " " + revoke.body);
            continue;
          }
          board.revoked(index, Clock::now());
          // The very next verification, by the same client, fails.
          const auto after = Clock::now();
          record(index, after, verify_once(key.api_key, false));
          record(index, Clock::now(), verify_once(key.api_key, true));
        } catch (const std::exception& e) {
          fail(std::string("writer request failed: ") + e.what());
        }
      }
      ++writers_done;
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(static_cast<std::mt19937::result_type>(1000 + r));
      for (int i = 0; i < kReadsPerReader || writers_done.load() < kWriters; ++i) {
        if (i >= 4 * kReadsPerReader) {
          break;  // bounded even if writers are slow
        }
        auto picked = board.pick(rng);
        if (!picked) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        const auto started = Clock::now();
        record(picked->first, started, verify_once(picked->second.api_key, i % 3 == 0));
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);

  {
    std::lock_guard lock(failures_mutex);
    for (const auto& f : failures) {
      FAIL_CHECK(f);
    }
  }
  CHECK(server_errors.load() == 0);

  const auto keys = board.snapshot();
  REQUIRE(keys.size() == static_cast<std::size_t>(kWriters * kKeysPerWriter));
  int valid_before = 0;
  int checked_after = 0;
  int violations = 0;
  for (const auto& o : observations) {
    const SharedKey& key = keys[o.key];
    REQUIRE(key.revoked_at.has_value());
    const bool valid = o.outcome == "VALID" || o.outcome == "auth:200";
    if (o.started >= *key.revoked_at) {
      ++checked_after;
      if (valid) {
        ++violations;
        FAIL_CHECK(
            "key "
            << key.key_id << " answered " << o.outcome << " "
            << std::chrono::duration_cast<std::chrono::microseconds>(o.started - *key.revoked_at).count()
            << " us after its revoke returned");
      } else {
        // After the revoke: REVOKED (or 401 from /v1/auth), nothing else.
        CHECK((o.outcome == "REVOKED" || o.outcome == "auth:401"));
      }
    } else if (valid) {
      ++valid_before;
    }
  }
  INFO("observations " << observations.size() << ", after revoke " << checked_after << ", valid before "
                       << valid_before << ", elapsed " << elapsed.count() << " ms");
  CHECK(violations == 0);
  // The run really exercised both sides of every revocation.
  CHECK(checked_after >= kWriters * kKeysPerWriter * 2);
  CHECK(valid_before >= kWriters * kKeysPerWriter);
  CHECK(observations.size() >= static_cast<std::size_t>(kReaders * kReadsPerReader));

  // The server is still healthy and every key ended revoked.
  CHECK(server.get("/healthz", "").status == 200);
  for (const auto& agent : agents) {
    auto active = server.get("/v1/agents/" + agent + "/keys?status=active", token);
    REQUIRE(active.status == 200);
    CHECK(active.json()["keys"].empty());
  }
  CHECK(server.stop() == 0);
}

}  // namespace keyledger::e2e
