// The projections' checkpoint (issue 15): a start loads the key table snapshot at a log
// position and folds only the events after it. What it loads must be exactly what folding
// the whole log gives, and a checkpoint that cannot be trusted is rebuilt from the log.

#include <rocksdb/iterator.h>
#include <rocksdb/write_batch.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <random>

#include "ledger_fixture.h"
#include "projections/projector.h"

namespace keyledger {
namespace {

using testing::Ledger;

// Everything the projections hold, as bytes: the table's entries by digest, the agents' tier
// and environment, the service tokens, and every projection column family except key_usage
// (usage data, not derived from events).
std::map<std::string, std::string> projection_state(Ledger& ledger, const std::vector<std::string>& agents) {
  std::map<std::string, std::string> state;
  for (const auto& [digest, entry] : testing::dump(ledger.projector->key_table())) {
    state["table/" + digest] = entry;
  }
  for (const std::string& agent : agents) {
    const auto defaults = ledger.projector->key_table().agent_defaults(agent);
    REQUIRE(defaults);
    state["agent/" + agent] = ledger.projector->key_table().tier_name(defaults->tier) + "|" +
                              std::to_string(static_cast<int>(defaults->environment));
  }
  for (const ServiceTokenState& token : ledger.projector->tokens().list()) {
    state["token/" + token.token_id] = token.name + "|" + (token.active() ? "active" : "revoked");
  }
  for (const std::string& name : projection_column_families()) {
    if (name == "key_usage") {
      continue;
    }
    auto family = ledger.store->extra_column_family(name);
    REQUIRE(family.ok());
    std::unique_ptr<rocksdb::Iterator> it = family->iterator();
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      state["cf/" + name + "/" + to_hex(it->key().ToStringView())] = it->value().ToString();
    }
    REQUIRE(it->status().ok());
  }
  return state;
}

// Random commands over a few agents: every kind of event, in an order chosen by `seed`.
// Returns the agents' ids.
std::vector<std::string> random_history(Ledger& ledger, std::uint32_t seed, int steps) {
  std::mt19937 rng(seed);
  std::vector<std::string> agents;
  std::map<std::string, std::vector<std::string>> active;  // agent -> active key ids
  std::vector<std::string> tokens;
  const auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  for (int step = 0; step < steps; ++step) {
    const std::size_t choice = agents.empty() ? 0 : pick(10);
    if (choice == 0) {
      agents.push_back(
          ledger.register_agent(pick(2) == 0 ? v1::ENVIRONMENT_PRODUCTION : v1::ENVIRONMENT_STAGING));
      continue;
    }
    const std::string& agent = agents[pick(agents.size())];
    std::vector<std::string>& keys = active[agent];
    if (choice <= 3 || keys.empty()) {
      if (keys.size() < 8) {
        const std::optional<std::int64_t> lifetime =
            pick(3) == 0 ? std::optional<std::int64_t>(60 + pick(600)) : std::nullopt;
        keys.push_back(ledger.create_key(agent, lifetime).key_id);
      }
      continue;
    }
    const std::size_t k = pick(keys.size());
    const std::string key_id = keys[k];
    switch (choice) {
      case 4:
        if (keys.size() < 8) {
          keys.push_back(
              ledger
                  .rotate_key(agent, key_id, pick(2) == 0 ? std::optional<std::int64_t>(3600) : std::nullopt)
                  .key_id);
        }
        break;
      case 5:
        ledger.revoke_key(agent, key_id);
        keys.erase(keys.begin() + static_cast<std::ptrdiff_t>(k));
        break;
      case 6: {
        keys.erase(keys.begin() + static_cast<std::ptrdiff_t>(k));
        if (auto replacement = ledger.report_compromise(agent, key_id, pick(2) == 0)) {
          keys.push_back(replacement->key_id);
        }
        break;
      }
      case 7:
        ledger.set_tier(agent, pick(2) == 0 ? "elevated" : "standard");
        break;
      case 8:
        ledger.record_delivery(agent, "evt-" + std::to_string(step), 1 + static_cast<std::uint32_t>(pick(3)));
        break;
      default:
        if (tokens.empty() || pick(2) == 0) {
          tokens.push_back(ledger.create_token("token-" + std::to_string(step), {"verify"}).first);
        } else {
          ledger.revoke_token(tokens.back());
          tokens.pop_back();
        }
        break;
    }
  }
  return agents;
}

// Wipes the projections and folds the whole log with a fresh projector, then starts it.
void rebuild(Ledger& ledger, std::size_t spill_bytes = Projector::kRebuildSpillBytes) {
  ledger.reopen(/*with_projector=*/false);
  ledger.projector = std::make_unique<Projector>(*ledger.store, Ledger::kTiers);
  const Status rebuilt = ledger.projector->rebuild(spill_bytes);
  INFO(rebuilt.ToString());
  REQUIRE(rebuilt.ok());
  REQUIRE(ledger.projector->start().ok());
}

// Writes `batch` (built over the checkpoint family) straight into the store.
void tamper(Ledger& ledger, const std::function<void(rocksdb::WriteBatch&)>& change) {
  ledger.reopen(/*with_projector=*/false);
  rocksdb::WriteBatch batch;
  change(batch);
  REQUIRE(ledger.store->write(batch, /*sync=*/true).ok());
}

// Captures what spdlog logs while it lives.
struct LogCapture {
  LogCapture() : sink(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64)) {
    spdlog::default_logger()->sinks().push_back(sink);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  }
  bool contains(std::string_view text) const {
    for (const std::string& line : sink->last_formatted()) {
      if (line.find(text) != std::string::npos) {
        return true;
      }
    }
    return false;
  }
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink;
};

