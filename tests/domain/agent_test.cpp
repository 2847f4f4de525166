#include "domain/agent.h"

#include <catch2/catch.hpp>
#include <regex>
#include <sstream>

#include "domain/ids.h"
#include "domain/domain_fixture.h"

namespace keyledger {
namespace {

using namespace std::chrono_literals;
using testing::DomainWorld;
using testing::error_fields;
using testing::has_field_error;
using testing::valid_profile;

constexpr std::int64_t kDay = 24 * 3600;

void check_envelope(const v1::Event& e, const std::string& stream, TimePoint now, const std::string& actor,
                    std::string_view type) {
  CHECK(std::regex_match(
      e.event_id(), std::regex("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")));
  CHECK(e.stream() == stream);
  CHECK(from_timestamp(e.occurred_at()) == now);
  CHECK(e.actor() == actor);
  CHECK(e.type() == type);
  CHECK(e.position() == 0);        // assigned by the event store
  CHECK(e.stream_version() == 0);  // assigned by the event store
}

// Everything a fold produces, as text, so two states can be compared whole.
std::string fingerprint(const AgentState& s) {
  std::ostringstream out;
  auto tp = [](std::optional<TimePoint> t) {
    return t ? format_rfc3339(*t) + "/" + std::to_string(t->time_since_epoch().count()) : "-";
  };
  out << s.agent_id << '|' << s.profile.name << '|' << s.profile.description << '|' << s.profile.webhook_url
      << '|' << s.profile.environment << '|' << s.profile.owner_id << '|' << s.rate_limit_tier << '|'
      << s.webhook_secret.SerializeAsString().size() << '|' << to_hex(s.webhook_secret.nonce()) << '|'
      << tp(s.created_at) << '|' << s.version << '\n';
  for (const auto& v : {s.profile.skills, s.profile.languages}) {
    for (const auto& item : v) {
      out << item << ',';
    }
    out << '\n';
  }
  for (const KeyState& k : s.keys) {
    out << k.key_id << '|' << k.agent_id << '|' << k.label << '|' << k.hint << '|' << to_hex(k.digest) << '|'
        << k.environment << '|' << key_status_name(k.status) << '|' << tp(k.created_at) << '|'
        << tp(k.expires_at) << '|' << tp(k.revoked_at) << '|' << k.revocation_reason << '|' << k.rotated_from
        << '|' << k.rotated_to << '|' << tp(k.compromised_at) << '\n';
  }
  return out.str();
}

// ---------------------------------------------------------------------------------------
// Registration

TEST_CASE("register_agent emits AgentRegistered and shows the webhook secret once", "[domain][agent]") {
  DomainWorld w;
  const AgentProfile profile = valid_profile();
  auto decision = register_agent(profile, RegisterAgentOptions{}, w.ctx);
  REQUIRE(decision.ok());
  CHECK(is_well_formed_id(decision->agent_id, kAgentIdPrefix));
  CHECK(std::regex_match(decision->webhook_secret, std::regex("^whsec_[A-Za-z0-9_-]{43}$")));
  CHECK(decision->api_key.empty());
  REQUIRE(decision->events.size() == 1);

  const v1::Event& e = decision->events[0];
  check_envelope(e, "agent-" + decision->agent_id, w.clock.now(), "dashboard", "agent.registered");
  REQUIRE(e.has_agent_registered());
  const auto& r = e.agent_registered();
  CHECK(r.agent_id() == decision->agent_id);
  CHECK(r.name() == profile.name);
  CHECK(r.description() == profile.description);
  CHECK(std::vector<std::string>(r.skills().begin(), r.skills().end()) == profile.skills);
  CHECK(std::vector<std::string>(r.languages().begin(), r.languages().end()) == profile.languages);
  CHECK(r.webhook_url() == profile.webhook_url);
  CHECK(r.environment() == v1::ENVIRONMENT_PRODUCTION);
  CHECK(r.owner_id() == "usr_123");
  CHECK(r.rate_limit_tier() == "standard");

  // The secret is only in the event sealed, bound to this agent.
  CHECK(e.SerializeAsString().find(decision->webhook_secret) == std::string::npos);
  CHECK(e.SerializeAsString().find(decision->webhook_secret.substr(6, 20)) == std::string::npos);
  auto opened = w.secrets.open(r.webhook_secret(), decision->agent_id);
  REQUIRE(opened.ok());
  CHECK(*opened == decision->webhook_secret);
  CHECK_FALSE(w.secrets.open(r.webhook_secret(), "agt_000000000000000000000000").ok());
}

TEST_CASE("a registered agent folds into its state", "[domain][agent]") {
  DomainWorld w;
  AgentProfile profile = valid_profile();
  profile.environment = v1::ENVIRONMENT_STAGING;
  RegisterAgentOptions options;
  options.default_tier = "elevated";
  auto decision = register_agent(profile, options, w.ctx);
  REQUIRE(decision.ok());
  const AgentState state = w.commit(AgentState{}, decision->events);
  CHECK(state.exists());
  CHECK(state.agent_id == decision->agent_id);
  CHECK(state.profile.name == profile.name);
  CHECK(state.profile.skills == profile.skills);
  CHECK(state.profile.languages == profile.languages);
  CHECK(state.profile.environment == v1::ENVIRONMENT_STAGING);
  CHECK(state.profile.owner_id == profile.owner_id);
  CHECK(state.rate_limit_tier == "elevated");
  CHECK(state.created_at == w.clock.now());
  CHECK(state.version == 1);
  CHECK(state.keys.empty());
  auto secret = w.secrets.open(state.webhook_secret, state.agent_id);
  REQUIRE(secret.ok());
  CHECK(*secret == decision->webhook_secret);
}

TEST_CASE("an empty state is no agent", "[domain][agent]") {
  const AgentState state = fold_agent({});
  CHECK_FALSE(state.exists());
  CHECK(state.version == 0);
}

TEST_CASE("validate_profile accepts the contract's example and boundary values",
          "[domain][agent][validation]") {
  const RegisterAgentOptions options;
  CHECK(validate_profile(valid_profile(), options).empty());

  AgentProfile p = valid_profile();
  p.name = std::string(100, 'n');
  p.description = std::string(20, 'd');
  p.skills = std::vector<std::string>(50, "");
  for (std::size_t i = 0; i < p.skills.size(); ++i) {
    p.skills[i] = "skill-" + std::to_string(i);
  }
  p.skills[0] = std::string(64, 's');
  p.languages = {"en"};
  p.owner_id = std::string(128, 'o');
  p.environment = v1::ENVIRONMENT_STAGING;
  CHECK(validate_profile(p, options).empty());

  p.description = std::string(2000, 'd');
  p.owner_id = "";  // optional
  CHECK(validate_profile(p, options).empty());

  // Lengths count code points: 100 two-byte characters are 100, not 200.
  std::string accented;
  for (int i = 0; i < 100; ++i) {
    accented += "\xC3\xA9";
  }
  p.name = accented;
  CHECK(validate_profile(p, options).empty());
  p.name = accented + "\xC3\xA9";
  CHECK(error_fields(Status::InvalidArgument("", validate_profile(p, options))) ==
        std::vector<std::string>{"name"});
}

TEST_CASE("validate_profile checks each field", "[domain][agent][validation]") {
  const RegisterAgentOptions options;
  AgentProfile p = valid_profile();
  std::string expected_field;

  // What every section below leads to.
  const auto check_outcome = [&] {
    const auto errors = validate_profile(p, options);
    INFO(expected_field);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].field == expected_field);
    CHECK_FALSE(errors[0].message.empty());
  };

