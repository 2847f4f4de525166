#pragma once
// A real event store in a temporary directory, a projector over it, and the domain commands
// that produce events, with a manual clock (each command runs one second after the last) and
// seeded randomness.

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "domain/agent.h"
#include "domain/ids.h"
#include "domain/service_tokens.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"
#include "support/temp_dir.h"

namespace keyledger::testing {

inline TimePoint test_epoch() {
  using namespace std::chrono;
  return sys_days{year{2026} / November / 26} + hours{10};
}

inline Pepper test_pepper() {
  std::array<std::uint8_t, Pepper::kSize> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::uint8_t>(0x40 + i);
  }
  return Pepper(bytes);
}

struct IssuedKey {
  std::string key_id;
  std::string api_key;
  Digest digest{};
};

class Ledger {
 public:
  inline static const std::vector<std::string> kTiers = {"standard", "elevated"};

  Ledger() { open(); }

  // Opens the store; with `with_projector`, also a started projector over it.
  void open(bool with_projector = true) {
    auto opened = EventStore::open(
        {.path = dir.path() / "store", .extra_column_families = projection_column_families()});
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    if (with_projector) {
      projector = std::make_unique<Projector>(*store, kTiers);
      const Status started = projector->start();
      INFO(started.ToString());
      REQUIRE(started.ok());
    }
  }
  void close() {
    projector.reset();
    store.reset();
  }
  void reopen(bool with_projector = true) {
    close();
    open(with_projector);
  }

  AgentState agent(const std::string& agent_id) {
    auto events = store->read_stream(agent_stream(agent_id));
    REQUIRE(events.ok());
    return fold_agent(*events);
  }

  std::string register_agent(v1::Environment environment = v1::ENVIRONMENT_PRODUCTION,
                             const std::string& actor = "dashboard") {
    AgentProfile profile;
    profile.name = "Invoice Parser";
    profile.description = "Extracts line items from PDF invoices.";
    profile.skills = {"pdf", "extraction"};
    profile.languages = {"en"};
    profile.webhook_url = "https://agent.example.com/hooks/clawgig";
    profile.environment = environment;
    auto ctx = context(actor);
    auto decision = keyledger::register_agent(profile, {}, ctx);
    commit(AgentState{}, decision);
    return decision->agent_id;
  }

  IssuedKey create_key(const std::string& agent_id,
                       std::optional<std::int64_t> expires_in_seconds = std::nullopt,
                       const std::string& actor = "dashboard") {
    auto ctx = context(actor);
    const AgentState state = agent(agent_id);
    auto decision =
        keyledger::create_key(state, {.label = "test", .expires_in_seconds = expires_in_seconds}, ctx);
    commit(state, decision);
    return issued(*decision);
  }

  IssuedKey rotate_key(const std::string& agent_id, const std::string& key_id,
                       std::optional<std::int64_t> old_key_expires_in_seconds = std::nullopt,
                       const std::string& actor = "dashboard") {
    auto ctx = context(actor);
    const AgentState state = agent(agent_id);
    auto decision = keyledger::rotate_key(
        state,
        {.key_id = key_id, .label = std::nullopt, .old_key_expires_in_seconds = old_key_expires_in_seconds},
        ctx);
    commit(state, decision);
    return issued(*decision);
  }

  void revoke_key(const std::string& agent_id, const std::string& key_id,
                  const std::string& actor = "dashboard") {
    auto ctx = context(actor);
    const AgentState state = agent(agent_id);
    auto decision = keyledger::revoke_key(state, {.key_id = key_id, .reason = "no longer needed"}, ctx);
    commit(state, decision);
  }

  std::optional<IssuedKey> report_compromise(const std::string& agent_id, const std::string& key_id,
                                             bool replace = false, const std::string& actor = "leak:github") {
    auto ctx = context(actor);
    const AgentState state = agent(agent_id);
    auto decision = keyledger::report_compromise(
        state, {.key_id = key_id, .note = "found in a public repo", .source = "github", .replace = replace},
        ctx);
    commit(state, decision);
    if (!replace) {
      return std::nullopt;
    }
    return issued(*decision);
  }

  void expire_key(const std::string& agent_id, const std::string& key_id) {
    auto ctx = context("expiry-scheduler");
    const AgentState state = agent(agent_id);
    auto decision = keyledger::expire_key(state, key_id, ctx);
    commit(state, decision);
  }

