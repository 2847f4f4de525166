#include "eventstore/command_service.h"

#include <spdlog/spdlog.h>

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

void StreamQueues::enter(const std::string& stream, Turn turn) {
  const bool free = waiting_.with([&](auto& waiting) {
    auto [it, inserted] = waiting.try_emplace(stream);
    if (!inserted) {
      it->second.push_back(std::move(turn));
    }
    return inserted;
  });
  if (free) {
    run(std::move(turn));
  }
}

void StreamQueues::leave(const std::string& stream) {
  Turn next = waiting_.with([&](auto& waiting) {
    const auto it = waiting.find(stream);
    if (it->second.empty()) {
      waiting.erase(it);
      return Turn();
    }
    Turn turn = std::move(it->second.front());
    it->second.pop_front();
    return turn;
  });
  if (next) {
    run(std::move(next));
  }
}

void StreamQueues::run(Turn turn) {
  // A turn that ends at once calls leave() inside itself: its successor is queued here and
  // runs after it returns, so a long queue of refused commands does not nest.
  thread_local std::deque<Turn>* running = nullptr;
  if (running != nullptr) {
    running->push_back(std::move(turn));
    return;
  }
  std::deque<Turn> turns;
  turns.push_back(std::move(turn));
  running = &turns;
  while (!turns.empty()) {
    Turn next = std::move(turns.front());
    turns.pop_front();
    try {
      next();  // a turn ends itself, whatever happens in it (CommandService::attempt)
    } catch (...) {
      spdlog::error("a command's turn threw");  // not its text: it may quote a secret
    }
  }
  running = nullptr;
}

