#include "support/checks.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include <cstdio>
#include <cstdlib>

#include "domain/agent.h"
#include "domain/service_tokens.h"

namespace keyledger::fuzz {

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Limits of api/openapi.yaml that events must respect (domain/agent.cpp keeps its own copies private).
constexpr std::size_t kMaxNameChars = 100;
constexpr std::size_t kMinDescriptionChars = 20;
constexpr std::size_t kMaxDescriptionChars = 2000;
constexpr std::size_t kMaxListItemChars = 64;
constexpr std::size_t kMaxOwnerIdChars = 128;
constexpr std::size_t kMaxWebhookUrlChars = 2048;
// A manage caller's actor is "<token name> (<X-Actor>)".
constexpr std::size_t kMaxComposedActorChars = kMaxTokenNameChars + 3 + kMaxActorChars;
constexpr std::string_view kProse = "\t\n\r";

void check_text(std::string_view field, std::string_view text, std::size_t min, std::size_t max,
                std::string_view allowed_controls = {}) {
  const std::string where = std::string(field) + " = \"" + printable(text) + "\"";
  FUZZ_CHECK(is_valid_utf8(text), "invalid UTF-8 in event field " + where);
  const std::size_t n = code_points(text);
  FUZZ_CHECK(n >= min && n <= max, "length " + std::to_string(n) + " outside " + std::to_string(min) + "…" +
                                       std::to_string(max) + " in event field " + where);
  FUZZ_CHECK(!has_control(text, allowed_controls), "control character in event field " + where);
}

bool strings_ok(const Message& message, std::string& bad_field) {
  const auto* descriptor = message.GetDescriptor();
  const auto* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) {
      const int n = reflection->FieldSize(message, field);
      for (int j = 0; j < n; ++j) {
        if (field->type() == FieldDescriptor::TYPE_STRING &&
            !is_valid_utf8(reflection->GetRepeatedString(message, field, j))) {
          bad_field = field->full_name();
          return false;
        }
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
            !strings_ok(reflection->GetRepeatedMessage(message, field, j), bad_field)) {
          return false;
        }
      }
      continue;
    }
    if (!reflection->HasField(message, field) && field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      continue;
    }
    if (field->type() == FieldDescriptor::TYPE_STRING &&
        !is_valid_utf8(reflection->GetString(message, field))) {
      bad_field = field->full_name();
      return false;
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
        !strings_ok(reflection->GetMessage(message, field), bad_field)) {
      return false;
    }
  }
  return true;
}

}  // namespace

void fail(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "\n==== property violated: %.*s\n", static_cast<int>(what.size()), what.data());
  if (!detail.empty()) {
    std::fprintf(stderr, "     %.*s\n", static_cast<int>(detail.size()), detail.data());
  }
  std::fflush(stderr);
  std::abort();
}

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (b0 < 0x80) {
      ++i;
      continue;
    } else if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      cp = b0 & 0x07;
    } else {
      return false;
    }
    if (text.size() - i < len) {
      return false;
    }
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      if ((b & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

std::size_t code_points(std::string_view text) {
  std::size_t n = 0;
  for (char c : text) {
    n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  }
  return n;
}

bool has_control(std::string_view text, std::string_view allowed) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if ((b < 0x20 || b == 0x7F) && allowed.find(text[i]) == std::string_view::npos) {
      return true;
    }
    // U+0080–U+009F are C2 80 … C2 9F.
    if (b == 0xC2 && i + 1 < text.size()) {
      const auto next = static_cast<unsigned char>(text[i + 1]);
      if (next >= 0x80 && next <= 0x9F) {
        return true;
      }
    }
  }
  return false;
}

std::string printable(std::string_view text) {
  constexpr std::size_t kMax = 300;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b >= 0x20 && b < 0x7F && b != '\\') {
      out += static_cast<char>(b);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", b);
      out += buf;
    }
  }
  if (text.size() > kMax) {
    out += "… (" + std::to_string(text.size()) + " bytes)";
  }
  return out;
}

bool strings_are_utf8(const google::protobuf::Message& message) {
  std::string ignored;
  return strings_ok(message, ignored);
}

std::string check_error_body(const http::Response& res, const std::string& request_id) {
  const auto body = api::Json::parse(res.body, nullptr, false);
  const std::string where = std::to_string(res.status) + " " + printable(res.body);
  FUZZ_CHECK(body.is_object() && body.contains("error") && body["error"].is_object(),
             "no error object: " + where);
  const auto& error = body["error"];
  FUZZ_CHECK(error.contains("code") && error["code"].is_string() && !error["code"].get<std::string>().empty(),
             "error without code: " + where);
  FUZZ_CHECK(error.contains("message") && error["message"].is_string() &&
                 !error["message"].get<std::string>().empty(),
             "error without message: " + where);
  FUZZ_CHECK(error.contains("request_id") && error["request_id"] == request_id, "error request_id: " + where);
  if (error.contains("details")) {
    FUZZ_CHECK(error["details"].is_array(), "details not an array: " + where);
  }
  return error["code"].get<std::string>();
}

