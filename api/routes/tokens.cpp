#include "api/routes/impl.h"

namespace keyledger::api {

Response Api::Impl::create_token(Request& req, const Caller& caller, const Params&) {
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

Response Api::Impl::list_tokens(Request&, const Caller&, const Params&) {
  Json tokens = Json::array();
  for (const auto& t : ctx.projector.tokens().list()) {
    tokens.push_back(token_json(t));
  }
  return json_response(200, {{"tokens", tokens}});
}

Response Api::Impl::token_self(Request&, const Caller& caller, const Params&) {
  // The token as authenticated: active, and without its digest or secret (token_json).
  return json_response(200, token_json(caller.token));
}

Response Api::Impl::revoke_token(Request& req, const Caller& caller, const Params& params) {
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

}  // namespace keyledger::api
