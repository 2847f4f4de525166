#pragma once
// Shared set-up for the domain tests: a fixed clock, repeatable randomness, a pepper, and a
// helper that plays the event store (assigns stream versions, folds the events).

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "domain/agent.h"
#include "domain/clock.h"
#include "domain/events.h"
#include "domain/key_material.h"
#include "domain/secret_box.h"
#include "domain/service_tokens.h"

namespace keyledger::testing {

// 2026-11-26T10:36:23Z
inline TimePoint test_start() { return TimePoint(std::chrono::seconds(1795689383)); }

inline Pepper test_pepper(std::uint8_t fill = 0x42) {
  std::array<std::uint8_t, Pepper::kSize> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::uint8_t>(fill + i);
  }
  return Pepper(bytes);
}

inline AgentProfile valid_profile() {
  AgentProfile p;
  p.name = "Invoice Parser";
  p.description = "Extracts line items from PDF invoices.";
  p.skills = {"pdf", "extraction"};
  p.languages = {"en", "de"};
  p.webhook_url = "https://agent.example.com/hooks/clawgig";
  p.environment = v1::ENVIRONMENT_PRODUCTION;
  p.owner_id = "usr_123";
  return p;
}

struct DomainWorld {
  explicit DomainWorld(std::uint64_t seed = 7)
      : clock(test_start()),
        random(seed),
        hasher(test_pepper()),
        secrets(test_pepper()),
        ctx{clock, random, hasher, secrets, "dashboard"} {}

  // Appends `events` the way the store would: stream_version continues from `version`.
  template <typename State>
  State commit(State state, std::vector<v1::Event> events) {
    for (v1::Event& e : events) {
      e.set_stream_version(state.version + 1);
      e.set_position(++position);
      log.push_back(e);
      state = apply(std::move(state), e);
    }
    return state;
  }

  // Registers an agent and returns its folded state.
  AgentState registered_agent(const AgentProfile& profile = valid_profile()) {
    auto decision = register_agent(profile, RegisterAgentOptions{}, ctx);
    REQUIRE(decision.ok());
    return commit(AgentState{}, decision->events);
  }

  // Creates a key (optionally with a lifetime) and folds it in; returns the Decision.
  Decision add_key(AgentState& state, std::optional<std::int64_t> expires_in = std::nullopt,
                   std::optional<std::string> label = std::nullopt) {
    auto decision = create_key(state, CreateKey{std::move(label), expires_in}, ctx);
    REQUIRE(decision.ok());
    state = commit(std::move(state), decision->events);
    return std::move(decision).value();
  }

  ManualClock clock;
  SeededRandom random;
  KeyHasher hasher;
  SecretBox secrets;
  CommandContext ctx;
  std::vector<v1::Event> log;
  std::uint64_t position = 0;
};

// True iff `field` is among the details of `status`.
inline bool has_field_error(const Status& status, const std::string& field) {
  for (const FieldError& e : status.details()) {
    if (e.field == field) {
      return true;
    }
  }
  return false;
}

inline std::vector<std::string> error_fields(const Status& status) {
  std::vector<std::string> fields;
  for (const FieldError& e : status.details()) {
    fields.push_back(e.field);
  }
  return fields;
}

}  // namespace keyledger::testing
