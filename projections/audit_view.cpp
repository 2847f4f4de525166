#include "projections/audit_view.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <functional>
#include <memory>

#include "projections/storage_format.h"

namespace keyledger {

namespace sf = storage_format;

namespace {

constexpr std::size_t kTimeKeyBytes = 2 * sf::kPositionBytes;  // BE(ms) BE(position)

// The type an event is filed under: its payload's name, else the envelope's string.
std::string_view audit_type(const v1::Event& event) {
  const std::string_view name = event_type_name(event.payload_case());
  return name.empty() ? std::string_view(event.type()) : name;
}

// The keys an event is about: its own, and for a rotation the new key too.
bool mentions_key(const v1::Event& event, std::string_view key_id) {
  if (event_key_id(event) == key_id) {
    return true;
  }
  return event.has_key_rotated() && event.key_rotated().new_key_id() == key_id;
}

// An empty filter value matches nothing: empty values are not indexed.
bool matches_value(const std::optional<std::string>& filter, std::string_view value) {
  return !filter || (!filter->empty() && *filter == value);
}

bool matches(const AuditQuery& q, const v1::Event& event) {
  if (!matches_value(q.agent_id, event_agent_id(event)) || !matches_value(q.type, audit_type(event)) ||
      !matches_value(q.actor, event.actor())) {
    return false;
  }
  if (q.key_id && (q.key_id->empty() || !mentions_key(event, *q.key_id))) {
    return false;
  }
  if (q.since || q.until) {
    // At the precision responses show (milliseconds), so an event's own occurred_at, passed
    // back as a bound, includes it.
    const std::int64_t at = sf::unix_ms(from_timestamp(event.occurred_at()));
    if ((q.since && at < sf::unix_ms(*q.since)) || (q.until && at > sf::unix_ms(*q.until))) {
      return false;
    }
  }
  return true;
}

// Walks the events over `[first, last]` in the given direction — the log itself, or those an
// index names by keys `prefix BE(position)` — and collects the ones `accept` takes, at most
// `limit`, peeking one further for next_after. Unreadable records are not shown (the store
// counts and logs them).
struct PositionWalk {
  const EventStore* store;
  const ColumnFamily* index;  // nullptr: the log in position order
  std::string prefix;
  std::uint64_t first;
  std::uint64_t last;
  bool descending;
  std::size_t limit;

