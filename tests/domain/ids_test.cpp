#include "domain/ids.h"

#include <catch2/catch.hpp>
#include <regex>
#include <set>

namespace keyledger {
namespace {

TEST_CASE("ids are a prefix plus 24 lowercase hex characters", "[domain][ids]") {
  SeededRandom random(5);
  const std::string agent = new_agent_id(random);
  const std::string key = new_key_id(random);
  const std::string token = new_token_id(random);
  CHECK(std::regex_match(agent, std::regex("^agt_[0-9a-f]{24}$")));
  CHECK(std::regex_match(key, std::regex("^key_[0-9a-f]{24}$")));
  CHECK(std::regex_match(token, std::regex("^tok_[0-9a-f]{24}$")));
  CHECK(is_well_formed_id(agent, kAgentIdPrefix));
  CHECK(is_well_formed_id(key, kKeyIdPrefix));
  CHECK(is_well_formed_id(token, kTokenIdPrefix));
  CHECK_FALSE(is_well_formed_id(agent, kKeyIdPrefix));
}

TEST_CASE("ids do not repeat", "[domain][ids]") {
  SystemRandom random;
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    seen.insert(new_key_id(random));
  }
  CHECK(seen.size() == 1000);
}

TEST_CASE("is_well_formed_id rejects near misses", "[domain][ids]") {
  CHECK(is_well_formed_id("key_0123456789abcdef01234567", kKeyIdPrefix));
  CHECK_FALSE(is_well_formed_id("key_0123456789abcdef0123456", kKeyIdPrefix));    // 23
  CHECK_FALSE(is_well_formed_id("key_0123456789abcdef012345678", kKeyIdPrefix));  // 25
  CHECK_FALSE(is_well_formed_id("key_0123456789ABCDEF01234567", kKeyIdPrefix));   // uppercase
  CHECK_FALSE(is_well_formed_id("key_0123456789abcdeg01234567", kKeyIdPrefix));   // non-hex
  CHECK_FALSE(is_well_formed_id("key-0123456789abcdef01234567", kKeyIdPrefix));
  CHECK_FALSE(is_well_formed_id("", kKeyIdPrefix));
  CHECK_FALSE(is_well_formed_id("key_../../etc/passwd00000000", kKeyIdPrefix));
}

TEST_CASE("event ids are RFC 4122 version 4 UUIDs", "[domain][ids]") {
  SeededRandom random(6);
  const std::regex uuid_v4("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const std::string id = new_event_id(random);
    CHECK(std::regex_match(id, uuid_v4));
    seen.insert(id);
  }
  CHECK(seen.size() == 200);
}

TEST_CASE("seeded ids are repeatable", "[domain][ids]") {
  SeededRandom a(11);
  SeededRandom b(11);
  CHECK(new_agent_id(a) == new_agent_id(b));
  CHECK(new_event_id(a) == new_event_id(b));
}

}  // namespace
}  // namespace keyledger
