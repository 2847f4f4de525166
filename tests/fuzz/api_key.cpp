// The key format check and the verify path (api/openapi.yaml, README "Design decisions"):
// is_well_formed_api_key against an independent reading of ^cg_[0-9a-f]{32}$, the hint of a
// well-formed key, the service-token format, the bearer credential as the server reads it, and
// Verifier::verify over a real ActiveKeyTable holding five obviously fake keys in every
// condition (active, revoked, expired, compromised, on the elevated tier): a malformed key is
// MALFORMED, an unknown one NOT_FOUND, a known one answers its condition with its own entry.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "api/rate_limiter.h"
#include "api/verifier.h"
#include "api/auth.h"
#include "api/json_body.h"
#include "api/operations.h"
#include "api/verify_responses.h"
#include "domain/events.h"
#include "domain/key_material.h"
#include "projections/active_key_table.h"
#include "support/checks.h"

namespace keyledger::fuzz {
namespace {

using api::VerifyCode;

constexpr std::string_view kAgentId = "agt_00000000000000000000fa11";
constexpr std::string_view kEllipsis = "\u2026";

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool reference_api_key(std::string_view s) {
  if (s.size() != 35 || s.substr(0, 3) != "cg_") {
    return false;
  }
  for (char c : s.substr(3)) {
    if (!is_lower_hex(c)) {
      return false;
    }
  }
  return true;
}

bool reference_service_token(std::string_view s) {
  if (s.size() < 4 + 43 || s.substr(0, 4) != "kls_") {
    return false;
  }
  for (char c : s.substr(4)) {
    const bool url_safe =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!url_safe) {
      return false;
    }
  }
  return true;
}

TimePoint epoch() {
  using namespace std::chrono;
  return sys_days{year{2026} / November / 26} + hours{10};
}

Pepper fixed_pepper() {
  std::array<std::uint8_t, Pepper::kSize> bytes{};
  bytes.fill(0x42);
  return Pepper(bytes);
}

struct Known {
  std::string key_id;
  VerifyCode code;
};

class Keys {
 public:
  Keys() : clock_(epoch()), hasher_(fixed_pepper()), table_({"standard", "elevated"}) {
    if (!crypto_init()) {
      fail("libsodium cannot be initialised");
    }
    std::uint64_t version = 0;
    const auto event = [&](auto fill) {
      v1::Event e;
      e.set_event_id("00000000-0000-4000-8000-" + std::to_string(100000000000 + version));
      e.set_stream(agent_stream(kAgentId));
      e.set_position(++version);
      e.set_stream_version(version);
      *e.mutable_occurred_at() = to_timestamp(epoch() - std::chrono::hours(1));
      fill(e);
      table_.apply(e);
    };
    event([](v1::Event& e) {
      auto* p = e.mutable_agent_registered();
      p->set_agent_id(std::string(kAgentId));
      p->set_rate_limit_tier("standard");
    });
    const auto create = [&](std::string_view key, std::string_view key_id, VerifyCode code,
                            std::optional<TimePoint> expires) {
      event([&](v1::Event& e) {
        auto* p = e.mutable_key_created();
        p->set_agent_id(std::string(kAgentId));
        p->set_key_id(std::string(key_id));
        const Digest d = hasher_.digest(key);
        p->set_digest(d.data(), d.size());
        p->set_hint(api_key_hint(key));
        p->set_environment(v1::ENVIRONMENT_PRODUCTION);
        if (expires) {
          *p->mutable_expires_at() = to_timestamp(*expires);
        }
      });
      known_[std::string(key)] = {std::string(key_id), code};
    };
    create("cg_0000000000000000000000000000a001", "key_00000000000000000000a001", VerifyCode::kValid, {});
    create("cg_0000000000000000000000000000a002", "key_00000000000000000000a002", VerifyCode::kRevoked, {});
    create("cg_0000000000000000000000000000a003", "key_00000000000000000000a003", VerifyCode::kExpired,
           epoch() - std::chrono::minutes(1));
    create("cg_0000000000000000000000000000a004", "key_00000000000000000000a004", VerifyCode::kCompromised,
           {});
    create("cg_0000000000000000000000000000a005", "key_00000000000000000000a005", VerifyCode::kValid,
           epoch() + std::chrono::hours(24 * 365 * 50));
    event([](v1::Event& e) {
      auto* p = e.mutable_key_revoked();
      p->set_agent_id(std::string(kAgentId));
      p->set_key_id("key_00000000000000000000a002");
      p->set_reason(v1::REVOCATION_REASON_MANUAL);
    });
    event([](v1::Event& e) {
      auto* p = e.mutable_key_compromised();
      p->set_agent_id(std::string(kAgentId));
      p->set_key_id("key_00000000000000000000a004");
      p->set_was_active(true);
    });
    verifier_ = std::make_unique<api::Verifier>(table_, hasher_, api::default_tiers(), clock_);
  }

