#include "consumers/state_snapshots.h"

#include <algorithm>

namespace keyledger::consumers {

namespace {

// A key has a handful of events (created, rotated, revoked/expired, compromised); this bounds
// a pathological one.
constexpr std::size_t kMaxKeyEvents = 1000;

// Replicas never sign webhooks: the sealed secret stays out of one more topic.
void strip_webhook_secret(v1::Event& event) {
  if (event.has_agent_registered()) {
    event.mutable_agent_registered()->clear_webhook_secret();
  }
}

bool touches_key(const v1::Event& event, const std::string& key_id) {
  return is_key_event(event) && event_key_id(event) == key_id;
}

Result<std::optional<SnapshotRecord>> key_snapshot(const std::string& key_id, const Projector& projector) {
  AuditQuery query;
  query.key_id = key_id;
  query.limit = kMaxKeyEvents;
  auto page = projector.audit(query);
  if (!page.ok()) {
    return page.status();
  }
  SnapshotRecord record{key_id, {}};
  for (auto& event : page->events) {
    // The key's rotation to a successor is listed under the successor too; it changes only
    // the old key, so the successor's snapshot leaves it out.
    if (touches_key(event, key_id)) {
      record.snapshot.set_position(std::max(record.snapshot.position(), event.position()));
      *record.snapshot.add_events() = std::move(event);
    }
  }
  if (record.snapshot.events().empty()) {
    return std::optional<SnapshotRecord>();
  }
  return std::optional<SnapshotRecord>(std::move(record));
}

Result<std::optional<SnapshotRecord>> agent_snapshot(const std::string& agent_id,
                                                     const Projector& projector) {
  AuditQuery registered;
  registered.agent_id = agent_id;
  registered.type = "agent.registered";
  registered.limit = 1;
  auto first = projector.audit(registered);
  if (!first.ok()) {
    return first.status();
  }
  AuditQuery changed;
  changed.agent_id = agent_id;
  changed.type = "agent.rate_limit_changed";
  changed.descending = true;
  changed.limit = 1;
  auto latest = projector.audit(changed);
  if (!latest.ok()) {
    return latest.status();
  }
  SnapshotRecord record{agent_id, {}};
  for (auto* page : {&first.value(), &latest.value()}) {
    for (auto& event : page->events) {
      strip_webhook_secret(event);
      record.snapshot.set_position(std::max(record.snapshot.position(), event.position()));
      *record.snapshot.add_events() = std::move(event);
    }
  }
  if (record.snapshot.events().empty()) {
    return std::optional<SnapshotRecord>();
  }
  return std::optional<SnapshotRecord>(std::move(record));
}

Result<std::optional<SnapshotRecord>> tokens_snapshot(const EventStore& store) {
  auto events = store.read_stream(kTokensStream);
  if (!events.ok()) {
    return events.status();
  }
  SnapshotRecord record{std::string(kTokensSnapshotKey), {}};
  for (auto& event : *events) {
    record.snapshot.set_position(std::max(record.snapshot.position(), event.position()));
    *record.snapshot.add_events() = std::move(event);
  }
  if (record.snapshot.events().empty()) {
    return std::optional<SnapshotRecord>();
  }
  return std::optional<SnapshotRecord>(std::move(record));
}

// The snapshot of a subject `event` creates: the event alone. Whatever changes the subject
// later is published after it, with its own snapshot of the whole state, so the topic's last
// record for the subject is the same as if it had been read from the projections now.
SnapshotRecord creation_snapshot(std::string key, const v1::Event& event) {
  SnapshotRecord record{std::move(key), {}};
  record.snapshot.set_position(event.position());
  v1::Event& copy = *record.snapshot.add_events();
  copy = event;
  strip_webhook_secret(copy);
  return record;
}

}  // namespace

Result<std::optional<SnapshotRecord>> snapshot_after(const v1::Event& event, const EventStore& store,
                                                     const Projector& projector) {
  switch (event.payload_case()) {
    case v1::Event::kKeyCreated:
      return std::optional<SnapshotRecord>(creation_snapshot(event_key_id(event), event));
    case v1::Event::kAgentRegistered:
      return std::optional<SnapshotRecord>(creation_snapshot(event_agent_id(event), event));
    case v1::Event::kKeyRotated:
    case v1::Event::kKeyRevoked:
    case v1::Event::kKeyExpired:
    case v1::Event::kKeyCompromised:
      return key_snapshot(event_key_id(event), projector);
    case v1::Event::kRateLimitTierChanged:
      return agent_snapshot(event_agent_id(event), projector);
    case v1::Event::kServiceTokenCreated:
    case v1::Event::kServiceTokenRevoked:
      return tokens_snapshot(store);
    default:
      return std::optional<SnapshotRecord>();
  }
}

}  // namespace keyledger::consumers