namespace {

// A conflict the stream's turns should have made impossible (another writer to the same
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

CommandService::~CommandService() { wait_idle(); }

void CommandService::wait_idle() {
  std::unique_lock lock(idle_mutex_);
  idle_.wait(lock, [&] { return in_flight_ == 0; });
}

void CommandService::begin_async() {
  std::lock_guard lock(idle_mutex_);
  ++in_flight_;
}

void CommandService::end_async() {
  std::lock_guard lock(idle_mutex_);
  if (--in_flight_ == 0) {
    idle_.notify_all();  // under the lock: a waiter cannot destroy this before it is done
  }
}

CommandContext CommandService::context(const std::string& actor) const {
  return CommandContext{clock_, random_, hasher_, secrets_, actor};
}

Result<Decision> CommandService::register_agent(const AgentProfile& profile, const std::string& actor,
                                                const AgentOutcome& outcome) {
  auto decided = std::make_shared<std::promise<Result<Decision>>>();  // set_value may outlast get()
  auto result = decided->get_future();
  register_agent_async(profile, actor, outcome,
                       [decided](Result<Decision> decision) { decided->set_value(std::move(decision)); });
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
  begin_async();
  store_.append_async(stream, kNoStream, std::move(events), std::move(side_writes),
                      [this, decided, done = std::move(done)](Result<AppendResult> appended) {
                        if (appended.ok()) {
                          decided->events = std::move(appended->events);
                          answer(done, std::move(*decided));
                        } else {
                          answer(done, appended.status());
                        }
                        end_async();
                      });
}

struct CommandService::AgentRun {
  std::string agent_id;
  std::string stream;
  std::string actor;
  AgentCommand command;
  AgentOutcome outcome;
  DecisionDone done;
  bool finished = false;  // its turn ended and it was answered (by the thread holding the turn)
};

// A command's answer. The answer runs on the store's threads, which must not unwind: one that
// throws (a reply that cannot be built) is logged and dropped.
void CommandService::answer(const DecisionDone& done, Result<Decision> result) {
  try {
    done(std::move(result));
  } catch (...) {
    spdlog::error("answering a command threw");
  }
}

Result<Decision> CommandService::on_agent(std::string_view agent_id, const std::string& actor,
                                          const AgentCommand& command, const AgentOutcome& outcome) {
  // The caller waits, so the command may use what it refers to on the caller's stack.
  auto decided = std::make_shared<std::promise<Result<Decision>>>();  // set_value may outlast get()
  auto result = decided->get_future();
  on_agent_async(std::string(agent_id), actor, std::cref(command),
                 outcome ? AgentOutcome(std::cref(outcome)) : AgentOutcome(),
                 [decided](Result<Decision> decision) { decided->set_value(std::move(decision)); });
  return result.get();
}

Result<Decision> CommandService::on_key(std::string_view key_id, const std::string& actor,
                                        const AgentCommand& command, const AgentOutcome& outcome) {
  auto agent_id = index_.agent_of_key(key_id);
  if (!agent_id.ok()) {
    return agent_id.status();
  }
  return on_agent(*agent_id, actor, command, outcome);
}

void CommandService::on_agent_async(std::string agent_id, std::string actor, AgentCommand command,
                                    AgentOutcome outcome, DecisionDone done) {
  auto run = std::make_shared<AgentRun>();
  run->stream = agent_stream(agent_id);
  run->agent_id = std::move(agent_id);
  run->actor = std::move(actor);
  run->command = std::move(command);
  run->outcome = std::move(outcome);
  run->done = std::move(done);
  const std::string stream = run->stream;
  begin_async();
  queues_.enter(stream, [this, run] { attempt(run, 1); });
}

void CommandService::on_key_async(std::string_view key_id, std::string actor, AgentCommand command,
                                  AgentOutcome outcome, DecisionDone done) {
  auto agent_id = index_.agent_of_key(key_id);
  if (!agent_id.ok()) {
    return done(agent_id.status());
  }
  on_agent_async(std::move(*agent_id), std::move(actor), std::move(command), std::move(outcome),
                 std::move(done));
}

// One cycle of a command holding its stream's turn: load, decide, append; the append's
// answer ends the turn, or starts another cycle after a version conflict.
void CommandService::attempt(const std::shared_ptr<AgentRun>& run, int attempt_number) {
  const auto finish = [this, run](Result<Decision> result) {
    if (run->finished) {
      return;
    }
    run->finished = true;
    queues_.leave(run->stream);  // the next command's turn, before this one's answer
    answer(run->done, std::move(result));
    end_async();  // the last use of this service: a waiting caller may destroy it now
  };
  // The turn may run on the store's syncer, which must not unwind: whatever throws here (a
  // command with a bug, memory running out) ends the turn with an error instead of the
  // process, and its stream stays usable. Not even the exception's text is logged: it may
  // quote a secret.
  try {
    auto state = load_agent(store_, run->agent_id);
    if (!state.ok()) {
      return finish(state.status());
    }
    CommandContext ctx = context(run->actor);
    Result<Decision> decision = run->command(*state, ctx);
    if (!decision.ok() || decision->events.empty()) {
      if (decision.ok() && run->outcome) {
        decision->agent_id = run->agent_id;
        (void)run->outcome(*state,
                           *decision);  // nothing changes, so nothing to keep: a repeat decides the same
      }
      return finish(std::move(decision));
    }
    decision->agent_id = run->agent_id;
    std::vector<SideWrite> side_writes;
    if (run->outcome) {
      side_writes = run->outcome(after(*state, decision->events), *decision);
    }
    std::vector<v1::Event> events = std::move(decision->events);  // settle puts the stored ones back
    auto decided = std::make_shared<Result<Decision>>(std::move(decision));
    // Once this returns, the append's answer ends the turn (on the store's thread); if it
    // throws, the append was not queued and the turn ends below.
    store_.append_async(
        run->stream, static_cast<std::int64_t>(state->version), std::move(events), std::move(side_writes),
        [this, run, decided, attempt_number, finish](Result<AppendResult> appended) {
          if (auto settled =
                  settle(std::move(appended), std::move(*decided), attempt_number, options_.max_attempts)) {
            return finish(std::move(*settled));
          }
          attempt(run, attempt_number + 1);  // a version conflict: decide again on what is stored now
        });
  } catch (...) {
    spdlog::error("a command on {} threw", run->stream);
    finish(Status::Corruption("the command threw"));  // a bug: answered 500 internal_error (once)
  }
}

Result<TokenDecision> CommandService::on_tokens(const std::string& actor, const TokenCommand& command,
                                                const TokenOutcome& outcome) {
  const std::lock_guard serialised(tokens_lock_);
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
