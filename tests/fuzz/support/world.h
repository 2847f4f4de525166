#pragma once
// The service wired as `keyledger serve` wires it (main.cpp), without sockets: a real event
// store in a temporary directory (under /dev/shm when there is one; no fsync, which only costs
// time here), a started projector, a manual clock and seeded randomness. One per fuzzing
// process, made on first use and never destroyed (libFuzzer exits without unwinding); its
// directory is removed at exit.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "eventstore/command_service.h"
#include "api/handlers.h"
#include "api/idempotency.h"
#include "api/metrics.h"
#include "api/verifier.h"
#include "eventstore/event_store.h"
#include "projections/projector.h"

namespace keyledger::fuzz {

class World {
 public:
  // The process's world (made on the first call).
  static World& get();

  struct Call {
    std::string method;
    std::string target;  // path and query, as a client sends it
    std::string body;
    std::string credential;                                    // Authorization: Bearer …, if set
    std::vector<std::pair<std::string, std::string>> headers;  // added after it
    bool json = true;                                          // Content-Type: application/json
  };
  // One request through Api::handle and on_response, as the server makes it; the answer is
  // checked with check_response. The clock moves one second first. Returns nullopt if the
  // target is not one the server would route (http::parse_target refuses it).
  std::optional<http::Response> call(const Call& call);
  const std::string& last_request_id() const { return last_request_id_; }
  // A request as the server's reader left it, through Api::handle and on_response; the
  // request id is set here, the answer checked with check_response.
  http::Response handle(http::Request& req);

  // The events appended since the last call of this (every one checked with
  // check_appended_event as it is committed).
  std::vector<v1::Event> take_appended();

  // A new agent, registered through the API; its id.
  std::string register_agent();
  struct IssuedKey {
    std::string key_id;
    std::string api_key;
  };
  // A new active key of `agent_id` made through the API, or of a newly registered agent when
  // that one has no room for another active key.
  IssuedKey create_key(std::string& agent_id);

  api::Verifier& verifier() { return *verifier_; }
  ManualClock& clock() { return clock_; }
  const api::Metrics& metrics() const { return metrics_; }

  // Service tokens with one scope each.
  std::string admin, manage, auditor, gateway, scanner;

 private:
  World();
  void on_commit(const std::vector<v1::Event>& events);

  std::string dir_;
  ManualClock clock_;
  SeededRandom random_{20261126};
  Pepper pepper_;
  KeyHasher hasher_{pepper_};
  SecretBox secrets_{pepper_};
  api::Metrics metrics_;
  std::unique_ptr<EventStore> store_;
  std::unique_ptr<Projector> projector_;  // subscribed to the store by start()
  std::unique_ptr<api::Verifier> verifier_;
  std::unique_ptr<api::IdempotencyStore> idempotency_;
  std::unique_ptr<CommandService> commands_;
  std::unique_ptr<api::Api> api_;
  std::mutex appended_mutex_;
  std::vector<v1::Event> appended_;
  std::uint64_t requests_ = 0;
  std::string last_request_id_;
  // Subscribed after the projector (events reach on_commit projected); unsubscribed first.
  CommitSubscription commits_;
};

}  // namespace keyledger::fuzz
