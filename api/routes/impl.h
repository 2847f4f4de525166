#pragma once
// Inside the primary's dispatcher (Api, api/handlers.h): its state, the helpers every route
// shares (credentials, JSON bodies, Idempotency-Key replays) and the routes' handlers.
// api/handlers.cpp builds it and dispatches; the handlers live one file per resource in
// api/routes/. Not for use outside api/.

#include <sodium.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "api/auth.h"
#include "api/cursor.h"
#include "api/errors.h"
#include "api/github_keys.h"
#include "api/handlers.h"
#include "api/json_body.h"
#include "api/operations.h"
#include "api/routes.h"
#include "api/verify_responses.h"
#include "api/views.h"
#include "domain/ids.h"
#include "domain/text.h"

namespace keyledger::api {

using http::Request;
using http::Response;

constexpr std::size_t kMaxLeakItems = 100;
// The actor of a leak report's events: "leak:<source>" (api/openapi.yaml).
constexpr std::string_view kLeakActorPrefix = "leak:";
constexpr std::size_t kMaxAuditLimit = 1000;
constexpr std::size_t kDefaultAuditLimit = 100;

inline bool parse_size(const std::string& text, std::size_t& out) {
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

struct Api::Impl {
  ApiContext ctx;
  Api::WebhookRetry webhook_retry;

  using Params = std::vector<std::string>;
  using Handler = Response (Impl::*)(Request&, const Caller&, const Params&);
  Router router;
  std::array<Handler, static_cast<std::size_t>(RouteId::kCount)> handlers{};
  explicit Impl(ApiContext c);

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

  // A command on an existing agent as a route plans it: the agent (or the key whose agent)
  // it runs on, the decision, and the answer it renders from the agent as the command leaves
  // it. A plan owns everything it uses: it may run after its handler returned (later).
  struct AgentCommandPlan {
    std::string id;       // an agent id, or a key id when by_key
    bool by_key = false;  // NotFound key_not_found when no agent owns the key
    std::string actor;
    CommandService::AgentCommand command;
    unsigned status = 200;
    std::function<Json(const AgentState&, const Decision&)> render;
  };
  using Planned = std::variant<AgentCommandPlan, Response>;  // or the 400/415/422 to send

  // The plan `make` builds from a JSON body's fields, or the 400/415/422 to send.
  template <typename Make>
  Planned plan_from_body(const Request& req, std::initializer_list<std::string_view> fields,
                         Make make) const {
    Json body;
    if (auto bad = json_body(req, body)) {
      return *bad;
    }
    FieldReader f(body, fields);
    AgentCommandPlan plan = make(f);
    if (auto bad = f.problem(req.request_id)) {
      return *bad;
    }
    return plan;
  }

  // Runs a plan and waits; its response is kept under the Idempotency-Key with the events.
  Response run_plan(const Request& req, Replay& replay, Planned planned) {
    if (auto* bad = std::get_if<Response>(&planned)) {
      return std::move(*bad);
    }
    const AgentCommandPlan& plan = std::get<AgentCommandPlan>(planned);
    Response out;
    const CommandService::AgentOutcome outcome = [&](const AgentState& agent, const Decision& d) {
      out = json_response(plan.status, plan.render(agent, d));
      return replay.keep(out);
    };
    auto decision = plan.by_key ? ctx.commands.on_key(plan.id, plan.actor, plan.command, outcome)
                                : ctx.commands.on_agent(plan.id, plan.actor, plan.command, outcome);
    if (!decision.ok()) {
      return status_response(decision.status(), req.request_id);
    }
    return out;
  }

  // Runs a plan without waiting (no Idempotency-Key): `reply` gets the answer once durable.
  void run_plan_later(const Request& req, const Dispatcher::Reply& reply, Planned planned) {
    if (auto* bad = std::get_if<Response>(&planned)) {
      return reply(std::move(*bad));
    }
    auto plan = std::make_shared<AgentCommandPlan>(std::move(std::get<AgentCommandPlan>(planned)));
    auto out = std::make_shared<Response>();
    CommandService::AgentOutcome outcome = [plan, out](const AgentState& agent, const Decision& d) {
      *out = json_response(plan->status, plan->render(agent, d));
      return std::vector<SideWrite>{};
    };
    CommandService::DecisionDone done = [out, reply, request_id = req.request_id](Result<Decision> decision) {
      reply(decision.ok() ? std::move(*out) : status_response(decision.status(), request_id));
    };
    if (plan->by_key) {
      ctx.commands.on_key_async(plan->id, plan->actor, plan->command, std::move(outcome), std::move(done));
    } else {
      ctx.commands.on_agent_async(plan->id, plan->actor, plan->command, std::move(outcome), std::move(done));
    }
  }

  // Reporting a key compromised, from its route, a leak report or the key itself.
  AgentCommandPlan compromise_plan(const std::string& who, const ReportCompromise& cmd) const {
    return AgentCommandPlan{
        cmd.key_id,
        true,
        who,
        [cmd](const AgentState& s, CommandContext& c) { return report_compromise(s, cmd, c); },
        200,
        [this, cmd](const AgentState& agent, const Decision& d) {
          Json out = {{"key", key_view(*agent.find_key(cmd.key_id))}};
          if (cmd.replace && !d.key_id.empty()) {
            out["replacement"] = {{"key", key_view(*agent.find_key(d.key_id))}, {"api_key", d.api_key}};
          }
          return out;
        }};
  }

  Response compromise(const Request& req, Replay& replay, const std::string& actor,
                      const std::string& on_behalf_of, const ReportCompromise& cmd) {
    const std::string who = on_behalf_of.empty() ? actor : actor + " (" + on_behalf_of + ")";
    return run_plan(req, replay, compromise_plan(who, cmd));
  }

  // Verifies the caller's own key (GET /v1/auth, /v1/self…): the outcome, or the 401/429.
  std::variant<VerifyOutcome, Response> agent_caller(const Request& req) {
    static const TrustedProxies nobody;
    return authenticate_agent_key(req, ctx.verifier, ctx.metrics,
                                  ctx.proxies != nullptr ? *ctx.proxies : nobody);
  }
  // --- dispatch
  using Execution = Dispatcher::Execution;
  using Reply = Dispatcher::Reply;
  // The route's caller, or the 401/403/429 to send.
  std::variant<Caller, Response> admit(Request& req, const Route& route);
  Response dispatch(Request& req);
  Execution execution(const Request& req) const;
  void dispatch_later(Request& req, const Reply& reply);

  // --- the routes' handlers, one file per resource (api/routes/<name>.cpp)

  // operations.cpp
  Response healthz(Request&, const Caller&, const Params&);
  Response readyz(Request& req, const Caller&, const Params&);
  Response metrics(Request&, const Caller&, const Params&);

  // tokens.cpp
  Response create_token(Request& req, const Caller& caller, const Params&);
  Response list_tokens(Request&, const Caller&, const Params&);
  // GET /v1/tokens/self: the caller's own entry of GET /v1/tokens, whatever its scopes.
  Response token_self(Request&, const Caller& caller, const Params&);
  Response revoke_token(Request& req, const Caller& caller, const Params& params);

  // agents.cpp
  Response register_agent(Request& req, const Caller& caller, const Params&);
  // The same without an Idempotency-Key: answered from the store's syncer once durable.
  void register_agent_later(Request& req, const Caller& caller, const Reply& reply);
  // The profile of POST /v1/agents's body, or the 400/415/422 to send.
  std::variant<AgentProfile, Response> registration(const Request& req) const;
  // The 201 of a registration, built before its events are appended (the outcome callback).
  Response registered(const AgentState& agent, const Decision& decision) const;
  Response get_agent(Request& req, const Caller&, const Params& params);
  Response set_tier(Request& req, const Caller& caller, const Params& params);

  // keys.cpp
  // The plans of the key routes (their handlers run them under an Idempotency-Key; without
  // one, the server runs them later: dispatch_later).
  using Planner = Planned (Impl::*)(const Request&, const Caller&, const Params&);
  Planned plan_create_key(const Request& req, const Caller& caller, const Params& params);
  Planned plan_rotate_key(const Request& req, const Caller& caller, const Params& params);
  Planned plan_revoke_key(const Request& req, const Caller& caller, const Params& params);
  Planned plan_compromise_key(const Request& req, const Caller& caller, const Params& params);
  // The planner of a route run later, or null.
  Planner planner_of(RouteId route) const;
  Response create_key(Request& req, const Caller& caller, const Params& params);
  Response list_keys(Request& req, const Caller&, const Params& params);
  Response get_key(Request& req, const Caller&, const Params& params);
  Response due_for_rotation(Request& req, const Caller&, const Params&);
  Response rotate_key(Request& req, const Caller& caller, const Params& params);
  Response revoke_key(Request& req, const Caller& caller, const Params& params);
  Response compromise_key(Request& req, const Caller& caller, const Params& params);

  // verification.cpp
  Response verify(Request& req, const Caller&, const Params&);
  Response forward_auth(Request&, const Caller& caller, const Params&);

  // self.cpp
  Response self(Request& req, const Caller& caller, const Params&);
  Response self_deliveries(Request& req, const Caller& caller, const Params&);

  // deliveries.cpp
  Response deliveries(const Request& req, std::string_view agent_id);
  Response agent_deliveries(Request& req, const Caller&, const Params& params);
  Response retry_delivery(Request& req, const Caller& caller, const Params& params);

  // audit.cpp
  Response audit(Request& req, const Caller&, const Params&);

  // leaks.cpp
  Response leaks(Request& req, const Caller& caller, const Params&);
  Response github_leaks(Request& req, const Caller&, const Params&);
  // `fixed_actor` replaces the actor leak:<source> of each item.
  Response report_leaks(const Request& req, std::optional<std::string> fixed_actor = std::nullopt);

  // usage.cpp
  Response usage_of(const Request& req, const std::vector<std::string>& key_ids);
  Response agent_usage_of(const Request& req, std::string_view agent_id);
  Response key_usage(Request& req, const Caller&, const Params& params);
  Response agent_usage(Request& req, const Caller&, const Params& params);
  Response self_usage(Request& req, const Caller& caller, const Params&);

  // documents.cpp
  Response openapi(Request& req, const Caller&, const Params&);
  Response dashboard(Request& req, const Caller&, const Params& params);
};

}  // namespace keyledger::api
