#include "domain/agent.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <set>

#include "domain/ids.h"
#include "domain/text.h"
#include "domain/webhook_url.h"

namespace keyledger {

namespace {

constexpr std::size_t kMinNameChars = 1;
constexpr std::size_t kMaxNameChars = 100;
constexpr std::size_t kMinDescriptionChars = 20;
constexpr std::size_t kMaxDescriptionChars = 2000;
constexpr std::size_t kMaxSkills = 50;
constexpr std::size_t kMaxLanguages = 20;
constexpr std::size_t kMaxListItemChars = 64;
constexpr std::size_t kMaxOwnerIdChars = 128;

using std::chrono::seconds;

// --- Validation helpers -----------------------------------------------------------------

void check_list(std::vector<FieldError>& errors, const std::string& field,
                const std::vector<std::string>& items, std::size_t max_items) {
  if (items.empty() || items.size() > max_items) {
    errors.push_back({field, "must hold 1 to " + std::to_string(max_items) + " items"});
  }
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string item_field = field + "[" + std::to_string(i) + "]";
    if (!check_text_length(errors, item_field, items[i], 1, kMaxListItemChars)) {
      continue;
    }
    if (!seen.insert(items[i]).second) {
      errors.push_back({item_field, "duplicates an earlier item"});
    }
  }
}

// Empty when `url` is an absolute https (or, if allowed, http) URL with a host; otherwise why not.
std::string webhook_url_problem(std::string_view url, bool allow_insecure) {
  const auto parsed = parse_webhook_url(url);
  if (!parsed.ok()) {
    return parsed.status().message();
  }
  if (!parsed->tls && !allow_insecure) {
    return "must use https (plain http needs --allow-insecure-webhooks)";
  }
  return {};
}

// --- Event construction -----------------------------------------------------------------

// An event of `stream` with its envelope filled in; the caller sets the payload, then finish().
v1::Event new_event(CommandContext& ctx, std::string stream, TimePoint now) {
  v1::Event event;
  event.set_event_id(new_event_id(ctx.random));
  event.set_stream(std::move(stream));
  *event.mutable_occurred_at() = to_timestamp(now);
  event.set_actor(ctx.actor);
  return event;
}

v1::Event& finish(v1::Event& event) {
  event.set_type(std::string(event_type_name(event.payload_case())));
  return event;
}

// Never quotes the id asked for: a full key pasted where a key id belongs must not come back.
Status key_not_found() { return Status::NotFound("key_not_found", "no such key"); }

Status key_not_active(const KeyState& key, TimePoint now) {
  return Status::Conflict("key_not_active",
                          "key " + key.key_id + " is " + std::string(key_status_name(key.status_at(now))));
}

Status too_many_active_keys() {
  return Status::Conflict(
      "too_many_active_keys",
      "an agent may hold at most " + std::to_string(kMaxActiveKeysPerAgent) + " active keys");
}

struct NewKey {
  v1::Event event;
  std::string key_id;
  std::string api_key;
};

// KeyCreated for a fresh key of `state`'s agent. The full key is only in the result.
NewKey make_key(const AgentState& state, CommandContext& ctx, TimePoint now, const std::string& label,
                std::optional<TimePoint> expires_at, const std::string& rotated_from) {
  NewKey out;
  out.key_id = new_key_id(ctx.random);
  out.api_key = generate_api_key(ctx.random);
  const Digest digest = ctx.hasher.digest(out.api_key);

  out.event = new_event(ctx, agent_stream(state.agent_id), now);
  v1::KeyCreated* created = out.event.mutable_key_created();
  created->set_agent_id(state.agent_id);
  created->set_key_id(out.key_id);
  created->set_label(label);
  created->set_digest(digest.data(), digest.size());
  created->set_hint(api_key_hint(out.api_key));
  created->set_environment(state.profile.environment);
  if (expires_at) {
    *created->mutable_expires_at() = to_timestamp(*expires_at);
  }
  created->set_rotated_from(rotated_from);
  finish(out.event);
  return out;
}

// A successor key lives as long as the key it replaces was meant to (no expiry if it had none).
std::optional<TimePoint> successor_expiry(const KeyState& old_key, TimePoint now) {
  if (!old_key.expires_at) {
    return std::nullopt;
  }
  return now + (*old_key.expires_at - old_key.created_at);
}

Status invalid(std::string message, std::vector<FieldError> errors) {
  return Status::InvalidArgument(std::move(message), std::move(errors));
}

}  // namespace

