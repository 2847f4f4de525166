#include "api/views.h"

namespace keyledger::api {

namespace {

Json nullable(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

}  // namespace

Json time_json(const std::optional<TimePoint>& t) { return t ? Json(format_rfc3339(*t)) : Json(nullptr); }

Json key_json(const KeyState& key, TimePoint now, std::optional<TimePoint> last_used) {
  return Json{
      {"key_id", key.key_id},
      {"agent_id", key.agent_id},
      {"label", nullable(key.label)},
      {"hint", key.hint},
      {"status", key_status_name(key.status_at(now))},
      {"environment", environment_name(key.environment)},
      {"created_at", format_rfc3339(key.created_at)},
      {"expires_at", time_json(key.expires_at)},
      {"revoked_at", time_json(key.revoked_at)},
      {"revocation_reason",
       key.revocation_reason == v1::REVOCATION_REASON_UNSPECIFIED && key.status_at(now) == KeyStatus::kExpired
           ? Json("expired")
           : nullable(std::string(revocation_reason_name(key.revocation_reason)))},
      {"rotated_from", nullable(key.rotated_from)},
      {"rotated_to", nullable(key.rotated_to)},
      {"compromised_at", time_json(key.compromised_at)},
      {"last_used_at", time_json(last_used)},
  };
}

Json agent_json(const AgentState& agent, TimePoint now) {
  const AgentProfile& p = agent.profile;
  return Json{
      {"agent_id", agent.agent_id},
      {"name", p.name},
      {"description", p.description},
      {"skills", p.skills},
      {"languages", p.languages},
      {"webhook_url", p.webhook_url},
      {"environment", environment_name(p.environment)},
      {"owner_id", nullable(p.owner_id)},
      {"rate_limit_tier", agent.rate_limit_tier},
      {"created_at", format_rfc3339(agent.created_at)},
      {"active_key_count", agent.active_key_count(now)},
  };
}

Json token_json(const ServiceTokenState& token) {
  return Json{
      {"token_id", token.token_id},
      {"name", token.name},
      {"scopes", token.scopes},
      {"hint", token.hint},
      {"status", token.active() ? "active" : "revoked"},
      {"created_at", format_rfc3339(token.created_at)},
      {"revoked_at", time_json(token.revoked_at)},
  };
}

}  // namespace keyledger::api
