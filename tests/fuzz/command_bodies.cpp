// Every JSON command body, through the real handlers (Api::handle over a real event store,
// no sockets). An input is `<route>\n<body>`: the first line names the route (register,
// tier, create_key, rotate, revoke, compromise, create_token, revoke_token, verify, retry; any
// other text picks one by its bytes), the rest is the body sent with Content-Type
// application/json. `@KEY@` in the body becomes a live agent key and `@AGENT@` the agent's id.
// A line `X-Actor: …` right after the route line is sent as that header (manage routes).
//
// Checked for every answer (support/checks.h): a status of the contract, never a 500, a JSON
// body, the error shape; every event appended is valid UTF-8 within the contract's limits.
// And per route, on success: ids and secrets well formed, the key answers as the command left
// it (created and rotated keys VALID, a revoked key REVOKED, a compromised one COMPROMISED),
// the label as sent; a body the handler refuses appends no event.
#include <cstddef>
#include <cstdint>
#include <string>

#include "domain/ids.h"
#include "domain/key_material.h"
#include "support/checks.h"
#include "support/world.h"

namespace keyledger::fuzz {
namespace {

using api::Json;
using api::VerifyCode;

enum class Route {
  kRegister,
  kTier,
  kCreateKey,
  kRotate,
  kRevoke,
  kCompromise,
  kCreateToken,
  kRevokeToken,
  kVerify,
  kRetry,
  kCount
};

constexpr std::string_view kRouteNames[] = {"register",   "tier",         "create_key",   "rotate", "revoke",
                                            "compromise", "create_token", "revoke_token", "verify", "retry"};

Route route_of(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kRouteNames); ++i) {
    if (name == kRouteNames[i]) {
      return static_cast<Route>(i);
    }
  }
  std::size_t h = 0;
  for (char c : name) {
    h = h * 31 + static_cast<unsigned char>(c);
  }
  return static_cast<Route>(h % static_cast<std::size_t>(Route::kCount));
}

