#include "api/routes/impl.h"

namespace keyledger::api {

Response Api::Impl::audit(Request& req, const Caller&, const Params&) {
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

}  // namespace keyledger::api