  void check(std::string_view s) {
    // A second of refill per input: an active key is never rate limited at cost 1.
    clock_.advance(std::chrono::seconds(1));
    const bool well_formed = is_well_formed_api_key(s);
    FUZZ_CHECK(well_formed == reference_api_key(s), "is_well_formed_api_key disagrees: " + printable(s));
    if (well_formed) {
      const std::string hint = api_key_hint(s);
      const std::string expected = std::string("cg_") + std::string(s.substr(3, 4)) + std::string(kEllipsis) +
                                   std::string(s.substr(31, 4));
      FUZZ_CHECK(hint == expected, "hint " + printable(hint) + " of " + printable(s));
      FUZZ_CHECK(is_valid_utf8(hint), "hint is not UTF-8");
    }
    FUZZ_CHECK(is_well_formed_service_token(s) == reference_service_token(s),
               "is_well_formed_service_token disagrees: " + printable(s));
    if (reference_service_token(s)) {
      const std::string hint = service_token_hint(s);
      FUZZ_CHECK(hint.starts_with("kls_") && hint.size() == 4 + 8 + kEllipsis.size() &&
                     hint.find(s.substr(4)) == std::string::npos,
                 "service token hint " + printable(hint));
    }

    for (const std::uint32_t cost : {1U, 0U}) {
      const api::VerifyOutcome out = verifier_->verify(s, cost);
      const auto it = known_.find(std::string(s));
      const std::string where = printable(s) + " -> " + std::string(api::verify_code_name(out.code));
      if (!well_formed) {
        FUZZ_CHECK(out.code == VerifyCode::kMalformed && !out.entry && !out.ratelimit, where);
      } else if (it == known_.end()) {
        FUZZ_CHECK(out.code == VerifyCode::kNotFound && !out.entry && !out.ratelimit, where);
      } else {
        FUZZ_CHECK(out.code == it->second.code, where);
        FUZZ_CHECK(out.entry && out.entry->key_id.view() == it->second.key_id &&
                       out.entry->agent_id.view() == kAgentId,
                   "entry of " + where);
        if (out.code == VerifyCode::kValid) {
          FUZZ_CHECK(out.ratelimit && out.ratelimit->allowed && out.tier != nullptr &&
                         out.ratelimit->remaining <= out.ratelimit->limit,
                     "rate limit of " + where);
        }
      }
    }

    // The credential as the server reads it from Authorization (a header value the parser
    // accepted: no CR, LF or NUL) and as GET /v1/auth takes it.
    if (http::frameable(s)) {
      http::Request req;
      req.headers.add_folded("authorization", "Bearer " + std::string(s));
      const auto credential = api::bearer_credential(req);
      std::string_view trimmed = s;
      while (!trimmed.empty() && trimmed.front() == ' ') {
        trimmed.remove_prefix(1);
      }
      while (!trimmed.empty() && trimmed.back() == ' ') {
        trimmed.remove_suffix(1);
      }
      FUZZ_CHECK(credential && *credential == trimmed, "bearer credential of " + printable(s));
      const auto presented = api::presented_api_key(req);
      FUZZ_CHECK(presented && *presented == trimmed, "presented key of " + printable(s));
    }
  }

 private:
  ManualClock clock_;
  KeyHasher hasher_;
  ActiveKeyTable table_;
  std::unique_ptr<api::Verifier> verifier_;
  std::map<std::string, Known> known_;
};

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto* keys = new keyledger::fuzz::Keys();
  keys->check(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
