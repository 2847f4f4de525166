// In-process key verification throughput on one thread, against the floor of its one
// unavoidable cost.
//
// For each table size (default 10 000 and 1 000 000 keys) it measures, over the same keys in
// the same shuffled order:
//   floor:    a bare loop of libsodium's keyed BLAKE2b-256 (crypto_generichash with the
//             pepper), the digest every verification must compute;
//   verifier: api::Verifier::verify(key, 1) as the server wires it (ActiveKeyTable with usage
//             tracking and rate-limit buckets, SystemClock), a tier too generous ever to limit;
//   counted:  the same with key usage counted (a UsageRecorder, as a primary and a replica
//             run it), to show what counting costs verification (issue 16: within 5%).
// Then what a node's housekeeper spends on those counts (KeyUsage over a RocksDB store in a
// temporary directory, a manual clock): journalling every key's cell, folding a minute of
// every key into the buckets, and rolling an hour of them up into hour buckets.
// The ratio verifier/floor is what the format check, table lookup, expiry check, rate-limit
// bucket and usage record cost on top of the hash (target: >= 0.5). Comparing the two table
// sizes shows whether the lookup stays flat as the table outgrows the CPU caches.
//
//   bench_verify [--keys 10000,1000000] [--seconds S] [--usage-minutes M] [--out FILE]

#include <sodium.h>
#include <unistd.h>

#include <stdlib.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "api/rate_limiter.h"
#include "api/verifier.h"
#include "domain/clock.h"
#include "domain/key_material.h"
#include "eventstore/event_store.h"
#include "projections/active_key_table.h"
#include "projections/usage.h"

namespace {

using Steady = std::chrono::steady_clock;
using namespace keyledger;

volatile std::uint8_t g_sink = 0;

struct BenchOptions {
  std::vector<std::size_t> key_counts = {10'000, 1'000'000};
  double seconds = 2.0;  // measured time per loop and table size
  int usage_minutes = 10;  // minutes of every key's use folded before a rollup; 0: none
  std::string out_file;
};

[[noreturn]] void die(const std::string& message) {
  std::cerr << "bench_verify: " << message << "\n";
  std::exit(1);
}

void usage_and_exit(int code) {
  std::cerr << "usage: bench_verify [--keys 10000,1000000] [--seconds S] [--out FILE]\n"
               "  --keys L      comma-separated table sizes (default 10000,1000000)\n"
               "  --seconds S   measured time per loop and size (default 2)\n"
               "  --usage-minutes M  minutes of use journalled, folded and rolled up (default 10; 0: skip)\n"
               "  --out FILE    also write the report to FILE\n";
  std::exit(code);
}

std::vector<std::size_t> parse_counts(std::string_view text) {
  std::vector<std::size_t> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    std::size_t value = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (ec != std::errc() || end != item.data() + item.size() || value < 1 || value > 50'000'000) {
      die("bad key count '" + std::string(item) + "'");
    }
    out.push_back(value);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  if (out.empty()) {
    die("--keys needs at least one count");
  }
  return out;
}

BenchOptions parse_args(int argc, char** argv) {
  BenchOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
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
    if (arg == "--keys") {
      options.key_counts = parse_counts(value());
    } else if (arg == "--seconds") {
      const std::string text = value();
      char* end = nullptr;
      options.seconds = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(options.seconds > 0) || options.seconds > 600) {
        die("--seconds must be a number in (0, 600]");
      }
    } else if (arg == "--usage-minutes") {
      const std::string text = value();
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), options.usage_minutes);
      if (ec != std::errc() || end != text.data() + text.size() || options.usage_minutes < 0 ||
          options.usage_minutes > 60) {
        die("--usage-minutes must be a whole number in [0, 60]");
      }
    } else if (arg == "--out") {
      options.out_file = value();
    } else if (arg == "--help" || arg == "-h") {
      usage_and_exit(0);
    } else {
      std::cerr << "bench_verify: unknown argument '" << arg << "'\n";
      usage_and_exit(2);
    }
  }
  return options;
}

// Resident set size in bytes (/proc/self/statm), 0 if unknown.
std::size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages_total = 0;
  std::size_t pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) {
    return 0;
  }
  return pages_resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// N distinct well-formed keys, stored back to back (no allocation per key).
