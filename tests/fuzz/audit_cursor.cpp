// The audit cursor decoder and the audit query (GET /v1/audit) through the real handler, over a
// log with a few agents, keys, rotations, revocations and compromises. The input is the query
// string (what follows `?`); a target the server would refuse (http::parse_target) is skipped.
//
// Checked: the answer is 200 or 422 (never anything else for a query, never a 500); a 422
// names only the parameters that were sent; a 200 holds at most `limit` events in the asked
// order, each matching the filters; its next_cursor, sent back with the same query, is accepted
// and continues past the page. A cursor built here for a position the input picks ("d:<n>" or
// "a:<n>", base64url without padding) is always accepted, and the page holds only positions
// past it.
#include <sodium.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "support/checks.h"
#include "support/world.h"

namespace keyledger::fuzz {
namespace {

using api::Json;

std::string cursor_for(bool descending, std::uint64_t position) {
  const std::string raw = (descending ? "d:" : "a:") + std::to_string(position);
  std::string out(sodium_base64_encoded_len(raw.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(out.find('\0'));
  return out;
}

struct Harness {
  World& world = World::get();

  Harness() {
    for (int a = 0; a < 3; ++a) {
      std::string agent = world.register_agent();
      auto k1 = world.create_key(agent);
      auto k2 = world.create_key(agent);
      world.call({"POST", "/v1/keys/" + k1.key_id + "/rotate", "", world.manage, {}, true});
      world.call(
          {"POST", "/v1/keys/" + k2.key_id + "/revoke", R"({"reason": "fuzz"})", world.manage, {}, true});
      world.call({"POST", "/v1/keys/" + k1.key_id + "/compromise", "", world.manage, {}, true});
    }
  }

  // The page of `target`, checked against the query; positions in answer order.
  std::vector<std::uint64_t> page(const std::string& target, const std::string& where, Json* out_body) {
    const auto res = world.call({"GET", target, "", world.auditor, {}, false});
    FUZZ_CHECK(res->status == 200, "follow-up refused: " + std::to_string(res->status) + " " +
                                       printable(res->body) + " " + where);
    *out_body = Json::parse(res->body);
    std::vector<std::uint64_t> positions;
    for (const auto& e : (*out_body)["events"]) {
      positions.push_back(e["position"].get<std::uint64_t>());
    }
    return positions;
  }

  void run(std::string_view input) {
    const std::string target = "/v1/audit?" + std::string(input);
    http::Request parsed;
    if (!http::parse_target(target, parsed.path, parsed.query)) {
      return;
    }
    const auto res = world.call({"GET", target, "", world.auditor, {}, false});
    const std::string where =
        std::to_string(res->status) + " " + printable(res->body) + " for " + printable(target);
    FUZZ_CHECK(res->status == 200 || res->status == 422, where);
    const Json out = Json::parse(res->body);
    const auto& q = parsed.query;
    if (res->status == 422) {
      // Error bodies replace invalid UTF-8 with U+FFFD (api/errors.cpp): compare names alike.
      std::set<std::string> sent;
      for (const auto& [name, value] : q) {
        sent.insert(
            Json::parse(Json(name).dump(-1, ' ', false, Json::error_handler_t::replace)).get<std::string>());
      }
      for (const auto& d : out["error"]["details"]) {
        FUZZ_CHECK(sent.count(d["field"].get<std::string>()) == 1,
                   "detail names no parameter sent: " + where);
      }
    } else {
      const bool descending = q.count("order") == 1 && q.at("order") == "desc";
      const std::size_t limit = q.count("limit") == 1 ? std::stoul(q.at("limit")) : 100;
      FUZZ_CHECK(out["events"].size() <= limit, "more events than the limit: " + where);
      std::vector<std::uint64_t> positions;
      for (const auto& e : out["events"]) {
        positions.push_back(e["position"].get<std::uint64_t>());
        for (const char* filter : {"agent_id", "key_id", "type", "actor"}) {
          if (q.count(filter) == 1) {
            FUZZ_CHECK(e[filter] == q.at(filter), std::string("filter ") + filter + ": " + where);
          }
        }
      }
      for (std::size_t i = 1; i < positions.size(); ++i) {
        FUZZ_CHECK(descending ? positions[i] < positions[i - 1] : positions[i] > positions[i - 1],
                   "order: " + where);
      }
      if (out.contains("next_cursor")) {
        FUZZ_CHECK(!positions.empty(), "a cursor after an empty page: " + where);
        std::string next =
            target.substr(0, target.find('?') + 1) + "cursor=" + out["next_cursor"].get<std::string>();
        for (const auto& [name, value] : q) {
          if (name != "cursor") {
            next += "&" + name + "=" + percent_encode(value);
          }
        }
        Json follow;
        for (const std::uint64_t p : page(next, where, &follow)) {
          FUZZ_CHECK(descending ? p < positions.back() : p > positions.back(),
                     "next page overlaps: " + where);
        }
      }
    }

    // A cursor this API could have returned, for a position the input picks.
    std::uint64_t position = 0;
    for (char c : input) {
      position = position * 131 + static_cast<unsigned char>(c);
    }
    position %= 64;
    for (const bool descending : {true, false}) {
      const std::string made = std::string("/v1/audit?order=") + (descending ? "desc" : "asc") +
                               "&cursor=" + cursor_for(descending, position);
      Json body;
      for (const std::uint64_t p : page(made, "made cursor " + made, &body)) {
        FUZZ_CHECK(descending ? p < position : p > position, "page not past the cursor: " + made);
      }
    }
  }

  static std::string percent_encode(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        out += static_cast<char>(c);
      } else {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        out += buf;
      }
    }
    return out;
  }
};

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto* harness = new keyledger::fuzz::Harness();
  harness->run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
