#include "api/views.h"

#include <google/protobuf/util/json_util.h>

namespace keyledger::api {

namespace {

Json nullable(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

// Enum values as the contract spells them: ENVIRONMENT_STAGING -> staging.
std::string enum_word(const std::string& value, std::string_view prefix) {
  if (value.rfind(prefix, 0) != 0) {
    return value;
  }
  std::string word = value.substr(prefix.size());
  for (auto& c : word) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return word;
}

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

Json event_data_json(const v1::Event& event) {
  const google::protobuf::Message* payload = nullptr;
  switch (event.payload_case()) {
    case v1::Event::kAgentRegistered: payload = &event.agent_registered(); break;
    case v1::Event::kRateLimitTierChanged: payload = &event.rate_limit_tier_changed(); break;
    case v1::Event::kKeyCreated: payload = &event.key_created(); break;
    case v1::Event::kKeyRotated: payload = &event.key_rotated(); break;
    case v1::Event::kKeyRevoked: payload = &event.key_revoked(); break;
    case v1::Event::kKeyExpired: payload = &event.key_expired(); break;
    case v1::Event::kKeyCompromised: payload = &event.key_compromised(); break;
    case v1::Event::kWebhookDeliveryRecorded: payload = &event.webhook_delivery_recorded(); break;
    case v1::Event::kServiceTokenCreated: payload = &event.service_token_created(); break;
    case v1::Event::kServiceTokenRevoked: payload = &event.service_token_revoked(); break;
    case v1::Event::PAYLOAD_NOT_SET: return Json::object();
  }
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(*payload, &text, options).ok()) {
    return Json::object();
  }
  Json data = Json::parse(text, nullptr, false);
  if (data.is_discarded()) {
    return Json::object();
  }
  data.erase("digest");
  data.erase("webhook_secret");
  if (data.contains("environment") && data["environment"].is_string()) {
    data["environment"] = enum_word(data["environment"], "ENVIRONMENT_");
  }
  if (data.contains("reason") && data["reason"].is_string()) {
    data["reason"] = enum_word(data["reason"], "REVOCATION_REASON_");
  }
  return data;
}

Json audit_event_json(const v1::Event& event) {
  return Json{
      {"position", event.position()},
      {"event_id", event.event_id()},
      {"type", event.type()},
      {"agent_id", nullable(event_agent_id(event))},
      {"key_id", nullable(event_key_id(event))},
      {"actor", event.actor()},
      {"occurred_at", format_rfc3339(from_timestamp(event.occurred_at()))},
      {"data", event_data_json(event)},
  };
}

}  // namespace keyledger::api
