#pragma once
// What every process over the log of record shares (serve, token create,
// rebuild-projections): the data directory, the event store, the pepper and what it keys,
// the projections and the command service.

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "api/node/config.h"
#include "api/rate_limiter.h"
#include "domain/key_material.h"
#include "eventstore/command_service.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"
#include "projections/usage.h"

namespace keyledger::api {

// What a node takes from the machine, replaceable by tests: the time, the randomness (keys,
// ids, the pepper of a new log) and the file system RocksDB writes through. Null members
// mean the machine's own. What a member points to must outlive the node, and be safe to call
// from several threads at once (commands run on the server's workers and the housekeeper).
struct NodeEnvironment {
  const Clock* clock = nullptr;
  RandomSource* random = nullptr;
  std::shared_ptr<rocksdb::FileSystem> file_system = nullptr;
};

// Bounds of --usage-minute-retention-hours (a year) and --usage-hour-retention-days (ten
// years): past them a value is a typo, not a plan.
inline constexpr std::int64_t kMaxUsageMinuteRetentionHours = 24 * 366;
inline constexpr std::int64_t kMaxUsageHourRetentionDays = 10 * 366;

// The usage retention the configuration asks for; InvalidArgument naming the flag when one is
// not within 1 and its bound.
Result<UsageRetention> usage_retention_for(const Config& config);

class Ledger {
 public:
  // What the store is opened for: serving (the projections are loaded and the log's tail
  // replayed before open returns), or an offline rebuild of the projections (not started;
  // the store takes the rebuild's writes as a bulk load, EventStoreOptions::bulk_load).
  enum class Use { kServing, kRebuild };

  // Opens the data directory (creating it owner-only), the store with every column family
  // the layers above keep in it, and the pepper (generated on a new log). IoError when
  // another process holds the store; InvalidArgument for rate-limit tiers or a usage retention
  // it cannot use, before touching the data directory.
  static Result<std::unique_ptr<Ledger>> open(const Config& config, Use use,
                                              NodeEnvironment environment = {});

  const Config& config() const { return config_; }
  const Clock& clock() const { return *clock_; }
  RandomSource& random() { return *random_; }
  EventStore& store() { return *store_; }
  const KeyHasher& hasher() const { return *hasher_; }
  const SecretBox& secrets() const { return *secrets_; }
  const std::vector<RateLimitTier>& tiers() const { return tiers_; }
  Projector& projector() { return *projector_; }
  CommandService& commands() { return *commands_; }
  KeyUsage& usage() { return *usage_; }

 private:
  Ledger(Config config, NodeEnvironment environment);
  Status open(Use use);

  Config config_;
  SystemClock system_clock_;
  SystemRandom system_random_;
  const Clock* clock_;
  RandomSource* random_;
  std::shared_ptr<rocksdb::FileSystem> file_system_;
  std::unique_ptr<EventStore> store_;
  std::optional<Pepper> pepper_;
  std::unique_ptr<KeyHasher> hasher_;
  std::unique_ptr<SecretBox> secrets_;
  std::vector<RateLimitTier> tiers_;
  std::unique_ptr<Projector> projector_;
  std::unique_ptr<CommandService> commands_;
  std::unique_ptr<KeyUsage> usage_;
};

}  // namespace keyledger::api
