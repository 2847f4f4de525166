#include "projections/service_token_table.h"

#include <catch2/catch.hpp>

namespace keyledger {
namespace {

Digest digest_of(std::uint8_t seed) {
  Digest d{};
  d.fill(seed);
  return d;
}

v1::Event token_created(std::uint64_t version, const std::string& id, const Digest& d) {
  v1::Event e;
  e.set_stream(std::string(kTokensStream));
  e.set_stream_version(version);
  e.mutable_service_token_created()->set_token_id(id);
  e.mutable_service_token_created()->set_name(id + "-name");
  e.mutable_service_token_created()->add_scopes("verify");
  e.mutable_service_token_created()->set_digest(d.data(), d.size());
  return e;
}

v1::Event token_revoked(std::uint64_t version, const std::string& id) {
  v1::Event e;
  e.set_stream(std::string(kTokensStream));
  e.set_stream_version(version);
  e.mutable_service_token_revoked()->set_token_id(id);
  return e;
}

}  // namespace

TEST_CASE("service token table folds the tokens stream", "[projections]") {
  ServiceTokenTable table;
  CHECK(table.empty());
  table.apply(token_created(1, "tok_b", digest_of(1)));
  table.apply(token_created(2, "tok_a", digest_of(2)));
  CHECK_FALSE(table.empty());
  REQUIRE(table.find_active(digest_of(1)));
  CHECK(table.find_active(digest_of(1))->token_id == "tok_b");
  CHECK_FALSE(table.find_active(digest_of(3)));

  // Oldest first, not by id.
  auto list = table.list();
  REQUIRE(list.size() == 2);
  CHECK(list[0].token_id == "tok_b");
  CHECK(list[1].token_id == "tok_a");

  table.apply(token_revoked(3, "tok_b"));
  CHECK_FALSE(table.find_active(digest_of(1)));
  CHECK(table.find_active(digest_of(2)));
  CHECK(table.state().version == 3);

  table.clear();
  CHECK(table.empty());
  CHECK_FALSE(table.find_active(digest_of(2)));
}

TEST_CASE("service token table ignores other streams and events already folded", "[projections]") {
  ServiceTokenTable table;
  table.apply(token_created(1, "tok_a", digest_of(1)));
  table.apply(token_revoked(2, "tok_a"));
  table.apply(token_created(1, "tok_a", digest_of(1)));  // redelivered
  CHECK_FALSE(table.find_active(digest_of(1)));
  CHECK(table.list().size() == 1);

  v1::Event foreign = token_created(7, "tok_x", digest_of(5));
  foreign.set_stream("agent-agt_a");
  table.apply(foreign);
  CHECK_FALSE(table.find_active(digest_of(5)));
  v1::Event key_event;
  key_event.set_stream(std::string(kTokensStream));
  key_event.set_stream_version(9);
  key_event.mutable_key_created()->set_key_id("key_1");
  table.apply(key_event);
  CHECK(table.state().version == 2);  // neither moved the folded version
}

}  // namespace keyledger
