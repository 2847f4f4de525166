#include "eventstore/command_service.h"

#include <future>
#include <memory>
#include <optional>

namespace keyledger {

Result<AgentState> load_agent(const EventStore& store, std::string_view agent_id) {
  Result<std::vector<v1::Event>> events = store.read_stream(agent_stream(agent_id));
  if (!events.ok()) {
    return events.status();
  }
  AgentState state = fold_agent(*events);
  if (!state.exists()) {
    return Status::NotFound("agent_not_found", "no such agent");
  }
  return state;
}

StreamLocks::Guard::Guard(StreamLocks& locks, std::string_view stream) : locks_(locks), stream_(stream) {
  Entry* entry = locks_.entries_.with([&](auto& entries) {
    auto& slot = entries[stream_];
    if (!slot) {
      slot = std::make_unique<Entry>();
    }
    ++slot->users;
    return slot.get();
  });
  entry->mutex.lock();  // the entry lives while users > 0
}

StreamLocks::Guard::~Guard() {
  locks_.entries_.with([&](auto& entries) {
    const auto it = entries.find(stream_);
    it->second->mutex.unlock();
    if (--it->second->users == 0) {
      entries.erase(it);
    }
  });
}

namespace {

// A conflict the per-stream lock should have made impossible (another writer to the same
// stream): the client named no version, so it learns only that it may try again.
Status persistent_conflict() {
  return Status::Unavailable("busy", "the agent was changed concurrently; try again");
}

// How a cycle's append ends the command: its decision with the events as stored, the
// store's error, or "busy" once `max_attempts` version conflicts were met; nullopt to decide
// again (a version conflict with attempts left).
template <typename D>
std::optional<Result<D>> settle(Result<AppendResult> appended, Result<D> decision, int attempt,
                                int max_attempts) {
  if (appended.ok()) {
    decision->events = std::move(appended->events);
    return decision;
  }
  if (!appended.status().IsVersionConflict()) {
    return Result<D>(appended.status());
  }
  if (attempt >= max_attempts) {
    return Result<D>(persistent_conflict());
  }
  return std::nullopt;
}

template <typename State>
State after(State state, const std::vector<v1::Event>& events) {
  for (const auto& e : events) {
    state = apply(std::move(state), e);
  }
  return state;
}

}  // namespace

CommandService::CommandService(EventStore& store, const CommandIndex& index, const Clock& clock,
                               RandomSource& random, const KeyHasher& hasher, const SecretBox& secrets,
                               CommandServiceOptions options)
    : store_(store),
      index_(index),
      clock_(clock),
      random_(random),
      hasher_(hasher),
      secrets_(secrets),
      options_(std::move(options)) {}

CommandContext CommandService::context(const std::string& actor) const {
  return CommandContext{clock_, random_, hasher_, secrets_, actor};
}

Result<Decision> CommandService::register_agent(const AgentProfile& profile, const std::string& actor,
                                                const AgentOutcome& outcome) {
  std::promise<Result<Decision>> decided;
  auto result = decided.get_future();
  register_agent_async(profile, actor, outcome,
                       [&decided](Result<Decision> decision) { decided.set_value(std::move(decision)); });
  return result.get();
}

void CommandService::register_agent_async(const AgentProfile& profile, const std::string& actor,
                                          const AgentOutcome& outcome, DecisionDone done) {
  CommandContext ctx = context(actor);
  auto decision = keyledger::register_agent(profile, options_.registration, ctx);
  if (!decision.ok()) {
    return done(decision.status());
  }
  std::vector<SideWrite> side_writes;
  if (outcome) {
    side_writes = outcome(after(AgentState{}, decision->events), *decision);
  }
  const std::string stream = agent_stream(decision->agent_id);
  std::vector<v1::Event> events = std::move(decision->events);
  auto decided = std::make_shared<Decision>(std::move(*decision));
  store_.append_async(stream, kNoStream, std::move(events), std::move(side_writes),
                      [decided, done = std::move(done)](Result<AppendResult> appended) {
                        if (!appended.ok()) {
                          return done(appended.status());
                        }
                        decided->events = std::move(appended->events);
                        done(std::move(*decided));
                      });
}

Result<Decision> CommandService::on_agent(std::string_view agent_id, const std::string& actor,
                                          const AgentCommand& command, const AgentOutcome& outcome) {
  const StreamLocks::Guard serialised(locks_, agent_stream(agent_id));
  for (int attempt = 1;; ++attempt) {
    auto state = load_agent(store_, agent_id);
    if (!state.ok()) {
      return state.status();
    }
    CommandContext ctx = context(actor);
    auto decision = command(*state, ctx);
    if (!decision.ok()) {
      return decision;
    }
    decision->agent_id = std::string(agent_id);
    std::vector<SideWrite> side_writes;
    if (outcome) {
      side_writes = outcome(after(*state, decision->events), *decision);
    }
    if (decision->events.empty()) {
      return decision;  // nothing changes, so nothing to keep: a repeat decides the same
    }
    auto appended = store_.append(agent_stream(agent_id), static_cast<std::int64_t>(state->version),
                                  decision->events, std::move(side_writes));
    if (auto settled = settle(std::move(appended), std::move(decision), attempt, options_.max_attempts)) {
      return std::move(*settled);
    }
  }
}

Result<Decision> CommandService::on_key(std::string_view key_id, const std::string& actor,
                                        const AgentCommand& command, const AgentOutcome& outcome) {
  auto agent_id = index_.agent_of_key(key_id);
  if (!agent_id.ok()) {
    return agent_id.status();
  }
  return on_agent(*agent_id, actor, command, outcome);
}

Result<TokenDecision> CommandService::on_tokens(const std::string& actor, const TokenCommand& command,
                                                const TokenOutcome& outcome) {
  const StreamLocks::Guard serialised(locks_, kTokensStream);
  for (int attempt = 1;; ++attempt) {
    const TokenRegistryState state = index_.token_registry();
    CommandContext ctx = context(actor);
    auto decision = command(state, ctx);
    if (!decision.ok()) {
      return decision;
    }
    std::vector<SideWrite> side_writes;
    if (outcome) {
      side_writes = outcome(after(state, decision->events), *decision);
    }
    auto appended = store_.append(kTokensStream, static_cast<std::int64_t>(state.version), decision->events,
                                  std::move(side_writes));
    if (auto settled = settle(std::move(appended), std::move(decision), attempt, options_.max_attempts)) {
      return std::move(*settled);
    }
  }
}

Result<TokenDecision> CommandService::create_token(const std::string& name,
                                                   const std::vector<std::string>& scopes,
                                                   const std::string& actor, const TokenOutcome& outcome) {
  return on_tokens(
      actor,
      [&](const TokenRegistryState& state, CommandContext& ctx) {
        return create_service_token(state, name, scopes, ctx);
      },
      outcome);
}

Result<TokenDecision> CommandService::revoke_token(const std::string& token_id, const std::string& actor,
                                                   const TokenOutcome& outcome) {
  return on_tokens(
      actor,
      [&](const TokenRegistryState& state, CommandContext& ctx) {
        return revoke_service_token(state, token_id, ctx);
      },
      outcome);
}

Result<std::size_t> CommandService::expire_due(std::size_t limit) {
  auto due = index_.keys_expiring_by(clock_.now(), limit);
  if (!due.ok()) {
    return due.status();
  }
  std::size_t expired = 0;
  for (const auto& ref : *due) {
    auto result = on_agent(ref.agent_id, "system:expiry", [&](const AgentState& state, CommandContext& ctx) {
      return expire_key(state, ref.key_id, ctx);
    });
    if (result.ok()) {
      ++expired;
    } else if (!result.status().IsConflict()) {
      return result.status();  // a conflict means it was revoked or expired meanwhile
    }
  }
  return expired;
}

}  // namespace keyledger
