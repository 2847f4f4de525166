#include "eventstore/command_service.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "domain/domain_fixture.h"
#include "support/temp_dir.h"

namespace keyledger {
namespace {

// The read models a command service consults, answered from the log itself: key ids are
// found by folding the agent streams this test wrote (the projections, a layer above, keep
// them in memory in the server).
class LogIndex final : public CommandIndex {
 public:
  explicit LogIndex(const EventStore& store) : store_(store) {}
  void add_agent(const std::string& agent_id) { agents_.push_back(agent_id); }

  Result<std::string> agent_of_key(std::string_view key_id) const override {
    for (const auto& agent_id : agents_) {
      auto state = load_agent(store_, agent_id);
      if (state.ok() && state->find_key(key_id) != nullptr) {
        return agent_id;
      }
    }
    return Status::NotFound("key_not_found", "no such key");
  }
  TokenRegistryState token_registry() const override { return {}; }
  Result<std::vector<KeyRef>> keys_expiring_by(TimePoint, std::size_t) const override {
    return std::vector<KeyRef>{};
  }

 private:
  const EventStore& store_;
  std::vector<std::string> agents_;
};

struct CommandWorld {
  CommandWorld() {
    auto opened = EventStore::open(EventStoreOptions{.path = dir.path() / "log"});
    REQUIRE(opened.ok());
    store = std::move(opened).value();
    index = std::make_unique<LogIndex>(*store);
    commands = std::make_unique<CommandService>(*store, *index, domain.clock, domain.random, domain.hasher,
                                                domain.secrets, CommandServiceOptions{});
  }

  std::string agent() {
    auto registered = commands->register_agent(testing::valid_profile(), "test");
    REQUIRE(registered.ok());
    index->add_agent(registered->agent_id);
    return registered->agent_id;
  }

  testing::TempDir dir;
  testing::DomainWorld domain;
  std::unique_ptr<EventStore> store;
  std::unique_ptr<LogIndex> index;
  std::unique_ptr<CommandService> commands;
};

// Collects the answers of asynchronous commands, each in the slot of the command's number
// (answers may come in another order than the commands: a turn passes on before answering).
struct Answers {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::size_t, Result<Decision>> results;
  std::vector<std::thread::id> threads;

  CommandService::DecisionDone collect() {
    std::lock_guard lock(mutex);
    return [this, slot = next_slot++](Result<Decision> result) {
      std::lock_guard lock(mutex);
      results.emplace(slot, std::move(result));
      threads.push_back(std::this_thread::get_id());
      changed.notify_all();
    };
  }
  bool wait_for(std::size_t count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(60), [&] { return results.size() >= count; });
  }
  const Result<Decision>& operator[](std::size_t slot) const { return results.at(slot); }

