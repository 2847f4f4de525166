// Child process of the crash test: appends from many threads and reports every acknowledged
// append on stdout as "<stream> <stream_version> <position> <event_id>" until it is killed.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "eventstore/event_store.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DIR THREADS\n", argv[0]);
    return 2;
  }
  auto store = keyledger::EventStore::open(keyledger::EventStoreOptions{.path = argv[1], .sync = true, .max_group_size = 1024, .extra_column_families = {}});
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  const int threads = std::atoi(argv[2]);
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t) {
    writers.emplace_back([&, t] {
      const std::string stream = "agent-crash-" + std::to_string(getpid()) + "-" + std::to_string(t);
      for (std::uint64_t n = 0;; ++n) {
        keyledger::v1::Event e;
        e.set_event_id(stream + "-" + std::to_string(n));
        e.set_type("key.created");
        e.mutable_key_created()->set_key_id("key_" + std::to_string(n));
        auto appended = (*store)->append(stream, static_cast<std::int64_t>(n), {e});
        if (!appended.ok()) {
          std::fprintf(stderr, "append: %s\n", appended.status().ToString().c_str());
          std::_Exit(1);
        }
        const auto& stored = appended->events.front();
        // One write() per line: lines from different threads never interleave on the pipe.
        const std::string line = stream + " " + std::to_string(stored.stream_version()) + " " +
                                 std::to_string(stored.position()) + " " + stored.event_id() + "\n";
        if (write(STDOUT_FILENO, line.data(), line.size()) < 0) {
          std::_Exit(1);
        }
      }
    });
  }
  for (auto& w : writers) {
    w.join();
  }
}
