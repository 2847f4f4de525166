// Durable append throughput of keyledger's EventStore against the floor of this disk.
//
// For each writer count (default 1, 4, 16, 64) and for sync on and off, it measures
//   store: single-event EventStore::append calls, each writer to its own stream, and
//   bare:  single-key rocksdb::DB::Put calls with WriteOptions::sync, the same value size,
// for a fixed time per cell, each cell in a fresh directory that is removed afterwards.
// The bare loop is what RocksDB alone achieves on this disk; the ratio store/bare is what the
// event store's bookkeeping (three column families, group commit thread) costs or gains.
//
//   bench_append [--seconds S] [--threads 1,4,16,64] [--dir BASE] [--out FILE]

#include <sys/statfs.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include "eventstore/event_store.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct BenchOptions {
  // Measured time per cell, in seconds.
  double seconds = 2.0;
  // Writer thread counts, one table row each.
  std::vector<int> writers = {1, 4, 16, 64};
  // Where the per-cell databases are created; must be on the disk you want to measure.
  fs::path base_dir = fs::temp_directory_path();
  // Also write the report here when not empty.
  fs::path out_file;
};

[[noreturn]] void die(const std::string& message) {
  std::cerr << "bench_append: " << message << "\n";
  std::exit(1);
}

void usage_and_exit(int code) {
  std::cerr << "usage: bench_append [--seconds S] [--threads 1,4,16,64] [--dir BASE] [--out FILE]\n"
               "  --seconds S   measured time per cell (default 2)\n"
               "  --threads L   comma-separated writer counts (default 1,4,16,64)\n"
               "  --dir BASE    directory for the temporary databases (default: system temp dir)\n"
               "  --out FILE    also write the report to FILE\n";
  std::exit(code);
}

std::vector<int> parse_writer_list(std::string_view text) {
  std::vector<int> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    int value = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (ec != std::errc() || end != item.data() + item.size() || value < 1 || value > 4096) {
      die("bad writer count '" + std::string(item) + "'");
    }
    out.push_back(value);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  if (out.empty()) {
    die("--threads needs at least one writer count");
  }
  return out;
}

BenchOptions parse_args(int argc, char** argv) {
  BenchOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    // `--flag value` or `--flag=value`.
    std::optional<std::string> inline_value;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      inline_value = std::string(arg.substr(eq + 1));
      arg = arg.substr(0, eq);
    }
    auto value = [&]() -> std::string {
      if (inline_value) {
        return *inline_value;
      }
      if (i + 1 >= argc) {
        die(std::string(arg) + " needs a value");
      }
      return argv[++i];
    };
    if (arg == "--seconds") {
      const std::string text = value();
      char* end = nullptr;
      options.seconds = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(options.seconds > 0) || options.seconds > 3600) {
        die("--seconds must be a number in (0, 3600]");
      }
    } else if (arg == "--threads") {
      options.writers = parse_writer_list(value());
    } else if (arg == "--dir") {
      options.base_dir = value();
    } else if (arg == "--out") {
      options.out_file = value();
    } else if (arg == "--help" || arg == "-h") {
      usage_and_exit(0);
    } else {
      std::cerr << "bench_append: unknown argument '" << arg << "'\n";
      usage_and_exit(2);
    }
  }
  return options;
}

// A fresh directory under `base`, removed with its contents on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const fs::path& base) {
    std::string pattern = (base / "keyledger-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      die("cannot create a directory under " + base.string());
    }
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A UUID-shaped (version 4 layout) id that is unique per writer and counter; no randomness
// needed, the store only demands uniqueness.
std::string bench_event_id(std::uint32_t writer, std::uint64_t counter) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-8%03x-%012llx", writer,
                static_cast<unsigned>((counter >> 48) & 0xffff),
                static_cast<unsigned>((counter >> 36) & 0xfff),
                static_cast<unsigned>((counter >> 24) & 0xfff),
                static_cast<unsigned long long>(counter & 0xffffffffffffULL));
  return buf;
}