 private:
  std::size_t next_slot = 0;
};

CommandService::AgentCommand create_labelled(std::string label) {
  return [label = std::move(label)](const AgentState& s, CommandContext& c) {
    return create_key(s, CreateKey{label, std::nullopt}, c);
  };
}

TEST_CASE("commands on one agent wait their turn holding no thread, in arrival order", "[commands]") {
  CommandWorld w;
  const std::string agent_id = w.agent();
  Answers answers;
  constexpr int kCommands = 12;  // more than max_active_keys would allow: the excess are refused
  for (int i = 0; i < kCommands; ++i) {
    w.commands->on_agent_async(agent_id, "test", create_labelled("k" + std::to_string(i)), {},
                               answers.collect());
  }
  // A waiting caller takes its turn among them.
  auto sync = w.commands->on_agent(agent_id, "test", create_labelled("sync"));
  REQUIRE(answers.wait_for(kCommands));

  // Each decided on what the one before it left: no version conflict, none answered busy,
  // and the keys were created in the order the commands came.
  auto state = load_agent(*w.store, agent_id);
  REQUIRE(state.ok());
  std::vector<std::string> labels;
  for (const auto& key : state->keys) {
    labels.push_back(key.label);
  }
  int created = 0;
  for (int i = 0; i < kCommands; ++i) {
    const auto& result = answers[static_cast<std::size_t>(i)];
    if (result.ok()) {
      REQUIRE(labels.size() > static_cast<std::size_t>(created));
      CHECK(labels[static_cast<std::size_t>(created)] == "k" + std::to_string(i));
      ++created;
    } else {
      CHECK(result.status().reason() == "too_many_active_keys");
    }
  }
  CHECK(created >= 1);
  CHECK(state->version == 1 + static_cast<std::uint64_t>(created) + (sync.ok() ? 1 : 0));
  if (!sync.ok()) {
    CHECK(sync.status().reason() == "too_many_active_keys");
  }
}

TEST_CASE("a command refused before appending hands the turn on without nesting", "[commands]") {
  CommandWorld w;
  const std::string agent_id = w.agent();
  Answers answers;
  // Thousands of refusals queued behind one command that appends: each ends its turn at once,
  // on the thread that ended the turn before it, which must not recurse once per command.
  constexpr int kRefused = 20000;
  w.commands->on_agent_async(agent_id, "test", create_labelled("first"), {}, answers.collect());
  for (int i = 0; i < kRefused; ++i) {
    w.commands->on_agent_async(
        agent_id, "test",
        [](const AgentState& s, CommandContext& c) {
          return revoke_key(s, RevokeKey{"key_missing", ""}, c);
        },
        {}, answers.collect());
  }
  w.commands->on_agent_async(agent_id, "test", create_labelled("last"), {}, answers.collect());
  REQUIRE(answers.wait_for(kRefused + 2));
  CHECK(answers[0].ok());
  CHECK(answers[kRefused + 1].ok());
  for (std::size_t i = 1; i <= kRefused; ++i) {
    CHECK_FALSE(answers[i].ok());
  }
  // The unknown agent and the unknown key are answered at once, without a turn.
  auto missing = w.commands->on_agent("agent-missing", "test", create_labelled("x"));
  CHECK(missing.status().reason() == "agent_not_found");
  Result<Decision> unknown_key = Status::Ok();
  w.commands->on_key_async("key_nobody", "test", create_labelled("x"), {},
                           [&](Result<Decision> r) { unknown_key = std::move(r); });
  CHECK(unknown_key.status().reason() == "key_not_found");
}

TEST_CASE("a command that throws ends its turn with an error, and the next one runs", "[commands]") {
  CommandWorld w;
  const std::string agent_id = w.agent();
  Answers answers;
  w.commands->on_agent_async(
      agent_id, "test",
      [](const AgentState&, CommandContext&) -> Result<Decision> {
        throw std::runtime_error("cg_secret bug");
      },
      {}, answers.collect());
  w.commands->on_agent_async(agent_id, "test", create_labelled("after"), {}, answers.collect());
  REQUIRE(answers.wait_for(2));
  CHECK(answers[0].status().code() == Status::Code::kCorruption);  // answered 500 internal_error
  CHECK(answers[1].ok());
}

TEST_CASE("an answer that throws is dropped, and the agent's next command still runs", "[commands]") {
  CommandWorld w;
  const std::string agent_id = w.agent();
  Answers answers;
  w.commands->on_agent_async(agent_id, "test", create_labelled("thrown-answer"), {},
                             [](Result<Decision>) { throw std::runtime_error("reply failed"); });
  w.commands->on_agent_async(agent_id, "test", create_labelled("next"), {}, answers.collect());
  REQUIRE(answers.wait_for(1));
  CHECK(answers[0].ok());
  auto state = load_agent(*w.store, agent_id);
  REQUIRE(state.ok());
  CHECK(state->keys.size() == 2);  // the first command was appended; only its answer was lost
}

TEST_CASE("a command service waits for its commands under way before it goes", "[commands]") {
  CommandWorld w;
  const std::string agent_id = w.agent();
  Answers answers;
  constexpr std::size_t kCommands = 8;
  for (std::size_t i = 0; i < kCommands; ++i) {
    w.commands->on_agent_async(agent_id, "test", create_labelled("k" + std::to_string(i)), {},
                               answers.collect());
  }
  w.commands->register_agent_async(testing::valid_profile(), "test", {}, answers.collect());
  // Their answers use the service (the turns pass on through it): destroying it waits for them.
  w.commands.reset();
  std::lock_guard lock(answers.mutex);
  CHECK(answers.results.size() == kCommands + 1);
}

TEST_CASE("an appended command is answered from the store's thread, its events as stored", "[commands]") {
  CommandWorld w;
  const std::string agent_id = w.agent();
  Answers answers;
  std::atomic<int> outcomes{0};
  w.commands->on_agent_async(
      agent_id, "test", create_labelled("async"),
      [&](const AgentState& after, const Decision& d) {
        CHECK(after.find_key(d.key_id) != nullptr);  // the state the events leave
        ++outcomes;
        return std::vector<SideWrite>{};
      },
      answers.collect());
  REQUIRE(answers.wait_for(1));
  REQUIRE(answers[0].ok());
  CHECK(outcomes == 1);
  CHECK(answers.threads[0] != std::this_thread::get_id());
  const auto& events = answers[0]->events;
  REQUIRE_FALSE(events.empty());
  CHECK(events.front().position() > 0);
  CHECK(events.front().stream_version() == 2);
}

}  // namespace
}  // namespace keyledger
