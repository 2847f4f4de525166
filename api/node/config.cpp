#include "api/node/config.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <fstream>
#include <iostream>

namespace keyledger::api {

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

// Options shared by every subcommand; --config FILE and KEYLEDGER_* environment variables
// supply the same names (KEYLEDGER_DATA_DIR, KEYLEDGER_KAFKA_BROKERS, …).
po::options_description common_options(Config& c, std::string& pepper_file, std::string& config_file) {
  po::options_description o("options");
  o.add_options()("data-dir",
                  po::value<std::string>()->notifier([&](const std::string& v) { c.data_dir = v; }),
                  "data directory (RocksDB log, pepper, bootstrap token)")(
      "listen", po::value(&c.listen), "host:port to serve on (port 0 picks a free one)")(
      "kafka-brokers", po::value(&c.kafka_brokers), "embedded | none | host:port,...")(
      "kafka-topic", po::value(&c.kafka_topic), "topic of every event (default keyledger.key-events)")(
      "kafka-state-topic", po::value(&c.kafka_state_topic), "compacted topic of the latest key states")(
      "pepper-file", po::value(&pepper_file), "file holding the 32-byte pepper (hex)")(
      "config", po::value(&config_file), "configuration file (name = value lines)")(
      "rate-limit-tiers", po::value(&c.tiers), "tiers as name:rate_per_second:burst,...")(
      "allow-insecure-webhooks", po::bool_switch(&c.allow_insecure_webhooks),
      "accept plain http webhook URLs")("allow-private-webhooks", po::bool_switch(&c.allow_private_webhooks),
                                        "allow webhooks to private addresses")(
      "disable-webhooks", po::bool_switch(&c.disable_webhooks), "do not deliver webhooks from this process")(
      "webhooks", po::value(&c.webhooks),
      "in-process (deliver from serve) | external (keyledger webhooks delivers; serve records its attempts)")(
      "webhook-deliveries-topic", po::value(&c.webhook_deliveries_topic),
      "topic of attempts made by keyledger webhooks (default keyledger.webhook-deliveries)")(
      "webhook-ca-file", po::value(&c.webhook_ca_file), "extra trusted CAs (PEM) for webhook TLS")(
      "replica", po::bool_switch(&c.replica), "run as a verifier replica fed from Kafka")(
      "io-threads", po::value(&c.io_threads), "threads serving connections")(
      "max-connections", po::value(&c.max_connections),
      "open connections at most; more are closed on accept (default 10000)")(
      "auth-failure-limit", po::value(&c.auth_failure_limit),
      "failed authentications a client address may have per minute before it gets 429 (0: no limit; "
      "loopback is never limited; default 100)")(
      "worker-threads", po::value(&c.worker_threads),
      "threads running commands, each waiting for its fsync (default 64)")(
      "log-level", po::value(&c.log_level), "trace | debug | info | warn | error")(
      "usage", po::value(&c.usage),
      "on | off: count every verification per key (usage API); off records nothing new")(
      "usage-minute-retention-hours", po::value(&c.usage_minute_retention_hours),
      "hours minute usage buckets are kept, 1 to 8784 (default 48)")(
      "usage-hour-retention-days", po::value(&c.usage_hour_retention_days),
      "days hour usage buckets are kept, 1 to 3660 (default 90)")(
      "trusted-proxies", po::value(&c.trusted_proxies),
      "addresses or CIDRs of proxies whose X-Forwarded-For / X-Real-IP name the client (usage sources)")(
      "dashboard", po::value(&c.dashboard), "on | off: serve the dashboard at / (primary only)")(
      "github-keys-file", po::value(&c.github_keys_file),
      "GitHub secret-scanning public keys (JSON) for POST /v1/leaks/github; reloaded on SIGHUP");
  return o;
}

}  // namespace

// Parses argv (after the subcommand), then the config file, then KEYLEDGER_* variables.
bool parse_config(int argc, char** argv, po::options_description& extra, Config& c, std::string& error) {
  std::string pepper_file;
  std::string config_file;
  po::options_description all = common_options(c, pepper_file, config_file);
  all.add(extra);
  all.add_options()("help,h", "print these options and exit");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, all), vm);
    if (vm.count("help")) {
      std::cout << all << std::endl;
      c.help = true;
      return true;
    }
    if (vm.count("config")) {
      std::ifstream in(vm["config"].as<std::string>());
      if (!in) {
        error = "cannot read config file " + vm["config"].as<std::string>();
        return false;
      }
      po::store(po::parse_config_file(in, all), vm);
    }
    po::store(po::parse_environment(all,
                                    [&](const std::string& env) -> std::string {
                                      if (env.rfind("KEYLEDGER_", 0) != 0) {
                                        return "";
                                      }
                                      std::string name = env.substr(10);
                                      for (auto& ch : name) {
                                        ch = ch == '_' ? '-' : static_cast<char>(std::tolower(ch));
                                      }
                                      return all.find_nothrow(name, false) != nullptr ? name : "";
                                    }),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    error = e.what();
    return false;
  }
  if (!pepper_file.empty()) {
    c.pepper_file = pepper_file;
  }
  return true;
}

ServerOptions server_options_for(const Config& config) {
  ServerOptions options;
  options.listen = config.listen;
  options.io_threads = config.io_threads;
  options.max_connections = config.max_connections;
  options.worker_threads = config.worker_threads;
  return options;
}

Status prepare_data_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Status::IoError("cannot create data directory " + dir.string() + ": " + ec.message());
  }
  const fs::perms perms = fs::status(dir, ec).permissions();
  if (ec) {
    return Status::IoError("cannot read the permissions of " + dir.string() + ": " + ec.message());
  }
  const fs::perms open_to_others = fs::perms::group_all | fs::perms::others_all;
  if ((perms & open_to_others) != fs::perms::none) {
    fs::permissions(dir, open_to_others, fs::perm_options::remove, ec);
    if (ec) {
      return Status::IoError("data directory " + dir.string() +
                             " is readable by other users and cannot be made private: " + ec.message());
    }
    spdlog::warn("data directory {} was accessible to other users; it is now owner-only (0700)",
                 dir.string());
  }
  return Status::Ok();
}

bool write_secret_file(const fs::path& path, const std::string& secret) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) {
      return false;
    }
    fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write);
    out << secret << "\n";
    if (!out.flush()) {
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

}  // namespace keyledger::api
