#include "api/idempotency.h"

#include <functional>
#include <nlohmann/json.hpp>

namespace keyledger::api {

namespace {

std::int64_t to_ms(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

void strip(nlohmann::json& j) {
  if (j.is_object()) {
    for (const char* secret : {"api_key", "webhook_secret", "token"}) {
      j.erase(secret);
    }
    for (auto& [name, value] : j.items()) {
      strip(value);
    }
  } else if (j.is_array()) {
    for (auto& value : j) {
      strip(value);
    }
  }
}

}  // namespace

IdempotencyStore::IdempotencyStore(ColumnFamily records, const Clock& clock)
    : records_(records), clock_(clock) {}

std::optional<StoredResponse> IdempotencyStore::find(const std::string& scope) const {
  const auto value = records_.get(scope);
  if (!value.ok() || !value->has_value()) {
    return std::nullopt;
  }
  const auto j = nlohmann::json::parse(**value, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return std::nullopt;
  }
  const std::int64_t saved_ms = j.value("saved_ms", std::int64_t{0});
  if (to_ms(clock_.now()) - saved_ms >
      std::chrono::duration_cast<std::chrono::milliseconds>(kIdempotencyWindow).count()) {
    return std::nullopt;
  }
  return StoredResponse{j.value("body_hash", ""), j.value("status", 0u), j.value("body", "")};
}

SideWrite IdempotencyStore::record(const std::string& scope, const StoredResponse& response) const {
  const nlohmann::json j = {{"body_hash", response.body_hash},
                            {"status", response.status},
                            {"body", response.body},
                            {"saved_ms", to_ms(clock_.now())}};
  return SideWrite{std::string(kIdempotencyColumnFamily), scope, j.dump()};
}

Status IdempotencyStore::save(const std::string& scope, const StoredResponse& response) {
  // Synced like the events it answers for: a replay after a crash must not repeat a command.
  const SideWrite write = record(scope, response);
  return records_.put(write.key, write.value, /*sync=*/true).Annotate("idempotency record");
}

std::mutex& IdempotencyStore::lock_for(const std::string& scope) {
  return locks_[std::hash<std::string>{}(scope) % locks_.size()];
}

std::string strip_secrets(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    return body;
  }
  strip(j);
  return j.dump();
}

}  // namespace keyledger::api