// --- Commands ---------------------------------------------------------------------------

std::vector<FieldError> validate_profile(const AgentProfile& profile, const RegisterAgentOptions& options) {
  std::vector<FieldError> errors;
  check_text_length(errors, "name", profile.name, kMinNameChars, kMaxNameChars);
  check_text_length(errors, "description", profile.description, kMinDescriptionChars, kMaxDescriptionChars,
                    TextForm::kMultiLine);
  check_list(errors, "skills", profile.skills, kMaxSkills);
  check_list(errors, "languages", profile.languages, kMaxLanguages);
  if (std::string problem = webhook_url_problem(profile.webhook_url, options.allow_insecure_webhooks);
      !problem.empty()) {
    errors.push_back({"webhook_url", std::move(problem)});
  }
  if (profile.environment != v1::ENVIRONMENT_PRODUCTION && profile.environment != v1::ENVIRONMENT_STAGING) {
    errors.push_back({"environment", "must be production or staging"});
  }
  check_text_length(errors, "owner_id", profile.owner_id, 0, kMaxOwnerIdChars);
  return errors;
}

Result<Decision> register_agent(const AgentProfile& profile, const RegisterAgentOptions& options,
                                CommandContext& ctx) {
  if (std::vector<FieldError> errors = validate_profile(profile, options); !errors.empty()) {
    return invalid("the agent is invalid", std::move(errors));
  }
  const TimePoint now = ctx.clock.now();
  Decision decision;
  decision.agent_id = new_agent_id(ctx.random);
  decision.webhook_secret = generate_webhook_secret(ctx.random);

  v1::Event event = new_event(ctx, agent_stream(decision.agent_id), now);
  v1::AgentRegistered* e = event.mutable_agent_registered();
  e->set_agent_id(decision.agent_id);
  e->set_name(profile.name);
  e->set_description(profile.description);
  for (const std::string& skill : profile.skills) {
    e->add_skills(skill);
  }
  for (const std::string& language : profile.languages) {
    e->add_languages(language);
  }
  e->set_webhook_url(profile.webhook_url);
  e->set_environment(profile.environment);
  e->set_owner_id(profile.owner_id);
  e->set_rate_limit_tier(options.default_tier);
  *e->mutable_webhook_secret() = ctx.secrets.seal(decision.webhook_secret, decision.agent_id, ctx.random);
  decision.events.push_back(std::move(finish(event)));
  return decision;
}

Result<Decision> create_key(const AgentState& state, const CreateKey& cmd, CommandContext& ctx) {
  if (!state.exists()) {
    return Status::NotFound("agent_not_found", "no such agent");
  }
  std::vector<FieldError> errors;
  if (cmd.label) {
    check_text_length(errors, "label", *cmd.label, 0, kMaxLabelChars);
  }
  if (cmd.expires_in_seconds &&
      (*cmd.expires_in_seconds < 1 || *cmd.expires_in_seconds > kMaxKeyLifetimeSeconds)) {
    errors.push_back({"expires_in_seconds", "must be 1 to " + std::to_string(kMaxKeyLifetimeSeconds)});
  }
  if (!errors.empty()) {
    return invalid("the key request is invalid", std::move(errors));
  }
  const TimePoint now = ctx.clock.now();
  if (state.active_key_count(now) >= kMaxActiveKeysPerAgent) {
    return too_many_active_keys();
  }
  std::optional<TimePoint> expires_at;
  if (cmd.expires_in_seconds) {
    expires_at = now + seconds(*cmd.expires_in_seconds);
  }
  NewKey key = make_key(state, ctx, now, cmd.label.value_or(""), expires_at, "");

  Decision decision;
  decision.agent_id = state.agent_id;
  decision.key_id = std::move(key.key_id);
  decision.api_key = std::move(key.api_key);
  decision.events.push_back(std::move(key.event));
  return decision;
}

