#pragma once
// Service tokens by digest, for authenticating every request (api/openapi.yaml). Folded from the
// `tokens` stream; revocation is effective as soon as its event is applied.

#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "domain/service_tokens.h"

namespace keyledger {

class ServiceTokenTable {
 public:
  // Applies ServiceTokenCreated / ServiceTokenRevoked of the `tokens` stream; ignores others
  // (and token events at or below the folded stream version). Idempotent.
  void apply(const v1::Event& event);
  // The active token with this digest, or nullopt (unknown or revoked). Constant-time compare
  // of the digest found.
  std::optional<ServiceTokenState> find_active(const Digest& digest) const;
  // Every token, active or revoked, oldest first (GET /v1/tokens).
  std::vector<ServiceTokenState> list() const;
  // The folded stream state (for the create/revoke commands).
  TokenRegistryState state() const;
  bool empty() const;
  // Forgets every token (Projector::rebuild).
  void clear();

 private:
  mutable std::shared_mutex mutex_;
  TokenRegistryState state_;
  std::unordered_map<std::string, std::string> id_by_digest_;  // digest bytes -> token_id
  std::vector<std::string> creation_order_;                    // token ids, oldest first
};

}  // namespace keyledger
