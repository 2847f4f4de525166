#include "domain/event_json.h"

#include <google/protobuf/util/json_util.h>

#include <cctype>

namespace keyledger {

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

}  // namespace keyledger