  SECTION("name empty") {
    p.name = "";
    expected_field = "name";
    check_outcome();
  }
  SECTION("name 101 chars") {
    p.name = std::string(101, 'n');
    expected_field = "name";
    check_outcome();
  }
  SECTION("name invalid UTF-8") {
    p.name = "bad \xC0\x80";
    expected_field = "name";
    check_outcome();
  }
  SECTION("description 19 chars") {
    p.description = std::string(19, 'd');
    expected_field = "description";
    check_outcome();
  }
  SECTION("description 2001 chars") {
    p.description = std::string(2001, 'd');
    expected_field = "description";
    check_outcome();
  }
  SECTION("no skills") {
    p.skills.clear();
    expected_field = "skills";
    check_outcome();
  }
  SECTION("51 skills") {
    p.skills.clear();
    for (int i = 0; i < 51; ++i) {
      p.skills.push_back("s" + std::to_string(i));
    }
    expected_field = "skills";
    check_outcome();
  }
  SECTION("empty skill") {
    p.skills = {"pdf", "", "ocr"};
    expected_field = "skills[1]";
    check_outcome();
  }
  SECTION("65-char skill") {
    p.skills = {"pdf", "ocr", std::string(65, 's')};
    expected_field = "skills[2]";
    check_outcome();
  }
  SECTION("duplicate skill") {
    p.skills = {"pdf", "ocr", "pdf"};
    expected_field = "skills[2]";
    check_outcome();
  }
  SECTION("no languages") {
    p.languages.clear();
    expected_field = "languages";
    check_outcome();
  }
  SECTION("21 languages") {
    p.languages.clear();
    for (int i = 0; i < 21; ++i) {
      p.languages.push_back("l" + std::to_string(i));
    }
    expected_field = "languages";
    check_outcome();
  }
  SECTION("duplicate language") {
    p.languages = {"en", "en"};
    expected_field = "languages[1]";
    check_outcome();
  }
  SECTION("empty language") {
    p.languages = {""};
    expected_field = "languages[0]";
    check_outcome();
  }
  SECTION("unspecified environment") {
    p.environment = v1::ENVIRONMENT_UNSPECIFIED;
    expected_field = "environment";
    check_outcome();
  }
  SECTION("owner_id 129 chars") {
    p.owner_id = std::string(129, 'o');
    expected_field = "owner_id";
    check_outcome();
  }
  SECTION("plain http webhook") {
    p.webhook_url = "http://agent.example.com/hook";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("empty webhook") {
    p.webhook_url = "";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("relative webhook") {
    p.webhook_url = "/hooks/clawgig";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("scheme-relative webhook") {
    p.webhook_url = "//agent.example.com/hook";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook without host") {
    p.webhook_url = "https:///hooks";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with only a scheme") {
    p.webhook_url = "https://";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("ftp webhook") {
    p.webhook_url = "ftp://agent.example.com/";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook missing //") {
    p.webhook_url = "https:agent.example.com";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with credentials") {
    p.webhook_url = "https://user:pw@agent.example.com/";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with a space") {
    p.webhook_url = "https://agent.example.com/a b";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with port 0") {
    p.webhook_url = "https://agent.example.com:0/";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with port 70000") {
    p.webhook_url = "https://agent.example.com:70000/";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with empty port") {
    p.webhook_url = "https://agent.example.com:/";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with bad host") {
    p.webhook_url = "https://agent_example!.com/";
    expected_field = "webhook_url";
    check_outcome();
  }
  SECTION("webhook with unterminated IPv6") {
    p.webhook_url = "https://[::1/hook";
    expected_field = "webhook_url";
    check_outcome();
  }
}

TEST_CASE("webhook URLs that are fine", "[domain][agent][validation]") {
  const RegisterAgentOptions options;
  AgentProfile p = valid_profile();
  for (const char* url :
       {"https://agent.example.com", "https://agent.example.com/", "HTTPS://Agent.Example.com/x",
        "https://agent.example.com:8443/hooks?x=1#f", "https://10.0.0.1/hook",
        "https://[2001:db8::1]:443/hook", "https://localhost/hook"}) {
    p.webhook_url = url;
    INFO(url);
    CHECK(validate_profile(p, options).empty());
  }
}

TEST_CASE("plain http webhooks need allow_insecure_webhooks", "[domain][agent][validation]") {
  AgentProfile p = valid_profile();
  p.webhook_url = "http://127.0.0.1:9000/hook";
  RegisterAgentOptions options;
  REQUIRE(validate_profile(p, options).size() == 1);
  options.allow_insecure_webhooks = true;
  CHECK(validate_profile(p, options).empty());
  p.webhook_url = "ftp://127.0.0.1/hook";
  CHECK(validate_profile(p, options).size() == 1);
}

TEST_CASE("register_agent reports all broken fields together", "[domain][agent][validation]") {
  DomainWorld w;
  AgentProfile p;
  p.name = "";
  p.description = "too short";
  p.skills = {"pdf", "pdf", ""};
  p.languages = {};
  p.webhook_url = "http://x.example.com";
  p.environment = v1::ENVIRONMENT_UNSPECIFIED;
  p.owner_id = std::string(200, 'o');
  auto decision = register_agent(p, RegisterAgentOptions{}, w.ctx);
  REQUIRE_FALSE(decision.ok());
  CHECK(decision.status().IsInvalidArgument());
  CHECK(decision.status().reason() == "validation_failed");
  CHECK(error_fields(decision.status()) == std::vector<std::string>{"name", "description", "skills[1]",
                                                                    "skills[2]", "languages", "webhook_url",
                                                                    "environment", "owner_id"});
}

// ---------------------------------------------------------------------------------------
// Keys

TEST_CASE("create_key issues a cg_ key and records only its digest", "[domain][agent][keys]") {
  DomainWorld w;
  AgentProfile profile = valid_profile();
  profile.environment = v1::ENVIRONMENT_STAGING;
  AgentState state = w.registered_agent(profile);
  w.clock.advance(5s);

  auto decision = create_key(state, CreateKey{"prod-2026-11", 7776000}, w.ctx);
  REQUIRE(decision.ok());
  CHECK(is_well_formed_api_key(decision->api_key));
  CHECK(is_well_formed_id(decision->key_id, kKeyIdPrefix));
  CHECK(decision->agent_id == state.agent_id);
  CHECK(decision->webhook_secret.empty());
  REQUIRE(decision->events.size() == 1);
  const v1::Event& e = decision->events[0];
  check_envelope(e, agent_stream(state.agent_id), w.clock.now(), "dashboard", "key.created");
  REQUIRE(e.has_key_created());
  const auto& c = e.key_created();
  CHECK(c.agent_id() == state.agent_id);
  CHECK(c.key_id() == decision->key_id);
  CHECK(c.label() == "prod-2026-11");
  const Digest digest = w.hasher.digest(decision->api_key);
  CHECK(c.digest() == std::string(reinterpret_cast<const char*>(digest.data()), digest.size()));
  CHECK(c.hint() == api_key_hint(decision->api_key));
  CHECK(c.environment() == v1::ENVIRONMENT_STAGING);
  REQUIRE(c.has_expires_at());
  CHECK(from_timestamp(c.expires_at()) == w.clock.now() + 7776000s);
  CHECK(c.rotated_from().empty());
  // The full key never reaches the log.
  CHECK(e.SerializeAsString().find(decision->api_key) == std::string::npos);
  CHECK(e.SerializeAsString().find(decision->api_key.substr(3)) == std::string::npos);

  state = w.commit(std::move(state), decision->events);
  CHECK(state.version == 2);
  const KeyState* key = state.find_key(decision->key_id);
  REQUIRE(key != nullptr);
  CHECK(key->status == KeyStatus::kActive);
  CHECK(key->label == "prod-2026-11");
  CHECK(digest_equal(key->digest, digest));
  CHECK(key->environment == v1::ENVIRONMENT_STAGING);
  CHECK(key->created_at == w.clock.now());
  CHECK(key->expires_at == w.clock.now() + 7776000s);
  CHECK_FALSE(key->revoked_at);
  CHECK(state.active_key_count(w.clock.now()) == 1);
}

TEST_CASE("create_key without options makes a non-expiring unlabelled key", "[domain][agent][keys]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision d = w.add_key(state);
  const KeyState* key = state.find_key(d.key_id);
  REQUIRE(key != nullptr);
  CHECK(key->label.empty());
  CHECK_FALSE(key->expires_at);
  CHECK_FALSE(d.events[0].key_created().has_expires_at());
  w.clock.advance(std::chrono::hours(24 * 365 * 20));
  CHECK(key->is_active_at(w.clock.now()));
}

TEST_CASE("create_key needs an agent", "[domain][agent][keys]") {
  DomainWorld w;
  auto decision = create_key(AgentState{}, CreateKey{}, w.ctx);
  REQUIRE_FALSE(decision.ok());
  CHECK(decision.status().IsNotFound());
  CHECK(decision.status().reason() == "agent_not_found");
}

TEST_CASE("create_key validates label and lifetime", "[domain][agent][keys][validation]") {
  DomainWorld w;
  AgentState state = w.registered_agent();

  CHECK(create_key(state, CreateKey{std::string(100, 'l'), kMaxKeyLifetimeSeconds}, w.ctx).ok());
  CHECK(create_key(state, CreateKey{"", 1}, w.ctx).ok());

  auto label = create_key(state, CreateKey{std::string(101, 'l'), std::nullopt}, w.ctx);
  REQUIRE_FALSE(label.ok());
  CHECK(error_fields(label.status()) == std::vector<std::string>{"label"});

  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-1}, kMaxKeyLifetimeSeconds + 1,
                           std::numeric_limits<std::int64_t>::max()}) {
    auto r = create_key(state, CreateKey{std::nullopt, bad}, w.ctx);
    INFO(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "validation_failed");
    CHECK(error_fields(r.status()) == std::vector<std::string>{"expires_in_seconds"});
  }

  auto both = create_key(state, CreateKey{std::string(101, 'l'), 0}, w.ctx);
  REQUIRE_FALSE(both.ok());
  CHECK(error_fields(both.status()) == std::vector<std::string>{"label", "expires_in_seconds"});
}

TEST_CASE("at most 10 keys are active at once", "[domain][agent][keys]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(w.add_key(state).key_id);
  }
  CHECK(state.active_key_count(w.clock.now()) == 10);

