#include "api/node/signals.h"

#include <csignal>
#include <ctime>

namespace keyledger::api {

namespace {

sigset_t termination_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

}  // namespace

void hold_termination_signals() {
  sigset_t signals = termination_signals();
  sigaddset(&signals, SIGHUP);  // a reload request (Server::on_hangup), never a kill
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

bool wait_for_termination_signal(std::optional<std::chrono::milliseconds> timeout) {
  const sigset_t signals = termination_signals();
  if (!timeout) {
    int signal = 0;
    return sigwait(&signals, &signal) == 0;
  }
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout).count();
  const timespec wait{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  return sigtimedwait(&signals, nullptr, &wait) > 0;
}

}  // namespace keyledger::api
