#pragma once
// SIGINT and SIGTERM for the long-running subcommands.

#include <chrono>
#include <optional>

namespace keyledger::api {

// Blocks SIGINT, SIGTERM and SIGHUP (a reload: Server::on_hangup) in this thread and every thread it starts
// from now on, so a signal sent while a process starts stays pending (Server::run_until_signal, or the waits
// below, take it) instead of killing the process by default. Call first, before any thread starts.
void hold_termination_signals();

// Waits for a held SIGINT/SIGTERM: true once one arrived, false after `timeout` (forever
// without one).
bool wait_for_termination_signal(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

}  // namespace keyledger::api
