#include "projections/audit_view.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <set>

#include "ledger_fixture.h"

namespace keyledger {
namespace {

using testing::Ledger;

// What a query should answer, straight from the log.
std::vector<std::uint64_t> expected(const std::vector<v1::Event>& log, const AuditQuery& q) {
  std::vector<std::uint64_t> out;
  for (const v1::Event& e : log) {
    const bool key_matches = !q.key_id || event_key_id(e) == *q.key_id ||
                             (e.has_key_rotated() && e.key_rotated().new_key_id() == *q.key_id);
    const TimePoint at = from_timestamp(e.occurred_at());
    if (key_matches && (!q.agent_id || event_agent_id(e) == *q.agent_id) &&
        (!q.type || e.type() == *q.type) && (!q.actor || e.actor() == *q.actor) &&
        (!q.since || at >= *q.since) && (!q.until || at <= *q.until)) {
      out.push_back(e.position());
    }
  }
  if (q.descending) {
    std::reverse(out.begin(), out.end());
  }
  return out;
}

// Every page of `q` (page size `limit`) followed through next_after, concatenated.
std::vector<std::uint64_t> all_pages(const Projector& projector, AuditQuery q, std::size_t limit) {
  q.limit = limit;
  q.after_position.reset();
  std::vector<std::uint64_t> out;
  for (int guard = 0; guard < 1000; ++guard) {
    auto page = projector.audit(q);
    REQUIRE(page.ok());
    CHECK(page->events.size() <= limit);
    for (const auto& e : page->events) {
      out.push_back(e.position());
    }
    if (!page->next_after) {
      CHECK(page->events.size() <= limit);
      return out;
    }
    CHECK(page->events.size() == limit);
    CHECK(*page->next_after == page->events.back().position());
    q.after_position = page->next_after;
  }
  FAIL("pagination does not end");
  return out;
}

struct Scenario {
  std::string alice;
  std::string bob;
  std::string alice_key;
  std::string alice_successor;
  std::string bob_key;
  std::vector<v1::Event> log;
};

Scenario make_scenario(Ledger& ledger) {
  Scenario s;
  s.alice = ledger.register_agent(v1::ENVIRONMENT_PRODUCTION, "dashboard");
  s.bob = ledger.register_agent(v1::ENVIRONMENT_STAGING, "ops");
  const auto a1 = ledger.create_key(s.alice, std::nullopt, "dashboard");
  s.alice_key = a1.key_id;
  s.bob_key = ledger.create_key(s.bob, 3600, "ops").key_id;
  s.alice_successor = ledger.rotate_key(s.alice, a1.key_id, 600, "dashboard").key_id;
  ledger.create_token("gateway", {"verify"});
  ledger.record_delivery(s.alice, "evt-a", 1);
  ledger.set_tier(s.bob, "elevated");
  ledger.record_delivery(s.bob, "evt-b", 1);
  ledger.record_delivery(s.alice, "evt-a", 2);
  const auto b2 = ledger.create_key(s.bob, std::nullopt, "ops");
  ledger.revoke_key(s.bob, b2.key_id, "dashboard");
  ledger.report_compromise(s.alice, s.alice_successor, /*replace=*/true, "leak:github");
  ledger.record_delivery(s.alice, "evt-a", 3);
  ledger.revoke_key(s.alice, a1.key_id, "ops");
  s.log = ledger.all_events();
  return s;
}

}  // namespace

TEST_CASE("audit answers every filter and combination like a scan of the log", "[projections]") {
  Ledger ledger;
  const Scenario s = make_scenario(ledger);
  const Projector& projector = *ledger.projector;
  const TimePoint t0 = from_timestamp(s.log.front().occurred_at());
  const TimePoint t_mid = from_timestamp(s.log[s.log.size() / 2].occurred_at());
  const TimePoint t_end = from_timestamp(s.log.back().occurred_at());

  std::vector<AuditQuery> queries = {
      {},
      {.agent_id = s.alice},
      {.agent_id = s.bob},
      {.key_id = s.alice_key},
      {.key_id = s.alice_successor},
      {.key_id = s.bob_key},
      {.type = "key.created"},
      {.type = "webhook.delivery_recorded"},
      {.type = "token.created"},
      {.actor = "ops"},
      {.actor = "leak:github"},
      {.since = t_mid},
      {.until = t_mid},
      {.since = t0 + std::chrono::seconds(3), .until = t_mid},
      {.since = t_end},
      {.until = t0},
      {.since = t_end + std::chrono::seconds(1)},
      {.until = t0 - std::chrono::milliseconds(1)},
      {.agent_id = s.alice, .type = "key.created"},
      {.agent_id = s.bob, .actor = "dashboard"},
      {.agent_id = s.alice, .key_id = s.alice_key, .type = "key.rotated"},
      {.agent_id = s.alice, .key_id = s.bob_key},
      {.type = "key.revoked", .actor = "ops", .since = t0},
      {.agent_id = s.alice, .since = t_mid, .until = t_end},
      {.actor = "nobody"},
      {.agent_id = "agt_000000000000000000000000"},
  };
  for (AuditQuery q : queries) {
    for (bool descending : {false, true}) {
      q.descending = descending;
      const std::vector<std::uint64_t> want = expected(s.log, q);
      INFO("agent=" << q.agent_id.value_or("-") << " key=" << q.key_id.value_or("-")
                    << " type=" << q.type.value_or("-") << " actor=" << q.actor.value_or("-")
                    << " since=" << (q.since ? format_rfc3339(*q.since) : "-")
                    << " until=" << (q.until ? format_rfc3339(*q.until) : "-") << " desc=" << descending);
      q.limit = 1000;
      auto page = projector.audit(q);
      REQUIRE(page.ok());
      CHECK(testing::positions(page->events) == want);
      CHECK_FALSE(page->next_after);
      for (std::size_t limit : {1, 2, 3, 7}) {
        CHECK(all_pages(projector, q, limit) == want);
      }
    }
  }
  // The scenario exercises what it should.
  CHECK(expected(s.log, {.key_id = s.alice_successor}).size() >= 3);  // created, rotated, compromised
  CHECK(expected(s.log, {.agent_id = s.bob, .actor = "dashboard"}).size() == 2);  // tier change, revocation
}

TEST_CASE("audit pages cover every event exactly once in both orders", "[projections]") {
  Ledger ledger;
  const Scenario s = make_scenario(ledger);
  std::vector<std::uint64_t> all;
  for (const auto& e : s.log) {
    all.push_back(e.position());
  }
  const auto asc = all_pages(*ledger.projector, {}, 4);
  CHECK(asc == all);
  const auto desc = all_pages(*ledger.projector, {.descending = true}, 4);
  CHECK(std::vector<std::uint64_t>(desc.rbegin(), desc.rend()) == all);
  CHECK(std::set<std::uint64_t>(asc.begin(), asc.end()).size() == all.size());

  // A page that ends exactly on the last event has no cursor.
  auto last = ledger.projector->audit({.limit = all.size()});
  REQUIRE(last.ok());
  CHECK(last->events.size() == all.size());
  CHECK_FALSE(last->next_after);

  // Cursors at the edges.
  CHECK(ledger.projector->audit({.after_position = all.back()})->events.empty());
  CHECK(ledger.projector->audit({.descending = true, .after_position = 1})->events.empty());
  CHECK(ledger.projector->audit({.descending = true, .after_position = 0})->events.empty());
  CHECK(ledger.projector->audit({.after_position = UINT64_MAX})->events.empty());
  CHECK(ledger.projector->audit({.limit = 0})->events.empty());
  auto first = ledger.projector->audit({.descending = true, .limit = 1, .after_position = 2});
  REQUIRE(first->events.size() == 1);
  CHECK(first->events[0].position() == 1);
  CHECK_FALSE(first->next_after);
}

TEST_CASE("audit events never carry more than the log holds", "[projections]") {
  Ledger ledger;
  const Scenario s = make_scenario(ledger);
  auto page = ledger.projector->audit({.key_id = s.alice_key, .limit = 1000});
  REQUIRE(page.ok());
  REQUIRE_FALSE(page->events.empty());
  for (const auto& e : page->events) {
    const auto& stored = s.log[e.position() - 1];
    CHECK(e.SerializeAsString() == stored.SerializeAsString());
  }
}

TEST_CASE("time filters hold when occurred_at is slightly out of position order", "[projections]") {
  Ledger ledger;
  const TimePoint base = testing::test_epoch();
  // Stamped before commit, so a later position can carry an earlier time.
  const std::vector<std::int64_t> offsets_ms = {0, 1000, 995, 2000, 1990, 1995, 3000};
  for (std::size_t i = 0; i < offsets_ms.size(); ++i) {
    v1::Event e;
    e.set_event_id("evt-" + std::to_string(i));
    e.set_actor("webhooks");
    e.set_type("webhook.delivery_recorded");
    *e.mutable_occurred_at() = to_timestamp(base + std::chrono::milliseconds(offsets_ms[i]));
    e.mutable_webhook_delivery_recorded()->set_agent_id("agt_a");
    REQUIRE(ledger.store->append("agent-agt_a", kAnyVersion, {e}).ok());
  }
  const auto log = ledger.all_events();
  for (std::int64_t since : {-1, 0, 995, 996, 1000, 1990, 1991, 2000, 3000, 3001}) {
    for (std::int64_t until : {-1, 0, 994, 995, 999, 1000, 1995, 1999, 2000, 3000}) {
      for (bool descending : {false, true}) {
        const AuditQuery q{.since = base + std::chrono::milliseconds(since),
                           .until = base + std::chrono::milliseconds(until),
                           .descending = descending,
                           .limit = 2};
        INFO("since " << since << " until " << until << " desc " << descending);
        CHECK(all_pages(*ledger.projector, q, 2) == expected(log, q));
      }
    }
  }
}

TEST_CASE("webhook deliveries list an agent's attempts newest first", "[projections]") {
  Ledger ledger;
  const Scenario s = make_scenario(ledger);
  std::vector<std::uint64_t> alice_deliveries;
  for (auto it = s.log.rbegin(); it != s.log.rend(); ++it) {
    if (it->has_webhook_delivery_recorded() && it->webhook_delivery_recorded().agent_id() == s.alice) {
      alice_deliveries.push_back(it->position());
    }
  }
  REQUIRE(alice_deliveries.size() == 3);

  auto all = ledger.projector->webhook_deliveries(s.alice, 100, std::nullopt);
  REQUIRE(all.ok());
  CHECK(testing::positions(all->events) == alice_deliveries);
  CHECK_FALSE(all->next_after);
  CHECK(all->events.front().webhook_delivery_recorded().attempt() == 3);

  auto page1 = ledger.projector->webhook_deliveries(s.alice, 2, std::nullopt);
  REQUIRE(page1.ok());
  CHECK(testing::positions(page1->events) ==
        std::vector<std::uint64_t>(alice_deliveries.begin(), alice_deliveries.begin() + 2));
  REQUIRE(page1->next_after);
  auto page2 = ledger.projector->webhook_deliveries(s.alice, 2, page1->next_after);
  REQUIRE(page2.ok());
  CHECK(testing::positions(page2->events) == std::vector<std::uint64_t>{alice_deliveries[2]});
  CHECK_FALSE(page2->next_after);

  auto bob = ledger.projector->webhook_deliveries(s.bob, 100, std::nullopt);
  REQUIRE(bob.ok());
  CHECK(bob->events.size() == 1);
  CHECK(ledger.projector->webhook_deliveries("agt_nobody", 100, std::nullopt)->events.empty());
  CHECK(ledger.projector->webhook_deliveries("", 100, std::nullopt)->events.empty());
}

}  // namespace keyledger