  auto eleventh = create_key(state, CreateKey{}, w.ctx);
  REQUIRE_FALSE(eleventh.ok());
  CHECK(eleventh.status().IsConflict());
  CHECK(eleventh.status().reason() == "too_many_active_keys");

  SECTION("revoking one makes room") {
    auto revoked = revoke_key(state, RevokeKey{ids[3], "cleanup"}, w.ctx);
    REQUIRE(revoked.ok());
    state = w.commit(std::move(state), revoked->events);
    CHECK(state.active_key_count(w.clock.now()) == 9);
    CHECK(create_key(state, CreateKey{}, w.ctx).ok());
  }
}

TEST_CASE("keys past their expiry do not count against the limit", "[domain][agent][keys]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  w.add_key(state, 60);
  for (int i = 0; i < 9; ++i) {
    w.add_key(state);
  }
  CHECK_FALSE(create_key(state, CreateKey{}, w.ctx).ok());
  w.clock.advance(60s);  // no KeyExpired written yet: expiry is checked against the clock
  CHECK(state.active_key_count(w.clock.now()) == 9);
  CHECK(create_key(state, CreateKey{}, w.ctx).ok());
}

TEST_CASE("expiry is checked to the instant", "[domain][agent][keys]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision d = w.add_key(state, 3600);
  const KeyState* key = state.find_key(d.key_id);
  REQUIRE(key != nullptr);
  const TimePoint expires_at = w.clock.now() + 3600s;
  CHECK(key->is_active_at(expires_at - 1ns));
  CHECK(key->status_at(expires_at - 1ns) == KeyStatus::kActive);
  CHECK_FALSE(key->is_active_at(expires_at));
  CHECK(key->status_at(expires_at) == KeyStatus::kExpired);
  CHECK(key->status == KeyStatus::kActive);  // the record is unchanged until KeyExpired
}

