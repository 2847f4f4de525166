#include "api/node/ledger.h"

#include "api/idempotency.h"
#include "consumers/outbox_relay.h"
#include "consumers/webhook_dispatcher.h"
#include "domain/pepper.h"

namespace keyledger::api {

Ledger::Ledger(Config config, NodeEnvironment environment)
    : config_(std::move(config)),
      clock_(environment.clock != nullptr ? environment.clock : &system_clock_),
      random_(environment.random != nullptr ? environment.random : &system_random_),
      file_system_(std::move(environment.file_system)) {}

Result<std::unique_ptr<Ledger>> Ledger::open(const Config& config, Use use, NodeEnvironment environment) {
  std::unique_ptr<Ledger> ledger(new Ledger(config, std::move(environment)));
  if (Status s = ledger->open(use); !s.ok()) {
    return s;
  }
  return ledger;
}

Result<UsageRetention> usage_retention_for(const Config& config) {
  const auto check = [](std::string_view flag, std::int64_t value, std::int64_t most) {
    if (value >= 1 && value <= most) {
      return Status::Ok();
    }
    return Status::InvalidArgument("--" + std::string(flag) + " must be from 1 to " + std::to_string(most) +
                                   ", not " + std::to_string(value));
  };
  if (Status s = check("usage-minute-retention-hours", config.usage_minute_retention_hours,
                       kMaxUsageMinuteRetentionHours);
      !s.ok()) {
    return s;
  }
  if (Status s =
          check("usage-hour-retention-days", config.usage_hour_retention_days, kMaxUsageHourRetentionDays);
      !s.ok()) {
    return s;
  }
  return UsageRetention{.minutes = std::chrono::hours(config.usage_minute_retention_hours),
                        .hours = std::chrono::hours(24) * config.usage_hour_retention_days};
}

Status Ledger::open(Use use) {
  auto parsed_tiers = parse_tiers(config_.tiers);
  if (!parsed_tiers.ok()) {
    return parsed_tiers.status();
  }
  tiers_ = *parsed_tiers;
  const auto retention = usage_retention_for(config_);
  if (!retention.ok()) {
    return retention.status();
  }
  if (Status s = prepare_data_dir(config_.data_dir); !s.ok()) {
    return s;
  }
  EventStoreOptions options;
  options.path = config_.data_dir / "log";
  options.file_system = file_system_;
  options.bulk_load = use == Use::kRebuild;
  options.extra_column_families = projection_column_families();
  options.tuning = projection_family_tuning();
  options.extra_column_families.emplace_back(kIdempotencyColumnFamily);
  for (auto& name : consumers::consumer_column_families()) {
    options.extra_column_families.push_back(std::move(name));
  }
  for (auto& name : consumers::webhook_column_families()) {
    options.extra_column_families.push_back(std::move(name));
  }
  // Usage is kept beside the projections, not among them: a rebuild from the log leaves it.
  options.extra_column_families.emplace_back(kUsageColumnFamily);
  options.tuning.emplace(kUsageColumnFamily, usage_family_tuning(*clock_, *retention));
  auto opened = EventStore::open(options);
  if (!opened.ok()) {
    return opened.status();
  }
  store_ = std::move(opened).value();
  auto loaded =
      load_or_create_pepper(config_.data_dir, config_.pepper_file, store_->last_position() > 0, *random_);
  if (!loaded.ok()) {
    return loaded.status();
  }
  pepper_ = *loaded;
  hasher_ = std::make_unique<KeyHasher>(*pepper_);
  secrets_ = std::make_unique<SecretBox>(*pepper_);
  std::vector<std::string> tier_names;
  for (const auto& t : tiers_) {
    tier_names.push_back(t.name);
  }
  projector_ = std::make_unique<Projector>(*store_, tier_names);
  CommandServiceOptions command_options;
  command_options.registration.allow_insecure_webhooks = config_.allow_insecure_webhooks;
  command_options.registration.default_tier = tier_names.front();
  command_options.tiers = tier_names;
  commands_ = std::make_unique<CommandService>(*store_, *projector_, *clock_, *random_, *hasher_, *secrets_,
                                               command_options);
  usage_ = std::make_unique<KeyUsage>(*store_, *clock_, *retention, &projector_->key_table());
  if (!usage_->open_status().ok()) {
    return usage_->open_status();
  }
  return use == Use::kServing ? projector_->start() : Status::Ok();
}

}  // namespace keyledger::api