TEST_CASE("a start from the checkpoint equals a full rebuild, byte for byte, on a randomized log",
          "[projections][checkpoint]") {
  const std::uint32_t seed = GENERATE(1u, 2u, 3u, 4u);
  // A rebuild's bulk load in one ingest, or spilled every few kilobytes: the same bytes.
  const std::size_t spill_bytes = GENERATE(Projector::kRebuildSpillBytes, std::size_t{4096});
  INFO("seed " << seed << ", spill every " << spill_bytes << " bytes");
  Ledger ledger;
  std::vector<std::string> agents = random_history(ledger, seed, 120);
  // The checkpoint stays where the projector last wrote; a crash leaves events after it that
  // no projector saw, and the next start folds them.
  ledger.reopen(/*with_projector=*/false);
  ledger.clock.advance(std::chrono::seconds(30));
  const std::vector<std::string> more = random_history(ledger, seed + 100, 60);
  agents.insert(agents.end(), more.begin(), more.end());
  ledger.reopen();
  REQUIRE(ledger.projector->checkpoint() == ledger.store->last_position());
  const auto from_checkpoint = projection_state(ledger, agents);

  rebuild(ledger, spill_bytes);
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
  const auto rebuilt = projection_state(ledger, agents);
  CHECK(rebuilt.size() == from_checkpoint.size());
  for (const auto& [name, bytes] : rebuilt) {
    INFO(name);
    const auto it = from_checkpoint.find(name);
    REQUIRE(it != from_checkpoint.end());
    CHECK(to_hex(it->second) == to_hex(bytes));
  }
}

TEST_CASE("a checkpoint that is missing, of another format or corrupt falls back to the full rebuild",
          "[projections][checkpoint]") {
  Ledger ledger;
  const std::vector<std::string> agents = random_history(ledger, 9, 80);
  const auto expected = projection_state(ledger, agents);
  auto checkpoint_cf = [&] {
    auto family = ledger.store->extra_column_family("proj_checkpoint");
    REQUIRE(family.ok());
    return *family;
  };
  auto first_key_of = [&](std::string_view name) {
    auto family = ledger.store->extra_column_family(name);
    REQUIRE(family.ok());
    std::unique_ptr<rocksdb::Iterator> it = family->iterator();
    it->SeekToFirst();
    REQUIRE(it->Valid());
    return std::pair{*family, it->key().ToString()};
  };

  struct Damage {
    std::string what;
    std::string logged;
    std::function<void(rocksdb::WriteBatch&)> change;
  };
  const std::vector<Damage> damages = {
      {"an older format (no format recorded)", "older format",
       [&](rocksdb::WriteBatch& b) { checkpoint_cf().erase(b, "format"); }},
      {"another format", "of format 1",
       [&](rocksdb::WriteBatch& b) { checkpoint_cf().put(b, "format", "1"); }},
      {"no checkpoint at all", "no projection checkpoint",
       [&](rocksdb::WriteBatch& b) {
         checkpoint_cf().erase(b, "format");
         checkpoint_cf().erase(b, "position");
         checkpoint_cf().erase(b, "entries");
       }},
      {"an unreadable position", "unreadable projection checkpoint",
       [&](rocksdb::WriteBatch& b) { checkpoint_cf().put(b, "position", "garbage"); }},
      {"a position ahead of the log", "ahead of the log",
       [&](rocksdb::WriteBatch& b) { checkpoint_cf().put(b, "position", encode_be64(1'000'000)); }},
      {"an entry missing from the snapshot", "entries, its checkpoint says",
       [&](rocksdb::WriteBatch& b) {
         auto [family, key] = first_key_of("key_table");
         family.erase(b, key);
       }},
      {"a rebuild cut short (its marker left, its writes half there)",
       "a rebuild of the projections did not finish",
       [&](rocksdb::WriteBatch& b) {
         checkpoint_cf().put(b, "format", "rebuilding");
         auto [family, key] = first_key_of("key_table");
         family.erase(b, key);
       }},
      {"an unreadable entry", "unreadable key_table entry",
       [&](rocksdb::WriteBatch& b) {
         auto [family, key] = first_key_of("key_table");
         family.put(b, key, "\x07truncated");
       }},
  };
  for (const Damage& damage : damages) {
    SECTION(damage.what) {
      tamper(ledger, damage.change);
      LogCapture log;
      ledger.reopen();
      CHECK(log.contains(damage.logged));
      CHECK(log.contains("rebuilding them from the log"));
      CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
      CHECK(projection_state(ledger, agents) == expected);
      // The rebuilt checkpoint is good: the next start loads it without a word.
      LogCapture quiet;
      ledger.reopen();
      CHECK_FALSE(quiet.contains("rebuilding"));
      CHECK(projection_state(ledger, agents) == expected);
    }
  }
}

TEST_CASE("a start on a new log records the format and needs no rebuild later", "[projections][checkpoint]") {
  Ledger ledger;
  const std::vector<std::string> agents = random_history(ledger, 5, 20);
  LogCapture log;
  ledger.reopen();
  CHECK_FALSE(log.contains("rebuilding"));
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
}

}  // namespace
}  // namespace keyledger
