// Kills a child process that appends with many threads at a random moment, then checks that
// every append it reported as acknowledged survived, in order, with no gap in positions.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "eventstore/event_store.h"
#include "support/temp_dir.h"

extern char** environ;

namespace keyledger {
namespace {

struct Ack {
  std::string stream;
  std::uint64_t version;
  std::uint64_t position;
  std::string event_id;
};

// Runs the child until it has acknowledged its first append and then for `run_for` more (a slow,
// sanitised build can take longer than `run_for` just to open the store), SIGKILLs it, and
// returns every line it printed.
std::string run_and_kill(const std::filesystem::path& dir, int threads, std::chrono::milliseconds run_for) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const std::string child = KEYLEDGER_CRASH_CHILD;
  const std::string dir_arg = dir.string();
  const std::string threads_arg = std::to_string(threads);
  char* argv[] = {const_cast<char*>(child.c_str()), const_cast<char*>(dir_arg.c_str()),
                  const_cast<char*>(threads_arg.c_str()), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, child.c_str(), &actions, nullptr, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);

  std::string output;
  std::mutex mu;
  std::condition_variable first_ack;
  bool acknowledged = false;
  std::thread reader([&] {
    char buf[65536];
    for (;;) {
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) {
        break;
      }
      std::lock_guard lock(mu);
      output.append(buf, static_cast<std::size_t>(n));
      if (!acknowledged && output.find('\n') != std::string::npos) {
        acknowledged = true;
        first_ack.notify_all();
      }
    }
  });
  {
    std::unique_lock lock(mu);
    first_ack.wait_for(lock, std::chrono::seconds(60), [&] { return acknowledged; });
  }
  std::this_thread::sleep_for(run_for);
  REQUIRE(kill(pid, SIGKILL) == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  reader.join();
  close(out[0]);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  return output;
}

std::vector<Ack> parse_acks(const std::string& output) {
  std::vector<Ack> acks;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) {
      break;  // a line cut by the kill has no newline; it was never fully reported
    }
    std::istringstream fields(line);
    Ack a;
    fields >> a.stream >> a.version >> a.position >> a.event_id;
    REQUIRE_FALSE(fields.fail());
    acks.push_back(a);
  }
  return acks;
}

}  // namespace

TEST_CASE("SIGKILL mid-append loses no acknowledged event and leaves no gap", "[eventstore][crash]") {
  testing::TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(150, 600);
  std::size_t total_acks = 0;

  // Several kills against the same directory: each run also recovers the previous one's tail.
  for (int round = 0; round < 4; ++round) {
    const auto acks = parse_acks(run_and_kill(dir.path(), 16, std::chrono::milliseconds(delay_ms(rng))));
    total_acks += acks.size();
    INFO("round " << round << ", " << acks.size() << " acknowledged appends");
    REQUIRE_FALSE(acks.empty());

    auto store = EventStore::open(keyledger::EventStoreOptions{.path = dir.path(), .sync = true, .max_group_size = 1024, .extra_column_families = {}});
    REQUIRE(store.ok());
    auto& s = **store;

    // Positions 1..last with no gap, and streams' versions contiguous from 1.
    std::map<std::string, std::uint64_t> versions;
    std::uint64_t expected_position = 1;
    for (std::uint64_t from = 1;;) {
      auto batch = s.read_all(from, 4096);
      REQUIRE(batch.ok());
      if (batch->empty()) {
        break;
      }
      for (const auto& e : *batch) {
        REQUIRE(e.position() == expected_position++);
        REQUIRE(e.stream_version() == ++versions[e.stream()]);
      }
      from = batch->back().position() + 1;
    }
    CHECK(s.last_position() == expected_position - 1);

    // Every acknowledged append is there, where the child was told it was.
    for (const auto& ack : acks) {
      auto e = s.read_event(ack.event_id);
      REQUIRE(e.ok());
      REQUIRE(e->position() == ack.position);
      REQUIRE(e->stream() == ack.stream);
      REQUIRE(e->stream_version() == ack.version);
    }

    // The store accepts appends again after recovery, at the next position.
    v1::Event probe;
    probe.set_event_id("probe-" + std::to_string(round));
    auto appended = s.append("agent-probe", kAnyVersion, {probe});
    REQUIRE(appended.ok());
    CHECK(appended->first_position == expected_position);
  }
  CHECK(total_acks > 0);
}

}  // namespace keyledger
