#pragma once
// `Idempotency-Key` on POSTs (api/openapi.yaml): the first response to (caller, route, key) is kept
// for 24 hours in RocksDB (column family `idempotency` of the event store's database, so it
// survives restarts) with a hash of the request body. A repeat with the same body replays it;
// a repeat with another body is refused. Secrets are stripped before the response is kept.
// A command's response is kept in the WriteBatch of its events (record()), so a crash can
// never leave the events without the record and a retry cannot run the command twice.

#include <array>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "domain/clock.h"
#include "domain/status.h"
#include "eventstore/event_store.h"

namespace keyledger::api {

inline constexpr std::string_view kIdempotencyColumnFamily = "idempotency";
inline constexpr std::size_t kMaxIdempotencyKeyChars = 255;
inline constexpr std::chrono::hours kIdempotencyWindow{24};

struct StoredResponse {
  std::string body_hash;  // hex SHA-256 of the request body
  unsigned status = 0;
  std::string body;  // the response body, secrets removed
};

class IdempotencyStore {
 public:
  IdempotencyStore(ColumnFamily records, const Clock& clock);  // kIdempotencyColumnFamily

  // The response kept for `scope` (caller + route + key) within the window, or nullopt.
  std::optional<StoredResponse> find(const std::string& scope) const;
  Status save(const std::string& scope, const StoredResponse& response);
  // The same record as a write to keep in a command's WriteBatch (EventStore::append's side
  // writes), so that it exists if and only if the command's events do.
  SideWrite record(const std::string& scope, const StoredResponse& response) const;

  // Serialises requests with the same scope so a concurrent repeat waits for the first.
  std::mutex& lock_for(const std::string& scope);

 private:
  const ColumnFamily records_;
  const Clock& clock_;
  std::array<std::mutex, 64> locks_;
};

// Removes every secret field ("api_key", "webhook_secret", "token") from a JSON body, at any
// depth. Returns the body unchanged if it is not JSON.
std::string strip_secrets(const std::string& body);

}  // namespace keyledger::api