  void set_tier(const std::string& agent_id, const std::string& tier) {
    auto ctx = context("dashboard");
    const AgentState state = agent(agent_id);
    auto decision = keyledger::set_rate_limit_tier(state, tier, kTiers, ctx);
    commit(state, decision);
  }

  // A WebhookDeliveryRecorded of `agent_id` (no domain command makes these).
  std::uint64_t record_delivery(const std::string& agent_id, const std::string& delivered_event_id,
                                std::uint32_t attempt) {
    clock.advance(std::chrono::seconds(1));
    v1::Event event;
    event.set_event_id(new_event_id(random));
    *event.mutable_occurred_at() = to_timestamp(clock.now());
    event.set_actor("webhooks");
    event.set_type("webhook.delivery_recorded");
    v1::WebhookDeliveryRecorded* d = event.mutable_webhook_delivery_recorded();
    d->set_agent_id(agent_id);
    d->set_event_id(delivered_event_id);
    d->set_attempt(attempt);
    d->set_status_code(attempt < 3 ? 503 : 200);
    d->set_outcome(attempt < 3 ? "retrying" : "delivered");
    d->set_event_type("key.created");
    auto appended = store->append(agent_stream(agent_id), kAnyVersion, {event});
    REQUIRE(appended.ok());
    return appended->first_position;
  }

  // Creates a service token through the domain command; returns its id and full token.
  std::pair<std::string, std::string> create_token(const std::string& name, std::vector<std::string> scopes) {
    auto ctx = context("admin");
    const TokenRegistryState state = token_state();
    auto decision = create_service_token(state, name, scopes, ctx);
    REQUIRE(decision.ok());
    REQUIRE(store->append(kTokensStream, static_cast<std::int64_t>(state.version), decision->events).ok());
    return {decision->token_id, decision->token};
  }

  void revoke_token(const std::string& token_id) {
    auto ctx = context("admin");
    const TokenRegistryState state = token_state();
    auto decision = revoke_service_token(state, token_id, ctx);
    REQUIRE(decision.ok());
    REQUIRE(store->append(kTokensStream, static_cast<std::int64_t>(state.version), decision->events).ok());
  }

  TokenRegistryState token_state() {
    auto events = store->read_stream(kTokensStream);
    REQUIRE(events.ok());
    TokenRegistryState state;
    for (const auto& e : *events) {
      state = apply(std::move(state), e);
    }
    return state;
  }

  std::vector<v1::Event> all_events() {
    auto events = store->read_all(1, 1'000'000);
    REQUIRE(events.ok());
    return std::move(events).value();
  }

  testing::TempDir dir;
  ManualClock clock{test_epoch()};
  SeededRandom random{7};
  Pepper pepper = test_pepper();
  KeyHasher hasher{pepper};
  SecretBox secrets{pepper};
  std::unique_ptr<EventStore> store;
  std::unique_ptr<Projector> projector;

 private:
  CommandContext context(const std::string& actor) {
    clock.advance(std::chrono::seconds(1));
    return CommandContext{clock, random, hasher, secrets, actor};
  }

  template <typename D>
  void commit(const AgentState& state, const Result<D>& decision) {
    INFO(decision.status().ToString());
    REQUIRE(decision.ok());
    const std::string stream = agent_stream(decision->agent_id);
    auto appended = store->append(stream, static_cast<std::int64_t>(state.version), decision->events);
    INFO(appended.status().ToString());
    REQUIRE(appended.ok());
  }

  IssuedKey issued(const Decision& decision) const {
    return {decision.key_id, decision.api_key, hasher.digest(decision.api_key)};
  }
};

// Every entry of a table as text, by digest (to compare tables).
inline std::map<std::string, std::string> dump(const ActiveKeyTable& table) {
  std::map<std::string, std::string> out;
  table.for_each([&](const Digest& digest, const KeyEntry& e) {
    out[to_hex(digest)] = e.key_id.str() + "|" + e.agent_id.str() + "|" + std::to_string(e.created_at_ms) +
                          "|" + std::to_string(e.expires_at_ms) + "|" +
                          std::to_string(static_cast<int>(e.condition)) + "|" +
                          std::to_string(static_cast<int>(e.environment)) + "|" + table.tier_name(e.tier);
  });
  return out;
}

inline std::vector<std::uint64_t> positions(const std::vector<v1::Event>& events) {
  std::vector<std::uint64_t> out;
  for (const auto& e : events) {
    out.push_back(e.position());
  }
  return out;
}

}  // namespace keyledger::testing
