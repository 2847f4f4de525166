#pragma once
// The command side of the log (an aggregate store, as in Eventuous): load a stream, fold it
// into its state, let the domain decide, append the decided events with the version they
// were decided on. One process owns the log, so commands on the same stream (an agent, or
// the token registry) are serialised here, each holding its stream's turn from load to
// durable append, while commands on different streams run side by side and share the
// store's group commit. The append's expected version stays as the safety net: if it ever
// fails (a writer outside this service), the cycle is retried, and a conflict that persists
// is answered Unavailable ("busy"), never as a version conflict with the internal versions,
// since the client named none (api/openapi.yaml).
// The plain calls block until the events are durable (and, through the store's subscribers,
// projected); the _async ones answer a callback then, holding no thread meanwhile.

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "domain/agent.h"
#include "domain/guarded.h"
#include "domain/service_tokens.h"
#include "eventstore/event_store.h"

namespace keyledger {

// Folds an agent's stream from the store; NotFound("agent_not_found") if it has no events.
Result<AgentState> load_agent(const EventStore& store, std::string_view agent_id);

// A key and the agent that owns it.
struct KeyRef {
  std::string agent_id;
  std::string key_id;
};

// What commands look up beyond the stream they write: read models the projections keep
// (they implement this; the layer above this one).
class CommandIndex {
 public:
  virtual ~CommandIndex() = default;
  // The agent that owns `key_id`; NotFound("key_not_found") if none.
  virtual Result<std::string> agent_of_key(std::string_view key_id) const = 0;
  // The token registry as of the last acknowledged event.
  virtual TokenRegistryState token_registry() const = 0;
  // Active keys whose expires_at <= `now`, at most `limit` (the expiry scheduler's work list).
  virtual Result<std::vector<KeyRef>> keys_expiring_by(TimePoint now, std::size_t limit) const = 0;
};

struct CommandServiceOptions {
  RegisterAgentOptions registration;
  // Tier names agents may be set to (from configuration).
  std::vector<std::string> tiers = {"standard", "elevated"};
  // How often a command is retried after a version conflict. Default 8.
  int max_attempts = 8;
};

// Commands on one stream run one at a time, in the order they arrive; one waiting for its
// turn holds no thread. A turn runs on the thread that enters (when the stream is free) or on
// the one whose turn ends before it (leave(), called from the store's syncer once the append
// before it is answered). A turn that ends at once (refused before appending) hands on to its
// successor without the stack growing.
class StreamQueues {
 public:
  using Turn = std::function<void()>;
  void enter(const std::string& stream, Turn turn);
  // The holder of `stream` is done: the next turn runs now, on this thread.
  void leave(const std::string& stream);

 private:
  static void run(Turn turn);
  // Present while a command holds the stream; its waiting turns in arrival order.
  Guarded<std::unordered_map<std::string, std::deque<Turn>>> waiting_;
};

class CommandService {
 public:
  CommandService(EventStore& store, const CommandIndex& index, const Clock& clock, RandomSource& random,
                 const KeyHasher& hasher, const SecretBox& secrets, CommandServiceOptions options);
  // Waits for the asynchronous commands still under way (wait_idle): their callbacks use it.
  ~CommandService();
  CommandService(const CommandService&) = delete;
  CommandService& operator=(const CommandService&) = delete;

  // Returns once every asynchronous command started so far was answered (the store must
  // still run). The server calls it when it stops, before what the commands' callbacks use
  // (the HTTP layer's renderers) goes away.
  void wait_idle();

  using AgentCommand = std::function<Result<Decision>(const AgentState&, CommandContext&)>;

  // What a command leaves behind, seen before it is appended: called under the stream's lock
  // with the state after the decided events (exactly what the stream will hold, since no one
  // else writes it meanwhile) and the decision (agent_id set). The writes it returns go in
  // the events' WriteBatch: the HTTP layer builds its response here and keeps it under the
  // request's Idempotency-Key, so the record exists if and only if the events do.
  using AgentOutcome = std::function<std::vector<SideWrite>(const AgentState& after, const Decision&)>;
  using TokenOutcome =
      std::function<std::vector<SideWrite>(const TokenRegistryState& after, const TokenDecision&)>;

  Result<Decision> register_agent(const AgentProfile& profile, const std::string& actor,
                                  const AgentOutcome& outcome = {});
  // The same without waiting for the fsync: decides and hands the events to the store on the
  // calling thread, then `done` gets what register_agent would return, on the store's syncer
  // thread once durable (or at once when refused; EventStore::append_async says what `done`
  // may do). A new agent's stream has no other writer, so it takes no turn.
  using DecisionDone = std::function<void(Result<Decision>)>;
  void register_agent_async(const AgentProfile& profile, const std::string& actor,
                            const AgentOutcome& outcome, DecisionDone done);
  // NotFound agent_not_found when the agent does not exist. A command that decides no events
  // appends nothing (its outcome's writes are dropped: a repeat decides the same).
  Result<Decision> on_agent(std::string_view agent_id, const std::string& actor, const AgentCommand& command,
                            const AgentOutcome& outcome = {});
  // NotFound key_not_found when no agent owns the key.
  Result<Decision> on_key(std::string_view key_id, const std::string& actor, const AgentCommand& command,
                          const AgentOutcome& outcome = {});
  // The same without waiting: `done` gets what on_agent/on_key would return, from the store's
  // syncer once durable (or at once, on the calling thread, when refused before appending).
  // The command waits its stream's turn holding no thread, and its decision may run on the
  // syncer (when the command before it ended there): `command` and `outcome` must own what
  // they use, and be short.
  void on_agent_async(std::string agent_id, std::string actor, AgentCommand command, AgentOutcome outcome,
                      DecisionDone done);
  void on_key_async(std::string_view key_id, std::string actor, AgentCommand command, AgentOutcome outcome,
                    DecisionDone done);

  Result<TokenDecision> create_token(const std::string& name, const std::vector<std::string>& scopes,
                                     const std::string& actor, const TokenOutcome& outcome = {});
  Result<TokenDecision> revoke_token(const std::string& token_id, const std::string& actor,
                                     const TokenOutcome& outcome = {});

  // Appends KeyExpired for up to `limit` keys past their expiry; returns how many.
  Result<std::size_t> expire_due(std::size_t limit);

  // Whether the log takes writes (EventStore::write_health).
  Status write_health() const { return store_.write_health(); }

  const CommandServiceOptions& options() const { return options_; }
  const Clock& clock() const { return clock_; }

 private:
  using TokenCommand = std::function<Result<TokenDecision>(const TokenRegistryState&, CommandContext&)>;
  Result<TokenDecision> on_tokens(const std::string& actor, const TokenCommand& command,
                                  const TokenOutcome& outcome);
  struct AgentRun;  // one on_agent_async command through its attempts
  void attempt(const std::shared_ptr<AgentRun>& run, int attempt);
  static void answer(const DecisionDone& done, Result<Decision> result);
  CommandContext context(const std::string& actor) const;

  EventStore& store_;
  const CommandIndex& index_;
  const Clock& clock_;
  RandomSource& random_;
  const KeyHasher& hasher_;
  const SecretBox& secrets_;
  CommandServiceOptions options_;
  StreamQueues queues_;
  std::mutex tokens_lock_;  // the token registry's commands, one at a time
  // Asynchronous commands started and not yet answered (wait_idle).
  void begin_async();
  void end_async();  // the last thing an answered command does with this service
  std::mutex idle_mutex_;
  std::condition_variable idle_;
  std::size_t in_flight_ = 0;  // under idle_mutex_
};

}  // namespace keyledger
