#include "domain/service_tokens.h"

#include <catch2/catch.hpp>
#include <regex>

#include "domain/ids.h"
#include "domain/domain_fixture.h"

namespace keyledger {
namespace {

using namespace std::chrono_literals;
using testing::DomainWorld;
using testing::error_fields;

TEST_CASE("create_service_token issues a kls_ token and records its digest", "[domain][tokens]") {
  DomainWorld w;
  w.ctx.actor = "bootstrap";
  TokenRegistryState state;
  auto decision = create_service_token(state, "gateway-eu", {"verify", "audit"}, w.ctx);
  REQUIRE(decision.ok());
  CHECK(is_well_formed_service_token(decision->token));
  CHECK(std::regex_match(decision->token, std::regex("^kls_[A-Za-z0-9_-]{43}$")));
  CHECK(is_well_formed_id(decision->token_id, kTokenIdPrefix));
  REQUIRE(decision->events.size() == 1);

  const v1::Event& e = decision->events[0];
  CHECK(e.stream() == "tokens");
  CHECK(e.type() == "token.created");
  CHECK(e.actor() == "bootstrap");
  CHECK(from_timestamp(e.occurred_at()) == w.clock.now());
  CHECK(std::regex_match(e.event_id(), std::regex("^[0-9a-f-]{36}$")));
  CHECK(e.stream_version() == 0);
  REQUIRE(e.has_service_token_created());
  const auto& c = e.service_token_created();
  CHECK(c.token_id() == decision->token_id);
  CHECK(c.name() == "gateway-eu");
  CHECK(std::vector<std::string>(c.scopes().begin(), c.scopes().end()) ==
        std::vector<std::string>{"verify", "audit"});
  const Digest digest = w.hasher.digest(decision->token);
  CHECK(c.digest() == std::string(reinterpret_cast<const char*>(digest.data()), digest.size()));
  CHECK(c.hint() == service_token_hint(decision->token));
  CHECK(e.SerializeAsString().find(decision->token.substr(4)) == std::string::npos);

  state = w.commit(std::move(state), decision->events);
  CHECK(state.version == 1);
  REQUIRE(state.tokens.count(decision->token_id) == 1);
  const ServiceTokenState& t = state.tokens.at(decision->token_id);
  CHECK(t.name == "gateway-eu");
  CHECK(t.active());
  CHECK(t.has_scope("verify"));
  CHECK(t.has_scope("audit"));
  CHECK_FALSE(t.has_scope("manage"));
  CHECK_FALSE(t.has_scope("admin"));
  CHECK(digest_equal(t.digest, digest));
  CHECK(t.hint == c.hint());
  CHECK(t.created_at == w.clock.now());
  CHECK(t.created_by == "bootstrap");
}

TEST_CASE("every scope is accepted, once each", "[domain][tokens]") {
  DomainWorld w;
  std::vector<std::string> all(kScopes.begin(), kScopes.end());
  auto decision = create_service_token(TokenRegistryState{}, "root", all, w.ctx);
  REQUIRE(decision.ok());
  CHECK(decision->events[0].service_token_created().scopes_size() == 5);
}

TEST_CASE("create_service_token validates name and scopes", "[domain][tokens][validation]") {
  DomainWorld w;
  const TokenRegistryState state;
  std::vector<std::string> expected;
  std::string name = "ok";
  std::vector<std::string> scopes = {"manage"};

  // What every section below leads to.
  const auto check_outcome = [&] {
    auto decision = create_service_token(state, name, scopes, w.ctx);
    REQUIRE_FALSE(decision.ok());
    CHECK(decision.status().reason() == "validation_failed");
    CHECK(error_fields(decision.status()) == expected);

    CHECK(create_service_token(state, std::string(100, 'n'), {"admin"}, w.ctx).ok());
  };

  SECTION("empty name") {
    name = "";
    expected = {"name"};
    check_outcome();
  }
  SECTION("101-char name") {
    name = std::string(101, 'n');
    expected = {"name"};
    check_outcome();
  }
  SECTION("invalid UTF-8 name") {
    name = "\xFF";
    expected = {"name"};
    check_outcome();
  }
  SECTION("no scopes") {
    scopes = {};
    expected = {"scopes"};
    check_outcome();
  }
  SECTION("unknown scope") {
    scopes = {"manage", "root"};
    expected = {"scopes[1]"};
    check_outcome();
  }
  SECTION("scope in the wrong case") {
    scopes = {"Manage"};
    expected = {"scopes[0]"};
    check_outcome();
  }
  SECTION("duplicate scope") {
    scopes = {"audit", "verify", "audit"};
    expected = {"scopes[2]"};
    check_outcome();
  }
  SECTION("six scopes") {
    scopes = {"manage", "verify", "audit", "report_leaks", "admin", "admin"};
    expected = {"scopes", "scopes[5]"};
    check_outcome();
  }
  SECTION("everything at once") {
    name = "";
    scopes = {"nope", "audit", "audit"};
    expected = {"name", "scopes[0]", "scopes[2]"};
    check_outcome();
  }
}

TEST_CASE("revoke_service_token revokes once", "[domain][tokens]") {
  DomainWorld w;
  TokenRegistryState state;
  auto created = create_service_token(state, "scanner", {"report_leaks"}, w.ctx);
  REQUIRE(created.ok());
  state = w.commit(std::move(state), created->events);
  w.clock.advance(5min);
  w.ctx.actor = "ops";

  auto unknown = revoke_service_token(state, "tok_000000000000000000000000", w.ctx);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().IsNotFound());
  CHECK(unknown.status().reason() == "token_not_found");