Result<Decision> rotate_key(const AgentState& state, const RotateKey& cmd, CommandContext& ctx) {
  const KeyState* old_key = state.find_key(cmd.key_id);
  if (old_key == nullptr) {
    return key_not_found();
  }
  std::vector<FieldError> errors;
  if (cmd.label) {
    check_text_length(errors, "label", *cmd.label, 0, kMaxLabelChars);
  }
  const std::optional<std::int64_t>& overlap = cmd.old_key_expires_in_seconds;
  if (overlap && (*overlap < 0 || *overlap > kMaxRotationOverlapSeconds)) {
    errors.push_back(
        {"old_key_expires_in_seconds", "must be 0 to " + std::to_string(kMaxRotationOverlapSeconds)});
  }
  if (!errors.empty()) {
    return invalid("the rotation request is invalid", std::move(errors));
  }
  const TimePoint now = ctx.clock.now();
  if (!old_key->is_active_at(now)) {
    return key_not_active(*old_key, now);
  }
  const bool revoke_old_now = overlap && *overlap == 0;
  const std::size_t active_after = state.active_key_count(now) + 1 - (revoke_old_now ? 1 : 0);
  if (active_after > kMaxActiveKeysPerAgent) {
    return too_many_active_keys();
  }

  NewKey key = make_key(state, ctx, now, cmd.label.value_or(old_key->label), successor_expiry(*old_key, now),
                        old_key->key_id);
  Decision decision;
  decision.agent_id = state.agent_id;
  decision.key_id = key.key_id;
  decision.api_key = std::move(key.api_key);
  decision.events.push_back(std::move(key.event));

  v1::Event rotated = new_event(ctx, agent_stream(state.agent_id), now);
  v1::KeyRotated* r = rotated.mutable_key_rotated();
  r->set_agent_id(state.agent_id);
  r->set_key_id(old_key->key_id);
  r->set_new_key_id(key.key_id);
  if (overlap && *overlap > 0) {
    TimePoint old_expires_at = now + seconds(*overlap);
    if (old_key->expires_at) {
      old_expires_at = std::min(old_expires_at, *old_key->expires_at);
    }
    *r->mutable_old_key_expires_at() = to_timestamp(old_expires_at);
  }
  decision.events.push_back(std::move(finish(rotated)));

  if (revoke_old_now) {
    v1::Event revoked = new_event(ctx, agent_stream(state.agent_id), now);
    v1::KeyRevoked* rv = revoked.mutable_key_revoked();
    rv->set_agent_id(state.agent_id);
    rv->set_key_id(old_key->key_id);
    rv->set_reason(v1::REVOCATION_REASON_ROTATED);
    decision.events.push_back(std::move(finish(revoked)));
  }
  return decision;
}

Result<Decision> revoke_key(const AgentState& state, const RevokeKey& cmd, CommandContext& ctx) {
  const KeyState* key = state.find_key(cmd.key_id);
  if (key == nullptr) {
    return key_not_found();
  }
  std::vector<FieldError> errors;
  check_text_length(errors, "reason", cmd.reason, 0, kMaxRevocationReasonChars, TextForm::kMultiLine);
  if (!errors.empty()) {
    return invalid("the revocation request is invalid", std::move(errors));
  }
  const TimePoint now = ctx.clock.now();
  if (!key->is_active_at(now)) {
    return key_not_active(*key, now);
  }
  v1::Event event = new_event(ctx, agent_stream(state.agent_id), now);
  v1::KeyRevoked* e = event.mutable_key_revoked();
  e->set_agent_id(state.agent_id);
  e->set_key_id(key->key_id);
  e->set_reason(v1::REVOCATION_REASON_MANUAL);
  e->set_note(cmd.reason);

  Decision decision;
  decision.agent_id = state.agent_id;
  decision.events.push_back(std::move(finish(event)));
  return decision;
}

