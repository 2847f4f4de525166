#pragma once
// The subcommands of `keyledger` (main.cpp parses the command line and calls one). Each
// returns the process's exit status: 0, 1 when something failed, 2 for a usage or
// configuration error. Logs go to stderr; stdout carries only what scripts read.

#include <ostream>
#include <string>

#include "api/node/config.h"

namespace keyledger::api {

// `serve`: a Primary, or with --replica a Replica, until SIGINT/SIGTERM. Prints
// "keyledger kafka bootstrap HOST:PORT" (embedded broker) and "keyledger listening on HOST:PORT".
int serve(const Config& config);
// `token create`: a service token, offline (the server must be stopped); prints the token.
int create_token(const Config& config, const std::string& name, const std::string& scopes_csv);
// `rebuild-projections`: wipes and rebuilds every projection from the log.
int rebuild_projections(const Config& config);
// `consume revocations`: one JSON line per revocation on stdout, as consumer group `group`.
int consume_revocations(const Config& config, const std::string& group, const std::string& from);
// `webhooks`: a WebhookWorker until SIGINT/SIGTERM; prints "keyledger webhooks ready".
int run_webhook_worker(const Config& config, const std::string& from);

void print_usage(std::ostream& out);

}  // namespace keyledger::api
