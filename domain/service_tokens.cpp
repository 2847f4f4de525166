#include "domain/service_tokens.h"

#include <algorithm>
#include <set>

#include "domain/ids.h"
#include "domain/text.h"

namespace keyledger {

namespace {

v1::Event new_token_event(CommandContext& ctx, TimePoint now) {
  v1::Event event;
  event.set_event_id(new_event_id(ctx.random));
  event.set_stream(std::string(kTokensStream));
  *event.mutable_occurred_at() = to_timestamp(now);
  event.set_actor(ctx.actor);
  return event;
}

bool is_known_scope(std::string_view scope) {
  return std::find(kScopes.begin(), kScopes.end(), scope) != kScopes.end();
}

}  // namespace

bool ServiceTokenState::has_scope(std::string_view scope) const {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
}

TokenRegistryState apply(TokenRegistryState state, const v1::Event& event) {
  state.version = event.stream_version();
  if (event.stream() != kTokensStream) {
    return state;
  }
  const TimePoint at = from_timestamp(event.occurred_at());
  switch (event.payload_case()) {
    case v1::Event::kServiceTokenCreated: {
      const v1::ServiceTokenCreated& e = event.service_token_created();
      if (e.token_id().empty() || state.tokens.contains(e.token_id())) {
        break;
      }
      ServiceTokenState token;
      token.token_id = e.token_id();
      token.name = e.name();
      token.scopes.assign(e.scopes().begin(), e.scopes().end());
      if (e.digest().size() == token.digest.size()) {
        std::copy(e.digest().begin(), e.digest().end(), token.digest.begin());
      }
      token.hint = e.hint();
      token.created_at = at;
      token.created_by = event.actor();
      state.tokens.emplace(token.token_id, std::move(token));
      break;
    }
    case v1::Event::kServiceTokenRevoked: {
      auto it = state.tokens.find(event.service_token_revoked().token_id());
      if (it != state.tokens.end() && !it->second.revoked_at) {
        it->second.revoked_at = at;
      }
      break;
    }
    default:
      break;
  }
  return state;
}

Result<TokenDecision> create_service_token(const TokenRegistryState& /*state*/, const std::string& name,
                                           const std::vector<std::string>& scopes, CommandContext& ctx) {
  std::vector<FieldError> errors;
  check_text_length(errors, "name", name, 1, kMaxTokenNameChars);
  if (scopes.empty() || scopes.size() > kScopes.size()) {
    errors.push_back({"scopes", "must hold 1 to " + std::to_string(kScopes.size()) + " scopes"});
  }
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < scopes.size(); ++i) {
    const std::string field = "scopes[" + std::to_string(i) + "]";
    if (!is_known_scope(scopes[i])) {
      errors.push_back({field, "must be one of manage, verify, audit, report_leaks, admin"});
    } else if (!seen.insert(scopes[i]).second) {
      errors.push_back({field, "duplicates an earlier scope"});
    }
  }
  if (!errors.empty()) {
    return Status::InvalidArgument("the service token is invalid", std::move(errors));
  }

  const TimePoint now = ctx.clock.now();
  TokenDecision decision;
  decision.token_id = new_token_id(ctx.random);
  decision.token = generate_service_token(ctx.random);
  const Digest digest = ctx.hasher.digest(decision.token);

  v1::Event event = new_token_event(ctx, now);
  v1::ServiceTokenCreated* e = event.mutable_service_token_created();
  e->set_token_id(decision.token_id);
  e->set_name(name);
  for (const std::string& scope : scopes) {
    e->add_scopes(scope);
  }
  e->set_digest(digest.data(), digest.size());
  e->set_hint(service_token_hint(decision.token));
  event.set_type(std::string(event_type_name(event.payload_case())));
  decision.events.push_back(std::move(event));
  return decision;
}

Result<TokenDecision> revoke_service_token(const TokenRegistryState& state, const std::string& token_id,
                                           CommandContext& ctx) {
  auto it = state.tokens.find(token_id);
  if (it == state.tokens.end()) {
    return Status::NotFound("token_not_found", "no such service token");
  }
  if (!it->second.active()) {
    return Status::Conflict("token_not_active", "service token " + token_id + " is already revoked");
  }
  v1::Event event = new_token_event(ctx, ctx.clock.now());
  event.mutable_service_token_revoked()->set_token_id(token_id);
  event.set_type(std::string(event_type_name(event.payload_case())));

  TokenDecision decision;
  decision.token_id = token_id;
  decision.events.push_back(std::move(event));
  return decision;
}

}  // namespace keyledger