Result<Decision> report_compromise(const AgentState& state, const ReportCompromise& cmd,
                                   CommandContext& ctx) {
  const KeyState* key = state.find_key(cmd.key_id);
  if (key == nullptr) {
    return key_not_found();
  }
  std::vector<FieldError> errors;
  check_text_length(errors, "note", cmd.note, 0, kMaxCompromiseNoteChars, TextForm::kMultiLine);
  check_text_length(errors, "source", cmd.source, 0, kMaxCompromiseSourceChars);
  if (!errors.empty()) {
    return invalid("the compromise report is invalid", std::move(errors));
  }
  if (key->compromised_at) {
    return Status::Conflict("key_already_compromised",
                            "key " + key->key_id + " is already marked compromised");
  }
  const TimePoint now = ctx.clock.now();
  const bool was_active = key->is_active_at(now);
  // A replacement must not push the agent over the limit; refusing is safe here because the
  // only case that can (an already inactive key) leaves no usable leaked key behind.
  if (cmd.replace && state.active_key_count(now) + 1 - (was_active ? 1 : 0) > kMaxActiveKeysPerAgent) {
    return too_many_active_keys();
  }

  v1::Event event = new_event(ctx, agent_stream(state.agent_id), now);
  v1::KeyCompromised* e = event.mutable_key_compromised();
  e->set_agent_id(state.agent_id);
  e->set_key_id(key->key_id);
  e->set_note(cmd.note);
  e->set_source(cmd.source);
  e->set_was_active(was_active);

  Decision decision;
  decision.agent_id = state.agent_id;
  decision.events.push_back(std::move(finish(event)));
  if (cmd.replace) {
    NewKey replacement = make_key(state, ctx, now, key->label, successor_expiry(*key, now), key->key_id);
    decision.key_id = std::move(replacement.key_id);
    decision.api_key = std::move(replacement.api_key);
    decision.events.push_back(std::move(replacement.event));
  }
  return decision;
}

Result<Decision> expire_key(const AgentState& state, std::string_view key_id, CommandContext& ctx) {
  const KeyState* key = state.find_key(key_id);
  if (key == nullptr) {
    return key_not_found();
  }
  const TimePoint now = ctx.clock.now();
  if (key->status != KeyStatus::kActive || !key->expires_at || now < *key->expires_at) {
    return Status::Conflict("key_not_active", "key " + key->key_id + " is not an active key past its expiry");
  }
  v1::Event event = new_event(ctx, agent_stream(state.agent_id), now);
  v1::KeyExpired* e = event.mutable_key_expired();
  e->set_agent_id(state.agent_id);
  e->set_key_id(key->key_id);
  *e->mutable_expires_at() = to_timestamp(*key->expires_at);

  Decision decision;
  decision.agent_id = state.agent_id;
  decision.events.push_back(std::move(finish(event)));
  return decision;
}

Result<Decision> set_rate_limit_tier(const AgentState& state, const std::string& tier,
                                     const std::vector<std::string>& known_tiers, CommandContext& ctx) {
  if (!state.exists()) {
    return Status::NotFound("agent_not_found", "no such agent");
  }
  if (std::find(known_tiers.begin(), known_tiers.end(), tier) == known_tiers.end()) {
    std::string known;
    for (const std::string& t : known_tiers) {
      known += (known.empty() ? "" : ", ") + t;
    }
    return invalid("the rate-limit tier is invalid", {{"tier", "must be one of: " + known}});
  }
  const TimePoint now = ctx.clock.now();
  v1::Event event = new_event(ctx, agent_stream(state.agent_id), now);
  v1::RateLimitTierChanged* e = event.mutable_rate_limit_tier_changed();
  e->set_agent_id(state.agent_id);
  e->set_tier(tier);
  e->set_previous_tier(state.rate_limit_tier);

  Decision decision;
  decision.agent_id = state.agent_id;
  decision.events.push_back(std::move(finish(event)));
  return decision;
}

v1::Event webhook_delivery_event(const std::string& agent_id, const v1::WebhookDeliveryRecorded& record,
                                 std::string event_id, TimePoint occurred_at, std::string actor) {
  v1::Event e;
  e.set_event_id(std::move(event_id));
  e.set_stream(agent_stream(agent_id));
  *e.mutable_occurred_at() = to_timestamp(occurred_at);
  e.set_actor(std::move(actor));
  *e.mutable_webhook_delivery_recorded() = record;
  e.mutable_webhook_delivery_recorded()->set_agent_id(agent_id);
  return finish(e);
}

Result<Decision> record_webhook_delivery(const AgentState& state, const RecordWebhookDelivery& cmd,
                                         CommandContext& ctx) {
  Decision decision;
  decision.agent_id = state.agent_id;
  decision.events.push_back(webhook_delivery_event(
      state.agent_id, cmd.record, cmd.event_id.empty() ? new_event_id(ctx.random) : cmd.event_id,
      cmd.occurred_at.value_or(ctx.clock.now()), ctx.actor));
  return decision;
}

}  // namespace keyledger
