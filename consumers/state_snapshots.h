#pragma once
// The records of the compacted topic `keyledger.key-state` (v1::StateSnapshot): for each
// subject an event changes — a key, an agent's settings, the service-token registry — the
// events that fold into its current state, read from the projections.

#include <optional>
#include <string>

#include "domain/status.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"

namespace keyledger::consumers {

// Message key of the token registry's snapshot.
inline constexpr std::string_view kTokensSnapshotKey = "tokens";

struct SnapshotRecord {
  std::string key;  // key_id, agent_id or "tokens"
  v1::StateSnapshot snapshot;
};

// The snapshot to publish after `event`:
//   key events (created, rotated — the old key —, revoked, expired, compromised) -> the key's
//     events (message key key_id);
//   agent.registered / agent.rate_limit_changed -> the registration and the latest tier change
//     (agent_id), the sealed webhook secret removed;
//   token events -> the whole `tokens` stream ("tokens").
// nullopt for events that change none of these (webhook deliveries). The snapshot reflects
// the projections now, which may be newer than `event`: replicas apply idempotently. An
// event that creates its subject (key.created, agent.registered) is its own snapshot: it
// is the subject's first event, and any later change publishes a whole snapshot after it.
// IoError/Corruption if the projections cannot be read.
Result<std::optional<SnapshotRecord>> snapshot_after(const v1::Event& event, const EventStore& store,
                                                     const Projector& projector);

}  // namespace keyledger::consumers
