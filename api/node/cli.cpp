#include "api/node/cli.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <iostream>

#include "api/node/ledger.h"
#include "api/node/primary.h"
#include "api/node/replica.h"
#include "api/node/signals.h"
#include "api/node/webhook_worker.h"
#include "consumers/revocation_feed.h"

namespace keyledger::api {

namespace {

constexpr auto kCatchUpCheckInterval = std::chrono::milliseconds(50);

int fail(const Status& s, std::string_view what = {}) {
  if (s.IsInvalidArgument()) {
    std::cerr << "keyledger: " << (what.empty() ? "" : std::string(what) + ": ") << s.message() << "\n";
    for (const auto& d : s.details()) {
      std::cerr << "  " << d.field << ": " << d.message << "\n";
    }
    return 2;
  }
  spdlog::error("{}{}", what.empty() ? "" : std::string(what) + ": ", s.ToString());
  return 1;
}

// The host part of --listen, for the line scripts read.
std::string host_of(const Config& config) { return config.listen.substr(0, config.listen.rfind(':')); }

template <typename Node>
int serve_node(Result<std::unique_ptr<Node>> opened, const Config& config) {
  if (!opened.ok()) {
    return fail(opened.status(), "cannot start");
  }
  Node& node = **opened;
  if constexpr (std::is_same_v<Node, Primary>) {
    if (const std::string kafka = node.embedded_kafka(); !kafka.empty()) {
      std::cout << "keyledger kafka bootstrap " << kafka << std::endl;  // scripts read it
    }
  }
  if (Status s = node.start(); !s.ok()) {
    return fail(s);
  }
  std::cout << "keyledger listening on " << host_of(config) << ":" << node.port() << std::endl;
  if constexpr (std::is_same_v<Node, Primary>) {
    spdlog::info("serving on {}:{}, data in {}", host_of(config), node.port(),
                 std::filesystem::absolute(config.data_dir).string());
  } else {
    spdlog::info("verifier replica serving on {}:{}", host_of(config), node.port());
  }
  node.run_until_signal();
  spdlog::info("shut down");
  return 0;
}

std::atomic<bool> g_stop_consuming{false};

}  // namespace

int serve(const Config& config) {
  hold_termination_signals();
  return config.replica ? serve_node(Replica::open(config), config)
                        : serve_node(Primary::open(config), config);
}

int create_token(const Config& config, const std::string& name, const std::string& scopes_csv) {
  auto ledger = Ledger::open(config, Ledger::Use::kServing);
  if (!ledger.ok()) {
    if (ledger.status().IsIoError() && ledger.status().message().find("lock") != std::string::npos) {
      std::cerr << "keyledger: the store in " << config.data_dir.string()
                << " is held by a running server; stop it first or use POST /v1/tokens\n";
      return 1;
    }
    return fail(ledger.status(), "cannot open the store");
  }
  std::vector<std::string> scopes;
  for (std::string_view rest = scopes_csv; !rest.empty();) {
    const auto comma = rest.find(',');
    scopes.emplace_back(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
  }
  auto created = (*ledger)->commands().create_token(name, scopes, "system:cli");
  if (!created.ok()) {
    std::cerr << "keyledger: " << created.status().message() << "\n";
    for (const auto& d : created.status().details()) {
      std::cerr << "  " << d.field << ": " << d.message << "\n";
    }
    return 1;
  }
  std::cout << created->token << std::endl;
  std::cerr << "token " << created->token_id << " (" << name << ") created; it is shown only this once\n";
  return 0;
}

int rebuild_projections(const Config& config) {
  auto ledger = Ledger::open(config, Ledger::Use::kRebuild);
  if (!ledger.ok()) {
    return fail(ledger.status(), "cannot open the store");
  }
  // Durable (flushed) when it returns: the next start replays no WAL for it.
  if (Status s = (*ledger)->projector().rebuild(); !s.ok()) {
    return fail(s, "rebuild failed");
  }
  std::cout << "projections rebuilt up to position " << (*ledger)->projector().checkpoint() << std::endl;
  return 0;
}

// `consume revocations`: one JSON line per revocation on stdout; logs go to stderr.
int consume_revocations(const Config& config, const std::string& group, const std::string& from) {
  if (config.kafka_brokers == "none" || config.kafka_brokers == "embedded") {
    return fail(Status::InvalidArgument("consume needs --kafka-brokers with the Kafka bootstrap address"));
  }
  consumers::RevocationFeedOptions options;
  options.brokers = config.kafka_brokers;
  options.group = group;
  options.topic = config.kafka_topic;
  options.start_from = from;
  auto feed = consumers::RevocationFeed::create(options);
  if (!feed.ok()) {
    return fail(feed.status(), "cannot consume");
  }
  struct sigaction action {};
  action.sa_handler = [](int) { g_stop_consuming = true; };
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  spdlog::info("consuming revocations from {} as group {}", config.kafka_topic, group);
  auto lines = (*feed)->run(std::cout, g_stop_consuming);
  return lines.ok() ? 0 : fail(lines.status(), "consume");
}

int run_webhook_worker(const Config& config, const std::string& from) {
  hold_termination_signals();
  auto worker = WebhookWorker::open(config, from);
  if (!worker.ok()) {
    return fail(worker.status());
  }
  while (!(*worker)->caught_up()) {
    if (wait_for_termination_signal(kCatchUpCheckInterval)) {
      return 0;
    }
  }
  if (Status s = (*worker)->start(); !s.ok()) {
    return fail(s);
  }
  std::cout << "keyledger webhooks ready" << std::endl;  // the line tests and scripts wait for
  wait_for_termination_signal();
  spdlog::info("shutting down");
  return 0;
}

void print_usage(std::ostream& out) {
  out << "usage: keyledger serve [--data-dir DIR] [--listen HOST:PORT] [--kafka-brokers embedded|none|LIST]\n"
         "                       [--pepper-file FILE] [--config FILE] [--allow-insecure-webhooks] ...\n"
         "                       [--webhooks in-process|external] [--webhook-deliveries-topic T]\n"
         "       keyledger serve --replica --kafka-brokers HOST:PORT,... --pepper-file FILE [--listen "
         "HOST:PORT]\n"
         "       keyledger token create --data-dir DIR --scope manage,audit --name NAME\n"
         "       keyledger rebuild-projections --data-dir DIR\n"
         "       keyledger consume revocations --kafka-brokers HOST:PORT,... --group NAME [--from "
         "earliest|latest]\n"
         "       keyledger webhooks --kafka-brokers HOST:PORT,... --pepper-file FILE --data-dir STATE_DIR\n"
         "                       [--from earliest|latest] [--allow-insecure-webhooks] "
         "[--allow-private-webhooks]\n"
         "                       [--webhook-ca-file FILE] [--kafka-topic T] [--webhook-deliveries-topic T]\n"
         "                       (delivers for a server run with --webhooks external)\n";
}

}  // namespace keyledger::api
