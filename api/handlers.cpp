#include "api/handlers.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include "api/errors.h"
#include "api/routes.h"
#include "api/verify_responses.h"
#include "api/views.h"
#include "domain/ids.h"
#include "domain/text.h"

namespace keyledger::api {

namespace {

using http::Request;
using http::Response;

constexpr std::size_t kMaxLeakItems = 100;
// The actor of a leak report's events: "leak:<source>" (API.md §4).
constexpr std::string_view kLeakActorPrefix = "leak:";
constexpr std::size_t kMaxAuditLimit = 1000;
constexpr std::size_t kDefaultAuditLimit = 100;


std::string encode_cursor(bool descending, std::uint64_t position) {
  const std::string raw = (descending ? "d:" : "a:") + std::to_string(position);
  std::string out(sodium_base64_encoded_len(raw.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

bool decode_cursor(const std::string& cursor, bool descending, std::uint64_t& position) {
  std::string raw(cursor.size(), '\0');
  std::size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(raw.data()), raw.size(), cursor.data(),
                        cursor.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return false;
  }
  raw.resize(len);
  if (raw.size() < 3 || raw.substr(0, 2) != (descending ? "d:" : "a:")) {
    return false;
  }
  const auto [ptr, ec] = std::from_chars(raw.data() + 2, raw.data() + raw.size(), position);
  return ec == std::errc() && ptr == raw.data() + raw.size();
}

bool parse_size(const std::string& text, std::size_t& out) {
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && ptr == text.data() + text.size();
}

// Who is calling: a service token or an agent's own key.
struct Caller {
  std::string id;     // token_id or key_id (idempotency scope)
  std::string actor;  // recorded in events
  std::string on_behalf_of;
  ServiceTokenState token;
  VerifyOutcome agent;
};

}  // namespace

struct Api::Impl {
  ApiContext ctx;
  Api::WebhookRetry webhook_retry;

  using Params = std::vector<std::string>;
  using Handler = Response (Impl::*)(Request&, const Caller&, const Params&);
  Router router;
  std::array<Handler, static_cast<std::size_t>(RouteId::kCount)> handlers{};

  explicit Impl(ApiContext c) : ctx(std::move(c)) {
    using enum RouteId;
    const auto set = [&](RouteId id, Handler h) { handlers[static_cast<std::size_t>(id)] = h; };
    set(kHealthz, &Impl::healthz);
    set(kReadyz, &Impl::readyz);
    set(kMetrics, &Impl::metrics);
    set(kCreateToken, &Impl::create_token);
    set(kListTokens, &Impl::list_tokens);
    set(kRevokeToken, &Impl::revoke_token);
    set(kRegisterAgent, &Impl::register_agent);
    set(kGetAgent, &Impl::get_agent);
    set(kSetTier, &Impl::set_tier);
    set(kCreateKey, &Impl::create_key);
    set(kListKeys, &Impl::list_keys);
    set(kAgentDeliveries, &Impl::agent_deliveries);
    set(kRetryDelivery, &Impl::retry_delivery);
    set(kDueForRotation, &Impl::due_for_rotation);
    set(kGetKey, &Impl::get_key);
    set(kRotateKey, &Impl::rotate_key);
    set(kRevokeKey, &Impl::revoke_key);
    set(kCompromiseKey, &Impl::compromise_key);
    set(kVerify, &Impl::verify);
    set(kForwardAuth, &Impl::forward_auth);
    set(kSelf, &Impl::self);
    set(kSelfDeliveries, &Impl::self_deliveries);
    set(kAudit, &Impl::audit);
    set(kLeaks, &Impl::leaks);
    for (const Route& route : contract_routes()) {
      if (handlers[static_cast<std::size_t>(route.id)] == nullptr) {
        throw std::logic_error("no handler for " + std::string(route.pattern));
      }
    }
  }

  // Resolves a service token with one of `scopes`, or the 401/403/422 to send.
  std::variant<Caller, Response> token_caller(const Request& req,
                                              const std::vector<std::string_view>& scopes) const {
    auto resolved = authenticate_service_token(req, scopes, ctx.projector.tokens(), ctx.hasher, ctx.verifier);
    if (auto* res = std::get_if<Response>(&resolved)) {
      return std::move(*res);
    }
    TokenCaller& token = std::get<TokenCaller>(resolved);
    Caller caller;
    caller.id = token.token.token_id;
    caller.actor = token.token.name;
    caller.on_behalf_of = std::move(token.on_behalf_of);
    caller.token = std::move(token.token);
    return caller;
  }

  // --- helpers

  std::optional<Response> json_body(const Request& req, Json& body, bool array = false) const {
    return read_json_body(req, body, array);
  }

  // For commands that take no fields: the 400/415/422 to send unless the body is empty or {}.
  std::optional<Response> no_fields_body(const Request& req) const {
    Json body;
    if (auto bad = json_body(req, body)) {
      return bad;
    }
    return FieldReader(body, {}).problem(req.request_id);
  }

  std::string actor_of(const Caller& caller) const {
    return caller.on_behalf_of.empty() ? caller.actor : caller.actor + " (" + caller.on_behalf_of + ")";
  }

  TimePoint now() const { return ctx.clock.now(); }

  Json key_view(const KeyState& key) const {
    return key_json(key, now(), ctx.projector.last_used(key.key_id));
  }

  // A POST's Idempotency-Key as the handler sees it. A command handler builds its response
  // in the command's outcome callback and returns keep(response) there, so the response is
  // kept in the WriteBatch of the events (IdempotencyStore::record): a crash between the two
  // is impossible, and a retry after a crash replays instead of running the command again.
  struct Replay {
    IdempotencyStore* store = nullptr;  // null when the request has no Idempotency-Key
    std::string scope;
    std::string body_hash;
    bool kept = false;

    std::vector<SideWrite> keep(const Response& res) {
      if (store == nullptr || res.status < 200 || res.status >= 300) {
        return {};
      }
      kept = true;
      return {store->record(scope, {body_hash, res.status, strip_secrets(res.body)})};
    }
  };

  // Runs a POST handler under its Idempotency-Key, if the request has one. A response the
  // handler did not keep with its events (a handler that appends nothing itself) is saved
  // after it.
  Response idempotent(Request& req, const Caller& caller, const std::function<Response(Replay&)>& run) {
    auto key = req.headers.get("idempotency-key");
    if (!key) {
      Replay none;
      return run(none);
    }
    if (key->empty() || key->size() > kMaxIdempotencyKeyChars) {
      return error_response(422, "validation_failed", "Idempotency-Key must be 1-255 characters",
                            req.request_id, {{"Idempotency-Key", "must be 1-255 characters"}});
    }
    const std::string scope = caller.id + "\n" + req.method + " " + req.path + "\n" + std::string(*key);
    const std::string body_hash = sha256_hex(req.body);
    std::lock_guard lock(ctx.idempotency.lock_for(scope));
    if (auto stored = ctx.idempotency.find(scope)) {
      if (stored->body_hash != body_hash) {
        return error_response(422, "idempotency_key_reused",
                              "this Idempotency-Key was used with a different request body", req.request_id);
      }
      Response replay;
      replay.status = stored->status;
      replay.body = stored->body;
      replay.headers.set("Idempotent-Replayed", "true");
      return replay;
    }
    Replay replay{&ctx.idempotency, scope, body_hash};
    Response res = run(replay);
    if (res.status >= 200 && res.status < 300 && !replay.kept) {
      const Status saved = ctx.idempotency.save(scope, {body_hash, res.status, strip_secrets(res.body)});
      if (!saved.ok()) {
        return status_response(saved, req.request_id);
      }
    }
    return res;
  }

  // --- operations

  Response healthz(Request&, const Caller&, const Params&) { return healthz_response(); }

  Response readyz(Request& req, const Caller&, const Params&) {
    if (const Status storage = ctx.commands.write_health(); storage.IsIoError()) {
      // A failed fsync: only a restart recovers, so the node says so to whoever routes to it.
      return readyz_response(req, false, storage.message());
    }
    return readyz_response(req, ctx.ready && ctx.ready(), "projections are catching up");
  }

  Response metrics(Request&, const Caller&, const Params&) { return metrics_response(ctx.metrics); }

  // --- service tokens

  Response create_token(Request& req, const Caller& caller, const Params&) {
    return idempotent(req, caller, [&](Replay& replay) {
      Json body;
      if (auto bad = json_body(req, body)) {
        return *bad;
      }
      FieldReader f(body, {"name", "scopes"});
      auto name = f.text("name");
      auto scopes = f.strings("scopes");
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      Response out;
      auto decision = ctx.commands.create_token(
          name.value_or(""), scopes.value_or(std::vector<std::string>{}), actor_of(caller),
          [&](const TokenRegistryState&, const TokenDecision& d) {
            const auto& created = d.events.front().service_token_created();
            out = json_response(
                201, {{"token_id", created.token_id()},
                      {"name", created.name()},
                      {"scopes", std::vector<std::string>(created.scopes().begin(), created.scopes().end())},
                      {"created_at", format_rfc3339(from_timestamp(d.events.front().occurred_at()))},
                      {"token", d.token}});
            return replay.keep(out);
          });
      if (!decision.ok()) {
        return status_response(decision.status(), req.request_id);
      }
      return out;
    });
  }

  Response list_tokens(Request&, const Caller&, const Params&) {
    Json tokens = Json::array();
    for (const auto& t : ctx.projector.tokens().list()) {
      tokens.push_back(token_json(t));
    }
    return json_response(200, {{"tokens", tokens}});
  }

  Response revoke_token(Request& req, const Caller& caller, const Params& params) {
    return idempotent(req, caller, [&](Replay& replay) {
      if (auto bad = no_fields_body(req)) {
        return *bad;
      }
      Response out;
      auto decision = ctx.commands.revoke_token(
          params[0], actor_of(caller), [&](const TokenRegistryState& after, const TokenDecision&) {
            auto it = after.tokens.find(params[0]);
            out = json_response(200, it == after.tokens.end() ? Json::object() : token_json(it->second));
            return replay.keep(out);
          });
      if (!decision.ok()) {
        return status_response(decision.status(), req.request_id);
      }
      return out;
    });
  }

  // --- agents

  Response register_agent(Request& req, const Caller& caller, const Params&) {
    return idempotent(req, caller, [&](Replay& replay) {
      Json body;
      if (auto bad = json_body(req, body)) {
        return *bad;
      }
      FieldReader f(body,
                    {"name", "description", "skills", "languages", "webhook_url", "environment", "owner_id"});
      AgentProfile profile;
      profile.name = f.text("name").value_or("");
      profile.description = f.text("description").value_or("");
      profile.skills = f.strings("skills").value_or(std::vector<std::string>{});
      profile.languages = f.strings("languages").value_or(std::vector<std::string>{});
      profile.webhook_url = f.text("webhook_url").value_or("");
      const auto environment = f.text("environment");
      profile.owner_id = f.text("owner_id").value_or("");
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      std::vector<FieldError> details;
      if (environment && *environment != "production" && *environment != "staging") {
        details.push_back({"environment", "must be production or staging"});
      }
      profile.environment = environment == "staging" ? v1::ENVIRONMENT_STAGING : v1::ENVIRONMENT_PRODUCTION;
      auto broken = validate_profile(profile, ctx.commands.options().registration);
      details.insert(details.end(), broken.begin(), broken.end());
      if (!details.empty()) {
        return error_response(422, "validation_failed", "the agent profile breaks field rules",
                              req.request_id, details);
      }
      Response out;
      auto decision =
          ctx.commands.register_agent(profile, actor_of(caller), [&](const AgentState& agent, const Decision& d) {
            Json created = agent_json(agent, now());
            created.erase("active_key_count");
            created["webhook_secret"] = d.webhook_secret;
            out = json_response(201, created);
            return replay.keep(out);
          });
      if (!decision.ok()) {
        return status_response(decision.status(), req.request_id);
      }
      return out;
    });
  }

  Response get_agent(Request& req, const Caller&, const Params& params) {
    auto agent = ctx.projector.load_agent(params[0]);
    if (!agent.ok()) {
      return status_response(agent.status(), req.request_id);
    }
    return json_response(200, agent_json(*agent, now()));
  }

  Response set_tier(Request& req, const Caller& caller, const Params& params) {
    Json body;
    if (auto bad = json_body(req, body)) {
      return *bad;
    }
    FieldReader f(body, {"tier"});
    auto tier = f.text("tier");
    if (auto bad = f.problem(req.request_id)) {
      return *bad;
    }
    auto decision =
        ctx.commands.on_agent(params[0], actor_of(caller), [&](const AgentState& s, CommandContext& c) {
          return set_rate_limit_tier(s, tier.value_or(""), ctx.commands.options().tiers, c);
        });
    if (!decision.ok()) {
      return status_response(decision.status(), req.request_id);
    }
    auto agent = ctx.projector.load_agent(params[0]);
    if (!agent.ok()) {
      return status_response(agent.status(), req.request_id);
    }
    return json_response(200, agent_json(*agent, now()));
  }

  // --- keys

  // Runs a key command whose response `render` builds from the agent as the command leaves
  // it; the response is kept under the Idempotency-Key with the events.
  Response key_command(const Request& req, Replay& replay, std::string_view key_id, const std::string& actor,
                       const CommandService::AgentCommand& command, unsigned status,
                       const std::function<Json(const AgentState&, const Decision&)>& render) {
    Response out;
    auto decision = ctx.commands.on_key(key_id, actor, command, [&](const AgentState& agent, const Decision& d) {
      out = json_response(status, render(agent, d));
      return replay.keep(out);
    });
    if (!decision.ok()) {
      return status_response(decision.status(), req.request_id);
    }
    return out;
  }

  Response create_key(Request& req, const Caller& caller, const Params& params) {
    return idempotent(req, caller, [&](Replay& replay) {
      Json body;
      if (auto bad = json_body(req, body)) {
        return *bad;
      }
      FieldReader f(body, {"label", "expires_in_seconds"});
      CreateKey cmd{f.text("label"), f.integer("expires_in_seconds")};
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      Response out;
      auto decision = ctx.commands.on_agent(
          params[0], actor_of(caller),
          [&](const AgentState& s, CommandContext& c) { return keyledger::create_key(s, cmd, c); },
          [&](const AgentState& agent, const Decision& d) {
            out = json_response(201, {{"key", key_view(*agent.find_key(d.key_id))}, {"api_key", d.api_key}});
            return replay.keep(out);
          });
      if (!decision.ok()) {
        return status_response(decision.status(), req.request_id);
      }
      return out;
    });
  }

  Response list_keys(Request& req, const Caller&, const Params& params) {
    auto agent = ctx.projector.load_agent(params[0]);
    if (!agent.ok()) {
      return status_response(agent.status(), req.request_id);
    }
    std::optional<KeyStatus> wanted;
    if (auto it = req.query.find("status"); it != req.query.end()) {
      if (it->second == "active") {
        wanted = KeyStatus::kActive;
      } else if (it->second == "revoked") {
        wanted = KeyStatus::kRevoked;
      } else if (it->second == "expired") {
        wanted = KeyStatus::kExpired;
      } else {
        return error_response(422, "validation_failed", "unknown status filter", req.request_id,
                              {{"status", "must be active, revoked or expired"}});
      }
    }
    Json keys = Json::array();
    const auto t = now();
    for (const auto& key : agent->keys) {
      if (!wanted || key.status_at(t) == *wanted) {
        keys.push_back(key_view(key));
      }
    }
    return json_response(200, {{"keys", keys}});
  }

  Response get_key(Request& req, const Caller&, const Params& params) {
    auto agent_id = ctx.projector.agent_of_key(params[0]);
    if (!agent_id.ok()) {
      return status_response(agent_id.status(), req.request_id);
    }
    auto agent = ctx.projector.load_agent(*agent_id);
    if (!agent.ok()) {
      return status_response(agent.status(), req.request_id);
    }
    const KeyState* key = agent->find_key(params[0]);
    if (key == nullptr) {
      return status_response(Status::NotFound("key_not_found", "no such key"), req.request_id);
    }
    return json_response(200, key_view(*key));
  }

  Response due_for_rotation(Request& req, const Caller&, const Params&) {
    std::size_t days = 90;
    if (auto it = req.query.find("older_than_days"); it != req.query.end()) {
      if (!parse_size(it->second, days) || days > 36600) {
        return error_response(422, "validation_failed", "older_than_days must be a whole number of days",
                              req.request_id, {{"older_than_days", "must be an integer from 0 to 36600"}});
      }
    }
    const auto cutoff = now() - std::chrono::hours(24) * static_cast<long>(days);
    auto refs = ctx.projector.keys_created_before(cutoff + std::chrono::milliseconds(1), kMaxAuditLimit);
    if (!refs.ok()) {
      return status_response(refs.status(), req.request_id);
    }
    Json keys = Json::array();
    const auto t = now();
    for (const auto& ref : *refs) {
      auto agent = ctx.projector.load_agent(ref.agent_id);
      if (!agent.ok()) {
        continue;
      }
      if (const KeyState* key = agent->find_key(ref.key_id); key != nullptr && key->is_active_at(t)) {
        keys.push_back(key_view(*key));
      }
    }
    return json_response(200, {{"keys", keys}});
  }

  Response rotate_key(Request& req, const Caller& caller, const Params& params) {
    return idempotent(req, caller, [&](Replay& replay) {
      Json body;
      if (auto bad = json_body(req, body)) {
        return *bad;
      }
      FieldReader f(body, {"label", "old_key_expires_in_seconds"});
      RotateKey cmd{params[0], f.text("label"), f.integer("old_key_expires_in_seconds")};
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      return key_command(
          req, replay, params[0], actor_of(caller),
          [&](const AgentState& s, CommandContext& c) { return keyledger::rotate_key(s, cmd, c); }, 201,
          [&](const AgentState& agent, const Decision& d) {
            return Json{{"key", key_view(*agent.find_key(d.key_id))},
                        {"api_key", d.api_key},
                        {"previous", key_view(*agent.find_key(params[0]))}};
          });
    });
  }

  Response revoke_key(Request& req, const Caller& caller, const Params& params) {
    return idempotent(req, caller, [&](Replay& replay) {
      Json body;
      if (auto bad = json_body(req, body)) {
        return *bad;
      }
      FieldReader f(body, {"reason"});
      RevokeKey cmd{params[0], f.text("reason").value_or("")};
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      return key_command(
          req, replay, params[0], actor_of(caller),
          [&](const AgentState& s, CommandContext& c) { return keyledger::revoke_key(s, cmd, c); }, 200,
          [&](const AgentState& agent, const Decision&) { return key_view(*agent.find_key(params[0])); });
    });
  }

  Response compromise_key(Request& req, const Caller& caller, const Params& params) {
    return idempotent(req, caller, [&](Replay& replay) {
      Json body;
      if (auto bad = json_body(req, body)) {
        return *bad;
      }
      FieldReader f(body, {"note", "source", "replace"});
      ReportCompromise cmd{params[0], f.text("note").value_or(""), f.text("source").value_or(""),
                           f.boolean("replace").value_or(false)};
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      return compromise(req, replay, caller.actor, caller.on_behalf_of, cmd);
    });
  }

  Response compromise(const Request& req, Replay& replay, const std::string& actor,
                      const std::string& on_behalf_of, const ReportCompromise& cmd) {
    const std::string who = on_behalf_of.empty() ? actor : actor + " (" + on_behalf_of + ")";
    return key_command(
        req, replay, cmd.key_id, who,
        [&](const AgentState& s, CommandContext& c) { return report_compromise(s, cmd, c); }, 200,
        [&](const AgentState& agent, const Decision& d) {
          Json out = {{"key", key_view(*agent.find_key(cmd.key_id))}};
          if (cmd.replace && !d.key_id.empty()) {
            out["replacement"] = {{"key", key_view(*agent.find_key(d.key_id))}, {"api_key", d.api_key}};
          }
          return out;
        });
  }

  // --- verification

  Response verify(Request& req, const Caller&, const Params&) {
    return verify_response(req, ctx.verifier, ctx.metrics);
  }

  // Verifies the caller's own key (GET /v1/auth, /v1/self…): the outcome, or the 401/429.
  std::variant<VerifyOutcome, Response> agent_caller(const Request& req) {
    return authenticate_agent_key(req, ctx.verifier, ctx.metrics);
  }

  Response forward_auth(Request&, const Caller& caller, const Params&) {
    return forward_auth_response(caller.agent);
  }

  Response self(Request& req, const Caller& caller, const Params&) {
    auto agent = ctx.projector.load_agent(caller.agent.entry->agent_id.view());
    if (!agent.ok()) {
      return status_response(agent.status(), req.request_id);
    }
    const KeyState* key = agent->find_key(caller.agent.entry->key_id.view());
    Response res = json_response(200, {{"agent", agent_json(*agent, now())},
                                       {"key", key == nullptr ? Json(nullptr) : key_view(*key)}});
    set_ratelimit_headers(res, *caller.agent.tier, *caller.agent.ratelimit, caller.agent.at);
    return res;
  }

  Response deliveries(const Request& req, std::string_view agent_id) {
    std::size_t limit = kDefaultAuditLimit;
    if (auto it = req.query.find("limit"); it != req.query.end()) {
      if (!parse_size(it->second, limit) || limit < 1 || limit > kMaxAuditLimit) {
        return error_response(422, "validation_failed", "limit is out of range", req.request_id,
                              {{"limit", "must be an integer from 1 to 1000"}});
      }
    }
    std::optional<std::uint64_t> after;
    if (auto it = req.query.find("cursor"); it != req.query.end()) {
      std::uint64_t position = 0;
      if (!decode_cursor(it->second, true, position)) {
        return error_response(422, "validation_failed", "cursor is not valid", req.request_id,
                              {{"cursor", "is not a cursor this API returned"}});
      }
      after = position;
    }
    auto page = ctx.projector.webhook_deliveries(agent_id, limit, after);
    if (!page.ok()) {
      return status_response(page.status(), req.request_id);
    }
    Json items = Json::array();
    for (const auto& e : page->events) {
      Json item = event_data_json(e);
      item["position"] = e.position();
      item["recorded_at"] = format_rfc3339(from_timestamp(e.occurred_at()));
      items.push_back(item);
    }
    Json out = {{"deliveries", items}};
    if (page->next_after) {
      out["next_cursor"] = encode_cursor(true, *page->next_after);
    }
    return json_response(200, out);
  }

  Response agent_deliveries(Request& req, const Caller&, const Params& params) {
    auto agent = ctx.projector.load_agent(params[0]);
    if (!agent.ok()) {
      return status_response(agent.status(), req.request_id);
    }
    return deliveries(req, params[0]);
  }

  Response retry_delivery(Request& req, const Caller& caller, const Params& params) {
    return idempotent(req, caller, [&](Replay&) {
      if (auto bad = no_fields_body(req)) {
        return *bad;
      }
      if (auto agent = ctx.projector.load_agent(params[0]); !agent.ok()) {
        return status_response(agent.status(), req.request_id);
      }
      if (!webhook_retry) {
        return error_response(503, "webhooks_disabled", "webhook delivery is not running on this node",
                              req.request_id);
      }
      const Status s = webhook_retry(params[0], params[1]);
      if (!s.ok()) {
        return status_response(s, req.request_id);
      }
      return json_response(202, {{"agent_id", params[0]}, {"event_id", params[1]}, {"status", "queued"}});
    });
  }

  Response self_deliveries(Request& req, const Caller& caller, const Params&) {
    Response res = deliveries(req, caller.agent.entry->agent_id.view());
    set_ratelimit_headers(res, *caller.agent.tier, *caller.agent.ratelimit, caller.agent.at);
    return res;
  }

  // --- audit

  Response audit(Request& req, const Caller&, const Params&) {
    AuditQuery q;
    std::vector<FieldError> details;
    for (const auto& [name, value] : req.query) {
      if (name == "agent_id") {
        q.agent_id = value;
      } else if (name == "key_id") {
        q.key_id = value;
      } else if (name == "type") {
        q.type = value;
      } else if (name == "actor") {
        q.actor = value;
      } else if (name == "since" || name == "until") {
        TimePoint t;
        if (!parse_rfc3339(value, t)) {
          details.push_back({name, "must be an RFC 3339 time"});
        } else {
          (name == "since" ? q.since : q.until) = t;
        }
      } else if (name == "order") {
        if (value != "asc" && value != "desc") {
          details.push_back({"order", "must be asc or desc"});
        }
        q.descending = value == "desc";
      } else if (name == "limit") {
        if (!parse_size(value, q.limit) || q.limit < 1 || q.limit > kMaxAuditLimit) {
          details.push_back({"limit", "must be an integer from 1 to 1000"});
        }
      } else if (name != "cursor") {
        details.push_back({name, "unknown query parameter"});
      }
    }
    if (auto it = req.query.find("cursor"); it != req.query.end()) {
      std::uint64_t position = 0;
      if (!decode_cursor(it->second, q.descending, position)) {
        details.push_back({"cursor", "is not a cursor this API returned for this order"});
      } else {
        q.after_position = position;
      }
    }
    if (!details.empty()) {
      return error_response(422, "validation_failed", "the audit query breaks field rules", req.request_id,
                            details);
    }
    auto page = ctx.projector.audit(q);
    if (!page.ok()) {
      return status_response(page.status(), req.request_id);
    }
    Json events = Json::array();
    for (const auto& e : page->events) {
      events.push_back(audit_event_json(e));
    }
    Json out = {{"events", events}};
    if (page->next_after) {
      out["next_cursor"] = encode_cursor(q.descending, *page->next_after);
    }
    return json_response(200, out);
  }

  // --- leaked keys (GitHub secret-scanning partner format)

  // Under the caller's Idempotency-Key like every POST: a repeated report replays its first
  // answer ("revoked") instead of a new one ("already_inactive").
  Response leaks(Request& req, const Caller& caller, const Params&) {
    return idempotent(req, caller, [&](Replay&) { return report_leaks(req); });
  }

  Response report_leaks(const Request& req) {
    Json body;
    if (auto bad = json_body(req, body, true)) {
      return *bad;
    }
    if (body.size() > kMaxLeakItems) {
      return error_response(422, "validation_failed", "at most 100 items per report", req.request_id,
                            {{"items", "must be at most 100"}});
    }
    struct Item {
      std::string token, type, source;
    };
    std::vector<Item> items;
    std::vector<FieldError> details;
    for (std::size_t i = 0; i < body.size(); ++i) {
      if (!body[i].is_object()) {
        return error_response(400, "invalid_json", "every item must be an object", req.request_id);
      }
      FieldReader f(body[i], {"token", "type", "url", "source"});
      Item item{f.text("token").value_or(""), f.text("type").value_or(""), f.text("source").value_or("")};
      (void)f.text("url");
      if (auto bad = f.problem(req.request_id)) {
        return *bad;
      }
      if (item.token.empty()) {
        details.push_back({"[" + std::to_string(i) + "].token", "is required"});
      }
      items.push_back(std::move(item));
    }
    if (!details.empty()) {
      return error_response(422, "validation_failed", "leak report items break field rules", req.request_id,
                            details);
    }
    Json results = Json::array();
    for (const auto& item : items) {
      Json r = {{"token_hash", sha256_hex(item.token)}, {"token_type", item.type}};
      if (!is_well_formed_api_key(item.token)) {
        r["label"] = "false_positive";
        r["result"] = "malformed";
      } else if (auto entry = ctx.projector.key_table().find(ctx.hasher.digest(item.token)); !entry) {
        r["label"] = "false_positive";
        r["result"] = "unknown";
      } else {
        r["label"] = "true_positive";
        const auto now_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(now().time_since_epoch()).count();
        if (entry->condition_at(now_ms) != KeyCondition::kActive) {
          r["result"] = "already_inactive";
        } else {
          // A leak report never fails for cosmetic reasons: whatever the scanner sent as
          // source is made storable (characters kept whole, control characters replaced) and
          // cut to the limits of the note's source and of an actor.
          const std::string source = item.source.empty() ? "unknown" : item.source;
          const std::string actor = std::string(kLeakActorPrefix) +
                                    sanitize_text(source, kMaxActorChars - kLeakActorPrefix.size());
          ReportCompromise cmd{entry->key_id.str(), "reported by secret scanning",
                               sanitize_text(source, kMaxCompromiseSourceChars), false};
          auto decision = ctx.commands.on_key(
              cmd.key_id, actor,
              [&](const AgentState& s, CommandContext& c) { return report_compromise(s, cmd, c); });
          if (decision.ok()) {
            r["result"] = "revoked";
          } else if (decision.status().IsConflict()) {
            r["result"] = "already_inactive";
          } else {
            return status_response(decision.status(), req.request_id);
          }
        }
      }
      results.push_back(r);
    }
    return json_response(200, results);
  }

  // --- dispatch

  Response dispatch(Request& req) {
    const Route* route = router.route_for(req);
    if (route == nullptr) {
      return router.no_route(req);
    }
    Caller caller;
    const bool limited = ctx.auth_failures != nullptr && route->access != Access::kPublic &&
                         route->id != RouteId::kForwardAuth;
    if (limited) {
      if (const auto wait = ctx.auth_failures->retry_after(req.remote_address)) {
        return too_many_failed_authentications(req, *wait);
      }
    }
    if (route->access == Access::kToken) {
      auto resolved = token_caller(req, route->scopes);
      if (auto* res = std::get_if<Response>(&resolved)) {
        if (limited && res->status == 401) {
          ctx.auth_failures->failed(req.remote_address);
        }
        return std::move(*res);
      }
      caller = std::move(std::get<Caller>(resolved));
    } else if (route->access == Access::kAgentKey) {
      auto resolved = agent_caller(req);
      if (auto* res = std::get_if<Response>(&resolved)) {
        if (limited && res->status == 401) {
          ctx.auth_failures->failed(req.remote_address);
        }
        return std::move(*res);
      }
      caller.agent = std::move(std::get<VerifyOutcome>(resolved));
      // Only a route that changes something records an actor or scopes an Idempotency-Key;
      // the reads (GET /v1/auth above all) skip building the two strings.
      if (route->method != "GET") {
        caller.id = caller.agent.entry->key_id.str();
        caller.actor = "key:" + caller.id;
      }
    }
    return (this->*handlers[static_cast<std::size_t>(route->id)])(req, caller, req.route_params);
  }
};

Api::Api(ApiContext context) : impl_(std::make_unique<Impl>(std::move(context))) {}
Api::~Api() = default;

http::Response Api::handle(http::Request& request) {
  http::Response res = impl_->dispatch(request);
  if (request.method == "HEAD") {
    res.body.clear();
  }
  return res;
}

void Api::set_webhook_retry(WebhookRetry retry) { impl_->webhook_retry = std::move(retry); }

bool Api::runs_inline(const http::Request& request) const {
  const auto* route = impl_->router.route_for(request);
  return route == nullptr || route->inline_ok;
}

void Api::on_response(const http::Request& request, const http::Response& response) {
  impl_->ctx.metrics.count_request(request.method, route_of(request), response.status);
}

std::string_view Api::route_of(const http::Request& request) const {
  const auto* route = impl_->router.route_for(request);
  return route == nullptr ? std::string_view("unmatched") : route->pattern;
}

}  // namespace keyledger::api