  Result<AuditPage> run(const std::function<bool(const v1::Event&)>& accept) const {
    AuditPage page;
    if (limit == 0 || first > last) {
      return page;
    }
    // False once the page is full.
    const auto take = [&](const v1::Event& event) {
      if (is_unreadable(event) || !accept(event)) {
        return true;
      }
      if (page.events.size() == limit) {
        page.next_after = page.events.back().position();
        return false;
      }
      page.events.push_back(event);
      return true;
    };
    if (index == nullptr) {
      if (Status s = store->scan(first, last, descending, take); !s.ok()) {
        return s;
      }
      return page;
    }
    std::unique_ptr<rocksdb::Iterator> it = index->iterator();
    if (descending) {
      it->SeekForPrev(prefix + sf::encode_be64(last));
    } else {
      it->Seek(prefix + sf::encode_be64(first));
    }
    for (; it->Valid(); descending ? it->Prev() : it->Next()) {
      const std::string_view key = it->key().ToStringView();
      if (!key.starts_with(prefix)) {
        break;
      }
      if (key.size() != prefix.size() + sf::kPositionBytes) {
        continue;  // a longer value sharing this prefix (values holding '\0')
      }
      const std::uint64_t position = sf::decode_be64(key.substr(prefix.size()));
      if (descending ? position < first : position > last) {
        break;
      }
      const Result<v1::Event> event = store->read_position(position);
      if (event.status().IsNotFound()) {
        continue;  // an index entry without its event cannot be shown
      }
      if (!event.ok()) {
        return event.status();
      }
      if (!take(*event)) {
        break;
      }
    }
    if (!it->status().ok()) {
      return sf::from_rocks(it->status(), "read audit index");
    }
    return page;
  }
};

}  // namespace

AuditView::AuditView(const EventStore& store) : store_(store) {
  struct Family {
    std::string_view name;
    ColumnFamily* handle;
  };
  const Family families[] = {{"audit_agent", &by_agent_}, {"audit_key", &by_key_},
                             {"audit_type", &by_type_},   {"audit_actor", &by_actor_},
                             {"audit_time", &by_time_},   {"deliveries", &deliveries_}};
  for (const Family& f : families) {
    auto family = store.extra_column_family(f.name);
    if (family.ok()) {
      *f.handle = *family;
    } else if (open_status_.ok()) {
      open_status_ =
          Status::IoError(family.status().message() + "; open the store with projection_column_families()");
    }
  }
}

void AuditView::record(rocksdb::WriteBatch& batch, const v1::Event& event) {
  record([&](const ColumnFamily& cf, std::string_view key,
             std::string_view value) { cf.put(batch, key, value); },
         event);
}

void AuditView::record(const IndexWrite& write, const v1::Event& event) {
  const std::uint64_t position = event.position();
  std::string key;  // one buffer for every entry: `write` copies what it keeps
  auto index = [&](const ColumnFamily& cf, std::string_view value) {
    if (!value.empty()) {
      sf::value_position_key(key, value, position);
      write(cf, key, "");
    }
  };
  const std::string& agent_id = event_agent_id(event);
  index(by_agent_, agent_id);
  index(by_key_, event_key_id(event));
  if (event.has_key_rotated()) {
    index(by_key_, event.key_rotated().new_key_id());
  }
  index(by_type_, audit_type(event));
  index(by_actor_, event.actor());
  if (event.has_webhook_delivery_recorded()) {
    index(deliveries_, agent_id);
  }

  time_watermark_ms_ = std::max(time_watermark_ms_, sf::unix_ms(from_timestamp(event.occurred_at())));
  write(by_time_, sf::time_key(time_watermark_ms_) + sf::encode_be64(position), "");
}

Status AuditView::load_time_watermark() {
  std::unique_ptr<rocksdb::Iterator> it = by_time_.iterator();
  it->SeekToLast();
  if (!it->status().ok()) {
    return sf::from_rocks(it->status(), "read audit_time");
  }
  time_watermark_ms_ = it->Valid() ? static_cast<std::int64_t>(sf::decode_be64(it->key().ToStringView())) : 0;
  return Status::Ok();
}

Result<AuditView::PositionRange> AuditView::time_range(const AuditQuery& query) const {
  PositionRange range;
  if (!query.since && !query.until) {
    return range;
  }
  std::unique_ptr<rocksdb::Iterator> it = by_time_.iterator();
  if (query.since) {
    // Every event stamped at or after `since` follows the first position whose running
    // maximum reached it.
    it->Seek(sf::time_key(sf::unix_ms(*query.since)));
    if (it->Valid() && it->key().size() == kTimeKeyBytes) {
      range.first = sf::decode_be64(it->key().ToStringView().substr(sf::kPositionBytes));
    } else {
      range.first = UINT64_MAX;  // nothing that late
      range.last = 0;
    }
  }
  if (query.until && !range.empty()) {
    const std::int64_t until_ms = sf::unix_ms(*query.until);
    const std::int64_t tolerance = kCommitDisorderTolerance.count();
    const std::int64_t bound = until_ms > INT64_MAX - tolerance ? INT64_MAX : until_ms + tolerance;
    if (bound < 0) {
      range.last = 0;  // nothing that early is indexed
    } else {
      it->SeekForPrev(sf::time_key(bound) + sf::encode_be64(UINT64_MAX));
      range.last = it->Valid() && it->key().size() == kTimeKeyBytes
                       ? sf::decode_be64(it->key().ToStringView().substr(sf::kPositionBytes))
                       : 0;
    }
  }
  if (!it->status().ok()) {
    return sf::from_rocks(it->status(), "read audit_time");
  }
  return range;
}

Result<AuditPage> AuditView::query(const AuditQuery& query) const {
  Result<PositionRange> range = time_range(query);
  if (!range.ok()) {
    return range.status();
  }
  PositionWalk walk{.store = &store_,
                    .index = nullptr,
                    .prefix = "",
                    .first = range->first,
                    .last = range->last,
                    .descending = query.descending,
                    .limit = query.limit};
  // The cursor is exclusive in the query's direction; positions start at 1, so walk.last = 0
  // is an empty walk.
  if (const std::optional<std::uint64_t>& after = query.after_position) {
    if (query.descending) {
      walk.last = std::min(walk.last, *after == 0 ? 0 : *after - 1);
    } else if (*after == UINT64_MAX) {
      walk.last = 0;
    } else {
      walk.first = std::max(walk.first, *after + 1);
    }
  }
  // The most selective index first: a key has few events, an agent more, and so on.
  const std::pair<const std::optional<std::string>*, const ColumnFamily*> indexes[] = {
      {&query.key_id, &by_key_},
      {&query.agent_id, &by_agent_},
      {&query.actor, &by_actor_},
      {&query.type, &by_type_}};
  for (const auto& [filter, cf] : indexes) {
    if (*filter) {
      if ((*filter)->empty()) {
        return AuditPage{};
      }
      walk.index = cf;
      walk.prefix = sf::value_prefix(**filter);
      break;
    }
  }
  return walk.run([&query](const v1::Event& event) { return matches(query, event); });
}

Result<AuditPage> AuditView::deliveries(std::string_view agent_id, std::size_t limit,
                                        std::optional<std::uint64_t> after_position) const {
  if (agent_id.empty()) {
    return AuditPage{};
  }
  PositionWalk walk{.store = &store_,
                    .index = &deliveries_,
                    .prefix = sf::value_prefix(agent_id),
                    .first = 1,
                    .last = UINT64_MAX,
                    .descending = true,
                    .limit = limit};
  if (after_position) {
    walk.last = *after_position == 0 ? 0 : *after_position - 1;
  }
  const std::string agent(agent_id);
  return walk.run([&agent](const v1::Event& event) {
    return event.has_webhook_delivery_recorded() && event.webhook_delivery_recorded().agent_id() == agent;
  });
}

}  // namespace keyledger