class KeySet {
 public:
  static constexpr std::size_t kStride = 35;  // "cg_" + 32 hex

  explicit KeySet(std::size_t n) : bytes_(n * kStride) {
    SeededRandom random(20261101);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string key = generate_api_key(random);
      if (key.size() != kStride) {
        die("unexpected key length " + std::to_string(key.size()));
      }
      std::copy(key.begin(), key.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(i * kStride));
    }
  }
  std::size_t size() const { return bytes_.size() / kStride; }
  std::string_view operator[](std::size_t i) const { return {bytes_.data() + i * kStride, kStride}; }

 private:
  std::vector<char> bytes_;
};

std::string id_of(std::string_view prefix, std::size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*s%024zx", static_cast<int>(prefix.size()), prefix.data(), n);
  return buf;
}

struct LoopResult {
  std::uint64_t ops = 0;
  double seconds = 0;
  double per_second() const { return seconds > 0 ? static_cast<double>(ops) / seconds : 0; }
  double ns_per_op() const { return ops > 0 ? seconds * 1e9 / static_cast<double>(ops) : 0; }
};

// One measured loop: op(index) over `order`, round and round. op returns false on a wrong
// answer, which ends the benchmark.
struct Loop {
  explicit Loop(std::function<bool(std::uint32_t)> f) : op(std::move(f)) {}
  std::function<bool(std::uint32_t)> op;
  std::size_t pos = 0;
  LoopResult result;
};

// Runs the loops in turns of kSliceSeconds until each has had `seconds`: on a shared or
// throttled machine every loop sees the same conditions, so their ratios hold even when the
// absolute figures wander.
void run_interleaved(const std::vector<std::uint32_t>& order, double seconds, std::vector<Loop*> loops) {
  constexpr double kSliceSeconds = 0.05;
  constexpr int kBatch = 256;  // calls between clock reads
  const int rounds = std::max(1, static_cast<int>(seconds / kSliceSeconds + 0.5));
  for (int round = 0; round < rounds; ++round) {
    for (Loop* loop : loops) {
      const auto start = Steady::now();
      const auto budget = std::chrono::duration<double>(kSliceSeconds);
      for (;;) {
        for (int i = 0; i < kBatch; ++i) {
          if (!loop->op(order[loop->pos])) {
            die("a verification gave a wrong answer");
          }
          if (++loop->pos == order.size()) {
            loop->pos = 0;
          }
        }
        loop->result.ops += kBatch;
        const auto elapsed = Steady::now() - start;
        if (elapsed >= budget) {
          loop->result.seconds += std::chrono::duration<double>(elapsed).count();
          break;
        }
      }
    }
  }
}

// What the housekeeper spends on usage (KeyUsage::flush) with every key used every minute.
struct Housekeeping {
  int minutes = 0;
  double idle_ms = 0;        // a flush with nothing to journal, fold or roll up (the scan of the cells)
  double journal_ms = 0;     // a flush journalling every key's cell (the median flush)
  double fold_ms = 0;        // a flush folding every key's minute into the buckets (median)
  double rollup_ms = 0;      // one rollup of those minutes into hour buckets, every slice, less idle_ms each
  double slice_ms = 0;       // its longest slice (one flush)
  std::size_t slices = 0;
};

