#include "api/routes/impl.h"

namespace keyledger::api {

std::variant<AgentProfile, Response> Api::Impl::registration(const Request& req) const {
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
    return error_response(422, "validation_failed", "the agent profile breaks field rules", req.request_id,
                          details);
  }
  return profile;
}

Response Api::Impl::registered(const AgentState& agent, const Decision& decision) const {
  Json created = agent_json(agent, now());
  created.erase("active_key_count");
  created["webhook_secret"] = decision.webhook_secret;
  return json_response(201, created);
}

Response Api::Impl::register_agent(Request& req, const Caller& caller, const Params&) {
  return idempotent(req, caller, [&](Replay& replay) {
    auto profile = registration(req);
    if (auto* bad = std::get_if<Response>(&profile)) {
      return std::move(*bad);
    }
    Response out;
    auto decision = ctx.commands.register_agent(std::get<AgentProfile>(profile), actor_of(caller),
                                                [&](const AgentState& agent, const Decision& d) {
                                                  out = registered(agent, d);
                                                  return replay.keep(out);
                                                });
    if (!decision.ok()) {
      return status_response(decision.status(), req.request_id);
    }
    return out;
  });
}

void Api::Impl::register_agent_later(Request& req, const Caller& caller, const Reply& reply) {
  auto profile = registration(req);
  if (auto* bad = std::get_if<Response>(&profile)) {
    return reply(std::move(*bad));
  }
  auto out = std::make_shared<Response>();
  ctx.commands.register_agent_async(
      std::get<AgentProfile>(profile), actor_of(caller),
      [&](const AgentState& agent, const Decision& d) {
        *out = registered(agent, d);
        return std::vector<SideWrite>{};  // no Idempotency-Key (execution() sends those to the workers)
      },
      [out, reply, request_id = req.request_id](Result<Decision> decision) {
        reply(decision.ok() ? std::move(*out) : status_response(decision.status(), request_id));
      });
}

Response Api::Impl::get_agent(Request& req, const Caller&, const Params& params) {
  auto agent = ctx.projector.load_agent(params[0]);
  if (!agent.ok()) {
    return status_response(agent.status(), req.request_id);
  }
  return json_response(200, agent_json(*agent, now()));
}

Response Api::Impl::set_tier(Request& req, const Caller& caller, const Params& params) {
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

}  // namespace keyledger::api