void replace_all(std::string& text, std::string_view from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

struct Harness {
  World& world = World::get();
  std::string agent_id = world.register_agent();
  World::IssuedKey victim = world.create_key(agent_id);  // the key the key routes act on
  std::string token_id;                                  // a token revoke_token acts on

  std::string victim_code() {
    return std::string(api::verify_code_name(world.verifier().verify(victim.api_key, 0).code));
  }

  void run(std::string_view input) {
    const std::size_t eol = input.find('\n');
    const Route route = route_of(input.substr(0, eol));
    std::string body(eol == std::string_view::npos ? std::string_view{} : input.substr(eol + 1));
    std::vector<std::pair<std::string, std::string>> headers;
    if (body.starts_with("X-Actor: ")) {
      const std::size_t end = body.find('\n');
      headers.emplace_back("X-Actor", body.substr(9, end == std::string::npos ? std::string::npos : end - 9));
      body = end == std::string::npos ? std::string() : body.substr(end + 1);
      if (!http::frameable(headers.back().second)) {
        return;  // the parser refuses such a header before any handler sees it
      }
    }
    if (victim_code() != "VALID") {
      victim = world.create_key(agent_id);
    }
    replace_all(body, "@KEY@", victim.api_key);
    replace_all(body, "@AGENT@", agent_id);
    if (route == Route::kRevokeToken && token_id.empty()) {
      token_id = create_token();
    }
    world.take_appended();

    World::Call call{"POST", "", body, world.manage, headers, true};
    switch (route) {
      case Route::kRegister:
        call.target = "/v1/agents";
        break;
      case Route::kTier:
        call.method = "PUT";
        call.target = "/v1/agents/" + agent_id + "/rate-limit";
        break;
      case Route::kCreateKey:
        call.target = "/v1/agents/" + agent_id + "/keys";
        break;
      case Route::kRotate:
        call.target = "/v1/keys/" + victim.key_id + "/rotate";
        break;
      case Route::kRevoke:
        call.target = "/v1/keys/" + victim.key_id + "/revoke";
        break;
      case Route::kCompromise:
        call.target = "/v1/keys/" + victim.key_id + "/compromise";
        break;
      case Route::kCreateToken:
        call.target = "/v1/tokens";
        call.credential = world.admin;
        break;
      case Route::kRevokeToken:
        call.target = "/v1/tokens/" + token_id + "/revoke";
        call.credential = world.admin;
        break;
      case Route::kVerify:
        call.target = "/v1/verify";
        call.credential = world.gateway;
        break;
      case Route::kRetry:
        call.target =
            "/v1/agents/" + agent_id + "/webhook-deliveries/00000000-0000-4000-8000-000000000000/retry";
        break;
      case Route::kCount:
        return;
    }
    const auto res = world.call(call);
    if (!res) {
      return;
    }
    const Json out = Json::parse(res->body, nullptr, false);
    const auto appended = world.take_appended();
    const std::string where = std::string(kRouteNames[static_cast<int>(route)]) + " " +
                              std::to_string(res->status) + " " + printable(res->body);
    if (res->status >= 400) {
      FUZZ_CHECK(appended.empty(), "a refused command appended events: " + where);
      if (res->status == 409 && out["error"]["code"] == "too_many_active_keys") {
        agent_id = world.register_agent();  // a full agent would refuse every later key
        victim = world.create_key(agent_id);
      }
      return;
    }
    const Json sent = Json::parse(body, nullptr, false);
    switch (route) {
      case Route::kRegister:
        FUZZ_CHECK(res->status == 201 &&
                       is_well_formed_id(out["agent_id"].get<std::string>(), kAgentIdPrefix) &&
                       out["webhook_secret"].get<std::string>().starts_with("whsec_"),
                   where);
        break;
      case Route::kCreateKey:
      case Route::kRotate: {
        FUZZ_CHECK(res->status == 201, where);
        const std::string api_key = out["api_key"].get<std::string>();
        FUZZ_CHECK(is_well_formed_api_key(api_key) && out["key"]["hint"] == api_key_hint(api_key) &&
                       is_well_formed_id(out["key"]["key_id"].get<std::string>(), kKeyIdPrefix),
                   where);
        FUZZ_CHECK(world.verifier().verify(api_key, 0).code == VerifyCode::kValid,
                   "new key not valid: " + where);
        if (sent.is_object() && sent.contains("label") && sent["label"].is_string()) {
          FUZZ_CHECK(out["key"]["label"] == sent["label"], "label changed: " + where);
        }
        break;
      }
      case Route::kRevoke:
        FUZZ_CHECK(victim_code() == "REVOKED", "revoked key answers " + victim_code() + ": " + where);
        break;
      case Route::kCompromise:
        FUZZ_CHECK(victim_code() == "COMPROMISED", "compromised key answers " + victim_code() + ": " + where);
        if (out.contains("replacement")) {
          const std::string api_key = out["replacement"]["api_key"].get<std::string>();
          FUZZ_CHECK(world.verifier().verify(api_key, 0).code == VerifyCode::kValid, "replacement: " + where);
        }
        break;
      case Route::kCreateToken:
        FUZZ_CHECK(res->status == 201 && is_well_formed_service_token(out["token"].get<std::string>()) &&
                       is_well_formed_id(out["token_id"].get<std::string>(), kTokenIdPrefix),
                   where);
        break;
      case Route::kRevokeToken:
        token_id.clear();
        break;
      case Route::kVerify: {
        FUZZ_CHECK(res->status == 200 && appended.empty(), where);
        FUZZ_CHECK(out["valid"].is_boolean() && out["code"].is_string(), where);
        const bool valid = out["valid"].get<bool>();
        FUZZ_CHECK(valid == (out["code"] == "VALID"), where);
        if (sent.is_object() && sent.contains("api_key") && sent["api_key"].is_string() &&
            !is_well_formed_api_key(sent["api_key"].get<std::string>())) {
          FUZZ_CHECK(out["code"] == "MALFORMED", where);
        }
        break;
      }
      case Route::kTier:
      case Route::kRetry:
      case Route::kCount:
        break;
    }
  }

  std::string create_token() {
    const auto res = world.call(
        {"POST", "/v1/tokens", R"({"name": "disposable", "scopes": ["verify"]})", world.admin, {}, true});
    if (!res || res->status != 201) {
      fail("cannot create a token", res ? res->body : "");
    }
    return Json::parse(res->body)["token_id"].get<std::string>();
  }
};

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto* harness = new keyledger::fuzz::Harness();
  harness->run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
