// keyledger: the command line. Parses the subcommand's configuration (api/node/config.h) and
// runs it (api/node/cli.h), each one a composition of the layers (api/node/):
//   serve                 Primary: the HTTP API over the event store, publishing to Kafka
//   serve --replica       Replica: a verifier fed from Kafka alone
//   token create          a service token, offline, while the server is stopped (Ledger)
//   rebuild-projections   wipe and rebuild every projection from the log (Ledger)
//   consume revocations   print revocation events from Kafka as JSON lines (a consumer group)
//   webhooks              WebhookWorker: deliver webhooks fed from Kafka (serve --webhooks external)
// Exit status: 0, 1 when something failed, 2 for a usage or configuration error.
#include <malloc.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <iostream>

#include "api/node/cli.h"
#include "domain/key_material.h"

namespace po = boost::program_options;
using namespace keyledger;
using api::Config;

int main(int argc, char** argv) {
  // Large buffers (a usage journal record, a flush's batch, RocksDB's memtable blocks) are
  // mapped and unmapped whole, so their memory goes back to the system when freed. By default
  // glibc raises this threshold to the size of each such block freed (up to 32 MiB), after
  // which they stay in its heaps: about 100 MB more resident at a million keys in use.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  if (!crypto_init()) {
    std::cerr << "keyledger: libsodium failed to initialise\n";
    return 1;
  }
  // stdout carries only what scripts read (the listening line, a created token, JSON lines);
  // every log line goes to stderr. Every file keyledger creates is owner-only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("keyledger"));
  umask(077);
  const std::string command = argc >= 2 ? argv[1] : "";
  const std::string sub = argc >= 3 ? argv[2] : "";
  if (command == "--help" || command == "-h" || command == "help") {
    api::print_usage(std::cout);
    return 0;
  }
  Config config;
  std::string name, scopes, group, from = "earliest";
  po::options_description extra("");
  int skip = 1;  // arguments before the options: the subcommand's words
  if (command == "token" && sub == "create") {
    extra.add_options()("name", po::value(&name)->required(), "token name")(
        "scope", po::value(&scopes)->required(), "comma-separated scopes");
    skip = 2;
  } else if (command == "consume" && sub == "revocations") {
    extra.add_options()("group", po::value(&group)->required(), "consumer group name")(
        "from", po::value(&from), "where a new group starts: earliest | latest");
    skip = 2;
  } else if (command == "webhooks") {
    extra.add_options()("from", po::value(&from),
                        "where a new state directory starts: earliest (every key event not yet recorded "
                        "delivered or failed) | latest (only events after start)");
  } else if (command != "serve" && command != "rebuild-projections") {
    api::print_usage(std::cerr);
    return 2;
  }
  std::string error;
  if (!api::parse_config(argc - skip, argv + skip, extra, config, error)) {
    std::cerr << "keyledger: " << error << "\n";
    api::print_usage(std::cerr);
    return 2;
  }
  if (config.help) {
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (command == "serve") return api::serve(config);
  if (command == "rebuild-projections") return api::rebuild_projections(config);
  if (command == "token") return api::create_token(config, name, scopes);
  if (command == "consume") return api::consume_revocations(config, group, from);
  return api::run_webhook_worker(config, from);
}
