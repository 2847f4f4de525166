#pragma once
// The audit log's indexes (audit_agent, audit_key, audit_type, audit_actor, audit_time,
// deliveries; layouts in projector.h) and the queries over them. Internal to the projections
// layer: the Projector records each event through it inside its one WriteBatch per group.
//
// Every query answers in position order. A filter on agent, key, actor or type walks that
// value's index, which lists positions in order; since/until narrow the walk to a range of
// positions found in audit_time. Each candidate event is read from the log and checked
// against every filter, so an index only has to list a superset.
//
// audit_time keys do not hold each event's own occurred_at but the highest occurred_at up to
// that position. Events are stamped just before they are committed, so occurred_at is nearly,
// not strictly, increasing in position; the running maximum is strictly sorted both ways,
// which turns a time into a position bound. `since` is then exact. For `until`, events
// committed more than kCommitDisorderTolerance after a later-stamped one (a clock stepped
// back by more than that) can be missed.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "eventstore/event_store.h"
#include "projections/bulk_load.h"
#include "projections/projector.h"

namespace rocksdb {
class WriteBatch;
}  // namespace rocksdb

namespace keyledger {

inline constexpr std::chrono::milliseconds kCommitDisorderTolerance{10'000};

class AuditView {
 public:
  // Finds its column families (and the log's `events`) in `store`, which must outlive it.
  explicit AuditView(const EventStore& store);

  // IoError naming a missing column family, else Ok.
  const Status& open_status() const { return open_status_; }

  // --- Writer side (the projector's apply thread only).
  // Adds the index entries of `event` to `batch`, or hands them to `write` (a rebuild).
  void record(rocksdb::WriteBatch& batch, const v1::Event& event);
  void record(const IndexWrite& write, const v1::Event& event);
  // Picks up the running maximum of occurred_at from the last audit_time entry (start-up).
  Status load_time_watermark();
  // Forgets it (rebuild).
  void reset_time_watermark() { time_watermark_ms_ = 0; }

  // --- Queries (any thread).
  Result<AuditPage> query(const AuditQuery& query) const;
  Result<AuditPage> deliveries(std::string_view agent_id, std::size_t limit,
                               std::optional<std::uint64_t> after_position) const;

 private:
  struct PositionRange {
    std::uint64_t first = 1;
    std::uint64_t last = UINT64_MAX;
    bool empty() const { return first > last; }
  };
  Result<PositionRange> time_range(const AuditQuery& query) const;

  const EventStore& store_;
  ColumnFamily by_agent_;
  ColumnFamily by_key_;
  ColumnFamily by_type_;
  ColumnFamily by_actor_;
  ColumnFamily by_time_;
  ColumnFamily deliveries_;
  Status open_status_;
  std::int64_t time_watermark_ms_ = 0;
};

}  // namespace keyledger
