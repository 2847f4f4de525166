#include "projections/key_catalog.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <memory>

#include "projections/storage_format.h"

namespace keyledger {

namespace sf = storage_format;

namespace {

bool indexed_active(const std::optional<KeyEntry>& entry) {
  return entry && entry->condition == KeyCondition::kActive;
}

std::string_view digest_key(const Digest& digest) {
  return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}

std::optional<Digest> digest_from_key(const rocksdb::Slice& key) {
  Digest d{};
  if (key.size() != d.size()) {
    return std::nullopt;
  }
  std::copy(key.data(), key.data() + d.size(), d.begin());
  return d;
}

}  // namespace

KeyCatalog::KeyCatalog(const EventStore& store) : store_(store) {
  struct Family {
    std::string_view name;
    ColumnFamily* handle;
  };
  const Family families[] = {{"key_table", &key_table_},   {"key_agent", &key_agent_},
                             {"key_active", &key_active_}, {"key_expiry", &key_expiry_},
                             {"key_usage", &key_usage_},   {"agent_settings", &agent_settings_}};
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

void KeyCatalog::record_key_change(rocksdb::WriteBatch& batch, std::string_view key_id,
                                   const std::optional<KeyEntry>& before,
                                   const std::optional<KeyEntry>& after) const {
  if (!before && after) {
    key_agent_.put(batch, key_id, after->agent_id.view());
  }
  const bool was_active = indexed_active(before);
  const bool is_active = indexed_active(after);
  const bool same_created = was_active && is_active && before->created_at_ms == after->created_at_ms;
  const bool same_expiry = was_active && is_active && before->expires_at_ms == after->expires_at_ms;

  if (was_active && !same_created) {
    key_active_.erase(batch, sf::time_key_id(before->created_at_ms, key_id));
  }
  if (was_active && before->expires_at_ms != 0 && !same_expiry) {
    key_expiry_.erase(batch, sf::time_key_id(before->expires_at_ms, key_id));
  }
  if (is_active && !same_created) {
    key_active_.put(batch, sf::time_key_id(after->created_at_ms, key_id), after->agent_id.view());
  }
  if (is_active && after->expires_at_ms != 0 && !same_expiry) {
    key_expiry_.put(batch, sf::time_key_id(after->expires_at_ms, key_id), after->agent_id.view());
  }
}

void KeyCatalog::record_entry(rocksdb::WriteBatch& batch, const Digest& digest, const KeyEntry& entry,
                              std::string_view tier_name) const {
  key_table_.put(batch, digest_key(digest), sf::pack_key_entry(entry, tier_name));
}

void KeyCatalog::record_agent(rocksdb::WriteBatch& batch, std::string_view agent_id,
                              v1::Environment environment, std::string_view tier_name) const {
  agent_settings_.put(batch, agent_id, sf::pack_agent_settings(environment, tier_name));
}

void KeyCatalog::write_snapshot(const ActiveKeyTable& table, const IndexWrite& write) const {
  table.for_each([&](const Digest& digest, const KeyEntry& entry) {
    const std::string_view key_id = entry.key_id.view();
    const std::string_view agent_id = entry.agent_id.view();
    write(key_table_, digest_key(digest), sf::pack_key_entry(entry, table.tier_name(entry.tier)));
    write(key_agent_, key_id, agent_id);
    if (indexed_active(entry)) {
      write(key_active_, sf::time_key_id(entry.created_at_ms, key_id), agent_id);
      if (entry.expires_at_ms != 0) {
        write(key_expiry_, sf::time_key_id(entry.expires_at_ms, key_id), agent_id);
      }
    }
  });
  table.for_each_agent([&](std::string_view agent_id, const ActiveKeyTable::AgentDefaults& defaults) {
    write(agent_settings_, agent_id,
          sf::pack_agent_settings(defaults.environment, table.tier_name(defaults.tier)));
  });
}

Status KeyCatalog::write_usage(std::vector<ActiveKeyTable::UsageRecord> usage) const {
  constexpr std::size_t kBatchRecords = 16 * 1024;
  std::sort(usage.begin(), usage.end(),
            [](const ActiveKeyTable::UsageRecord& a, const ActiveKeyTable::UsageRecord& b) {
              return a.key_id.view() < b.key_id.view();
            });
  rocksdb::WriteBatch batch;
  for (std::size_t i = 0; i < usage.size(); ++i) {
    key_usage_.put(batch, usage[i].key_id.view(),
                   sf::encode_be64(static_cast<std::uint64_t>(std::max<std::int64_t>(0, usage[i].seconds))));
    if (batch.Count() == kBatchRecords || i + 1 == usage.size()) {
      if (Status s = store_.write(batch, /*sync=*/false); !s.ok()) {
        return s.Annotate("write key usage");
      }
      batch.Clear();
    }
  }
  return Status::Ok();
}

Status KeyCatalog::load(ActiveKeyTable& table) const {
  std::unique_ptr<rocksdb::Iterator> agents = agent_settings_.full_scan();
  std::string tier;
  for (agents->SeekToFirst(); agents->Valid(); agents->Next()) {
    v1::Environment environment = v1::ENVIRONMENT_PRODUCTION;
    if (!sf::unpack_agent_settings(agents->value().ToStringView(), environment, tier)) {
      return Status::Corruption("unreadable agent_settings entry for " + agents->key().ToString());
    }
    table.put_agent(agents->key().ToStringView(),
                    {.tier = table.tier_index(tier), .environment = environment});
  }
  if (!agents->status().ok()) {
    return sf::from_rocks(agents->status(), "load agent settings");
  }

  std::unique_ptr<rocksdb::Iterator> entries = key_table_.full_scan();
  for (entries->SeekToFirst(); entries->Valid(); entries->Next()) {
    const std::optional<Digest> digest = digest_from_key(entries->key());
    KeyEntry entry;
    if (!digest || !sf::unpack_key_entry(entries->value().ToStringView(), entry, tier)) {
      return Status::Corruption("unreadable key_table entry");
    }
    entry.tier = table.tier_index(tier);
    table.put(*digest, entry);
  }
  return sf::from_rocks(entries->status(), "load key table");
}

Result<std::string> KeyCatalog::agent_of_key(std::string_view key_id) const {
  auto agent_id = key_agent_.get(key_id);
  if (!agent_id.ok()) {
    return agent_id.status();
  }
  if (!agent_id->has_value()) {
    return Status::NotFound("key_not_found", "no such key");
  }
  return std::move(**agent_id);
}

Result<std::vector<KeyRef>> KeyCatalog::created_before(std::int64_t before_ms, std::size_t limit) const {
  return scan_time_index(key_active_, before_ms, /*inclusive=*/false, limit);
}

Result<std::vector<KeyRef>> KeyCatalog::expiring_by(std::int64_t by_ms, std::size_t limit) const {
  return scan_time_index(key_expiry_, by_ms, /*inclusive=*/true, limit);
}

Result<std::vector<KeyRef>> KeyCatalog::scan_time_index(const ColumnFamily& cf, std::int64_t bound_ms,
                                                        bool inclusive, std::size_t limit) const {
  std::vector<KeyRef> out;
  if (bound_ms < 0 || (bound_ms == 0 && !inclusive)) {
    return out;  // time keys start at 0
  }
  const std::uint64_t bound = static_cast<std::uint64_t>(bound_ms);
  std::unique_ptr<rocksdb::Iterator> it = cf.iterator();
  for (it->SeekToFirst(); it->Valid() && out.size() < limit; it->Next()) {
    const std::string_view key = it->key().ToStringView();
    if (key.size() <= sf::kPositionBytes) {
      continue;
    }
    const std::uint64_t ms = sf::decode_be64(key);
    if (ms > bound || (ms == bound && !inclusive)) {
      break;
    }
    out.push_back(
        {.agent_id = it->value().ToString(), .key_id = std::string(key.substr(sf::kPositionBytes))});
  }
  if (!it->status().ok()) {
    return sf::from_rocks(it->status(), "scan key index");
  }
  return out;
}

Result<std::optional<std::int64_t>> KeyCatalog::last_used(std::string_view key_id) const {
  const auto value = key_usage_.get(key_id);
  if (!value.ok()) {
    return value.status();
  }
  if (!value->has_value()) {
    return std::optional<std::int64_t>();
  }
  if ((*value)->size() != 8) {
    return Status::Corruption("unreadable key_usage entry for " + std::string(key_id));
  }
  return std::optional<std::int64_t>(static_cast<std::int64_t>(sf::decode_be64(**value)));
}

}  // namespace keyledger