TEST_CASE("rotate_key with overlap keeps the old key active", "[domain][agent][rotate]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision old_key = w.add_key(state, std::nullopt, "prod");
  w.clock.advance(1h);

  auto decision = rotate_key(state, RotateKey{old_key.key_id, std::nullopt, std::nullopt}, w.ctx);
  REQUIRE(decision.ok());
  CHECK(is_well_formed_api_key(decision->api_key));
  CHECK(decision->api_key != old_key.api_key);
  REQUIRE(decision->events.size() == 2);
  check_envelope(decision->events[0], agent_stream(state.agent_id), w.clock.now(), "dashboard",
                 "key.created");
  check_envelope(decision->events[1], agent_stream(state.agent_id), w.clock.now(), "dashboard",
                 "key.rotated");
  const auto& created = decision->events[0].key_created();
  CHECK(created.key_id() == decision->key_id);
  CHECK(created.rotated_from() == old_key.key_id);
  CHECK(created.label() == "prod");
  CHECK_FALSE(created.has_expires_at());
  const auto& rotated = decision->events[1].key_rotated();
  CHECK(rotated.key_id() == old_key.key_id);
  CHECK(rotated.new_key_id() == decision->key_id);
  CHECK_FALSE(rotated.has_old_key_expires_at());

  state = w.commit(std::move(state), decision->events);
  const KeyState* old_state = state.find_key(old_key.key_id);
  const KeyState* new_state = state.find_key(decision->key_id);
  REQUIRE(old_state != nullptr);
  REQUIRE(new_state != nullptr);
  CHECK(old_state->status == KeyStatus::kActive);
  CHECK_FALSE(old_state->expires_at);
  CHECK(old_state->rotated_to == decision->key_id);
  CHECK(new_state->rotated_from == old_key.key_id);
  CHECK(state.active_key_count(w.clock.now()) == 2);
  CHECK(state.version == 4);
}

TEST_CASE("rotate_key with 0 revokes the old key at once", "[domain][agent][rotate]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision old_key = w.add_key(state);
  w.clock.advance(10s);
  auto decision = rotate_key(state, RotateKey{old_key.key_id, "next", 0}, w.ctx);
  REQUIRE(decision.ok());
  REQUIRE(decision->events.size() == 3);
  CHECK(decision->events[0].type() == "key.created");
  CHECK(decision->events[0].key_created().label() == "next");
  CHECK(decision->events[1].type() == "key.rotated");
  CHECK_FALSE(decision->events[1].key_rotated().has_old_key_expires_at());
  REQUIRE(decision->events[2].has_key_revoked());
  check_envelope(decision->events[2], agent_stream(state.agent_id), w.clock.now(), "dashboard",
                 "key.revoked");
  CHECK(decision->events[2].key_revoked().key_id() == old_key.key_id);
  CHECK(decision->events[2].key_revoked().reason() == v1::REVOCATION_REASON_ROTATED);

  state = w.commit(std::move(state), decision->events);
  const KeyState* old_state = state.find_key(old_key.key_id);
  REQUIRE(old_state != nullptr);
  CHECK(old_state->status == KeyStatus::kRevoked);
  CHECK(old_state->revocation_reason == v1::REVOCATION_REASON_ROTATED);
  CHECK(old_state->revoked_at == w.clock.now());
  CHECK(old_state->rotated_to == decision->key_id);
  CHECK(state.active_key_count(w.clock.now()) == 1);
}

TEST_CASE("rotate_key with N schedules the old key's expiry", "[domain][agent][rotate]") {
  DomainWorld w;
  AgentState state = w.registered_agent();

  SECTION("a key without expiry expires N seconds from now") {
    const Decision old_key = w.add_key(state);
    auto decision = rotate_key(state, RotateKey{old_key.key_id, std::nullopt, 3600}, w.ctx);
    REQUIRE(decision.ok());
    REQUIRE(decision->events.size() == 2);
    const auto& rotated = decision->events[1].key_rotated();
    REQUIRE(rotated.has_old_key_expires_at());
    CHECK(from_timestamp(rotated.old_key_expires_at()) == w.clock.now() + 3600s);

    state = w.commit(std::move(state), decision->events);
    const KeyState* old_state = state.find_key(old_key.key_id);
    REQUIRE(old_state != nullptr);
    CHECK(old_state->is_active_at(w.clock.now() + 3599s));
    CHECK_FALSE(old_state->is_active_at(w.clock.now() + 3600s));
    w.clock.advance(3600s);
    CHECK(state.active_key_count(w.clock.now()) == 1);
    CHECK(state.find_key(decision->key_id)->is_active_at(w.clock.now()));
  }
  SECTION("never later than the key would expire anyway") {
    const Decision old_key = w.add_key(state, 600);
    auto decision = rotate_key(state, RotateKey{old_key.key_id, std::nullopt, 3600}, w.ctx);
    REQUIRE(decision.ok());
    const auto& rotated = decision->events[1].key_rotated();
    REQUIRE(rotated.has_old_key_expires_at());
    CHECK(from_timestamp(rotated.old_key_expires_at()) == w.clock.now() + 600s);
  }
  SECTION("an earlier expiry than the key's own wins") {
    const Decision old_key = w.add_key(state, 7200);
    auto decision = rotate_key(state, RotateKey{old_key.key_id, std::nullopt, 60}, w.ctx);
    REQUIRE(decision.ok());
    state = w.commit(std::move(state), decision->events);
    CHECK(state.find_key(old_key.key_id)->expires_at == w.clock.now() + 60s);
  }
}