// A KeyCreated event of typical size, as the API would append it.
keyledger::v1::Event key_created_template(std::uint32_t writer) {
  char agent_id[32];
  std::snprintf(agent_id, sizeof(agent_id), "agt_%024x", writer);
  keyledger::v1::Event event;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(now);
  event.mutable_occurred_at()->set_seconds(secs.count());
  event.mutable_occurred_at()->set_nanos(static_cast<std::int32_t>((now - secs).count() % 1000000000));
  event.set_actor("bench");
  event.set_type("key.created");
  auto* created = event.mutable_key_created();
  created->set_agent_id(agent_id);
  created->set_key_id("key_0123456789abcdef01234567");
  created->set_label("bench-key");
  created->set_digest(std::string(32, '\x5a'));
  created->set_hint("cg_a1b2…ef90");
  created->set_environment(keyledger::v1::ENVIRONMENT_PRODUCTION);
  return event;
}

struct CellResult {
  std::uint64_t ops = 0;
  double seconds = 0;
  double ops_per_second() const { return seconds > 0 ? static_cast<double>(ops) / seconds : 0; }
};

// Runs `writers` threads calling `op(writer, counter)` until the time is up. `op` returns
// false on failure, which ends the benchmark.
template <typename Op>
CellResult run_writers(int writers, double seconds, Op op) {
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::vector<std::uint64_t> counts(static_cast<std::size_t>(writers), 0);
  std::latch ready(writers + 1);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(writers));
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      ready.arrive_and_wait();
      std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (!op(static_cast<std::uint32_t>(w), n)) {
          failed = true;
          break;
        }
        ++n;
      }
      counts[static_cast<std::size_t>(w)] = n;
    });
  }
  ready.arrive_and_wait();
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) {
    t.join();
  }
  const auto end = Clock::now();
  if (failed) {
    die("a write failed (see above)");
  }
  CellResult result;
  for (const auto n : counts) {
    result.ops += n;
  }
  result.seconds = std::chrono::duration<double>(end - start).count();
  return result;
}

CellResult bench_store(const BenchOptions& options, int writers, bool sync) {
  ScratchDir dir(options.base_dir);
  keyledger::EventStoreOptions store_options;
  store_options.path = dir.path() / "store";
  store_options.sync = sync;
  auto opened = keyledger::EventStore::open(store_options);
  if (!opened.ok()) {
    die("EventStore::open: " + opened.status().ToString());
  }
  std::unique_ptr<keyledger::EventStore> store = std::move(opened).value();

  std::vector<keyledger::v1::Event> templates;
  std::vector<std::string> streams;
  for (int w = 0; w < writers; ++w) {
    templates.push_back(key_created_template(static_cast<std::uint32_t>(w)));
    streams.push_back("agent-" + templates.back().key_created().agent_id());
  }
  return run_writers(writers, options.seconds, [&](std::uint32_t w, std::uint64_t n) {
    std::vector<keyledger::v1::Event> batch(1, templates[w]);
    batch.front().set_event_id(bench_event_id(w, n));
    auto appended = store->append(streams[w], keyledger::kAnyVersion, std::move(batch));
    if (!appended.ok()) {
      std::cerr << "bench_append: append: " << appended.status().ToString() << "\n";
      return false;
    }
    return true;
  });
}

CellResult bench_bare(const BenchOptions& options, int writers, bool sync) {
  ScratchDir dir(options.base_dir);
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::Open(db_options, (dir.path() / "bare").string(), &raw);
  if (!opened.ok()) {
    die("rocksdb::DB::Open: " + opened.ToString());
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteOptions write_options;
  write_options.sync = sync;
  const std::string value = key_created_template(0).SerializeAsString();

  CellResult result = run_writers(writers, options.seconds, [&](std::uint32_t w, std::uint64_t n) {
    char key[12];
    for (int i = 0; i < 4; ++i) {
      key[i] = static_cast<char>(w >> (24 - 8 * i));
    }
    for (int i = 0; i < 8; ++i) {
      key[4 + i] = static_cast<char>(n >> (56 - 8 * i));
    }
    const rocksdb::Status put = db->Put(write_options, rocksdb::Slice(key, sizeof(key)), value);
    if (!put.ok()) {
      std::cerr << "bench_append: Put: " << put.ToString() << "\n";
      return false;
    }
    return true;
  });
  const rocksdb::Status closed = db->Close();
  if (!closed.ok()) {
    die("rocksdb::DB::Close: " + closed.ToString());
  }
  return result;
}

std::string filesystem_note(const fs::path& dir) {
  struct statfs info {};
  if (::statfs(dir.c_str(), &info) != 0) {
    return "unknown filesystem";
  }
  switch (static_cast<unsigned long>(info.f_type)) {
    case 0x01021994UL:
      return "tmpfs; WARNING: fsync costs nothing in memory, pass --dir on a real disk";
    case 0xEF53UL:
      return "ext4";
    case 0x58465342UL:
      return "xfs";
    case 0x9123683EUL:
      return "btrfs";
    case 0x794C7630UL:
      return "overlayfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "fs type 0x%lx", static_cast<unsigned long>(info.f_type));
      return buf;
    }
  }
}

