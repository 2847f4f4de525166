#pragma once
// Webhooks to agents (README, Webhooks): tails the event log and POSTs every key event of an agent
// (key.created, key.rotated, key.revoked, key.expired, key.compromised) to the agent's
// webhook_url, signed with its webhook secret, retrying with exponential backoff and jitter,
// and records every attempt as a WebhookDeliveryRecorded event through `DeliveryRecorder`.
//
// Body:    {"id": event_id, "type": "key.revoked", "created_at": RFC 3339, "data": {…}}
// Headers: Content-Type: application/json, ClawGig-Event-Id: <event_id>,
//          ClawGig-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//
// Delivery is at least once, with the event id as the receiver's dedupe key. State lives in
// column family `webhooks` of the store's database:
//   "cursor"          -> BE(last log position turned into pending deliveries)
//   "p" event_id      -> JSON {agent_id, position, attempt, first_attempt, due_ms}
// A key event's pending entry is written in the same batch as the cursor that passes it
// (unsynced: the log's next fsync covers it, and a crash before only schedules again what
// the check below drops), and deleted once its delivery is recorded as delivered or failed.
// Batches that schedule nothing leave the stored cursor behind (by at most 4096 events): a
// restart re-reads them and schedules nothing. On start, pending entries are reconciled with the
// WebhookDeliveryRecorded events already in the agent's stream, so a restart neither re-sends what is
// recorded delivered nor repeats an attempt number, and never forgets a pending retry. Before each attempt
// the dispatcher reads the agent's stream after the event: a delivery already recorded delivered or failed
// there (by another dispatcher, e.g. the server's before `keyledger webhooks` took over) is dropped unsent,
// and attempt numbers continue after the last recorded one.
//
// Concurrency: `workers` threads; at most one attempt in flight per agent, so a slow or dead
// receiver holds one worker at most (for at most one timeout) and other agents' deliveries
// keep flowing.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "consumers/webhook_client.h"
#include "consumers/webhook_message.h"
#include "domain/clock.h"
#include "domain/events.h"
#include "domain/secret_box.h"
#include "domain/status.h"
#include "eventstore/event_store.h"

namespace keyledger {
class CommandService;
}

namespace keyledger::consumers {

// The column families to add to EventStoreOptions::extra_column_families.
std::vector<std::string> webhook_column_families();

// Records one attempt in the agent's stream (a WebhookDeliveryRecorded event of type
// webhook.delivery_recorded). Returns a non-OK Status when it could not be made durable;
// the dispatcher then keeps the delivery pending and tries again later.
using DeliveryRecorder =
    std::function<Status(const std::string& agent_id, const v1::WebhookDeliveryRecorded&)>;

// A DeliveryRecorder appending through CommandService::on_agent (version-checked, retried on
// conflict) with actor `actor`. `commands` must outlive the recorder.
DeliveryRecorder record_with(CommandService& commands, std::string actor = "system:webhooks");

struct WebhookDispatcherOptions {
  // HTTP(S) client: per-attempt timeout (default 10 s), allow_insecure, allow_private, ca_file.
  WebhookClientOptions client{};
  // Attempts before a delivery is `failed`. Default: 8.
  std::uint32_t max_attempts = 8;
  // Delay before the second attempt; doubles for each further attempt (30 s, 1 min, … 32 min:
  // 8 attempts span about an hour). Default: 30 s.
  std::chrono::milliseconds base_delay{30'000};
  // Longest delay between two attempts. Default: 1 h.
  std::chrono::milliseconds max_delay{3'600'000};
  // Each delay is stretched by a random factor in [1, 1 + jitter). Default: 0.2.
  double jitter = 0.2;
  // Threads making attempts. Default: 8.
  std::size_t workers = 8;
  // How often the log is polled for new events, and the longest a worker sleeps before
  // looking at the schedule again. Default: 100 ms.
  std::chrono::milliseconds poll_interval{100};
  // Events read from the log per batch. Default: 512.
  std::size_t batch_size = 512;
  // Tailing pauses while this many deliveries are pending. Default: 100 000.
  std::size_t max_pending = 100'000;
  // Where a dispatcher without a stored cursor starts: at the end of the log (false: no
  // webhooks for history when the feature is turned on for an existing ledger) or at its
  // beginning (true). Default: false.
  bool from_beginning = false;
  // Delay before retrying an attempt whose recording failed. Default: 1 s.
  std::chrono::milliseconds record_retry_delay{1'000};
};

class WebhookDispatcher {
 public:
  // `store` must have been opened with webhook_column_families(); it, `secrets` and `clock`
  // must outlive the dispatcher. `clock` times the retry schedule and the signatures.
  WebhookDispatcher(EventStore& store, const SecretBox& secrets, const Clock& clock, DeliveryRecorder record,
                    WebhookDispatcherOptions options = {});
  ~WebhookDispatcher();  // stop()
  WebhookDispatcher(const WebhookDispatcher&) = delete;
  WebhookDispatcher& operator=(const WebhookDispatcher&) = delete;

  // Sets up the HTTP client (InvalidArgument for an unreadable CA file), loads the cursor and
  // the pending deliveries, reconciles them with the recorded attempts (IoError/Corruption on
  // storage failure), then starts the tailing thread and the workers and subscribes to the
  // store: every committed group wakes the tailer, so a delivery starts without waiting for
  // the next poll. Conflict `dispatcher_started` on a second call.
  Status start();
  // Stops tailing, lets attempts in flight finish (each bounded by the client timeout) and
  // joins the threads. Pending deliveries stay persisted. Idempotent.
  void stop();
  // Wakes the tailing thread, as a commit does.
  void notify();

  // Re-queues the delivery of `event_id` to `agent_id` for an attempt now, with a fresh
  // budget of max_attempts. NotFound `event_not_found` when the event is not a key event of
  // that agent; Conflict `delivery_pending` when it is still scheduled or in flight; Conflict
  // `delivery_not_failed` unless the last recorded attempt's outcome is `failed`; IoError on
  // storage failure. Works whether or not the dispatcher is started (it is sent once started).
  Status retry(const std::string& agent_id, const std::string& event_id);

  // Last log position turned into pending deliveries.
  std::uint64_t cursor() const;
  // Deliveries scheduled or in flight.
  std::size_t pending() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyledger::consumers