  auto decision = revoke_service_token(state, created->token_id, w.ctx);
  REQUIRE(decision.ok());
  CHECK(decision->token.empty());
  CHECK(decision->token_id == created->token_id);
  REQUIRE(decision->events.size() == 1);
  const v1::Event& e = decision->events[0];
  CHECK(e.stream() == "tokens");
  CHECK(e.type() == "token.revoked");
  CHECK(e.actor() == "ops");
  CHECK(e.service_token_revoked().token_id() == created->token_id);

  state = w.commit(std::move(state), decision->events);
  CHECK(state.version == 2);
  const ServiceTokenState& t = state.tokens.at(created->token_id);
  CHECK_FALSE(t.active());
  CHECK(t.revoked_at == w.clock.now());
  CHECK(t.created_by == "dashboard");  // the creator, not the revoker

  auto again = revoke_service_token(state, created->token_id, w.ctx);
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().IsConflict());
  CHECK(again.status().reason() == "token_not_active");
}

TEST_CASE("the token registry fold is deterministic and ignores other streams", "[domain][tokens][fold]") {
  DomainWorld w;
  TokenRegistryState state;
  std::vector<std::string> ids;
  for (const char* name : {"a", "b", "c"}) {
    auto created = create_service_token(state, name, {"verify"}, w.ctx);
    REQUIRE(created.ok());
    ids.push_back(created->token_id);
    state = w.commit(std::move(state), created->events);
    w.clock.advance(1s);
  }
  auto revoked = revoke_service_token(state, ids[1], w.ctx);
  REQUIRE(revoked.ok());
  state = w.commit(std::move(state), revoked->events);

  auto fold = [](const std::vector<v1::Event>& events) {
    TokenRegistryState s;
    for (const auto& e : events) {
      s = apply(std::move(s), e);
    }
    return s;
  };
  const TokenRegistryState once = fold(w.log);
  const TokenRegistryState twice = fold(w.log);
  REQUIRE(once.tokens.size() == 3);
  CHECK(once.version == 4);
  for (const auto& [id, token] : once.tokens) {
    const auto& other = twice.tokens.at(id);
    CHECK(token.name == other.name);
    CHECK(token.scopes == other.scopes);
    CHECK(digest_equal(token.digest, other.digest));
    CHECK(token.created_at == other.created_at);
    CHECK(token.revoked_at == other.revoked_at);
    CHECK(token.revoked_at == state.tokens.at(id).revoked_at);
  }
  CHECK_FALSE(once.tokens.at(ids[1]).active());
  CHECK(once.tokens.at(ids[0]).active());

  // A token payload outside the `tokens` stream is not a token.
  v1::Event stray = w.log[0];
  stray.set_stream("agent-agt_000000000000000000000000");
  stray.mutable_service_token_created()->set_token_id("tok_ffffffffffffffffffffffff");
  const TokenRegistryState after = apply(once, stray);
  CHECK(after.tokens.size() == 3);

  // Agent events do not disturb the registry.
  w.registered_agent();
  CHECK(apply(once, w.log.back()).tokens.size() == 3);
}

}  // namespace
}  // namespace keyledger
