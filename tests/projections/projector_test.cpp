#include "projections/projector.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "ledger_fixture.h"

namespace keyledger {
namespace {

using testing::dump;
using testing::Ledger;

std::int64_t ms(TimePoint t) {
  return std::chrono::floor<std::chrono::milliseconds>(t).time_since_epoch().count();
}

KeyEntry require_entry(const Ledger& ledger, const Digest& digest) {
  std::optional<KeyEntry> entry = ledger.projector->key_table().find(digest);
  REQUIRE(entry);
  return *entry;
}

// Every key index entry the projector answers, as text (to compare two projectors).
std::vector<std::string> key_indexes(const Projector& projector) {
  std::vector<std::string> out;
  auto created = projector.keys_created_before(TimePoint::max(), 10'000);
  auto expiring = projector.keys_expiring_by(TimePoint::max(), 10'000);
  REQUIRE(created.ok());
  REQUIRE(expiring.ok());
  for (const auto& k : *created) {
    out.push_back("active " + k.agent_id + " " + k.key_id);
  }
  for (const auto& k : *expiring) {
    out.push_back("expiry " + k.agent_id + " " + k.key_id);
  }
  return out;
}

std::vector<std::uint64_t> audit_positions(const Projector& projector, AuditQuery query) {
  query.limit = 10'000;
  auto page = projector.audit(query);
  REQUIRE(page.ok());
  CHECK_FALSE(page->next_after);
  return testing::positions(page->events);
}

// A small history touching every kind of event.
struct History {
  std::string agent;
  std::string staging_agent;
  testing::IssuedKey first;
  testing::IssuedKey rotated;
  testing::IssuedKey expiring;
  testing::IssuedKey compromised;
  testing::IssuedKey replacement;
  testing::IssuedKey staging_key;
  std::string token_id;
};

History make_history(Ledger& ledger) {
  History h;
  h.agent = ledger.register_agent();
  h.staging_agent = ledger.register_agent(v1::ENVIRONMENT_STAGING, "ops");
  h.first = ledger.create_key(h.agent);
  h.rotated = ledger.rotate_key(h.agent, h.first.key_id, 3600);
  h.expiring = ledger.create_key(h.agent, 60);
  h.compromised = ledger.create_key(h.agent);
  h.replacement = *ledger.report_compromise(h.agent, h.compromised.key_id, /*replace=*/true);
  ledger.set_tier(h.agent, "elevated");
  h.staging_key = ledger.create_key(h.staging_agent, std::nullopt, "ops");
  ledger.record_delivery(h.agent, "evt-1", 1);
  ledger.record_delivery(h.agent, "evt-1", 2);
  h.token_id = ledger.create_token("gateway-eu", {"verify"}).first;
  ledger.clock.advance(std::chrono::seconds(120));
  ledger.expire_key(h.agent, h.expiring.key_id);
  ledger.revoke_key(h.staging_agent, h.staging_key.key_id, "ops");
  return h;
}

}  // namespace

TEST_CASE("the key table reflects each lifecycle step when the append returns", "[projections]") {
  Ledger ledger;
  ActiveKeyTable& table = ledger.projector->key_table();
  const std::string agent = ledger.register_agent();
  CHECK(table.size() == 0);

  const auto key = ledger.create_key(agent);
  KeyEntry entry = require_entry(ledger, key.digest);
  CHECK(entry.key_id.view() == key.key_id);
  CHECK(entry.agent_id.view() == agent);
  CHECK(entry.condition == KeyCondition::kActive);
  CHECK(entry.expires_at_ms == 0);
  CHECK(entry.environment == v1::ENVIRONMENT_PRODUCTION);
  CHECK(table.tier_name(entry.tier) == "standard");
  CHECK(entry.created_at_ms == ms(ledger.clock.now()));
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());

  // Rotation with an overlap: the old key stays active until its new expiry.
  const auto successor = ledger.rotate_key(agent, key.key_id, 3600);
  entry = require_entry(ledger, key.digest);
  CHECK(entry.condition == KeyCondition::kActive);
  CHECK(entry.expires_at_ms == ms(ledger.clock.now() + std::chrono::seconds(3600)));
  CHECK(require_entry(ledger, successor.digest).condition == KeyCondition::kActive);

  // A second rotation of the new key revoking it at once.
  const auto third = ledger.rotate_key(agent, successor.key_id, 0);
  CHECK(require_entry(ledger, successor.digest).condition == KeyCondition::kRevoked);
  CHECK(require_entry(ledger, third.digest).condition == KeyCondition::kActive);

  ledger.revoke_key(agent, third.key_id);
  CHECK(require_entry(ledger, third.digest).condition == KeyCondition::kRevoked);

  // Compromise of a revoked key still marks it compromised; of an active one too.
  ledger.report_compromise(agent, third.key_id);
  CHECK(require_entry(ledger, third.digest).condition == KeyCondition::kCompromised);
  ledger.report_compromise(agent, key.key_id);
  CHECK(require_entry(ledger, key.digest).condition == KeyCondition::kCompromised);

  const auto expiring = ledger.create_key(agent, 30);
  ledger.clock.advance(std::chrono::seconds(31));
  CHECK(require_entry(ledger, expiring.digest).condition == KeyCondition::kActive);  // not written yet
  ledger.expire_key(agent, expiring.key_id);
  CHECK(require_entry(ledger, expiring.digest).condition == KeyCondition::kExpired);

  CHECK(table.size() == 4);
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
  auto owner = ledger.projector->agent_of_key(third.key_id);
  REQUIRE(owner.ok());
  CHECK(*owner == agent);
  CHECK(ledger.projector->agent_of_key("key_000000000000000000000000").status().reason() == "key_not_found");
}

TEST_CASE("condition_at answers expired for an active key past its expiry", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  const auto key = ledger.create_key(agent, 60);
  const KeyEntry entry = require_entry(ledger, key.digest);
  const std::int64_t expires = ms(ledger.clock.now() + std::chrono::seconds(60));
  CHECK(entry.expires_at_ms == expires);
  CHECK(entry.condition_at(expires - 1) == KeyCondition::kActive);
  CHECK(entry.condition_at(expires) == KeyCondition::kExpired);
  CHECK(entry.condition_at(expires + 1000) == KeyCondition::kExpired);

  ledger.revoke_key(agent, key.key_id);
  CHECK(require_entry(ledger, key.digest).condition_at(expires + 1000) == KeyCondition::kRevoked);
}

TEST_CASE("keys carry their agent's environment and tier, and follow tier changes", "[projections]") {
  Ledger ledger;
  ActiveKeyTable& table = ledger.projector->key_table();
  const std::string agent = ledger.register_agent();
  const std::string staging = ledger.register_agent(v1::ENVIRONMENT_STAGING);
  const auto a1 = ledger.create_key(agent);
  const auto a2 = ledger.create_key(agent);
  const auto s1 = ledger.create_key(staging);
  CHECK(require_entry(ledger, s1.digest).environment == v1::ENVIRONMENT_STAGING);

  ledger.set_tier(agent, "elevated");
  CHECK(table.tier_name(require_entry(ledger, a1.digest).tier) == "elevated");
  CHECK(table.tier_name(require_entry(ledger, a2.digest).tier) == "elevated");
  CHECK(table.tier_name(require_entry(ledger, s1.digest).tier) == "standard");

  // Keys created later inherit the tier.
  const auto a3 = ledger.create_key(agent);
  CHECK(table.tier_name(require_entry(ledger, a3.digest).tier) == "elevated");

  ledger.set_tier(agent, "standard");
  CHECK(table.tier_name(require_entry(ledger, a1.digest).tier) == "standard");
  CHECK(table.tier_name(require_entry(ledger, a3.digest).tier) == "standard");
}

TEST_CASE("keys_created_before and keys_expiring_by list active keys only", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  const auto old_key = ledger.create_key(agent, 600);
  const TimePoint after_old = ledger.clock.now() + std::chrono::milliseconds(1);
  const auto revoked = ledger.create_key(agent, 300);
  const auto newer = ledger.create_key(agent);
  ledger.revoke_key(agent, revoked.key_id);

  auto created = ledger.projector->keys_created_before(after_old, 100);
  REQUIRE(created.ok());
  REQUIRE(created->size() == 1);
  CHECK((*created)[0].key_id == old_key.key_id);
  CHECK((*created)[0].agent_id == agent);

  created = ledger.projector->keys_created_before(ledger.clock.now() + std::chrono::seconds(1), 100);
  REQUIRE(created.ok());
  REQUIRE(created->size() == 2);  // oldest first, the revoked key gone
  CHECK((*created)[0].key_id == old_key.key_id);
  CHECK((*created)[1].key_id == newer.key_id);
  CHECK(ledger.projector->keys_created_before(ledger.clock.now() + std::chrono::seconds(1), 1)->size() == 1);

  // Nothing due yet; then the first key is due, the revoked one never is.
  CHECK(ledger.projector->keys_expiring_by(ledger.clock.now(), 100)->empty());
  ledger.clock.advance(std::chrono::seconds(600));
  auto due = ledger.projector->keys_expiring_by(ledger.clock.now(), 100);
  REQUIRE(due.ok());
  REQUIRE(due->size() == 1);
  CHECK((*due)[0].key_id == old_key.key_id);

  ledger.expire_key(agent, old_key.key_id);
  CHECK(ledger.projector->keys_expiring_by(ledger.clock.now(), 100)->empty());
  created = ledger.projector->keys_created_before(ledger.clock.now(), 100);
  REQUIRE(created->size() == 1);
  CHECK((*created)[0].key_id == newer.key_id);

  // A rotation with an overlap puts the old key on the expiry list; the compromise takes it off.
  const auto successor = ledger.rotate_key(agent, newer.key_id, 60);
  ledger.clock.advance(std::chrono::seconds(61));
  due = ledger.projector->keys_expiring_by(ledger.clock.now(), 100);
  REQUIRE(due->size() == 1);
  CHECK((*due)[0].key_id == newer.key_id);
  ledger.report_compromise(agent, newer.key_id);
  CHECK(ledger.projector->keys_expiring_by(ledger.clock.now(), 100)->empty());
  CHECK(ledger.projector->keys_created_before(ledger.clock.now(), 100)->size() == 1);
  CHECK(ledger.projector->keys_created_before(ledger.clock.now(), 100)->front().key_id == successor.key_id);
}

TEST_CASE("a rotation with an overlap never extends an earlier expiry", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  const auto key = ledger.create_key(agent, 100);
  const std::int64_t original = require_entry(ledger, key.digest).expires_at_ms;
  ledger.rotate_key(agent, key.key_id, 3600);
  CHECK(require_entry(ledger, key.digest).expires_at_ms == original);
  auto due = ledger.projector->keys_expiring_by(TimePoint::max(), 100);
  REQUIRE(due.ok());
  CHECK(due->size() == 2);  // the old key once, and its successor (inherits a lifetime)
}

TEST_CASE("load_agent folds the agent's stream", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  ledger.create_key(agent);
  auto state = ledger.projector->load_agent(agent);
  REQUIRE(state.ok());
  CHECK(state->agent_id == agent);
  CHECK(state->keys.size() == 1);
  CHECK(state->version == 2);
  auto missing = ledger.projector->load_agent("agt_000000000000000000000000");
  CHECK(missing.status().IsNotFound());
  CHECK(missing.status().reason() == "agent_not_found");
}

TEST_CASE("service tokens are known at once and revocation is immediate", "[projections]") {
  Ledger ledger;
  const auto [first_id, first_token] = ledger.create_token("gateway-eu", {"verify"});
  const auto [second_id, second_token] = ledger.create_token("dashboard", {"manage", "audit"});
  const ServiceTokenTable& tokens = ledger.projector->tokens();
  auto found = tokens.find_active(ledger.hasher.digest(first_token));
  REQUIRE(found);
  CHECK(found->token_id == first_id);
  CHECK(found->has_scope("verify"));
  CHECK_FALSE(tokens.find_active(ledger.hasher.digest("kls_unknown")));

  ledger.revoke_token(first_id);
  CHECK_FALSE(tokens.find_active(ledger.hasher.digest(first_token)));
  CHECK(tokens.find_active(ledger.hasher.digest(second_token)));
  const auto list = tokens.list();
  REQUIRE(list.size() == 2);
  CHECK(list[0].token_id == first_id);
  CHECK_FALSE(list[0].active());
  CHECK(list[1].token_id == second_id);
  CHECK(tokens.state().version == 3);
}

TEST_CASE("last_used comes from memory, then from the flushed usage", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  const auto key = ledger.create_key(agent);
  const auto unused = ledger.create_key(agent);
  CHECK_FALSE(ledger.projector->last_used(key.key_id));

  ledger.projector->key_table().touch(key.digest, 1'800'000'000);
  ledger.projector->key_table().touch(key.digest, 1'800'000'005);
  CHECK(ledger.projector->last_used(key.key_id) == TimePoint(std::chrono::seconds(1'800'000'005)));
  REQUIRE(ledger.projector->flush_usage().ok());
  CHECK(ledger.projector->key_table().take_usage().empty());

  ledger.reopen();
  CHECK(ledger.projector->last_used(key.key_id) == TimePoint(std::chrono::seconds(1'800'000'005)));
  CHECK_FALSE(ledger.projector->last_used(unused.key_id));
}

TEST_CASE("a restart loads the same table and goes on from the checkpoint", "[projections]") {
  Ledger ledger;
  const History h = make_history(ledger);
  const auto before = dump(ledger.projector->key_table());
  const auto indexes_before = key_indexes(*ledger.projector);
  const auto audit_before = audit_positions(*ledger.projector, {});
  const std::uint64_t checkpoint = ledger.projector->checkpoint();
  REQUIRE(checkpoint == ledger.store->last_position());

  ledger.reopen();
  CHECK(ledger.projector->checkpoint() == checkpoint);
  CHECK(dump(ledger.projector->key_table()) == before);
  CHECK(key_indexes(*ledger.projector) == indexes_before);
  CHECK(audit_positions(*ledger.projector, {}) == audit_before);
  CHECK(ledger.projector->tokens().list().size() == 1);

  // The agents' tier and environment survived: new keys still get them.
  const auto elevated = ledger.create_key(h.agent);
  const auto staging = ledger.create_key(h.staging_agent);
  const KeyEntry e = require_entry(ledger, elevated.digest);
  CHECK(ledger.projector->key_table().tier_name(e.tier) == "elevated");
  CHECK(require_entry(ledger, staging.digest).environment == v1::ENVIRONMENT_STAGING);
  ledger.revoke_key(h.agent, h.rotated.key_id);
  CHECK(require_entry(ledger, h.rotated.digest).condition == KeyCondition::kRevoked);
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
}

TEST_CASE("events committed with no projector attached are replayed on start", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  const auto first = ledger.create_key(agent);
  const std::uint64_t projected = ledger.projector->checkpoint();

  // The process "crashes" after these appends: the projector never sees them.
  ledger.reopen(/*with_projector=*/false);
  const auto second = ledger.create_key(agent);
  ledger.set_tier(agent, "elevated");
  ledger.revoke_key(agent, first.key_id);
  ledger.create_token("gateway", {"verify"});
  REQUIRE(ledger.store->last_position() > projected);

  ledger.reopen();
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
  CHECK(require_entry(ledger, first.digest).condition == KeyCondition::kRevoked);
  const KeyEntry e = require_entry(ledger, second.digest);
  CHECK(e.condition == KeyCondition::kActive);
  CHECK(ledger.projector->key_table().tier_name(e.tier) == "elevated");
  CHECK(ledger.projector->tokens().list().size() == 1);
  auto audit = ledger.projector->audit({.key_id = first.key_id});
  REQUIRE(audit.ok());
  CHECK(audit->events.size() == 2);  // created, revoked
}

TEST_CASE("apply reads events missing before a group from the log", "[projections]") {
  Ledger ledger;
  ledger.reopen(/*with_projector=*/false);
  const std::string agent = ledger.register_agent();
  const auto key = ledger.create_key(agent);
  ledger.revoke_key(agent, key.key_id);
  const auto events = ledger.all_events();
  REQUIRE(events.size() == 3);

  Projector projector(*ledger.store, Ledger::kTiers);
  projector.apply({events.back()});  // never started: positions 1 and 2 are a gap
  CHECK(projector.checkpoint() == 3);
  auto entry = projector.key_table().find(key.digest);
  REQUIRE(entry);
  CHECK(entry->condition == KeyCondition::kRevoked);
  projector.apply(events);  // all at or below the checkpoint: skipped
  CHECK(projector.checkpoint() == 3);
  CHECK(projector.audit({})->events.size() == 3);
}

TEST_CASE("rebuild reproduces the incrementally built projections", "[projections]") {
  Ledger ledger;
  const History h = make_history(ledger);
  ledger.projector->key_table().touch(h.rotated.digest, 1'800'000'000);
  REQUIRE(ledger.projector->flush_usage().ok());
  const auto table = dump(ledger.projector->key_table());
  const auto indexes = key_indexes(*ledger.projector);
  const std::vector<AuditQuery> queries = {
      {},
      {.agent_id = h.agent},
      {.key_id = h.first.key_id},
      {.type = "key.created"},
      {.actor = "ops", .descending = true},
      {.since = testing::test_epoch() + std::chrono::seconds(5)},
  };
  std::vector<std::vector<std::uint64_t>> audits;
  for (const auto& q : queries) {
    audits.push_back(audit_positions(*ledger.projector, q));
  }
  auto deliveries = ledger.projector->webhook_deliveries(h.agent, 100, std::nullopt);
  REQUIRE(deliveries.ok());

  ledger.reopen(/*with_projector=*/false);
  ledger.projector = std::make_unique<Projector>(*ledger.store, Ledger::kTiers);
  const Status rebuilt = ledger.projector->rebuild();
  INFO(rebuilt.ToString());
  REQUIRE(rebuilt.ok());
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
  CHECK(dump(ledger.projector->key_table()) == table);
  CHECK(key_indexes(*ledger.projector) == indexes);
  for (std::size_t i = 0; i < queries.size(); ++i) {
    CHECK(audit_positions(*ledger.projector, queries[i]) == audits[i]);
  }
  auto deliveries_after = ledger.projector->webhook_deliveries(h.agent, 100, std::nullopt);
  REQUIRE(deliveries_after.ok());
  CHECK(testing::positions(deliveries_after->events) == testing::positions(deliveries->events));
  CHECK(ledger.projector->tokens().list().size() == 1);
  // Usage data is not derived from events and survives the rebuild.
  CHECK(ledger.projector->last_used(h.rotated.key_id) == TimePoint(std::chrono::seconds(1'800'000'000)));

  // Started after the rebuild, it carries on; restarted, it loads what rebuild wrote.
  REQUIRE(ledger.projector->start().ok());
  CHECK(ledger.projector->rebuild().IsConflict());
  const auto more = ledger.create_key(h.agent);
  CHECK(require_entry(ledger, more.digest).condition == KeyCondition::kActive);
  const auto extended = dump(ledger.projector->key_table());
  ledger.reopen();
  CHECK(dump(ledger.projector->key_table()) == extended);
}

TEST_CASE("readers never see a torn entry while events are applied", "[projections]") {
  Ledger ledger;
  const std::string agent = ledger.register_agent();
  const std::string other = ledger.register_agent(v1::ENVIRONMENT_STAGING);
  std::vector<testing::IssuedKey> keys;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(ledger.create_key(i % 2 == 0 ? agent : other));
  }

  std::atomic<bool> stop{false};
  std::atomic<int> torn{0};
  std::atomic<long> lookups{0};
  std::vector<std::thread> readers;
  const ActiveKeyTable& table = ledger.projector->key_table();
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&, r] {
      while (!stop.load()) {
        for (std::size_t i = 0; i < keys.size(); ++i) {
          const auto& k = keys[(i + static_cast<std::size_t>(r)) % keys.size()];
          std::optional<KeyEntry> e = table.find(k.digest);
          if (!e || e->key_id.view() != k.key_id ||
              (e->agent_id.view() != agent && e->agent_id.view() != other) ||
              static_cast<int>(e->condition) > static_cast<int>(KeyCondition::kCompromised)) {
            ++torn;
          }
          ++lookups;
        }
        (void)table.size();
      }
    });
  }

  for (int round = 0; round < 30; ++round) {
    const auto fresh = ledger.create_key(agent);
    ledger.set_tier(agent, round % 2 == 0 ? "elevated" : "standard");
    ledger.rotate_key(agent, fresh.key_id, 0);
    ledger.report_compromise(agent, fresh.key_id);
    auto state = ledger.agent(agent);
    for (const auto& key : state.keys) {
      if (key.status == KeyStatus::kActive && key.key_id != keys[0].key_id && key.key_id != keys[2].key_id) {
        ledger.revoke_key(agent, key.key_id);
      }
    }
  }
  stop = true;
  for (auto& t : readers) {
    t.join();
  }
  CHECK(torn.load() == 0);
  CHECK(lookups.load() > 0);
  CHECK(ledger.projector->checkpoint() == ledger.store->last_position());
}

TEST_CASE("start refuses a store opened without the projection column families", "[projections]") {
  testing::TempDir dir;
  EventStoreOptions options;
  options.path = dir.path();
  auto store = EventStore::open(options);
  REQUIRE(store.ok());
  Projector projector(**store, Ledger::kTiers);
  const Status s = projector.start();
  CHECK(s.IsIoError());
  CHECK(projector.rebuild().IsIoError());
}

}  // namespace keyledger