TEST_CASE("the rotated key inherits the old key's lifetime", "[domain][agent][rotate]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision old_key = w.add_key(state, 90 * kDay);
  w.clock.advance(std::chrono::seconds(10 * kDay));
  auto decision = rotate_key(state, RotateKey{old_key.key_id, std::nullopt, std::nullopt}, w.ctx);
  REQUIRE(decision.ok());
  const auto& created = decision->events[0].key_created();
  REQUIRE(created.has_expires_at());
  CHECK(from_timestamp(created.expires_at()) == w.clock.now() + std::chrono::seconds(90 * kDay));
}

TEST_CASE("rotate_key validates old_key_expires_in_seconds and label",
          "[domain][agent][rotate][validation]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision old_key = w.add_key(state);
  CHECK(rotate_key(state, RotateKey{old_key.key_id, std::nullopt, kMaxRotationOverlapSeconds}, w.ctx).ok());
  for (std::int64_t bad : {std::int64_t{-1}, kMaxRotationOverlapSeconds + 1}) {
    auto r = rotate_key(state, RotateKey{old_key.key_id, std::nullopt, bad}, w.ctx);
    INFO(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "validation_failed");
    CHECK(error_fields(r.status()) == std::vector<std::string>{"old_key_expires_in_seconds"});
  }
  auto both = rotate_key(state, RotateKey{old_key.key_id, std::string(101, 'x'), -5}, w.ctx);
  REQUIRE_FALSE(both.ok());
  CHECK(error_fields(both.status()) == std::vector<std::string>{"label", "old_key_expires_in_seconds"});
}

TEST_CASE("only an active key can be rotated", "[domain][agent][rotate]") {
  DomainWorld w;
  AgentState state = w.registered_agent();

  SECTION("unknown key") {
    auto r = rotate_key(state, RotateKey{"key_000000000000000000000000", std::nullopt, std::nullopt}, w.ctx);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().IsNotFound());
    CHECK(r.status().reason() == "key_not_found");
  }
  SECTION("unknown agent") {
    auto r = rotate_key(AgentState{}, RotateKey{"key_000000000000000000000000", std::nullopt, std::nullopt},
                        w.ctx);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "key_not_found");
  }
  SECTION("revoked key") {
    const Decision key = w.add_key(state);
    auto revoked = revoke_key(state, RevokeKey{key.key_id, ""}, w.ctx);
    REQUIRE(revoked.ok());
    state = w.commit(std::move(state), revoked->events);
    auto r = rotate_key(state, RotateKey{key.key_id, std::nullopt, std::nullopt}, w.ctx);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().IsConflict());
    CHECK(r.status().reason() == "key_not_active");
  }
  SECTION("key past its expiry, KeyExpired not yet written") {
    const Decision key = w.add_key(state, 30);
    w.clock.advance(30s);
    auto r = rotate_key(state, RotateKey{key.key_id, std::nullopt, std::nullopt}, w.ctx);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "key_not_active");
  }
}

TEST_CASE("rotation respects the active-key limit", "[domain][agent][rotate]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  std::string first;
  for (int i = 0; i < 10; ++i) {
    const Decision d = w.add_key(state);
    if (i == 0) {
      first = d.key_id;
    }
  }
  for (std::optional<std::int64_t> overlap :
       {std::optional<std::int64_t>{}, std::optional<std::int64_t>{60}}) {
    auto r = rotate_key(state, RotateKey{first, std::nullopt, overlap}, w.ctx);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "too_many_active_keys");
  }
  // Revoking the old key at once keeps the count at 10.
  auto immediate = rotate_key(state, RotateKey{first, std::nullopt, 0}, w.ctx);
  REQUIRE(immediate.ok());
  state = w.commit(std::move(state), immediate->events);
  CHECK(state.active_key_count(w.clock.now()) == 10);
}

TEST_CASE("revoke_key revokes an active key with reason manual", "[domain][agent][revoke]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state);
  w.clock.advance(2min);
  w.ctx.actor = "gateway-eu";

  auto decision = revoke_key(state, RevokeKey{key.key_id, "leaked in CI logs"}, w.ctx);
  REQUIRE(decision.ok());
  REQUIRE(decision->events.size() == 1);
  check_envelope(decision->events[0], agent_stream(state.agent_id), w.clock.now(), "gateway-eu",
                 "key.revoked");
  const auto& r = decision->events[0].key_revoked();
  CHECK(r.agent_id() == state.agent_id);
  CHECK(r.key_id() == key.key_id);
  CHECK(r.reason() == v1::REVOCATION_REASON_MANUAL);
  CHECK(r.note() == "leaked in CI logs");
  CHECK(decision->api_key.empty());

  state = w.commit(std::move(state), decision->events);
  const KeyState* revoked = state.find_key(key.key_id);
  REQUIRE(revoked != nullptr);
  CHECK(revoked->status == KeyStatus::kRevoked);
  CHECK(revoked->status_at(w.clock.now()) == KeyStatus::kRevoked);
  CHECK(revoked->revoked_at == w.clock.now());
  CHECK(revoked->revocation_reason == v1::REVOCATION_REASON_MANUAL);
  CHECK_FALSE(revoked->is_active_at(w.clock.now()));

  auto again = revoke_key(state, RevokeKey{key.key_id, ""}, w.ctx);
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().reason() == "key_not_active");
}