struct SizeResult {
  std::size_t keys = 0;
  LoopResult floor;                 // keyed BLAKE2b alone
  LoopResult lookup;                // digest + ActiveKeyTable::find
  LoopResult take;                  // api::take_tokens alone, on a bucket per key outside the table
  LoopResult verifier;              // Verifier::verify, all of it, usage not counted
  LoopResult counted;               // Verifier::verify with usage counted (UsageRecorder)
  double counts_bytes_per_key = 0;  // the recorder's cells, one per key used in its minute
  double table_bytes_per_key = 0;
  double usage_bytes_per_key = 0;  // rate-limit bucket and usage record, once a key is used
  Housekeeping housekeeping;
  double ratio() const { return floor.per_second() > 0 ? verifier.per_second() / floor.per_second() : 0; }
  double counting() const {
    return verifier.per_second() > 0 ? counted.per_second() / verifier.per_second() : 0;
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double ms_since(Steady::time_point start) {
  return std::chrono::duration<double, std::milli>(Steady::now() - start).count();
}

// `minutes` minutes of one verification of every key a minute, each minute journalled and
// folded by KeyUsage as a primary's housekeeper runs it, then the rollup of that hour.
Housekeeping bench_housekeeping(ActiveKeyTable& table, const KeyHasher& hasher, const KeySet& keys,
                                const std::vector<api::RateLimitTier>& tiers, int minutes) {
  Housekeeping result;
  result.minutes = minutes;
  std::string dir_template = (std::filesystem::temp_directory_path() / "bench_verify_usage_XXXXXX").string();
  if (::mkdtemp(dir_template.data()) == nullptr) {
    die("cannot make a temporary directory");
  }
  const std::filesystem::path dir(dir_template);
  {
    // An hour after the table's counts so far (real time), so that the first fold takes them.
    const std::int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
    const std::int64_t t0 = (now_s / 3600 + 1) * 3600;
    ManualClock clock{TimePoint(std::chrono::seconds(t0))};
    const UsageRetention retention;
    EventStoreOptions options{.path = dir / "store", .extra_column_families = {std::string(kUsageColumnFamily)}};
    options.tuning.emplace(kUsageColumnFamily, usage_family_tuning(clock, retention));
    auto store = EventStore::open(options);
    if (!store.ok()) {
      die("cannot open a store: " + store.status().ToString());
    }
    KeyUsage usage(**store, clock, retention, &table);
    const auto flush = [&](KeyUsage::Fold fold) {
      if (Status s = usage.flush(fold); !s.ok()) {
        die("usage flush: " + s.ToString());
      }
    };
    flush(KeyUsage::Fold::kNow);
    const api::Verifier counting(table, hasher, tiers, clock, /*count_usage=*/true);
    std::vector<double> idles;
    std::vector<double> journals;
    std::vector<double> folds;
    for (int m = 0; m < minutes; ++m) {
      clock.set(TimePoint(std::chrono::seconds(t0 + m * 60 + 1)));
      for (std::size_t i = 0; i < keys.size(); ++i) {
        (void)counting.verify(keys[i], 1);
      }
      clock.set(TimePoint(std::chrono::seconds(t0 + m * 60 + 30)));
      auto start = Steady::now();
      flush(KeyUsage::Fold::kWhenDue);  // journals every key's cell
      journals.push_back(ms_since(start));
      clock.set(TimePoint(std::chrono::seconds(t0 + m * 60 + 40)));
      start = Steady::now();
      flush(KeyUsage::Fold::kWhenDue);  // nothing changed since
      idles.push_back(ms_since(start));
      clock.set(TimePoint(std::chrono::seconds(t0 + m * 60 + 65)));
      start = Steady::now();
      flush(KeyUsage::Fold::kWhenDue);  // the minute is over: the fold (nothing changed to journal)
      folds.push_back(ms_since(start));
    }
    result.idle_ms = median(idles);
    result.journal_ms = median(journals);
    result.fold_ms = median(folds);
    clock.set(TimePoint(std::chrono::seconds(t0 + 3600 + 200)));
    while (usage.rolled_before() <= t0) {
      const auto start = Steady::now();
      flush(KeyUsage::Fold::kWhenDue);
      const double ms = std::max(0.0, ms_since(start) - result.idle_ms);  // the slice's own work
      result.rollup_ms += ms;
      result.slice_ms = std::max(result.slice_ms, ms);
      if (++result.slices > keys.size()) {
        die("the rollup does not end");
      }
    }
  }
  std::filesystem::remove_all(dir);
  return result;
}

SizeResult bench_size(std::size_t n, double seconds, int usage_minutes, const Pepper& pepper) {
  SizeResult result;
  result.keys = n;
  const KeySet keys(n);
  const KeyHasher hasher(pepper);

  // The same shuffled order for every loop: a gateway's keys arrive in no particular order.
  std::vector<std::uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0U);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));

  std::vector<Digest> digests(n);
  std::vector<InlineId> key_ids(n);
  for (std::size_t i = 0; i < n; ++i) {
    digests[i] = hasher.digest(keys[i]);
    key_ids[i] = InlineId(id_of("key_", i));
  }

  // The table, as the projection would fill it: 10 keys per agent, as many as the API allows.
  const std::size_t rss_before = rss_bytes();
  ActiveKeyTable table({"standard"});
  const std::int64_t created_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count();
  for (std::size_t i = 0; i < n; ++i) {
    KeyEntry entry;
    entry.key_id = key_ids[i];
    entry.agent_id = InlineId(id_of("agt_", i / 10));
    entry.created_at_ms = created_ms;
    entry.tier = 0;
    table.put(digests[i], entry);
  }
  const std::size_t rss_after = rss_bytes();
  if (table.size() != n) {
    die("the table holds " + std::to_string(table.size()) + " keys, not " + std::to_string(n));
  }
  result.table_bytes_per_key =
      rss_after > rss_before ? static_cast<double>(rss_after - rss_before) / static_cast<double>(n) : 0;

  // The verifier as main.cpp wires it on a primary (usage tracked in the same table), with a
  // tier that never limits.
  SystemClock clock;
  const std::vector<api::RateLimitTier> tiers = {{"standard", 1e12, 4'000'000'000U}};
  const api::Verifier verifier(table, hasher, tiers, clock);
  // One pass first, so every key has its rate-limit bucket and usage slot (the steady state
  // of a server whose keys are all in use) before the clock starts.
  for (std::uint32_t i : order) {
    if (!verifier.verify(keys[i], 1).valid()) {
      die("key " + std::to_string(i) + " did not verify");
    }
  }
  const std::size_t rss_used = rss_bytes();
  result.usage_bytes_per_key =
      rss_used > rss_after ? static_cast<double>(rss_used - rss_after) / static_cast<double>(n) : 0;
  const api::Verifier counting(table, hasher, tiers, clock, /*count_usage=*/true);
  for (std::uint32_t i : order) {
    (void)counting.verify(keys[i], 1);  // every key's count cell in use, as in a busy minute
  }
  const std::size_t rss_counted = rss_bytes();
  result.counts_bytes_per_key =
      rss_counted > rss_used ? static_cast<double>(rss_counted - rss_used) / static_cast<double>(n) : 0;

  std::uint8_t sink = 0;
  const unsigned char* pepper_bytes = pepper.bytes().data();
  Loop floor([&](std::uint32_t i) {
    Digest out;
    const std::string_view k = keys[i];
    crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(k.data()), k.size(),
                       pepper_bytes, Pepper::kSize);
    sink = static_cast<std::uint8_t>(sink ^ out[0]);
    return true;
  });
  Loop lookup([&](std::uint32_t i) { return table.find(hasher.digest(keys[i])).has_value(); });
  std::vector<TokenBucket> buckets(n);
  Loop take([&](std::uint32_t i) {
    const auto now_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock.now().time_since_epoch()).count();
    return api::take_tokens(buckets[i], tiers[0], 1, now_ns).allowed;
  });
  Loop verify([&](std::uint32_t i) { return verifier.verify(keys[i], 1).valid(); });
  Loop counted([&](std::uint32_t i) { return counting.verify(keys[i], 1).valid(); });
  run_interleaved(order, seconds, {&floor, &lookup, &take, &verify, &counted});
  g_sink = sink;  // the floor's digests are used, so its loop cannot be optimised away

  result.floor = floor.result;
  result.lookup = lookup.result;
  result.take = take.result;
  result.verifier = verify.result;
  result.counted = counted.result;
  if (usage_minutes > 0) {
    result.housekeeping = bench_housekeeping(table, hasher, keys, tiers, usage_minutes);
  }
  return result;
}

