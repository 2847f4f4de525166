#include "domain/events.h"

#include <catch2/catch.hpp>

namespace keyledger {
namespace {

using namespace std::chrono_literals;

TimePoint at_seconds(std::int64_t s) { return TimePoint(std::chrono::seconds(s)); }

TEST_CASE("agent_stream names the agent's stream", "[domain][events]") {
  CHECK(agent_stream("agt_0123") == "agent-agt_0123");
}

TEST_CASE("event_type_name covers every payload", "[domain][events]") {
  CHECK(event_type_name(v1::Event::kAgentRegistered) == "agent.registered");
  CHECK(event_type_name(v1::Event::kRateLimitTierChanged) == "agent.rate_limit_changed");
  CHECK(event_type_name(v1::Event::kKeyCreated) == "key.created");
  CHECK(event_type_name(v1::Event::kKeyRotated) == "key.rotated");
  CHECK(event_type_name(v1::Event::kKeyRevoked) == "key.revoked");
  CHECK(event_type_name(v1::Event::kKeyExpired) == "key.expired");
  CHECK(event_type_name(v1::Event::kKeyCompromised) == "key.compromised");
  CHECK(event_type_name(v1::Event::kWebhookDeliveryRecorded) == "webhook.delivery_recorded");
  CHECK(event_type_name(v1::Event::kServiceTokenCreated) == "token.created");
  CHECK(event_type_name(v1::Event::kServiceTokenRevoked) == "token.revoked");
  CHECK(event_type_name(v1::Event::PAYLOAD_NOT_SET) == "");
}

TEST_CASE("event_agent_id and event_key_id read the payload", "[domain][events]") {
  v1::Event e;
  CHECK(event_agent_id(e) == "");
  CHECK(event_key_id(e) == "");

  e.mutable_key_revoked()->set_agent_id("agt_1");
  e.mutable_key_revoked()->set_key_id("key_1");
  CHECK(event_agent_id(e) == "agt_1");
  CHECK(event_key_id(e) == "key_1");

  e.mutable_key_rotated()->set_agent_id("agt_2");
  e.mutable_key_rotated()->set_key_id("key_old");
  e.mutable_key_rotated()->set_new_key_id("key_new");
  CHECK(event_agent_id(e) == "agt_2");
  CHECK(event_key_id(e) == "key_old");

  e.mutable_rate_limit_tier_changed()->set_agent_id("agt_3");
  CHECK(event_agent_id(e) == "agt_3");
  CHECK(event_key_id(e) == "");

  e.mutable_webhook_delivery_recorded()->set_agent_id("agt_4");
  CHECK(event_agent_id(e) == "agt_4");

  e.mutable_service_token_created()->set_token_id("tok_1");
  CHECK(event_agent_id(e) == "");
  CHECK(event_key_id(e) == "");
}

TEST_CASE("timestamps round-trip with nanosecond precision", "[domain][events]") {
  const TimePoint t = at_seconds(1795689383) + 123456789ns;
  const auto ts = to_timestamp(t);
  CHECK(ts.seconds() == 1795689383);
  CHECK(ts.nanos() == 123456789);
  CHECK(from_timestamp(ts) == t);

  // Before the epoch the nanos stay non-negative, as protobuf requires.
  const TimePoint before = at_seconds(-2) + 250ms;
  const auto ts_before = to_timestamp(before);
  CHECK(ts_before.seconds() == -2);
  CHECK(ts_before.nanos() == 250000000);
  CHECK(from_timestamp(ts_before) == before);
}

TEST_CASE("from_timestamp clamps instead of overflowing", "[domain][events]") {
  google::protobuf::Timestamp far;
  far.set_seconds(253402300799);  // 9999-12-31T23:59:59Z
  CHECK(from_timestamp(far) == TimePoint::max());
  far.set_seconds(-62135596800);  // 0001-01-01T00:00:00Z
  CHECK(from_timestamp(far) == TimePoint::min());
}

TEST_CASE("format_rfc3339 writes UTC with optional milliseconds", "[domain][events]") {
  CHECK(format_rfc3339(at_seconds(1795689383)) == "2026-11-26T10:36:23Z");
  CHECK(format_rfc3339(at_seconds(1795689383) + 5ms) == "2026-11-26T10:36:23.005Z");
  CHECK(format_rfc3339(at_seconds(1795689383) + 999999999ns) == "2026-11-26T10:36:23.999Z");
  CHECK(format_rfc3339(at_seconds(0)) == "1970-01-01T00:00:00Z");
  CHECK(format_rfc3339(at_seconds(951782400)) == "2000-02-29T00:00:00Z");
  CHECK(format_rfc3339(at_seconds(-1)) == "1969-12-31T23:59:59Z");
}

TEST_CASE("parse_rfc3339 accepts Z, offsets and fractions", "[domain][events]") {
  TimePoint t;
  REQUIRE(parse_rfc3339("2026-11-26T10:36:23Z", t));
  CHECK(t == at_seconds(1795689383));

  REQUIRE(parse_rfc3339("2026-11-26T10:36:23.5Z", t));
  CHECK(t == at_seconds(1795689383) + 500ms);

  REQUIRE(parse_rfc3339("2026-11-26T10:36:23.123456789Z", t));
  CHECK(t == at_seconds(1795689383) + 123456789ns);

  REQUIRE(parse_rfc3339("2026-11-26T10:36:23.1234567891234Z", t));  // beyond ns: truncated
  CHECK(t == at_seconds(1795689383) + 123456789ns);

  REQUIRE(parse_rfc3339("2026-11-26T12:36:23+02:00", t));
  CHECK(t == at_seconds(1795689383));

  REQUIRE(parse_rfc3339("2026-11-26T05:06:23-05:30", t));
  CHECK(t == at_seconds(1795689383));

  REQUIRE(parse_rfc3339("2026-11-26t10:36:23z", t));
  CHECK(t == at_seconds(1795689383));

  REQUIRE(parse_rfc3339("2024-02-29T00:00:00Z", t));
}

TEST_CASE("parse_rfc3339 rejects malformed text and leaves the output alone", "[domain][events]") {
  const TimePoint sentinel = at_seconds(42);
  for (const char* text : {"",
                           "2026-11-26",
                           "2026-11-26T10:36:23",
                           "2026-11-26 10:36:23Z",
                           "2026-11-26T10:36Z",
                           "2026-13-01T00:00:00Z",
                           "2026-02-29T00:00:00Z",
                           "2026-04-31T00:00:00Z",
                           "2026-11-26T24:00:00Z",
                           "2026-11-26T10:60:00Z",
                           "2026-11-26T10:36:61Z",
                           "2026-11-26T10:36:23.Z",
                           "2026-11-26T10:36:23+0200",
                           "2026-11-26T10:36:23+24:00",
                           "2026-11-26T10:36:23Zjunk",
                           "26-11-26T10:36:23Z",
                           "2026-1-26T10:36:23Z",
                           "+2026-11-26T10:36:23Z",
                           "9999-12-31T23:59:59Z",
                           "0001-01-01T00:00:00Z"}) {
    TimePoint t = sentinel;
    INFO(text);
    CHECK_FALSE(parse_rfc3339(text, t));
    CHECK(t == sentinel);
  }
}

TEST_CASE("format and parse round-trip", "[domain][events]") {
  for (TimePoint t :
       {at_seconds(1795689383), at_seconds(1795689383) + 7ms, at_seconds(0), at_seconds(4102444799)}) {
    TimePoint back;
    REQUIRE(parse_rfc3339(format_rfc3339(t), back));
    CHECK(back == t);
  }
}

}  // namespace
}  // namespace keyledger
