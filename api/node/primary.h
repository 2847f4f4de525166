#pragma once
// `keyledger serve`: the node that owns the log of record. It composes, in this order (each
// member outlives those after it, so they shut down in reverse):
//   ledger       data directory, event store, pepper, projections, command service
//   kafka        the embedded broker (--kafka-brokers embedded) and the outbox relay
//   metrics      gauges over all of the above, and the count of appended events
//   api          verifier, idempotency store, per-address failure limit, the handlers
//   webhooks     in-process delivery, or the feed recording `keyledger webhooks`' attempts
//   server       the HTTP listener
//   housekeeper  a thread appending expiry events and flushing key usage (last use, counts)
// Tests and `main` build one the same way.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "api/auth_failures.h"
#include "api/github_keys.h"
#include "api/handlers.h"
#include "api/idempotency.h"
#include "api/metrics.h"
#include "api/node/config.h"
#include "api/node/ledger.h"
#include "api/server.h"
#include "api/verifier.h"
#include "consumers/delivery_record_feed.h"
#include "consumers/embedded_broker.h"
#include "consumers/outbox_relay.h"
#include "consumers/usage_relay.h"
#include "consumers/webhook_dispatcher.h"

namespace keyledger::api {

class Primary {
 public:
  // Checks the configuration (InvalidArgument), opens the ledger, starts Kafka (the embedded
  // broker, or a producer for a cluster; none with --kafka-brokers none) and writes the
  // bootstrap token on a log without tokens. Nothing listens yet.
  static Result<std::unique_ptr<Primary>> open(Config config, NodeEnvironment environment = {});
  ~Primary();  // stop()
  Primary(const Primary&) = delete;
  Primary& operator=(const Primary&) = delete;

  // Starts publishing, webhook delivery, the listener and housekeeping.
  Status start();
  // The port the server listens on (after start()).
  std::uint16_t port() const;
  // The embedded broker's bootstrap address; empty without one.
  std::string embedded_kafka() const;
  // Serves until SIGINT/SIGTERM (see Server::run_until_signal), then stop().
  void run_until_signal();
  // Stops serving, housekeeping, deliveries and publishing (flushing what can be), persists
  // key usage. Idempotent.
  void stop();

  // Writes the key usage counted since the last flush (the housekeeper does it every
  // kUsageFlushInterval; tests call it to read usage back at once), folding it into the
  // buckets when due or when `fold` says now (KeyUsage::flush).
  Status flush_usage(KeyUsage::Fold fold = KeyUsage::Fold::kWhenDue);

  Ledger& ledger() { return *ledger_; }
  Metrics& metrics() { return metrics_; }
  Api& api() { return *api_; }  // after start()

 private:
  explicit Primary(std::unique_ptr<Ledger> ledger) : ledger_(std::move(ledger)) {}
  Status start_kafka();
  Status ensure_bootstrap_token();
  void add_gauges();
  Status start_webhooks();
  void housekeep();
  Status reload_github_keys();

  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<consumers::EmbeddedBroker> broker_;
  std::unique_ptr<consumers::OutboxRelay> relay_;
  std::unique_ptr<consumers::UsageFeed> usage_feed_;  // replicas' usage, summed here
  Metrics metrics_;
  CommitSubscription count_appends_;
  TrustedProxies proxies_;
  std::unique_ptr<GithubKeyring> github_keys_;
  std::unique_ptr<Verifier> verifier_;
  std::unique_ptr<IdempotencyStore> idempotency_;
  std::unique_ptr<AuthFailureLimiter> auth_failures_;
  std::unique_ptr<Api> api_;
  std::unique_ptr<consumers::DeliveryRecordFeed> delivery_records_;
  std::unique_ptr<consumers::WebhookDispatcher> webhooks_;
  std::unique_ptr<Server> server_;

  std::mutex housekeeping_mutex_;
  std::condition_variable housekeeping_wake_;
  bool stopping_ = false;  // under housekeeping_mutex_
  std::thread housekeeper_;
  bool stopped_ = false;
};

}  // namespace keyledger::api
