// Protobuf event decoding and the state folds: the input is decoded as a v1::StateSnapshot
// (what a replica reads from keyledger.key-state; its events are the log's records), else as
// one v1::Event; the events are folded into an AgentState, a TokenRegistryState and an
// ActiveKeyTable, and shown as the API shows them.
//
// Checked: decode -> encode -> decode gives an equal message and the same bytes again; the folds are pure
// (folding twice, or one event at a time, gives the same state) and the agent's version is the last event's
// stream_version; the ActiveKeyTable never brings a revoked, expired or compromised key back to active, and
// applying the same events again (at-least-once delivery) changes nothing when they form a possible log
// (no key changed before it was created); the JSON views of
// every event and of the folded agent serialize when the decoded strings are valid UTF-8.
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "api/views.h"
#include "domain/agent.h"
#include "domain/service_tokens.h"
#include "projections/active_key_table.h"
#include "support/checks.h"

namespace keyledger::fuzz {
namespace {

using google::protobuf::util::MessageDifferencer;

// At most this many events are folded (a snapshot holds one subject's events; more only costs time).
constexpr int kMaxEvents = 256;

using TableRow = std::tuple<std::string, std::string, int, std::int64_t, std::int64_t, int, int>;

std::map<std::string, TableRow> table_rows(const ActiveKeyTable& table) {
  std::map<std::string, TableRow> rows;
  table.for_each([&](const Digest& d, const KeyEntry& e) {
    rows[std::string(reinterpret_cast<const char*>(d.data()), d.size())] =
        TableRow{e.key_id.str(),  e.agent_id.str(), static_cast<int>(e.condition),  e.created_at_ms,
                 e.expires_at_ms, e.tier,           static_cast<int>(e.environment)};
  });
  return rows;
}

std::string agent_summary(const AgentState& s) {
  std::string out =
      s.agent_id + "|" + s.profile.name + "|" + s.rate_limit_tier + "|" + std::to_string(s.version);
  for (const auto& k : s.keys) {
    out += "|" + k.key_id + ":" + std::string(key_status_name(k.status)) + ":" + k.label + ":" +
           k.rotated_to + ":" + std::to_string(k.revoked_at.has_value()) +
           std::to_string(k.compromised_at.has_value());
  }
  return out;
}

// True if an event rotates, revokes, expires or compromises a key before the sequence created it.
bool changes_keys_before_creating_them(const std::vector<v1::Event>& events) {
  std::set<std::string> created;
  for (const auto& e : events) {
    switch (e.payload_case()) {
      case v1::Event::kKeyCreated:
        created.insert(e.key_created().key_id());
        break;
      case v1::Event::kKeyRotated:
        if (!created.contains(e.key_rotated().key_id())) {
          return true;
        }
        break;
      case v1::Event::kKeyRevoked:
        if (!created.contains(e.key_revoked().key_id())) {
          return true;
        }
        break;
      case v1::Event::kKeyExpired:
        if (!created.contains(e.key_expired().key_id())) {
          return true;
        }
        break;
      case v1::Event::kKeyCompromised:
        if (!created.contains(e.key_compromised().key_id())) {
          return true;
        }
        break;
      default:
        break;
    }
  }
  return false;
}

// decode -> encode -> decode gives an equal message and the same bytes again. Checked on the message
// as it was decoded: an event wrapped into a snapshot sits one level deeper, and one decoded at
// libprotobuf's recursion limit (nested unknown groups) would no longer decode there
// (tests/fuzz/regressions/event_fold/event-at-recursion-limit). libprotobuf refuses to decode
// again what it wrote from invalid UTF-8 nested in a message: keyledger never writes such
// strings (command_bodies checks), so only valid ones are checked.
template <typename Message>
void check_round_trip(const Message& decoded) {
  if (!strings_are_utf8(decoded)) {
    return;
  }
  const std::string encoded = decoded.SerializeAsString();
  Message again;
  FUZZ_CHECK(again.ParseFromString(encoded), "re-encoded message does not decode");
  FUZZ_CHECK(MessageDifferencer::Equals(decoded, again), "round trip changed the message");
  FUZZ_CHECK(again.SerializeAsString() == encoded, "second encoding differs");
}

void run(std::string_view input) {
  const std::string bytes(input);
  v1::StateSnapshot snapshot;
  if (snapshot.ParseFromString(bytes)) {
    check_round_trip(snapshot);
  } else {
    v1::Event single;
    if (!single.ParseFromString(bytes)) {
      return;
    }
    check_round_trip(single);
    *snapshot.add_events() = std::move(single);
  }
  // libprotobuf 3.21 decodes invalid UTF-8 in proto3 strings (it only logs): such events never
  // come from keyledger's own commands (command_bodies checks that), so the JSON views, which
  // refuse invalid UTF-8, are only asked to show valid ones.
  const bool utf8 = strings_are_utf8(snapshot);

  std::vector<v1::Event> events(snapshot.events().begin(),
                                snapshot.events().begin() + std::min(snapshot.events_size(), kMaxEvents));

  // The agent fold: pure, incremental = batch, version from the last event.
  const AgentState folded = fold_agent(events);
  AgentState stepwise;
  for (const auto& e : events) {
    stepwise = apply(std::move(stepwise), e);
  }
  FUZZ_CHECK(agent_summary(folded) == agent_summary(stepwise), "stepwise fold differs");
  FUZZ_CHECK(agent_summary(folded) == agent_summary(fold_agent(events)), "fold is not pure");
  if (!events.empty()) {
    FUZZ_CHECK(folded.version == events.back().stream_version(), "version is not the last stream_version");
  }
  std::set<std::string> key_ids;
  for (const auto& k : folded.keys) {
    FUZZ_CHECK(key_ids.insert(k.key_id).second, "a key folded twice: " + printable(k.key_id));
  }

  TokenRegistryState tokens;
  for (const auto& e : events) {
    tokens = apply(std::move(tokens), e);
  }

  // The views the API and webhooks show must serialize (nlohmann throws on invalid UTF-8).
  const TimePoint now = std::chrono::system_clock::time_point{} + std::chrono::hours(24 * 365 * 57);
  for (const auto& e : events) {
    if (utf8) {
      (void)api::audit_event_json(e).dump();
      (void)api::event_data_json(e).dump();
    }
  }
  if (folded.exists() && utf8) {
    (void)api::agent_json(folded, now).dump();
    for (const auto& k : folded.keys) {
      (void)api::key_json(k, now, std::nullopt).dump();
    }
  }
  for (const auto& [id, t] : tokens.tokens) {
    if (utf8) {
      (void)api::token_json(t).dump();
    }
  }

  // The active-key table: no resurrection, idempotent under redelivery.
  auto owned = std::make_unique<ActiveKeyTable>(std::vector<std::string>{"standard", "elevated"});
  ActiveKeyTable& table = *owned;
  std::map<std::string, TableRow> before = table_rows(table);
  for (const auto& e : events) {
    table.apply(e);
    const auto after = table_rows(table);
    for (const auto& [digest, row] : before) {
      const auto it = after.find(digest);
      FUZZ_CHECK(it != after.end(), "an entry disappeared");
      const auto was = static_cast<KeyCondition>(std::get<2>(row));
      const auto now_is = static_cast<KeyCondition>(std::get<2>(it->second));
      FUZZ_CHECK(was == KeyCondition::kActive || now_is != KeyCondition::kActive,
                 "an inactive key became active again: " + printable(e.ShortDebugString()));
      FUZZ_CHECK(was != KeyCondition::kCompromised || now_is == KeyCondition::kCompromised,
                 "a compromised key lost its mark: " + printable(e.ShortDebugString()));
    }
    before = after;
  }
  // Redelivery replays a suffix of a real log onto a table that holds it, and in a real log a
  // key's changes come after its creation (the aggregate decides them against its state). A
  // fuzzed sequence that changes a key before creating it is no such log: applied twice, the
  // second pass sees the change with the key present and the first did not
  // (tests/fuzz/regressions/event_fold/table-redelivery-not-idempotent, analysed).
  if (!changes_keys_before_creating_them(events)) {
    for (const auto& e : events) {
      table.apply(e);
    }
    FUZZ_CHECK(table_rows(table) == before, "applying the events again changed the table");
  }
}

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keyledger::fuzz::run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
