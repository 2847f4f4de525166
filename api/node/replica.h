#pragma once
// `keyledger serve --replica`: a verifier replica. Its key and token tables are fed from
// Kafka (consumers::ReplicaFeed); it has no event store of record and serves only
// verification, health and metrics (api/replica.h). Members are declared in construction
// order and shut down in reverse.

#include <cstdint>
#include <memory>

#include "api/auth_failures.h"
#include "api/metrics.h"
#include "api/node/config.h"
#include "api/replica.h"
#include "api/server.h"
#include "api/verifier.h"
#include "consumers/replica_feed.h"
#include "consumers/usage_relay.h"

namespace keyledger::api {

class Replica {
 public:
  // Checks the configuration (a Kafka cluster and the primary's pepper: --pepper-file, or a
  // `pepper` file in --data-dir) and starts following Kafka. InvalidArgument when either is
  // missing.
  static Result<std::unique_ptr<Replica>> open(const Config& config);
  ~Replica();  // stop()
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  Status start();  // the listener
  std::uint16_t port() const;
  void run_until_signal();  // then stop()
  void stop();              // idempotent

 private:
  Replica(const Config& config, const Pepper& pepper, std::vector<RateLimitTier> tiers);

  Config config_;
  SystemClock clock_;
  KeyHasher hasher_;
  std::vector<RateLimitTier> tiers_;
  ActiveKeyTable keys_;
  ServiceTokenTable tokens_;
  std::unique_ptr<consumers::ReplicaFeed> feed_;
  UsageRecorder usage_;  // what is published next (the key table counts each verification)
  TrustedProxies proxies_;
  Verifier verifier_;  // rate limits are per node: each replica keeps its own buckets
  Metrics metrics_;
  AuthFailureLimiter auth_failures_;
  std::unique_ptr<ReplicaApi> api_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<consumers::UsagePublisher> usage_publisher_;
  bool stopped_ = false;
};

// The pepper for a process beside the primary: --pepper-file, else <data-dir>/pepper.
// InvalidArgument when neither is there (`who` names the process in the message).
Result<Pepper> pepper_for(const Config& config, std::string_view who);

}  // namespace keyledger::api