bool known_bug(std::string_view id) {
  static const std::string known = [] {
    const char* env = std::getenv("KEYLEDGER_FUZZ_KNOWN_BUGS");
    return " " + std::string(env == nullptr ? "" : env) + " ";
  }();
  return known.find(" " + std::string(id) + " ") != std::string::npos;
}

api::Json check_response(const http::Response& res, const std::string& request_id, bool head) {
  static constexpr unsigned kStatuses[] = {200, 201, 202, 204, 400, 401, 403, 404,
                                           405, 409, 413, 415, 422, 429, 503};
  const std::string where = std::to_string(res.status) + " " + printable(res.body);
  FUZZ_CHECK(std::find(std::begin(kStatuses), std::end(kStatuses), res.status) != std::end(kStatuses),
             "status outside the contract: " + where);
  FUZZ_CHECK(res.headers.frameable(), "unframeable response header: " + where);
  api::Json body;
  if (head) {
    FUZZ_CHECK(res.body.empty(), "HEAD answered with a body: " + where);
    return body;
  }
  if (res.content_type == "application/json" && !res.body.empty()) {
    body = api::Json::parse(res.body, nullptr, false);
    FUZZ_CHECK(!body.is_discarded(), "response body is not JSON: " + where);
  }
  if (res.status >= 400) {
    check_error_body(res, request_id);
  }
  return body;
}

void check_appended_event(const v1::Event& event) {
  std::string bad_field;
  FUZZ_CHECK(strings_ok(event, bad_field), "invalid UTF-8 in appended event field " + bad_field + ": " +
                                               printable(event.ShortDebugString()));
  FUZZ_CHECK(!event.event_id().empty() && event.position() > 0 && event.stream_version() > 0,
             "incomplete envelope: " + printable(event.ShortDebugString()));
  FUZZ_CHECK(event.type() == event_type_name(event.payload_case()),
             "type does not match the payload: " + printable(event.ShortDebugString()));
  const bool leak = event.actor().starts_with("leak:");
  check_text("actor", event.actor(), 1, leak ? kMaxActorChars : kMaxComposedActorChars);
  switch (event.payload_case()) {
    case v1::Event::kAgentRegistered: {
      const auto& e = event.agent_registered();
      check_text("name", e.name(), 1, kMaxNameChars);
      check_text("description", e.description(), kMinDescriptionChars, kMaxDescriptionChars, kProse);
      FUZZ_CHECK(e.skills_size() >= 1 && e.skills_size() <= 50, "skills count");
      FUZZ_CHECK(e.languages_size() >= 1 && e.languages_size() <= 20, "languages count");
      for (const auto& s : e.skills()) {
        check_text("skills[]", s, 1, kMaxListItemChars);
      }
      for (const auto& s : e.languages()) {
        check_text("languages[]", s, 1, kMaxListItemChars);
      }
      check_text("webhook_url", e.webhook_url(), 0, kMaxWebhookUrlChars);
      check_text("owner_id", e.owner_id(), 0, kMaxOwnerIdChars);
      break;
    }
    case v1::Event::kKeyCreated:
      check_text("label", event.key_created().label(), 0, kMaxLabelChars);
      FUZZ_CHECK(event.key_created().digest().size() == 32, "digest size");
      break;
    case v1::Event::kKeyRevoked:
      check_text("note", event.key_revoked().note(), 0, kMaxRevocationReasonChars, kProse);
      break;
    case v1::Event::kKeyCompromised:
      check_text("note", event.key_compromised().note(), 0, kMaxCompromiseNoteChars, kProse);
      check_text("source", event.key_compromised().source(), 0, kMaxCompromiseSourceChars);
      break;
    case v1::Event::kServiceTokenCreated: {
      const auto& e = event.service_token_created();
      check_text("token name", e.name(), 1, kMaxTokenNameChars);
      FUZZ_CHECK(e.scopes_size() >= 1 && e.scopes_size() <= static_cast<int>(kScopes.size()), "scope count");
      for (const auto& s : e.scopes()) {
        FUZZ_CHECK(std::find(kScopes.begin(), kScopes.end(), s) != kScopes.end(),
                   "unknown scope " + printable(s));
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace keyledger::fuzz
