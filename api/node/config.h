#pragma once
// The process's configuration: command-line options, then a --config file (name = value
// lines), then KEYLEDGER_* environment variables (KEYLEDGER_DATA_DIR, …), first one wins.

#include <boost/program_options.hpp>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "api/server.h"
#include "consumers/embedded_broker.h"
#include "domain/status.h"

namespace keyledger::api {

inline constexpr std::string_view kWebhooksInProcess = "in-process";
inline constexpr std::string_view kWebhooksExternal = "external";

struct Config {
  std::filesystem::path data_dir = "keyledger-data";
  std::string listen = "127.0.0.1:8080";
  std::string kafka_brokers = "embedded";
  std::string kafka_topic = consumers::kEventsTopic;
  std::string kafka_state_topic = consumers::kStateTopic;
  std::optional<std::filesystem::path> pepper_file;
  std::string tiers = "standard:50:100,elevated:500:1000";
  bool allow_insecure_webhooks = false;
  bool allow_private_webhooks = false;
  bool disable_webhooks = false;
  std::string webhooks = std::string(kWebhooksInProcess);
  std::string webhook_deliveries_topic = consumers::kWebhookDeliveriesTopic;
  std::string webhook_ca_file;
  bool replica = false;
  std::size_t io_threads = 2;
  std::size_t max_connections = 10'000;
  std::uint32_t auth_failure_limit = 100;
  std::size_t worker_threads = 64;
  // Key usage (api/openapi.yaml Usage): how long minute and hour buckets are kept, and the proxies
  // whose X-Forwarded-For / X-Real-IP name the client (comma-separated addresses or CIDRs).
  std::string usage = "on";  // count key usage (on | off)
  // Signed, so that a negative value reaches usage_retention_for (ledger.h) as itself and is
  // refused there, not wrapped around into years.
  std::int64_t usage_minute_retention_hours = 48;
  std::int64_t usage_hour_retention_days = 90;
  std::string trusted_proxies;
  // The dashboard at / (on | off), and GitHub's secret-scanning public keys (JSON).
  std::string dashboard = "on";
  std::string github_keys_file;
  std::string log_level = "info";
  bool help = false;  // --help was given: the options were printed, nothing is to run
};

// Parses argv (its first element is skipped, like a program name) with the common options and
// `extra`. False with `error` set on a bad option; with --help the options are printed and
// config.help set.
bool parse_config(int argc, char** argv, boost::program_options::options_description& extra, Config& config,
                  std::string& error);

// The HTTP server's options from --listen, --io-threads, --max-connections and --worker-threads.
ServerOptions server_options_for(const Config& config);

// Creates the data directory (and its parents) owner-only, and tightens an existing one that
// group or others could read: the log holds agent profiles, key digests and encrypted webhook
// secrets. Files created in it are owner-only too (main sets the umask to 077).
Status prepare_data_dir(const std::filesystem::path& dir);

// Writes `secret` and a newline to `path` (owner-only), atomically (a temporary file renamed).
bool write_secret_file(const std::filesystem::path& path, const std::string& secret);

}  // namespace keyledger::api
