#include "api/routes/impl.h"

namespace keyledger::api {

Response Api::Impl::deliveries(const Request& req, std::string_view agent_id) {
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

Response Api::Impl::agent_deliveries(Request& req, const Caller&, const Params& params) {
  auto agent = ctx.projector.load_agent(params[0]);
  if (!agent.ok()) {
    return status_response(agent.status(), req.request_id);
  }
  return deliveries(req, params[0]);
}

Response Api::Impl::retry_delivery(Request& req, const Caller& caller, const Params& params) {
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

}  // namespace keyledger::api
