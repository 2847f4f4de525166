#include "api/routes/impl.h"

namespace keyledger::api {

Api::Impl::Planned Api::Impl::plan_create_key(const Request& req, const Caller& caller,
                                              const Params& params) {
  return plan_from_body(req, {"label", "expires_in_seconds"}, [&](FieldReader& f) {
    CreateKey cmd{f.text("label"), f.integer("expires_in_seconds")};
    return AgentCommandPlan{
        params[0],
        false,
        actor_of(caller),
        [cmd](const AgentState& s, CommandContext& c) { return keyledger::create_key(s, cmd, c); },
        201,
        [this](const AgentState& agent, const Decision& d) {
          return Json{{"key", key_view(*agent.find_key(d.key_id))}, {"api_key", d.api_key}};
        }};
  });
}

Response Api::Impl::create_key(Request& req, const Caller& caller, const Params& params) {
  return idempotent(req, caller, [&](Replay& replay) {
    return run_plan(req, replay, plan_create_key(req, caller, params));
  });
}

Response Api::Impl::list_keys(Request& req, const Caller&, const Params& params) {
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

Response Api::Impl::get_key(Request& req, const Caller&, const Params& params) {
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

Response Api::Impl::due_for_rotation(Request& req, const Caller&, const Params&) {
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

Api::Impl::Planned Api::Impl::plan_rotate_key(const Request& req, const Caller& caller,
                                              const Params& params) {
  return plan_from_body(req, {"label", "old_key_expires_in_seconds"}, [&](FieldReader& f) {
    RotateKey cmd{params[0], f.text("label"), f.integer("old_key_expires_in_seconds")};
    return AgentCommandPlan{
        params[0],
        true,
        actor_of(caller),
        [cmd](const AgentState& s, CommandContext& c) { return keyledger::rotate_key(s, cmd, c); },
        201,
        [this, old_key = params[0]](const AgentState& agent, const Decision& d) {
          return Json{{"key", key_view(*agent.find_key(d.key_id))},
                      {"api_key", d.api_key},
                      {"previous", key_view(*agent.find_key(old_key))}};
        }};
  });
}

Api::Impl::Planned Api::Impl::plan_revoke_key(const Request& req, const Caller& caller,
                                              const Params& params) {
  return plan_from_body(req, {"reason"}, [&](FieldReader& f) {
    RevokeKey cmd{params[0], f.text("reason").value_or("")};
    return AgentCommandPlan{
        params[0],
        true,
        actor_of(caller),
        [cmd](const AgentState& s, CommandContext& c) { return keyledger::revoke_key(s, cmd, c); },
        200,
        [this, key_id = params[0]](const AgentState& agent, const Decision&) {
          return key_view(*agent.find_key(key_id));
        }};
  });
}

Api::Impl::Planned Api::Impl::plan_compromise_key(const Request& req, const Caller& caller,
                                                  const Params& params) {
  return plan_from_body(req, {"note", "source", "replace"}, [&](FieldReader& f) {
    ReportCompromise cmd{params[0], f.text("note").value_or(""), f.text("source").value_or(""),
                         f.boolean("replace").value_or(false)};
    return compromise_plan(actor_of(caller), cmd);
  });
}

Api::Impl::Planner Api::Impl::planner_of(RouteId route) const {
  switch (route) {
    case RouteId::kCreateKey:
      return &Impl::plan_create_key;
    case RouteId::kRotateKey:
      return &Impl::plan_rotate_key;
    case RouteId::kRevokeKey:
      return &Impl::plan_revoke_key;
    case RouteId::kCompromiseKey:
      return &Impl::plan_compromise_key;
    default:
      return nullptr;
  }
}

Response Api::Impl::rotate_key(Request& req, const Caller& caller, const Params& params) {
  return idempotent(req, caller, [&](Replay& replay) {
    return run_plan(req, replay, plan_rotate_key(req, caller, params));
  });
}

Response Api::Impl::revoke_key(Request& req, const Caller& caller, const Params& params) {
  return idempotent(req, caller, [&](Replay& replay) {
    return run_plan(req, replay, plan_revoke_key(req, caller, params));
  });
}

Response Api::Impl::compromise_key(Request& req, const Caller& caller, const Params& params) {
  return idempotent(req, caller, [&](Replay& replay) {
    return run_plan(req, replay, plan_compromise_key(req, caller, params));
  });
}

}  // namespace keyledger::api
