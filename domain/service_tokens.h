#pragma once
// The service-token stream (`tokens`, api/openapi.yaml): tokens are created and revoked as events,
// so replicas learn them from the log; only their keyed digests are stored.

#include <array>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain/agent.h"

namespace keyledger {

// The scopes of api/openapi.yaml.
inline constexpr std::array<std::string_view, 5> kScopes = {"manage", "verify", "audit", "report_leaks",
                                                            "admin"};
inline constexpr std::size_t kMaxTokenNameChars = 100;

struct ServiceTokenState {
  std::string token_id;
  std::string name;
  std::vector<std::string> scopes;
  Digest digest{};
  std::string hint;
  TimePoint created_at{};
  std::optional<TimePoint> revoked_at;
  std::string created_by;

  bool active() const { return !revoked_at; }
  bool has_scope(std::string_view scope) const;
};

struct TokenRegistryState {
  std::map<std::string, ServiceTokenState> tokens;  // by token_id
  std::uint64_t version = 0;                        // stream_version of the last folded event
};

TokenRegistryState apply(TokenRegistryState state, const v1::Event& event);

struct TokenDecision {
  std::vector<v1::Event> events;
  std::string token_id;
  std::string token;  // the full token, shown once
};

// Rules: name 1–100 chars; scopes 1–5 unique members of kScopes. All broken fields reported.
Result<TokenDecision> create_service_token(const TokenRegistryState& state, const std::string& name,
                                           const std::vector<std::string>& scopes, CommandContext& ctx);
// NotFound token_not_found; Conflict token_not_active if already revoked.
Result<TokenDecision> revoke_service_token(const TokenRegistryState& state, const std::string& token_id,
                                           CommandContext& ctx);

}  // namespace keyledger
