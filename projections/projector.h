#pragma once
// The read side. Every committed event is applied, on the event store's writer thread and
// before the append returns, to:
//   - the ActiveKeyTable and ServiceTokenTable (memory), and
//   - RocksDB index column families in the store's own database (the KeyCatalog and the
//     AuditView), written in one unsynced WriteBatch together with the checkpoint.
// So a command's HTTP answer is sent only after the tables reflect its events. The indexes
// are rebuildable: after a crash the tail since the checkpoint is replayed (applying is
// idempotent), and `rebuild()` wipes them and replays the whole log. A checkpoint that is
// missing, of another format, unreadable, ahead of the log or disagreeing with its own entry
// count is not trusted: start() logs why and rebuilds from the log instead.
//
// Column families (keys are bytes; BE = 8-byte big-endian):
//   proj_checkpoint  "position"                          -> BE(last applied position)
//                    "format"                            -> layout version of these families
//                    "entries"                           -> BE(key_table entry count)
//                    "agents"                            -> BE(agents known; a size hint)
//   key_table        digest(32)                          -> packed KeyEntry (table snapshot)
//   key_agent        key_id                              -> agent_id
//   key_active       BE(created_ms) key_id               -> agent_id  (active keys only)
//   key_expiry       BE(expires_ms) key_id               -> agent_id  (active keys with expiry)
//   key_usage        key_id                              -> BE(last used, unix seconds)
//   agent_settings   agent_id                            -> packed environment + tier name
//   audit_agent      agent_id \0 BE(position)            -> ""
//   audit_key        key_id \0 BE(position)              -> ""  (a rotation: old and new key)
//   audit_type       type \0 BE(position)                -> ""
//   audit_actor      actor \0 BE(position)               -> ""
//   audit_time       BE(occurred_ms) BE(position)        -> ""  (occurred_ms: the running
//                                                              maximum, see audit_view.h)
//   deliveries       agent_id \0 BE(position)            -> ""  (webhook.delivery_recorded)
// Times are unix milliseconds rounded down (before 1970: 0). key_usage is usage data, not
// derived from events: rebuild() keeps it.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "domain/agent.h"
#include "eventstore/command_service.h"
#include "eventstore/event_store.h"
#include "projections/active_key_table.h"
#include "projections/service_token_table.h"

namespace keyledger {

// The column families to pass as EventStoreOptions::extra_column_families.
std::vector<std::string> projection_column_families();
// What to add to EventStoreOptions::tuning for them: the indexes only ever scanned.
std::map<std::string, EventStoreOptions::FamilyTuning, std::less<>> projection_family_tuning();

// Members all have initializers, so designated initializers may name only the filters used.
struct AuditQuery {
  std::optional<std::string> agent_id{};
  std::optional<std::string> key_id{};
  std::optional<std::string> type{};
  std::optional<std::string> actor{};
  std::optional<TimePoint> since{};  // occurred_at >= since
  std::optional<TimePoint> until{};  // occurred_at <= until
  bool descending = false;
  std::size_t limit = 100;
  // Continue after this position (exclusive), in the query's order (from a cursor).
  std::optional<std::uint64_t> after_position{};
};

struct AuditPage {
  std::vector<v1::Event> events;
  // Set when more events may follow: the position to continue after.
  std::optional<std::uint64_t> next_after;
};

class Projector final : public CommandIndex {
 public:
  // `tiers`: tier names from configuration (first is the default). `store` must have been
  // opened with projection_column_families() and must outlive the Projector.
  Projector(EventStore& store, std::vector<std::string> tiers);
  // Unsubscribes from the store (waiting for an apply in progress).
  ~Projector();
  Projector(const Projector&) = delete;
  Projector& operator=(const Projector&) = delete;

  // Loads the checkpoint and the key table snapshot, replays events after the checkpoint,
  // then installs itself as the store's commit listener. A checkpoint that cannot be
  // trusted (see above) is replaced by a full rebuild, with a warning in the log. Returns
  // IoError/Corruption on storage failure, Conflict `projector_started` on a second call.
  // Call once, before serving.
  Status start();

  // Applies committed events in position order (the commit listener). Events at or below the
  // checkpoint are skipped; events missing before the first one (a gap) are read from the
  // log first. If writing the indexes fails, the tables are still updated and the writes go
  // out with the next call.
  void apply(const std::vector<v1::Event>& events);

  // Last applied position.
  std::uint64_t checkpoint() const;

  ActiveKeyTable& key_table() { return *key_table_; }
  const ActiveKeyTable& key_table() const { return *key_table_; }
  ServiceTokenTable& tokens() { return *tokens_; }
  const ServiceTokenTable& tokens() const { return *tokens_; }

  // The agent that owns `key_id`; NotFound("key_not_found") if none.
  Result<std::string> agent_of_key(std::string_view key_id) const override;
  // The token registry, as tokens() folds it.
  TokenRegistryState token_registry() const override;
  // Folds the agent's stream from the store; NotFound("agent_not_found") if it has no events.
  Result<AgentState> load_agent(std::string_view agent_id) const;
  // Active keys created before `created_before`, oldest first, at most `limit`.
  Result<std::vector<KeyRef>> keys_created_before(TimePoint created_before, std::size_t limit) const;
  // Active keys whose expires_at <= `now`, at most `limit` (the expiry scheduler's work list).
  Result<std::vector<KeyRef>> keys_expiring_by(TimePoint now, std::size_t limit) const override;

  // Last successful verification of a key: in-memory usage, else the flushed value.
  std::optional<TimePoint> last_used(std::string_view key_id) const;
  // Writes usage recorded since the last flush to key_usage (called every few seconds).
  Status flush_usage();

  // Events matching every filter of `query`, using the most selective index (key, agent,
  // actor, type, time), never a scan of the whole log when a filter is given. key_id
  // matches a rotation's old and new key. An empty string filter matches nothing. next_after
  // is set only when another matching event exists.
  Result<AuditPage> audit(const AuditQuery& query) const;
  // An agent's webhook.delivery_recorded events, newest first; `after_position` continues
  // below that position.
  Result<AuditPage> webhook_deliveries(std::string_view agent_id, std::size_t limit,
                                       std::optional<std::uint64_t> after_position) const;

  // Wipes every projection column family (except key_usage) and replays the whole log
  // (offline command `keyledger rebuild-projections`, and tests), then flushes the store:
  // the rebuilt projections are durable when it returns. Until then the checkpoint says a
  // rebuild is under way, so one cut short is redone at the next start. The Projector must
  // not be started (Conflict `projector_started`); start() may follow. The rebuild collects
  // its index writes in memory and ingests them in sorted files whenever `spill_bytes` are
  // collected (BulkLoad; tests pass a small value to spill often).
  static constexpr std::size_t kRebuildSpillBytes = std::size_t{128} << 20;
  Status rebuild(std::size_t spill_bytes = kRebuildSpillBytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<ActiveKeyTable> key_table_;
  std::unique_ptr<ServiceTokenTable> tokens_;
};

}  // namespace keyledger
