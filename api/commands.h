#pragma once
// Runs commands against the log: folds the aggregate, lets the domain decide, appends the
// events with the version it decided on, and retries the whole cycle when another writer
// got there first (version_conflict only escapes after several tries).
// Blocks until the events are durable and projected.

#include <functional>
#include <string>
#include <vector>

#include "domain/agent.h"
#include "domain/service_tokens.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"

namespace keyledger::api {

struct CommandServiceOptions {
  RegisterAgentOptions registration;
  // Tier names agents may be set to (from configuration).
  std::vector<std::string> tiers = {"standard", "elevated"};
  // How often a command is retried after a version conflict. Default 8.
  int max_attempts = 8;
};

class CommandService {
 public:
  CommandService(EventStore& store, Projector& projector, const Clock& clock, RandomSource& random,
                 const KeyHasher& hasher, const SecretBox& secrets, CommandServiceOptions options);

  using AgentCommand = std::function<Result<Decision>(const AgentState&, CommandContext&)>;

  Result<Decision> register_agent(const AgentProfile& profile, const std::string& actor);
  // NotFound agent_not_found when the agent does not exist.
  Result<Decision> on_agent(std::string_view agent_id, const std::string& actor, const AgentCommand& command);
  // NotFound key_not_found when no agent owns the key.
  Result<Decision> on_key(std::string_view key_id, const std::string& actor, const AgentCommand& command);

  Result<TokenDecision> create_token(const std::string& name, const std::vector<std::string>& scopes,
                                     const std::string& actor);
  Result<TokenDecision> revoke_token(const std::string& token_id, const std::string& actor);

  // Appends KeyExpired for up to `limit` keys past their expiry; returns how many.
  Result<std::size_t> expire_due(std::size_t limit);

  const CommandServiceOptions& options() const { return options_; }
  const Clock& clock() const { return clock_; }

 private:
  using TokenCommand = std::function<Result<TokenDecision>(const TokenRegistryState&, CommandContext&)>;
  Result<TokenDecision> on_tokens(const std::string& actor, const TokenCommand& command);
  CommandContext context(const std::string& actor) const;

  EventStore& store_;
  Projector& projector_;
  const Clock& clock_;
  RandomSource& random_;
  const KeyHasher& hasher_;
  const SecretBox& secrets_;
  CommandServiceOptions options_;
};

}  // namespace keyledger::api