std::string fmt_rate(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const BenchOptions options = parse_args(argc, argv);
  if (!crypto_init()) {
    die("libsodium failed to initialise");
  }
  std::array<std::uint8_t, Pepper::kSize> pepper_bytes{};
  randombytes_buf(pepper_bytes.data(), pepper_bytes.size());
  const Pepper pepper(pepper_bytes);

  std::vector<SizeResult> results;
  for (const std::size_t n : options.key_counts) {
    std::cerr << "bench_verify: " << n << " keys ...\n";
    results.push_back(bench_size(n, options.seconds, options.usage_minutes, pepper));
  }

  std::ostringstream report;
  report << "In-process verification, one thread (" << options.seconds
         << " s per loop, loops interleaved in 50 ms turns)\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%10s  %12s  %12s  %6s  %9s  %9s  %9s  %9s  %8s  %8s\n", "keys",
                "floor/s", "verify/s", "ratio", "floor ns", "lookup ns", "take ns", "verify ns", "table B",
                "in use B");
  report << line;
  for (const auto& r : results) {
    std::snprintf(line, sizeof(line), "%10zu  %12s  %12s  %6.2f  %9.0f  %9.0f  %9.0f  %9.0f  %8.0f  %8.0f\n",
                  r.keys, fmt_rate(r.floor.per_second()).c_str(), fmt_rate(r.verifier.per_second()).c_str(),
                  r.ratio(), r.floor.ns_per_op(), r.lookup.ns_per_op(), r.take.ns_per_op(),
                  r.verifier.ns_per_op(), r.table_bytes_per_key, r.usage_bytes_per_key);
    report << line;
  }
  report
      << "Counting usage (issue 16): verify/s with counts over verify/s without, and the bytes per key of\n"
         "the count cells beside the table's slots (32 B a key, made per 65 536 keys: 2 MiB, the first on plain pages)\n";
  for (const auto& r : results) {
    std::snprintf(line, sizeof(line), "%10zu keys: counted %s/s, x%.3f of uncounted; %.0f B per key\n",
                  r.keys, fmt_rate(r.counted.per_second()).c_str(), r.counting(), r.counts_bytes_per_key);
    report << line;
  }
  if (options.usage_minutes > 0) {
    report << "Usage housekeeping (KeyUsage::flush on a RocksDB store, every key verified once a minute for "
           << options.usage_minutes << " minutes):\n"
              "idle: a flush with nothing to write (the scan of the cells, every 2 s on a node); journal: a flush\n"
              "of every key's cell; fold: a minute of every key into its bucket; rollup: those minutes into hour\n"
              "buckets, all slices, each less an idle flush (ns per key and minute; longest: one slice)\n";
    for (const auto& r : results) {
      const Housekeeping& h = r.housekeeping;
      const double keys = static_cast<double>(r.keys);
      std::snprintf(line, sizeof(line),
                    "%10zu keys: idle %.1f ms, journal %.1f ms (%.0f ns a key), fold %.1f ms (%.0f ns a key), rollup "
                    "%.1f ms (%.0f ns a key-minute, %zu slices, longest %.1f ms)\n",
                    r.keys, h.idle_ms, h.journal_ms, h.journal_ms * 1e6 / keys, h.fold_ms, h.fold_ms * 1e6 / keys, h.rollup_ms,
                    h.rollup_ms * 1e6 / (keys * h.minutes), h.slices, h.slice_ms);
      report << line;
    }
  }
  if (results.size() >= 2) {
    const auto& a = results.front();
    const auto& b = results.back();
    std::snprintf(line, sizeof(line), "%zu vs %zu keys: verify/s x%.2f, ratio to floor x%.2f (1.00 = flat)\n",
                  b.keys, a.keys,
                  a.verifier.per_second() > 0 ? b.verifier.per_second() / a.verifier.per_second() : 0,
                  a.ratio() > 0 ? b.ratio() / a.ratio() : 0);
    report << line;
  }
  report << "floor: crypto_generichash keyed BLAKE2b-256 of the key (target: verify >= 0.5 x floor).\n"
            "lookup: digest + ActiveKeyTable::find; take: api::take_tokens alone; verify:\n"
            "api::Verifier::verify(key, 1), all of it (digest, one visit of the key's slot: state, expiry,\n"
            "bucket, last use).\n"
            "table B: resident bytes per key added by filling the table (entries and its indexes);\n"
            "in use B: added once every key was verified (rate-limit bucket, usage record).\n";

  std::cout << report.str();
  if (!options.out_file.empty()) {
    std::ofstream out(options.out_file);
    if (!(out << report.str())) {
      die("cannot write " + options.out_file);
    }
  }
  return 0;
}