std::string fmt(double value, const char* format) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

struct Row {
  int writers = 0;
  CellResult store_synced, bare_synced, store_unsynced, bare_unsynced;
};

std::string ratio(const CellResult& store, const CellResult& bare) {
  return bare.ops_per_second() > 0 ? fmt(store.ops_per_second() / bare.ops_per_second(), "%.2f") : "-";
}

}  // namespace

int main(int argc, char** argv) {
  const BenchOptions options = parse_args(argc, argv);
  std::error_code ec;
  fs::create_directories(options.base_dir, ec);
  if (ec || !fs::is_directory(options.base_dir)) {
    die("--dir " + options.base_dir.string() + " is not a usable directory");
  }

  std::vector<Row> rows;
  for (const int writers : options.writers) {
    Row row;
    row.writers = writers;
    std::cerr << "bench_append: " << writers << " writer(s): store synced" << std::flush;
    row.store_synced = bench_store(options, writers, true);
    std::cerr << ", bare synced" << std::flush;
    row.bare_synced = bench_bare(options, writers, true);
    std::cerr << ", store unsynced" << std::flush;
    row.store_unsynced = bench_store(options, writers, false);
    std::cerr << ", bare unsynced" << std::flush;
    row.bare_unsynced = bench_bare(options, writers, false);
    std::cerr << "\n";
    rows.push_back(row);
  }

  std::ostringstream report;
  report << "keyledger append benchmark: single-event appends, one stream per writer, "
         << fmt(options.seconds, "%g") << " s per cell, " << std::thread::hardware_concurrency() << " CPUs\n"
         << "directory: " << options.base_dir.string() << " (" << filesystem_note(options.base_dir) << ")\n"
         << "store = EventStore::append (group commit); bare = rocksdb::DB::Put of one key; ops/s\n\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%7s | %18s | %17s | %5s | %14s | %13s | %5s\n", "writers",
                "store synced ops/s", "bare synced ops/s", "ratio", "store unsynced", "bare unsynced",
                "ratio");
  report << line;
  for (const int width : {8, 20, 19, 7, 16, 15, 6}) {
    report << std::string(static_cast<std::size_t>(width), '-') << (width == 6 ? "\n" : "+");
  }
  for (const Row& row : rows) {
    std::snprintf(line, sizeof(line), "%7d | %18.0f | %17.0f | %5s | %14.0f | %13.0f | %5s\n", row.writers,
                  row.store_synced.ops_per_second(), row.bare_synced.ops_per_second(),
                  ratio(row.store_synced, row.bare_synced).c_str(), row.store_unsynced.ops_per_second(),
                  row.bare_unsynced.ops_per_second(), ratio(row.store_unsynced, row.bare_unsynced).c_str());
    report << line;
  }
  const auto find = [&](int writers) -> const Row* {
    const auto it =
        std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.writers == writers; });
    return it == rows.end() ? nullptr : &*it;
  };
  const Row* one = find(1);
  const Row* sixteen = find(16);
  report << "\n16-writer/1-writer speedup (store, synced): ";
  if (one != nullptr && sixteen != nullptr && one->store_synced.ops_per_second() > 0) {
    report << fmt(sixteen->store_synced.ops_per_second() / one->store_synced.ops_per_second(), "%.2fx")
           << "\n";
  } else {
    report << "n/a (needs 1 and 16 in --threads)\n";
  }

  std::cout << report.str();
  if (!options.out_file.empty()) {
    std::ofstream out(options.out_file);
    out << report.str();
    if (!out) {
      die("cannot write " + options.out_file.string());
    }
  }
  return 0;
}
