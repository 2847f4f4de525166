#include "projections/service_token_table.h"

#include <mutex>

namespace keyledger {

namespace {

std::string digest_key(const Digest& digest) {
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

}  // namespace

void ServiceTokenTable::apply(const v1::Event& event) {
  // The domain fold moves `version` for any event, so only the stream's own events go in.
  if (event.stream() != kTokensStream) {
    return;
  }
  if (event.payload_case() != v1::Event::kServiceTokenCreated &&
      event.payload_case() != v1::Event::kServiceTokenRevoked) {
    return;
  }
  std::unique_lock lock(mutex_);
  if (event.stream_version() != 0 && event.stream_version() <= state_.version) {
    return;  // already folded
  }
  const std::string& created_id = event.service_token_created().token_id();  // "" if revoked
  const bool is_new = event.has_service_token_created() && !state_.tokens.contains(created_id);
  state_ = keyledger::apply(std::move(state_), event);
  if (!is_new) {
    return;
  }
  auto token = state_.tokens.find(created_id);
  if (token == state_.tokens.end()) {
    return;  // refused by the fold (no token id)
  }
  creation_order_.push_back(created_id);
  if (event.service_token_created().digest().size() == token->second.digest.size()) {
    id_by_digest_.try_emplace(digest_key(token->second.digest), created_id);
  }
}

std::optional<ServiceTokenState> ServiceTokenTable::find_active(const Digest& digest) const {
  std::shared_lock lock(mutex_);
  auto id = id_by_digest_.find(digest_key(digest));
  if (id == id_by_digest_.end()) {
    return std::nullopt;
  }
  auto token = state_.tokens.find(id->second);
  if (token == state_.tokens.end() || !digest_equal(token->second.digest, digest) ||
      !token->second.active()) {
    return std::nullopt;
  }
  return token->second;
}

std::vector<ServiceTokenState> ServiceTokenTable::list() const {
  std::shared_lock lock(mutex_);
  std::vector<ServiceTokenState> out;
  out.reserve(creation_order_.size());
  for (const std::string& id : creation_order_) {
    if (auto it = state_.tokens.find(id); it != state_.tokens.end()) {
      out.push_back(it->second);
    }
  }
  return out;
}

TokenRegistryState ServiceTokenTable::state() const {
  std::shared_lock lock(mutex_);
  return state_;
}

bool ServiceTokenTable::empty() const {
  std::shared_lock lock(mutex_);
  return state_.tokens.empty();
}

void ServiceTokenTable::clear() {
  std::unique_lock lock(mutex_);
  state_ = TokenRegistryState{};
  id_by_digest_.clear();
  creation_order_.clear();
}

}  // namespace keyledger
