#include "projections/active_key_table.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

namespace keyledger {
namespace {

const TimePoint kT0 = TimePoint(std::chrono::seconds(1'800'000'000));

Digest digest_of(std::uint8_t seed) {
  Digest d{};
  for (std::size_t i = 0; i < d.size(); ++i) {
    d[i] = static_cast<std::uint8_t>(seed * 31 + i);
  }
  return d;
}

// Distinct, well-spread digests for any n (splitmix64 per 8 bytes), as keyed BLAKE2b gives.
Digest digest_n(std::uint64_t n) {
  Digest d{};
  for (std::size_t i = 0; i < d.size(); i += 8) {
    std::uint64_t z = (n * 4 + i / 8 + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(d.data() + i, &z, 8);
  }
  return d;
}

v1::Event envelope(std::uint64_t position, TimePoint at = kT0) {
  v1::Event e;
  e.set_position(position);
  *e.mutable_occurred_at() = to_timestamp(at);
  return e;
}

v1::Event registered(const std::string& agent, const std::string& tier,
                     v1::Environment env = v1::ENVIRONMENT_PRODUCTION) {
  v1::Event e = envelope(1);
  e.mutable_agent_registered()->set_agent_id(agent);
  e.mutable_agent_registered()->set_rate_limit_tier(tier);
  e.mutable_agent_registered()->set_environment(env);
  return e;
}

v1::Event created(const std::string& agent, const std::string& key, const Digest& d,
                  std::optional<TimePoint> expires_at = std::nullopt) {
  v1::Event e = envelope(2);
  v1::KeyCreated* c = e.mutable_key_created();
  c->set_agent_id(agent);
  c->set_key_id(key);
  c->set_digest(d.data(), d.size());
  if (expires_at) {
    *c->mutable_expires_at() = to_timestamp(*expires_at);
  }
  return e;
}

v1::Event revoked(const std::string& agent, const std::string& key,
                  v1::RevocationReason reason = v1::REVOCATION_REASON_MANUAL) {
  v1::Event e = envelope(3);
  e.mutable_key_revoked()->set_agent_id(agent);
  e.mutable_key_revoked()->set_key_id(key);
  e.mutable_key_revoked()->set_reason(reason);
  return e;
}

v1::Event compromised(const std::string& agent, const std::string& key) {
  v1::Event e = envelope(4);
  e.mutable_key_compromised()->set_agent_id(agent);
  e.mutable_key_compromised()->set_key_id(key);
  return e;
}

v1::Event expired(const std::string& agent, const std::string& key) {
  v1::Event e = envelope(5);
  e.mutable_key_expired()->set_agent_id(agent);
  e.mutable_key_expired()->set_key_id(key);
  return e;
}

v1::Event rotated(const std::string& agent, const std::string& key, TimePoint old_expires_at) {
  v1::Event e = envelope(6);
  e.mutable_key_rotated()->set_agent_id(agent);
  e.mutable_key_rotated()->set_key_id(key);
  e.mutable_key_rotated()->set_new_key_id(key + "_next");
  *e.mutable_key_rotated()->mutable_old_key_expires_at() = to_timestamp(old_expires_at);
  return e;
}

v1::Event tier_changed(const std::string& agent, const std::string& tier) {
  v1::Event e = envelope(7);
  e.mutable_rate_limit_tier_changed()->set_agent_id(agent);
  e.mutable_rate_limit_tier_changed()->set_tier(tier);
  return e;
}

KeyCondition condition(const ActiveKeyTable& table, const Digest& d) {
  auto e = table.find(d);
  REQUIRE(e);
  return e->condition;
}

// The start of a minute, for the usage tests.
constexpr std::int64_t kMinute = 1'800'000'000 / 60 * 60;

// key_0 … key_{n-1} of agt_1, at digest_n(0 … n-1).
void add_keys(ActiveKeyTable& table, int n) {
  for (int i = 0; i < n; ++i) {
    table.apply(created("agt_1", "key_" + std::to_string(i), digest_n(static_cast<std::uint64_t>(i))));
  }
}

// One verification of key_`key` at `at` (Unix seconds), counted as `outcome` from `source`.
void count_use(ActiveKeyTable& table, int key, std::int64_t at, int outcome, std::string_view source) {
  CHECK(table.visit(
      digest_n(static_cast<std::uint64_t>(key)), at,
      [&](const KeyEntry&, TokenBucket&) {
        return ActiveKeyTable::Visited{.used = false, .counted = outcome};
      },
      source));
}

}  // namespace

TEST_CASE("InlineId holds ids without allocation and truncates long ones", "[projections]") {
  const InlineId id("key_0123456789abcdef01234567");
  CHECK(id.view() == "key_0123456789abcdef01234567");
  CHECK(id == InlineId(std::string("key_0123456789abcdef01234567")));
  CHECK(InlineId(std::string(40, 'x')).view().size() == InlineId::kCapacity);
  CHECK(InlineId().view().empty());
}

TEST_CASE("a key gets its agent's tier and environment", "[projections]") {
  ActiveKeyTable table({"standard", "elevated"});
  table.apply(registered("agt_a", "elevated", v1::ENVIRONMENT_STAGING));
  table.apply(created("agt_a", "key_1", digest_of(1), kT0 + std::chrono::seconds(60)));
  auto e = table.find(digest_of(1));
  REQUIRE(e);
  CHECK(e->key_id.view() == "key_1");
  CHECK(e->agent_id.view() == "agt_a");
  CHECK(table.tier_name(e->tier) == "elevated");
  CHECK(e->environment == v1::ENVIRONMENT_STAGING);  // unset on the event: the agent's
  CHECK(e->created_at_ms == 1'800'000'000'000);
  CHECK(e->expires_at_ms == 1'800'000'060'000);
  CHECK(table.find_key("key_1")->key_id.view() == "key_1");
  CHECK_FALSE(table.find_key("key_2"));
  CHECK_FALSE(table.find(digest_of(2)));

  // Unknown agents get the default tier; unknown tier names are appended.
  table.apply(created("agt_unknown", "key_2", digest_of(2)));
  CHECK(table.tier_name(table.find(digest_of(2))->tier) == "standard");
  CHECK(table.tier_index("premium") == 2);
  CHECK(table.tier_name(2) == "premium");
  CHECK(table.tier_name(200).empty());
}

TEST_CASE("applying an event twice changes nothing more", "[projections]") {
  ActiveKeyTable table({"standard"});
  std::vector<Digest> changed;
  table.apply(registered("agt_a", "standard"));
  table.apply(created("agt_a", "key_1", digest_of(1)), &changed);
  CHECK(changed.size() == 1);
  changed.clear();
  table.apply(created("agt_a", "key_1", digest_of(1)), &changed);
  CHECK(changed.empty());
  CHECK(table.size() == 1);

  table.apply(revoked("agt_a", "key_1"), &changed);
  CHECK(changed.size() == 1);
  changed.clear();
  table.apply(revoked("agt_a", "key_1"), &changed);
  CHECK(changed.empty());
  CHECK(condition(table, digest_of(1)) == KeyCondition::kRevoked);
}

TEST_CASE("terminal conditions are never undone; compromised wins", "[projections]") {
  ActiveKeyTable table({"standard"});
  table.apply(created("agt_a", "key_1", digest_of(1)));
  table.apply(created("agt_a", "key_2", digest_of(2)));
  table.apply(created("agt_a", "key_3", digest_of(3)));

  // A redelivered KeyCreated after the revocation does not bring the key back.
  table.apply(revoked("agt_a", "key_1"));
  table.apply(created("agt_a", "key_1", digest_of(1)));
  CHECK(condition(table, digest_of(1)) == KeyCondition::kRevoked);
  table.apply(expired("agt_a", "key_1"));
  CHECK(condition(table, digest_of(1)) == KeyCondition::kRevoked);
  table.apply(compromised("agt_a", "key_1"));
  CHECK(condition(table, digest_of(1)) == KeyCondition::kCompromised);
  table.apply(revoked("agt_a", "key_1"));
  CHECK(condition(table, digest_of(1)) == KeyCondition::kCompromised);

  table.apply(revoked("agt_a", "key_2", v1::REVOCATION_REASON_COMPROMISED));
  CHECK(condition(table, digest_of(2)) == KeyCondition::kCompromised);

  table.apply(expired("agt_a", "key_3"));
  CHECK(condition(table, digest_of(3)) == KeyCondition::kExpired);
}

TEST_CASE("a rotation's old-key expiry only ever shortens the lifetime", "[projections]") {
  ActiveKeyTable table({"standard"});
  table.apply(created("agt_a", "key_1", digest_of(1)));
  table.apply(rotated("agt_a", "key_1", kT0 + std::chrono::seconds(100)));
  CHECK(table.find(digest_of(1))->expires_at_ms == 1'800'000'100'000);
  table.apply(rotated("agt_a", "key_1", kT0 + std::chrono::seconds(500)));
  CHECK(table.find(digest_of(1))->expires_at_ms == 1'800'000'100'000);
  table.apply(rotated("agt_a", "key_1", kT0 + std::chrono::seconds(50)));
  CHECK(table.find(digest_of(1))->expires_at_ms == 1'800'000'050'000);
  CHECK(table.find(digest_of(1))->condition_at(1'800'000'049'999) == KeyCondition::kActive);
  CHECK(table.find(digest_of(1))->condition_at(1'800'000'050'000) == KeyCondition::kExpired);
}

TEST_CASE("a tier change reaches every key of the agent and only those", "[projections]") {
  ActiveKeyTable table({"standard", "elevated"});
  table.apply(registered("agt_a", "standard"));
  table.apply(registered("agt_b", "standard"));
  table.apply(created("agt_a", "key_1", digest_of(1)));
  table.apply(created("agt_a", "key_2", digest_of(2)));
  table.apply(created("agt_b", "key_3", digest_of(3)));
  std::vector<Digest> changed;
  table.apply(tier_changed("agt_a", "elevated"), &changed);
  CHECK(changed.size() == 2);
  CHECK(table.tier_name(table.find(digest_of(1))->tier) == "elevated");
  CHECK(table.tier_name(table.find(digest_of(2))->tier) == "elevated");
  CHECK(table.tier_name(table.find(digest_of(3))->tier) == "standard");
  CHECK(table.agent_defaults("agt_a")->tier == 1);
  CHECK_FALSE(table.agent_defaults("agt_c"));
}

TEST_CASE("put loads entries that later events still find by key and agent", "[projections]") {
  ActiveKeyTable table({"standard", "elevated"});
  KeyEntry entry;
  entry.key_id = InlineId("key_1");
  entry.agent_id = InlineId("agt_a");
  table.put(digest_of(1), entry);
  table.put_agent("agt_a", {.tier = 0, .environment = v1::ENVIRONMENT_STAGING});
  table.apply(tier_changed("agt_a", "elevated"));
  table.apply(revoked("agt_a", "key_1"));
  auto e = table.find(digest_of(1));
  REQUIRE(e);
  CHECK(table.tier_name(e->tier) == "elevated");
  CHECK(e->condition == KeyCondition::kRevoked);
  table.apply(created("agt_a", "key_2", digest_of(2)));
  CHECK(table.find(digest_of(2))->environment == v1::ENVIRONMENT_STAGING);

  table.clear();
  CHECK(table.size() == 0);
  CHECK_FALSE(table.find_key("key_1"));
  CHECK_FALSE(table.agent_defaults("agt_a"));
}

TEST_CASE("ids keyledger makes and ids of any other form come back exactly", "[projections]") {
  // Ids as keyledger makes them (prefix and 24 lowercase hex) and ids of other forms, near
  // misses included: every lookup, event and read-back treats them alike and never confuses
  // two (a layout that packs keyledger's own ids must keep passing this).
  const std::string made_key = "key_0123456789abcdef01234567";
  const std::string made_agent = "agt_fedcba9876543210fedcba98";
  const std::vector<std::pair<std::string, std::string>> ids = {
      {made_key, made_agent},
      {"key_0123456789ABCDEF01234567", "agt_FEDCBA9876543210FEDCBA98"},  // upper case: another form
      {"key_0123456789abcdef0123456", "agt_fedcba9876543210fedcba9"},    // one character short
      {"legacy-key-7", "legacy-agent"},
  };
  ActiveKeyTable table({"standard", "elevated"});
  for (std::size_t i = 0; i < ids.size(); ++i) {
    table.apply(registered(ids[i].second, "standard"));
    table.apply(created(ids[i].second, ids[i].first, digest_n(i)));
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CAPTURE(i);
    const auto by_digest = table.find(digest_n(i));
    REQUIRE(by_digest);
    CHECK(by_digest->key_id.str() == ids[i].first);
    CHECK(by_digest->agent_id.str() == ids[i].second);
    const auto by_key = table.find_key(ids[i].first);
    REQUIRE(by_key);
    CHECK(by_key->key_id.str() == ids[i].first);
  }
  CHECK_FALSE(table.find_key("key_0123456789abcdef01234568"));
  CHECK_FALSE(table.find_key(""));

  // Events name keys and agents by id, whatever their form.
  table.apply(tier_changed(made_agent, "elevated"));
  table.apply(revoked("legacy-agent", "legacy-key-7"));
  CHECK(table.tier_name(table.find(digest_n(0))->tier) == "elevated");
  CHECK(table.tier_name(table.find(digest_n(1))->tier) == "standard");  // the upper-case twin
  CHECK(table.find(digest_n(3))->condition == KeyCondition::kRevoked);
  CHECK(table.find(digest_n(0))->condition == KeyCondition::kActive);

  std::vector<std::string> seen;
  table.for_each([&](const Digest&, const KeyEntry& entry) { seen.push_back(entry.key_id.str()); });
  CHECK(seen == std::vector<std::string>{ids[0].first, ids[1].first, ids[2].first, ids[3].first});
  table.touch(digest_n(2), 1'800'000'000);
  const auto used = table.take_usage();
  REQUIRE(used.size() == 1);
  CHECK(used[0].key_id.str() == ids[2].first);
}

// take_usage() as key id -> seconds; fails the test if a key appears twice.
std::map<std::string, std::int64_t> drained(ActiveKeyTable& table) {
  std::map<std::string, std::int64_t> out;
  for (const auto& record : table.take_usage()) {
    CHECK(out.emplace(record.key_id.str(), record.seconds).second);
  }
  return out;
}

TEST_CASE("usage is recorded per key and drained by take_usage", "[projections]") {
  ActiveKeyTable table({"standard"});
  table.apply(created("agt_a", "key_1", digest_of(1)));
  const std::int64_t t = 1'800'000'000;  // Unix seconds, 2027
  table.touch(digest_of(1), t);
  table.touch(digest_of(1), t - 10);  // an older time never moves last_used back
  table.touch(digest_of(9), t);       // unknown digest: ignored
  CHECK(table.last_used("key_1") == t);
  auto usage = drained(table);
  CHECK(usage.size() == 1);
  CHECK(usage["key_1"] == t);
  CHECK(table.take_usage().empty());
  CHECK(table.last_used("key_1") == t);
  CHECK_FALSE(table.last_used("key_2"));
  // Used again after a flush: drained again, once, with the newest time.
  table.touch(digest_of(1), t + 5);
  table.touch(digest_of(1), t + 7);
  usage = drained(table);
  CHECK(usage.size() == 1);
  CHECK(usage["key_1"] == t + 7);
}

TEST_CASE("the table stays correct while it grows past its index sizes", "[projections]") {
  ActiveKeyTable table({"standard"});
  constexpr int kKeys = 5000;  // every shard's index doubles several times
  for (int i = 0; i < kKeys; ++i) {
    table.apply(created("agt_" + std::to_string(i / 10), "key_" + std::to_string(i), digest_n(i)));
  }
  REQUIRE(table.size() == kKeys);
  for (int i = 0; i < kKeys; ++i) {
    const auto by_digest = table.find(digest_n(i));
    REQUIRE(by_digest);
    CHECK(by_digest->key_id.view() == "key_" + std::to_string(i));
    const auto by_id = table.find_key("key_" + std::to_string(i));
    REQUIRE(by_id);
    CHECK(by_id->agent_id.view() == "agt_" + std::to_string(i / 10));
  }
  CHECK_FALSE(table.find(digest_n(kKeys)));
  CHECK_FALSE(table.find_key("key_" + std::to_string(kKeys)));
  // A tier change reaches every key of the agent, and only those.
  table.apply(tier_changed("agt_7", "elevated"));
  for (int i = 0; i < kKeys; ++i) {
    CHECK(table.find(digest_n(i))->tier == (i / 10 == 7 ? table.tier_index("elevated") : 0));
  }
}

TEST_CASE("a table reserved for its load finds what an unreserved one finds", "[projections]") {
  constexpr int kKeys = 3000;
  ActiveKeyTable reserved({"standard"});
  ActiveKeyTable grown({"standard"});
  reserved.reserve(kKeys / 2);  // fewer than it gets: its indexes still grow when they must
  for (int i = 0; i < kKeys; ++i) {
    KeyEntry entry;
    entry.key_id = InlineId("key_" + std::to_string(i));
    entry.agent_id = InlineId("agt_" + std::to_string(i / 10));
    entry.created_at_ms = i;
    reserved.put(digest_n(i), entry);
    grown.put(digest_n(i), entry);
  }
  reserved.reserve(10 * kKeys);  // a table with entries is left as it is
  REQUIRE(reserved.size() == grown.size());
  for (int i = 0; i < kKeys; ++i) {
    const auto a = reserved.find(digest_n(i));
    const auto b = grown.find(digest_n(i));
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->created_at_ms == b->created_at_ms);
    CHECK(reserved.find_key("key_" + std::to_string(i))->agent_id.view() == b->agent_id.view());
  }
  CHECK_FALSE(reserved.find(digest_n(kKeys)));
}

TEST_CASE("readers verify while the projection adds and revokes keys", "[projections]") {
  ActiveKeyTable table({"standard"});
  constexpr int kKeys = 20000;  // chunks are added and every index grows while readers probe
  std::atomic<int> created_count{0};
  std::atomic<int> revoked_count{0};
  std::atomic<bool> done{false};
  std::atomic<long> wrong{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      std::uint64_t x = 88172645463325252ULL + static_cast<std::uint64_t>(r);
      while (!done.load()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const int seen_created = created_count.load();
        const int seen_revoked = revoked_count.load();
        if (seen_created == 0) {
          continue;
        }
        const int i = static_cast<int>(x % static_cast<std::uint64_t>(seen_created));
        bool found = false;
        KeyCondition condition = KeyCondition::kActive;
        table.visit(digest_n(i), 1'800'000'000, [&](const KeyEntry& e, TokenBucket& bucket) {
          found = e.key_id.view() == "key_" + std::to_string(i);
          condition = e.condition;
          bucket.tokens += 1;
          return true;
        });
        // Created before we looked: found with its own id; revoked before we looked: revoked.
        if (!found || (i < seen_revoked && condition != KeyCondition::kRevoked)) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (int i = 0; i < kKeys; ++i) {
    table.apply(created("agt_" + std::to_string(i / 10), "key_" + std::to_string(i), digest_n(i)));
    created_count.store(i + 1);
    if (i % 2 == 1) {
      const int r = revoked_count.load();
      table.apply(revoked("agt_" + std::to_string(r / 10), "key_" + std::to_string(r)));
      revoked_count.store(r + 1);
    }
  }
  done.store(true);
  for (auto& t : readers) {
    t.join();
  }
  CHECK(wrong.load() == 0);
  CHECK(table.size() == kKeys);
  for (int i = 0; i < kKeys; ++i) {
    table.touch(digest_n(i), 1'800'000'001);
  }
  const auto usage = drained(table);
  CHECK(usage.size() == kKeys);
  CHECK(usage.at("key_0") == 1'800'000'001);
}

namespace {

using Counts = std::array<std::uint32_t, ActiveKeyTable::kCountedOutcomes>;
using CountedSources = std::vector<std::pair<std::string, std::uint32_t>>;
struct Counted {
  Counts counts;
  CountedSources sources;
  bool operator==(const Counted&) const = default;
};
using CountedCells = std::map<std::pair<std::string, std::int64_t>, Counted>;  // (key, minute start)

// A sink gathering what a call hands over, each key and minute at most once.
ActiveKeyTable::CountSink gather(CountedCells& into) {
  return [&into](const ActiveKeyTable::CountedMinute& c) {
    CHECK(into.emplace(std::pair{c.key_id.str(), c.minute_start}, Counted{c.counts, c.sources()}).second);
  };
}

CountedCells journalled(ActiveKeyTable& table, bool all = false) {
  CountedCells out;
  table.journal_counts(gather(out), all);
  return out;
}

CountedCells taken(ActiveKeyTable& table, std::int64_t before = INT64_MAX) {
  CountedCells out;
  table.take_counts(gather(out), before);
  return out;
}

}  // namespace

TEST_CASE("active key table: usage counted beside the slots per key and minute, journalled when changed",
          "[active_key_table][usage]") {
  ActiveKeyTable table({"standard"});
  add_keys(table, 3);
  const auto count = [&](int key, int outcome, std::int64_t at, std::string_view source = {}) {
    count_use(table, key, at, outcome, source);
  };
  count(0, 0, kMinute + 1, "192.0.2.1");
  count(0, 0, kMinute + 2, "192.0.2.1");
  count(0, 2, kMinute + 3, "192.0.2.2");
  count(0, 0, kMinute + 61);  // the next minute: the first one is set aside, not lost
  count(1, 4, kMinute + 5);
  CHECK_FALSE(table.visit(digest_n(99), kMinute, [](const KeyEntry&, TokenBucket&) {
    return ActiveKeyTable::Visited{.used = false, .counted = 0};
  }));
  // A visit that counts nothing (a key refused where agent keys are no credential).
  table.visit(digest_n(2), kMinute, [](const KeyEntry&, TokenBucket&) { return false; });
  CHECK(table.pending_counts() == 3);

  CountedCells got = journalled(table);
  REQUIRE(got.size() == 3);
  CHECK(got.at({"key_0", kMinute}) ==
        Counted{{2, 0, 1, 0, 0}, {{"192.0.2.1", 2}, {"192.0.2.2", 1}}});
  CHECK(got.at({"key_0", kMinute + 60}) == Counted{{1, 0, 0, 0, 0}, {}});
  CHECK(got.at({"key_1", kMinute}) == Counted{{0, 0, 0, 0, 1}, {}});
  CHECK(table.pending_counts() == 0);
  CHECK(journalled(table).empty());
  CHECK(journalled(table, /*all=*/true) == got);  // after a failed write: every cell again

  // A journal record holds a cell's counts so far, not the change since the last one.
  count(0, 0, kMinute + 62);
  CHECK(table.pending_counts() == 1);
  got = journalled(table);
  REQUIRE(got.size() == 1);
  CHECK(got.at({"key_0", kMinute + 60}).counts == Counts{2, 0, 0, 0, 0});

  // The fold takes the minutes that are over; the minute under way stays, to be journalled again.
  got = taken(table, kMinute + 60);
  CHECK(got.size() == 2);
  CHECK(got.at({"key_0", kMinute}).counts == Counts{2, 0, 1, 0, 0});
  CHECK(got.at({"key_1", kMinute}).counts == Counts{0, 0, 0, 0, 1});
  CHECK(table.pending_counts() == 1);
  got = journalled(table);
  REQUIRE(got.size() == 1);
  CHECK(got.at({"key_0", kMinute + 60}).counts == Counts{2, 0, 0, 0, 0});
  // A clock set back after the take counts in the first minute not taken: a key and minute
  // taken never has a second cell.
  count(1, 0, kMinute + 7);
  got = journalled(table);
  REQUIRE(got.size() == 1);
  CHECK(got.at({"key_1", kMinute + 60}).counts == Counts{1, 0, 0, 0, 0});
  got = taken(table);
  CHECK(got.size() == 2);
  CHECK(taken(table).empty());
  CHECK(table.pending_counts() == 0);

  // Counting goes on after a take, and a clear() forgets what was not taken.
  count(2, 1, kMinute + 120, "198.51.100.1");
  got = taken(table);
  REQUIRE(got.size() == 1);
  CHECK(got.at({"key_2", kMinute + 120}).sources == CountedSources{{"198.51.100.1", 1}});
  count(2, 1, kMinute + 121);
  table.clear();
  CHECK(table.pending_counts() == 0);
  CHECK(journalled(table, /*all=*/true).empty());
  CHECK(taken(table).empty());
}

TEST_CASE("active key table: the lists of changed cells hold no more than the cells kept and the uses since",
          "[active_key_table][usage]") {
  ActiveKeyTable table({"standard"});
  add_keys(table, 100);
  // A replica takes every cell every 2 s and never journals: its lists must not grow.
  for (int round = 0; round < 5; ++round) {
    for (int key = 0; key < 100; ++key) {
      count_use(table, key, kMinute + round, 0, {});
    }
    CHECK(table.listed_changes() == 100);
    CHECK(taken(table).size() == 100);
    CHECK(table.listed_changes() == 0);
  }
  // A take lists each cell it keeps once, whatever was listed before.
  for (int key = 0; key < 100; ++key) {
    count_use(table, key, kMinute + 60, 0, {});
  }
  CHECK(taken(table, kMinute + 60).empty());
  CHECK(table.listed_changes() == 100);
  // A flush after a failed write (all) journals every cell and starts the lists afresh.
  CHECK(journalled(table, /*all=*/true).size() == 100);
  CHECK(table.listed_changes() == 0);
  count_use(table, 7, kMinute + 61, 0, {});
  CHECK(table.listed_changes() == 1);
  CHECK(journalled(table).size() == 1);
  CHECK(table.listed_changes() == 0);
}

TEST_CASE("active key table: journals and takes while verifications count lose and double no use",
          "[active_key_table][usage]") {
  // More keys than one block of cells, so the scans cross blocks and windows of every shard.
  constexpr int kKeys = 70'000;
  constexpr int kThreads = 3;
  constexpr int kUsesPerThread = 150'000;
  ActiveKeyTable table({"standard"});
  add_keys(table, kKeys);
  std::vector<std::vector<std::uint32_t>> counted(kThreads, std::vector<std::uint32_t>(kKeys));
  std::atomic<int> running{kThreads};
  std::atomic<int> passes{0};  // of journal and take: the counting threads wait for them, so
                               // that every run interleaves them
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::uint64_t x = 88172645463325252ULL + static_cast<std::uint64_t>(t);
      for (int i = 0; i < kUsesPerThread; ++i) {
        while (passes.load() < i / 10'000) {
          std::this_thread::yield();
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const auto key = static_cast<int>(x % kKeys);
        // Time runs over three minutes (keys set minutes aside); a third of the uses come from
        // two addresses (source lists), the rest from one (kept in the cell).
        const std::int64_t at = kMinute + std::int64_t{180} * i / kUsesPerThread;
        const std::string_view source = x % 3 != 0 ? "192.0.2.1" : (x % 2 == 0 ? "192.0.2.2" : "192.0.2.3");
        const bool visited = table.visit(
            digest_n(static_cast<std::uint64_t>(key)), at,
            [&](const KeyEntry&, TokenBucket&) {
              return ActiveKeyTable::Visited{.used = false, .counted = static_cast<int>(x % 5)};
            },
            source);
        counted[t][key] += visited ? 1 : 0;
      }
      running.fetch_sub(1);
    });
  }
  std::vector<std::uint64_t> taken_per_key(kKeys);
  const ActiveKeyTable::CountSink take_sink = [&](const ActiveKeyTable::CountedMinute& c) {
    const auto key = std::stoul(std::string(c.key_id.view().substr(4)));
    for (const std::uint32_t n : c.counts) {
      taken_per_key[key] += n;
    }
  };
  // What the journal says of each key and minute since the last take: the latest record of
  // it counts.
  std::map<std::pair<std::string, std::int64_t>, Counts> journal;
  std::size_t journalled_cells = 0;
  const ActiveKeyTable::CountSink journal_sink = [&](const ActiveKeyTable::CountedMinute& c) {
    journal[{c.key_id.str(), c.minute_start}] = c.counts;
    ++journalled_cells;
  };
  std::int64_t before = kMinute;
  while (running.load() > 0) {
    table.take_counts(take_sink, before);
    journal.clear();  // as a fold deletes the journal: what the take kept is journalled again
    table.journal_counts(journal_sink);  // while the threads count
    before += 20;  // every third pass takes a minute more
    passes.fetch_add(1);
  }
  for (auto& t : threads) {
    t.join();
  }
  // The journal missed no change: after one more pass it holds every cell not taken as it is.
  table.journal_counts(journal_sink);
  const CountedCells held = journalled(table, /*all=*/true);
  std::size_t stale = 0;
  for (const auto& [key_minute, cell] : held) {
    const auto it = journal.find(key_minute);
    stale += it != journal.end() && it->second == cell.counts ? 0 : 1;
  }
  CHECK(stale == 0);
  CHECK(journalled(table).empty());
  table.take_counts(take_sink);
  CHECK(table.pending_counts() == 0);
  CHECK(journalled_cells > 0);
  CHECK(passes.load() >= kUsesPerThread / 10'000);
  std::size_t wrong = 0;
  for (int key = 0; key < kKeys; ++key) {
    std::uint64_t expected = 0;
    for (const auto& per_thread : counted) {
      expected += per_thread[key];
    }
    wrong += taken_per_key[key] == expected ? 0 : 1;
  }
  CHECK(wrong == 0);
}

TEST_CASE("active key table: client addresses of a key's uses, one address or many",
          "[active_key_table][usage]") {
  // A key used from one IPv4 address keeps it in its cell; anything else (a second address,
  // an IPv6 one, a use without one) turns it into a list. Either way the counts are the same.
  ActiveKeyTable table({"standard"});
  add_keys(table, 4);
  const auto count = [&](int key, std::string_view source) { count_use(table, key, kMinute + 1, 0, source); };
  const auto valid_and_sources = [](const CountedCells& cells, const std::string& key) {
    const Counted& c = cells.at({key, kMinute});
    return std::pair{c.counts[0], c.sources};
  };
  using Expected = std::pair<std::uint32_t, CountedSources>;

  for (int i = 0; i < 3; ++i) {
    count(0, "198.51.100.7");
  }
  count(1, "198.51.100.7");
  count(1, "198.51.100.7");
  count(1, "2001:db8::1");
  count(1, "");
  count(1, "198.51.100.8");
  count(2, "");
  count(2, "10.0.0.1");
  count(2, "10.0.0.1");
  count(3, "2001:db8::1");
  count(3, "2001:db8::1");
  CountedCells got = journalled(table);
  CHECK(valid_and_sources(got, "key_0") == Expected{3, {{"198.51.100.7", 3}}});
  CHECK(valid_and_sources(got, "key_1") ==
        Expected{5, {{"198.51.100.7", 2}, {"2001:db8::1", 1}, {"198.51.100.8", 1}}});
  CHECK(valid_and_sources(got, "key_2") == Expected{3, {{"10.0.0.1", 2}}});
  CHECK(valid_and_sources(got, "key_3") == Expected{2, {{"2001:db8::1", 2}}});

  // More uses in the same minute: the same address stays one, a new one joins.
  count(0, "198.51.100.7");
  count(1, "198.51.100.7");
  count(2, "10.0.0.2");
  got = journalled(table);
  CHECK(got.size() == 3);
  CountedCells peeked;
  for (const std::string key : {"key_0", "key_1", "key_2", "key_3"}) {
    table.peek_counts(key, gather(peeked));
  }
  got = taken(table);
  CHECK(valid_and_sources(got, "key_0") == Expected{4, {{"198.51.100.7", 4}}});
  CHECK(valid_and_sources(got, "key_1") ==
        Expected{6, {{"198.51.100.7", 3}, {"2001:db8::1", 1}, {"198.51.100.8", 1}}});
  CHECK(valid_and_sources(got, "key_2") == Expected{4, {{"10.0.0.1", 2}, {"10.0.0.2", 1}}});
  CHECK(valid_and_sources(got, "key_3") == Expected{2, {{"2001:db8::1", 2}}});
  CHECK(peeked == got);
  CHECK(taken(table).empty());
  peeked.clear();
  table.peek_counts("key_1", gather(peeked));
  CHECK(peeked.empty());

  // A taken list's place is used again by the next key that needs one.
  count(3, "2001:db8::2");
  count(3, "2001:db8::3");
  got = taken(table);
  CHECK(valid_and_sources(got, "key_3") == Expected{2, {{"2001:db8::2", 1}, {"2001:db8::3", 1}}});
}

TEST_CASE("active key table: a key's sources are its most frequent addresses, not the first seen",
          "[active_key_table][usage]") {
  // 20 addresses once each, then a new one 10 times in the same minute: the new one is kept
  // (Space-Saving: it takes the place of a least-used address, with that count plus its own).
  ActiveKeyTable table({"standard"});
  add_keys(table, 3);
  const auto count = [&](int key, const std::string& source, int times = 1) {
    for (int i = 0; i < times; ++i) {
      count_use(table, key, kMinute + 1, 0, source);
    }
  };
  const auto noise = [&](int key, const std::string& prefix, int addresses) {
    for (int i = 0; i < addresses; ++i) {
      count(key, prefix + std::to_string(i));
    }
  };
  const auto sources_of = [](const CountedCells& cells, const std::string& key) {
    return cells.at({key, kMinute}).sources;
  };
  const auto count_of = [](const CountedSources& sources, std::string_view address) -> std::uint32_t {
    auto it = std::find_if(sources.begin(), sources.end(), [&](const auto& s) { return s.first == address; });
    return it == sources.end() ? 0 : it->second;
  };

  // Before a journal record (key_0); after one: a full list and a new address (key_1), a full
  // list and 19 more addresses before the new one (key_2).
  noise(0, "192.0.2.", 20);
  count(0, "198.51.100.77", 10);
  noise(1, "192.0.2.", 20);
  noise(2, "192.0.2.", 20);
  CountedCells got = journalled(table);
  REQUIRE(sources_of(got, "key_0").size() == ActiveKeyTable::kMaxCountedSources);
  CHECK(count_of(sources_of(got, "key_0"), "198.51.100.77") == 11);  // over by at most the smallest count (1)
  CHECK(count_of(sources_of(got, "key_0"), "192.0.2.9") == 0);  // the one it replaced: least used, last by address

  count(1, "198.51.100.77", 10);
  noise(2, "203.0.113.", 19);
  count(2, "198.51.100.77", 10);
  got = taken(table);
  for (const std::string key : {"key_1", "key_2"}) {
    INFO(key);
    REQUIRE(sources_of(got, key).size() == ActiveKeyTable::kMaxCountedSources);
    CHECK(count_of(sources_of(got, key), "198.51.100.77") == 11);
  }
  // Every other address of key_2 was used once: listed, each is over by at most 1.
  for (const auto& [address, n] : sources_of(got, "key_2")) {
    if (address != "198.51.100.77") {
      CHECK(n == 2);
    }
  }
}

TEST_CASE("merging source lists keeps the most frequent addresses within the bound",
          "[active_key_table][usage]") {
  using Sources = std::vector<std::pair<std::string, std::uint64_t>>;
  Sources full;
  for (int i = 0; i < 20; ++i) {
    full.emplace_back("10.0.0." + std::to_string(i), 5);
  }
  // Lists that are not full are exact: sums, nothing dropped.
  Sources small = {{"10.0.0.1", 1}};
  merge_sources(small, Sources{{"10.0.0.1", 2}, {"10.0.0.2", 3}}, 20);
  CHECK(small == Sources{{"10.0.0.1", 3}, {"10.0.0.2", 3}});

  // Two full lists: an address missing from one was used there at most its smallest count.
  Sources other;
  for (int i = 0; i < 19; ++i) {
    other.emplace_back("10.0.1." + std::to_string(i), 1);
  }
  other.emplace_back("203.0.113.9", 30);
  Sources merged = full;
  merge_sources(merged, other, 20);
  REQUIRE(merged.size() == 20);
  const auto top = std::max_element(merged.begin(), merged.end(),
                                    [](const auto& a, const auto& b) { return a.second < b.second; });
  CHECK(*top == std::pair<std::string, std::uint64_t>{"203.0.113.9", 35});
  // Merged either way round, the same addresses with the same counts.
  Sources reversed = other;
  merge_sources(reversed, full, 20);
  std::sort(merged.begin(), merged.end());
  std::sort(reversed.begin(), reversed.end());
  CHECK(merged == reversed);

  // One use into a full list: the address replaces the least used one.
  Sources used = full;
  used[7].second = 4;
  add_source(used, "198.51.100.1", std::uint64_t{1}, 20);
  CHECK(used.size() == 20);
  CHECK(used[7] == std::pair<std::string, std::uint64_t>{"198.51.100.1", 5});
}

}  // namespace keyledger