TEST_CASE("revoke_key errors", "[domain][agent][revoke]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state, 10);

  auto unknown = revoke_key(state, RevokeKey{"key_ffffffffffffffffffffffff", ""}, w.ctx);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().reason() == "key_not_found");

  CHECK(revoke_key(state, RevokeKey{key.key_id, std::string(200, 'r')}, w.ctx).ok());
  auto long_reason = revoke_key(state, RevokeKey{key.key_id, std::string(201, 'r')}, w.ctx);
  REQUIRE_FALSE(long_reason.ok());
  CHECK(error_fields(long_reason.status()) == std::vector<std::string>{"reason"});

  w.clock.advance(10s);
  auto expired = revoke_key(state, RevokeKey{key.key_id, ""}, w.ctx);
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.status().reason() == "key_not_active");
}

TEST_CASE("report_compromise revokes an active key and marks it", "[domain][agent][compromise]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state, std::nullopt, "ci");
  w.clock.advance(1min);
  w.ctx.actor = "leak:github";

  auto decision =
      report_compromise(state, ReportCompromise{key.key_id, "found in a gist", "github", false}, w.ctx);
  REQUIRE(decision.ok());
  REQUIRE(decision->events.size() == 1);
  check_envelope(decision->events[0], agent_stream(state.agent_id), w.clock.now(), "leak:github",
                 "key.compromised");
  const auto& c = decision->events[0].key_compromised();
  CHECK(c.key_id() == key.key_id);
  CHECK(c.note() == "found in a gist");
  CHECK(c.source() == "github");
  CHECK(c.was_active());
  CHECK(decision->api_key.empty());
  CHECK(decision->key_id.empty());

  state = w.commit(std::move(state), decision->events);
  const KeyState* k = state.find_key(key.key_id);
  REQUIRE(k != nullptr);
  CHECK(k->status == KeyStatus::kRevoked);
  CHECK(k->revocation_reason == v1::REVOCATION_REASON_COMPROMISED);
  CHECK(k->revoked_at == w.clock.now());
  CHECK(k->compromised_at == w.clock.now());

  auto again = report_compromise(state, ReportCompromise{key.key_id, "", "", false}, w.ctx);
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().IsConflict());
  CHECK(again.status().reason() == "key_already_compromised");
}

TEST_CASE("report_compromise marks an inactive key without changing its revocation",
          "[domain][agent][compromise]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state, 100);

  SECTION("revoked key") {
    auto revoked = revoke_key(state, RevokeKey{key.key_id, "old"}, w.ctx);
    REQUIRE(revoked.ok());
    state = w.commit(std::move(state), revoked->events);
    const TimePoint revoked_at = w.clock.now();
    w.clock.advance(1h);
    auto decision = report_compromise(state, ReportCompromise{key.key_id, "", "", false}, w.ctx);
    REQUIRE(decision.ok());
    CHECK_FALSE(decision->events[0].key_compromised().was_active());
    state = w.commit(std::move(state), decision->events);
    const KeyState* k = state.find_key(key.key_id);
    CHECK(k->status == KeyStatus::kRevoked);
    CHECK(k->revocation_reason == v1::REVOCATION_REASON_MANUAL);
    CHECK(k->revoked_at == revoked_at);
    CHECK(k->compromised_at == w.clock.now());
  }
  SECTION("key past its expiry") {
    w.clock.advance(100s);
    auto decision = report_compromise(state, ReportCompromise{key.key_id, "", "", false}, w.ctx);
    REQUIRE(decision.ok());
    CHECK_FALSE(decision->events[0].key_compromised().was_active());
    state = w.commit(std::move(state), decision->events);
    const KeyState* k = state.find_key(key.key_id);
    CHECK(k->status_at(w.clock.now()) == KeyStatus::kExpired);
    CHECK_FALSE(k->revoked_at);
    CHECK(k->compromised_at == w.clock.now());
  }
}

TEST_CASE("report_compromise with replace issues a successor key", "[domain][agent][compromise]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state, 30 * kDay, "prod");
  w.clock.advance(std::chrono::seconds(kDay));

  auto decision =
      report_compromise(state, ReportCompromise{key.key_id, "pasted in chat", "support", true}, w.ctx);
  REQUIRE(decision.ok());
  REQUIRE(decision->events.size() == 2);
  CHECK(decision->events[0].type() == "key.compromised");
  CHECK(decision->events[1].type() == "key.created");
  CHECK(is_well_formed_api_key(decision->api_key));
  const auto& created = decision->events[1].key_created();
  CHECK(created.key_id() == decision->key_id);
  CHECK(created.rotated_from() == key.key_id);
  CHECK(created.label() == "prod");
  REQUIRE(created.has_expires_at());
  CHECK(from_timestamp(created.expires_at()) == w.clock.now() + std::chrono::seconds(30 * kDay));
  CHECK(created.digest().size() == 32);

  state = w.commit(std::move(state), decision->events);
  CHECK(state.active_key_count(w.clock.now()) == 1);
  CHECK(state.find_key(decision->key_id)->is_active_at(w.clock.now()));
  CHECK(state.find_key(key.key_id)->rotated_to == decision->key_id);
}

TEST_CASE("report_compromise validation and limits", "[domain][agent][compromise][validation]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state);

  auto unknown =
      report_compromise(state, ReportCompromise{"key_000000000000000000000000", "", "", false}, w.ctx);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().reason() == "key_not_found");

  CHECK(report_compromise(
            state, ReportCompromise{key.key_id, std::string(2000, 'n'), std::string(200, 's'), false}, w.ctx)
            .ok());
  auto both = report_compromise(
      state, ReportCompromise{key.key_id, std::string(2001, 'n'), std::string(201, 's'), false}, w.ctx);
  REQUIRE_FALSE(both.ok());
  CHECK(error_fields(both.status()) == std::vector<std::string>{"note", "source"});

  SECTION("replacing an inactive key may not exceed 10 active keys") {
    auto revoked = revoke_key(state, RevokeKey{key.key_id, ""}, w.ctx);
    REQUIRE(revoked.ok());
    state = w.commit(std::move(state), revoked->events);
    for (int i = 0; i < 10; ++i) {
      w.add_key(state);
    }
    auto r = report_compromise(state, ReportCompromise{key.key_id, "", "", true}, w.ctx);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "too_many_active_keys");
    CHECK(report_compromise(state, ReportCompromise{key.key_id, "", "", false}, w.ctx).ok());
  }
  SECTION("replacing an active key at the limit is fine (it is revoked)") {
    for (int i = 0; i < 9; ++i) {
      w.add_key(state);
    }
    REQUIRE(state.active_key_count(w.clock.now()) == 10);
    auto r = report_compromise(state, ReportCompromise{key.key_id, "", "", true}, w.ctx);
    REQUIRE(r.ok());
    state = w.commit(std::move(state), r->events);
    CHECK(state.active_key_count(w.clock.now()) == 10);
  }
}

