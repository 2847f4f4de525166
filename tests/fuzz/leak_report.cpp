// The leak report parser (POST /v1/leaks, GitHub secret-scanning format) through the real
// handler. The input is the body; `@KEY@` becomes a live agent key, so reports really revoke.
//
// Checked: a leak report never fails for cosmetic reasons (api/openapi.yaml): a JSON array of at most
// 100 objects holding only token/type/url/source, each a string or null and the token non-empty,
// is answered 200 whatever the texts hold; a 200 answers every item, in order, with the SHA-256
// of its token, a label and result of the contract, "revoked" only for a well-formed key that
// now answers COMPROMISED; the events appended (support/checks.h) are valid UTF-8, the actor
// "leak:<source>" at most 128 characters and the source at most 200.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "domain/key_material.h"
#include "support/checks.h"
#include "support/world.h"

namespace keyledger::fuzz {
namespace {

using api::Json;

constexpr std::size_t kMaxItems = 100;

// Whether the contract promises a 200 for this body.
bool must_succeed(const Json& body) {
  if (!body.is_array() || body.size() > kMaxItems) {
    return false;
  }
  static const std::set<std::string> kFields = {"token", "type", "url", "source"};
  for (const auto& item : body) {
    if (!item.is_object()) {
      return false;
    }
    for (const auto& [name, value] : item.items()) {
      if (kFields.count(name) == 0 || !(value.is_string() || value.is_null())) {
        return false;
      }
    }
    if (!item.contains("token") || !item["token"].is_string() || item["token"].get<std::string>().empty()) {
      return false;
    }
  }
  return true;
}

struct Harness {
  World& world = World::get();
  std::string agent_id = world.register_agent();
  World::IssuedKey key = world.create_key(agent_id);

  void run(std::string_view input) {
    if (world.verifier().verify(key.api_key, 0).code != api::VerifyCode::kValid) {
      key = world.create_key(agent_id);
    }
    std::string body(input);
    for (std::size_t at = body.find("@KEY@"); at != std::string::npos; at = body.find("@KEY@", at)) {
      body.replace(at, 5, key.api_key);
    }
    world.take_appended();
    const auto res = world.call({"POST", "/v1/leaks", body, world.scanner, {}, true});
    const std::string where =
        std::to_string(res->status) + " " + printable(res->body) + " for " + printable(body);
    const Json sent = body.empty() ? Json::array() : Json::parse(body, nullptr, false);
    if (must_succeed(sent)) {
      FUZZ_CHECK(res->status == 200, "a well-formed report was refused: " + where);
    }
    if (res->status != 200) {
      FUZZ_CHECK(world.take_appended().empty(), "a refused report appended events: " + where);
      return;
    }
    const Json out = Json::parse(res->body);
    FUZZ_CHECK(out.is_array() && sent.is_array() && out.size() == sent.size(),
               "one result per item: " + where);
    for (std::size_t i = 0; i < out.size(); ++i) {
      const Json& r = out[i];
      const std::string token = sent[i]["token"].get<std::string>();
      FUZZ_CHECK(r["token_hash"] == sha256_hex(token), "token_hash: " + where);
      const std::string result = r["result"].get<std::string>();
      const std::string label = r["label"].get<std::string>();
      FUZZ_CHECK(
          result == "malformed" || result == "unknown" || result == "revoked" || result == "already_inactive",
          "result: " + where);
      FUZZ_CHECK(label == (result == "malformed" || result == "unknown" ? "false_positive" : "true_positive"),
                 "label: " + where);
      FUZZ_CHECK((result == "malformed") == !is_well_formed_api_key(token), "malformed: " + where);
      if (result == "revoked") {
        FUZZ_CHECK(world.verifier().verify(token, 0).code == api::VerifyCode::kCompromised,
                   "a revoked leak still verifies: " + where);
      }
    }
  }
};

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto* harness = new keyledger::fuzz::Harness();
  harness->run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
