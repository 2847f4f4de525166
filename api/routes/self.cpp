#include "api/routes/impl.h"

namespace keyledger::api {

Response Api::Impl::self(Request& req, const Caller& caller, const Params&) {
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

Response Api::Impl::self_deliveries(Request& req, const Caller& caller, const Params&) {
  Response res = deliveries(req, caller.agent.entry->agent_id.view());
  set_ratelimit_headers(res, *caller.agent.tier, *caller.agent.ratelimit, caller.agent.at);
  return res;
}

}  // namespace keyledger::api