TEST_CASE("expire_key records the expiry of a key past its expires_at", "[domain][agent][expire]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const Decision key = w.add_key(state, 3600);
  const TimePoint expires_at = w.clock.now() + 3600s;

  w.clock.set(expires_at - 1s);
  auto early = expire_key(state, key.key_id, w.ctx);
  REQUIRE_FALSE(early.ok());
  CHECK(early.status().reason() == "key_not_active");

  w.clock.set(expires_at);
  w.ctx.actor = "scheduler";
  auto decision = expire_key(state, key.key_id, w.ctx);
  REQUIRE(decision.ok());
  REQUIRE(decision->events.size() == 1);
  check_envelope(decision->events[0], agent_stream(state.agent_id), expires_at, "scheduler", "key.expired");
  CHECK(decision->events[0].key_expired().key_id() == key.key_id);
  CHECK(from_timestamp(decision->events[0].key_expired().expires_at()) == expires_at);

  state = w.commit(std::move(state), decision->events);
  const KeyState* k = state.find_key(key.key_id);
  CHECK(k->status == KeyStatus::kExpired);
  CHECK_FALSE(k->revoked_at);
  CHECK(k->expires_at == expires_at);

  auto again = expire_key(state, key.key_id, w.ctx);
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().reason() == "key_not_active");
}

TEST_CASE("expire_key refuses keys that cannot expire", "[domain][agent][expire]") {
  DomainWorld w;
  AgentState state = w.registered_agent();

  auto unknown = expire_key(state, "key_000000000000000000000000", w.ctx);
  CHECK(unknown.status().reason() == "key_not_found");

  const Decision forever = w.add_key(state);
  w.clock.advance(std::chrono::hours(24 * 3650));
  CHECK(expire_key(state, forever.key_id, w.ctx).status().reason() == "key_not_active");

  const Decision revoked = w.add_key(state, 5);
  auto r = revoke_key(state, RevokeKey{revoked.key_id, ""}, w.ctx);
  REQUIRE(r.ok());
  state = w.commit(std::move(state), r->events);
  w.clock.advance(10s);
  CHECK(expire_key(state, revoked.key_id, w.ctx).status().reason() == "key_not_active");
}

TEST_CASE("set_rate_limit_tier changes the tier to a known one", "[domain][agent][tier]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  const std::vector<std::string> tiers = {"standard", "elevated"};

  auto unknown_agent = set_rate_limit_tier(AgentState{}, "elevated", tiers, w.ctx);
  CHECK(unknown_agent.status().reason() == "agent_not_found");

  auto bad = set_rate_limit_tier(state, "platinum", tiers, w.ctx);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().IsInvalidArgument());
  CHECK(error_fields(bad.status()) == std::vector<std::string>{"tier"});

  auto decision = set_rate_limit_tier(state, "elevated", tiers, w.ctx);
  REQUIRE(decision.ok());
  REQUIRE(decision->events.size() == 1);
  check_envelope(decision->events[0], agent_stream(state.agent_id), w.clock.now(), "dashboard",
                 "agent.rate_limit_changed");
  CHECK(decision->events[0].rate_limit_tier_changed().tier() == "elevated");
  CHECK(decision->events[0].rate_limit_tier_changed().previous_tier() == "standard");
  state = w.commit(std::move(state), decision->events);
  CHECK(state.rate_limit_tier == "elevated");
  CHECK(state.version == 2);
}

TEST_CASE("names of statuses, reasons and environments", "[domain][agent]") {
  CHECK(key_status_name(KeyStatus::kActive) == "active");
  CHECK(key_status_name(KeyStatus::kRevoked) == "revoked");
  CHECK(key_status_name(KeyStatus::kExpired) == "expired");
  CHECK(revocation_reason_name(v1::REVOCATION_REASON_MANUAL) == "manual");
  CHECK(revocation_reason_name(v1::REVOCATION_REASON_ROTATED) == "rotated");
  CHECK(revocation_reason_name(v1::REVOCATION_REASON_EXPIRED) == "expired");
  CHECK(revocation_reason_name(v1::REVOCATION_REASON_COMPROMISED) == "compromised");
  CHECK(revocation_reason_name(v1::REVOCATION_REASON_UNSPECIFIED) == "");
  CHECK(environment_name(v1::ENVIRONMENT_PRODUCTION) == "production");
  CHECK(environment_name(v1::ENVIRONMENT_STAGING) == "staging");
}

// ---------------------------------------------------------------------------------------
// The fold

// A history touching every event type; returns the incrementally folded state.
AgentState busy_history(DomainWorld& w) {
  AgentState state = w.registered_agent();
  const Decision a = w.add_key(state, 3600, "a");
  const Decision b = w.add_key(state, std::nullopt, "b");
  const Decision c = w.add_key(state, 100, "c");
  w.clock.advance(30s);
  auto rotated = rotate_key(state, RotateKey{a.key_id, std::nullopt, 120}, w.ctx);
  REQUIRE(rotated.ok());
  state = w.commit(std::move(state), rotated->events);
  auto revoked = revoke_key(state, RevokeKey{b.key_id, "done"}, w.ctx);
  REQUIRE(revoked.ok());
  state = w.commit(std::move(state), revoked->events);
  w.clock.advance(100s);
  auto expired = expire_key(state, c.key_id, w.ctx);
  REQUIRE(expired.ok());
  state = w.commit(std::move(state), expired->events);
  auto compromised = report_compromise(state, ReportCompromise{rotated->key_id, "n", "s", true}, w.ctx);
  REQUIRE(compromised.ok());
  state = w.commit(std::move(state), compromised->events);
  auto tier = set_rate_limit_tier(state, "elevated", {"standard", "elevated"}, w.ctx);
  REQUIRE(tier.ok());
  state = w.commit(std::move(state), tier->events);
  return state;
}

