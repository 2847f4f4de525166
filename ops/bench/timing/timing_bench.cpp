// The time envelope of key verification, in process: how long api::Verifier::verify takes for
// each answer it can give, measured call by call with the classes interleaved at random, so a
// busy machine slows them all alike.
//
// Classes: VALID, NOT_FOUND (well formed, never issued), REVOKED, EXPIRED, COMPROMISED, all
// in one table of --keys keys (default 10 000), and MALFORMED (refused before any digest;
// well-formedness is public, it reveals nothing). Prints per class the median, p90 and p99 in
// nanoseconds and the ratio of each to VALID's.
//
//   bench_timing [--keys N] [--samples S] [--out FILE]

#include <sodium.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "api/rate_limiter.h"
#include "api/verifier.h"
#include "domain/clock.h"
#include "domain/key_material.h"
#include "projections/active_key_table.h"

namespace {

using Steady = std::chrono::steady_clock;
using namespace keyledger;

[[noreturn]] void die(const std::string& message) {
  std::cerr << "bench_timing: " << message << "\n";
  std::exit(1);
}

struct Options {
  std::size_t keys = 10'000;
  std::size_t samples = 200'000;  // per class
  std::string out_file;
};

std::size_t parse_count(const std::string& text, std::size_t max) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || v < 100 || v > max) {
    die("bad count '" + text + "' (100.." + std::to_string(max) + ")");
  }
  return static_cast<std::size_t>(v);
}

Options parse_args(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        die(arg + " needs a value");
      }
      return argv[++i];
    };
    if (arg == "--keys") {
      options.keys = parse_count(value(), 10'000'000);
    } else if (arg == "--samples") {
      options.samples = parse_count(value(), 50'000'000);
    } else if (arg == "--out") {
      options.out_file = value();
    } else {
      std::cerr << "usage: bench_timing [--keys N] [--samples S] [--out FILE]\n";
      std::exit(arg == "--help" || arg == "-h" ? 0 : 2);
    }
  }
  return options;
}

enum Class : std::uint8_t { kValid, kNotFound, kRevoked, kExpired, kCompromised, kMalformed, kClassCount };
constexpr std::array<const char*, kClassCount> kClassNames = {"VALID",   "NOT_FOUND",   "REVOKED",
                                                              "EXPIRED", "COMPROMISED", "MALFORMED"};
constexpr std::array<api::VerifyCode, kClassCount> kExpected = {
    api::VerifyCode::kValid,   api::VerifyCode::kNotFound,    api::VerifyCode::kRevoked,
    api::VerifyCode::kExpired, api::VerifyCode::kCompromised, api::VerifyCode::kMalformed};

std::string id_of(std::string_view prefix, std::size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*s%024zx", static_cast<int>(prefix.size()), prefix.data(), n);
  return buf;
}

double percentile(std::vector<std::uint32_t>& v, double p) {
  const auto k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_args(argc, argv);
  if (!crypto_init()) {
    die("libsodium failed to initialise");
  }
  std::array<std::uint8_t, Pepper::kSize> pepper_bytes{};
  randombytes_buf(pepper_bytes.data(), pepper_bytes.size());
  const Pepper pepper(pepper_bytes);
  const KeyHasher hasher(pepper);

  // The table: a fifth each of active, revoked, expired and compromised keys; the rest of the
  // issued keys active too. NOT_FOUND keys are generated and never put in.
  SeededRandom random(20261205);
  ActiveKeyTable table({"standard"});
  const std::int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  std::array<std::vector<std::string>, kClassCount> pools;
  for (std::size_t i = 0; i < options.keys; ++i) {
    std::string key = generate_api_key(random);
    KeyEntry entry;
    entry.key_id = InlineId(id_of("key_", i));
    entry.agent_id = InlineId(id_of("agt_", i / 10));
    entry.created_at_ms = now_ms - 1000;
    Class c = kValid;
    switch (i % 5) {
      case 1: entry.condition = KeyCondition::kRevoked; c = kRevoked; break;
      case 2: entry.expires_at_ms = now_ms - 1; c = kExpired; break;
      case 3: entry.condition = KeyCondition::kCompromised; c = kCompromised; break;
      default: break;
    }
    table.put(hasher.digest(key), entry);
    pools[c].push_back(std::move(key));
  }
  for (std::size_t i = 0; i < options.keys / 5; ++i) {
    pools[kNotFound].push_back(generate_api_key(random));
    std::string bad = generate_api_key(random);
    bad.pop_back();  // 31 hex characters
    pools[kMalformed].push_back(std::move(bad));
  }

  SystemClock clock;
  const std::vector<api::RateLimitTier> tiers = {{"standard", 1e12, 4'000'000'000U}};
  const api::Verifier verifier(table, hasher, tiers, clock);

  // Every class gets `samples` calls, in one random order.
  std::vector<std::uint8_t> order;
  order.reserve(options.samples * kClassCount);
  for (std::uint8_t c = 0; c < kClassCount; ++c) {
    order.insert(order.end(), options.samples, c);
  }
  std::shuffle(order.begin(), order.end(), std::mt19937_64(5));

  // One untimed pass over every pool first (buckets and usage slots exist, caches warm).
  for (std::uint8_t c = 0; c < kClassCount; ++c) {
    for (const auto& key : pools[c]) {
      if (verifier.verify(key, 1).code != kExpected[c]) {
        die(std::string("a ") + kClassNames[c] + " key answered something else");
      }
    }
  }

  std::array<std::vector<std::uint32_t>, kClassCount> ns;
  for (auto& v : ns) {
    v.reserve(options.samples);
  }
  std::array<std::size_t, kClassCount> next{};
  for (const std::uint8_t c : order) {
    const std::string& key = pools[c][next[c]++ % pools[c].size()];
    const auto t0 = Steady::now();
    const api::VerifyOutcome outcome = verifier.verify(key, 1);
    const auto t1 = Steady::now();
    if (outcome.code != kExpected[c]) {
      die(std::string("a ") + kClassNames[c] + " key answered something else");
    }
    ns[c].push_back(static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
  }

  std::ostringstream report;
  report << "In-process verification time by answer: " << options.keys << " keys, " << options.samples
         << " calls per class interleaved at random, one thread (ns, including ~20 ns of clock reads)\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%-12s %8s %8s %8s %10s %10s\n", "answer", "p50 ns", "p90 ns", "p99 ns",
                "p50/VALID", "p99/VALID");
  report << line;
  std::array<std::array<double, 3>, kClassCount> figures{};
  for (std::uint8_t c = 0; c < kClassCount; ++c) {
    figures[c] = {percentile(ns[c], 50), percentile(ns[c], 90), percentile(ns[c], 99)};
  }
  for (std::uint8_t c = 0; c < kClassCount; ++c) {
    std::snprintf(line, sizeof(line), "%-12s %8.0f %8.0f %8.0f %10.2f %10.2f\n", kClassNames[c], figures[c][0],
                  figures[c][1], figures[c][2], figures[c][0] / figures[kValid][0], figures[c][2] / figures[kValid][2]);
    report << line;
  }
  report << "VALID also takes a rate-limit token and records the key's last use; REVOKED, EXPIRED and\n"
            "COMPROMISED stop after the state check; NOT_FOUND after the lookup; MALFORMED before the digest.\n";
  std::cout << report.str();
  if (!options.out_file.empty()) {
    std::ofstream out(options.out_file);
    if (!(out << report.str())) {
      die("cannot write " + options.out_file);
    }
  }
  return 0;
}