TEST_CASE("folding the same events gives the same state", "[domain][agent][fold]") {
  DomainWorld w;
  const AgentState incremental = busy_history(w);
  REQUIRE(w.log.size() == 11);
  CHECK(incremental.version == 11);
  CHECK(incremental.keys.size() == 5);

  const AgentState first = fold_agent(w.log);
  const AgentState second = fold_agent(w.log);
  CHECK(fingerprint(first) == fingerprint(second));
  CHECK(fingerprint(first) == fingerprint(incremental));

  // Through the wire format and back (what a replica or a restart reads).
  std::vector<v1::Event> reread;
  for (const v1::Event& e : w.log) {
    v1::Event copy;
    REQUIRE(copy.ParseFromString(e.SerializeAsString()));
    reread.push_back(copy);
  }
  CHECK(fingerprint(fold_agent(reread)) == fingerprint(first));

  // The same commands with the same seed and clock produce the same state again.
  DomainWorld twin;
  CHECK(fingerprint(busy_history(twin)) == fingerprint(first));
  DomainWorld other_seed(8);
  CHECK(fingerprint(busy_history(other_seed)) != fingerprint(first));
}

TEST_CASE("the folded history has the expected shape", "[domain][agent][fold]") {
  DomainWorld w;
  const AgentState s = busy_history(w);
  // Rotated at t=30 s with a 120 s overlap, `a` expires at t=150 s; the history ends at 130 s.
  const TimePoint now = w.clock.now() + 20s;
  CHECK(s.keys[0].is_active_at(now - 1ns));
  REQUIRE(s.keys.size() == 5);
  const KeyState& a = s.keys[0];
  const KeyState& b = s.keys[1];
  const KeyState& c = s.keys[2];
  const KeyState& a2 = s.keys[3];
  const KeyState& replacement = s.keys[4];
  CHECK(a.rotated_to == a2.key_id);
  CHECK(a2.rotated_from == a.key_id);
  CHECK(a.status == KeyStatus::kActive);
  CHECK(a.status_at(now) == KeyStatus::kExpired);
  CHECK(b.status == KeyStatus::kRevoked);
  CHECK(b.revocation_reason == v1::REVOCATION_REASON_MANUAL);
  CHECK(c.status == KeyStatus::kExpired);
  CHECK(c.revocation_reason == v1::REVOCATION_REASON_EXPIRED);
  CHECK(a2.status == KeyStatus::kRevoked);
  CHECK(a2.revocation_reason == v1::REVOCATION_REASON_COMPROMISED);
  CHECK(a2.compromised_at);
  CHECK(a2.rotated_to == replacement.key_id);
  CHECK(replacement.is_active_at(now));
  CHECK(s.active_key_count(now) == 1);
  CHECK(s.rate_limit_tier == "elevated");
}

TEST_CASE("apply ignores other streams and unknown payloads but tracks the version",
          "[domain][agent][fold]") {
  DomainWorld w;
  AgentState state = w.registered_agent();
  w.add_key(state);
  const std::string before = fingerprint(state);

  DomainWorld other(99);
  AgentState stranger = other.registered_agent();
  const Decision foreign = other.add_key(stranger);
  auto revoke_foreign = revoke_key(stranger, RevokeKey{foreign.key_id, ""}, other.ctx);
  REQUIRE(revoke_foreign.ok());

  v1::Event foreign_event = foreign.events[0];
  foreign_event.set_stream_version(3);
  AgentState after = apply(state, foreign_event);
  CHECK(after.version == 3);
  after.version = state.version;
  CHECK(fingerprint(after) == before);

  // A payload naming our agent but written to another stream is not ours either.
  v1::Event misfiled = foreign.events[0];
  misfiled.mutable_key_created()->set_agent_id(state.agent_id);
  misfiled.set_stream_version(3);
  after = apply(state, misfiled);
  after.version = state.version;
  CHECK(fingerprint(after) == before);

  v1::Event empty;
  empty.set_stream(agent_stream(state.agent_id));
  empty.set_stream_version(3);
  after = apply(state, empty);
  CHECK(after.version == 3);
  after.version = state.version;
  CHECK(fingerprint(after) == before);

  // A second registration does not overwrite the first.
  v1::Event again = w.log[0];
  again.mutable_agent_registered()->set_name("Someone else");
  again.set_stream_version(3);
  after = apply(state, again);
  CHECK(after.profile.name == "Invoice Parser");

  // Key events before a registration do not create an agent.
  v1::Event orphan = foreign.events[0];
  orphan.set_stream_version(1);
  CHECK_FALSE(apply(AgentState{}, orphan).exists());
}

}  // namespace
TEST_CASE("record_webhook_delivery records one attempt, new or carried", "[domain][agent]") {
  DomainWorld w;
  auto registered = register_agent(valid_profile(), RegisterAgentOptions{}, w.ctx);
  REQUIRE(registered.ok());
  const AgentState state = w.commit(AgentState{}, registered->events);

  v1::WebhookDeliveryRecorded record;
  record.set_agent_id("agt_someone_else");
  record.set_event_id("evt_1");
  record.set_attempt(2);
  auto fresh = record_webhook_delivery(state, {.record = record, .event_id = {}, .occurred_at = {}}, w.ctx);
  REQUIRE(fresh.ok());
  REQUIRE(fresh->events.size() == 1);
  const v1::Event& e = fresh->events[0];
  CHECK(e.type() == "webhook.delivery_recorded");
  CHECK(e.actor() == "dashboard");
  CHECK(e.stream() == agent_stream(state.agent_id));
  CHECK_FALSE(e.event_id().empty());
  CHECK(from_timestamp(e.occurred_at()) == w.clock.now());
  CHECK(e.webhook_delivery_recorded().agent_id() == state.agent_id);  // always the agent's own
  CHECK(e.webhook_delivery_recorded().attempt() == 2);

  const TimePoint then = w.clock.now() - std::chrono::seconds(30);
  auto carried = record_webhook_delivery(state, {.record = record, .event_id = "evt_carried", .occurred_at = then}, w.ctx);
  REQUIRE(carried.ok());
  CHECK(carried->events[0].event_id() == "evt_carried");
  CHECK(from_timestamp(carried->events[0].occurred_at()) == then);
}

}  // namespace keyledger
