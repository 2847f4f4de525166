// The configuration file (`--config FILE`, `name = value` lines). main.cpp parses it with
// boost::program_options::parse_config_file over options described inside main.cpp's anonymous
// namespace, which no library exposes; this target describes the same names with the same value
// types (kept in step by hand) and fuzzes what a library does reach: parse_config_file itself,
// then the values keyledger interprets, api::parse_tiers for rate-limit-tiers and
// read_pepper_file for the pepper file's format (the input written to a file).
//
// Checked: a malformed file is refused with a po::error (main.cpp catches only those; anything
// else would end the process); parse_tiers either refuses a value or returns tiers with a
// non-empty name, a positive rate and a positive burst, each usable by the rate limiter
// (take_tokens at every cost up to past the burst, with times 0 to 1 day apart: no undefined
// behaviour, remaining <= limit, a refusal with a retry_after_ms >= 0); read_pepper_file accepts
// exactly 32 raw bytes or 64 hex digits with an optional line end, and gives the hex's bytes.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "api/rate_limiter.h"
#include "domain/pepper.h"
#include "support/checks.h"

namespace keyledger::fuzz {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

// main.cpp's Config and common_options, by name and value type.
struct Config {
  std::string data_dir, listen, kafka_brokers, kafka_topic, kafka_state_topic, pepper_file, config, tiers;
  bool allow_insecure_webhooks = false, allow_private_webhooks = false, disable_webhooks = false,
       replica = false;
  std::string webhooks, webhook_deliveries_topic, webhook_ca_file, log_level;
  std::size_t io_threads = 2, worker_threads = 8;
};

po::options_description options(Config& c) {
  po::options_description o("options");
  o.add_options()("data-dir", po::value(&c.data_dir))("listen", po::value(&c.listen))(
      "kafka-brokers", po::value(&c.kafka_brokers))("kafka-topic", po::value(&c.kafka_topic))(
      "kafka-state-topic", po::value(&c.kafka_state_topic))("pepper-file", po::value(&c.pepper_file))(
      "config", po::value(&c.config))("rate-limit-tiers", po::value(&c.tiers))(
      "allow-insecure-webhooks", po::bool_switch(&c.allow_insecure_webhooks))(
      "allow-private-webhooks", po::bool_switch(&c.allow_private_webhooks))(
      "disable-webhooks", po::bool_switch(&c.disable_webhooks))("webhooks", po::value(&c.webhooks))(
      "webhook-deliveries-topic", po::value(&c.webhook_deliveries_topic))(
      "webhook-ca-file", po::value(&c.webhook_ca_file))("replica", po::bool_switch(&c.replica))(
      "io-threads", po::value(&c.io_threads))("worker-threads", po::value(&c.worker_threads))(
      "log-level", po::value(&c.log_level));
  return o;
}

void check_tiers(std::string_view spec) {
  const auto tiers = api::parse_tiers(spec);
  if (!tiers.ok()) {
    FUZZ_CHECK(tiers.status().IsInvalidArgument(), "not InvalidArgument: " + printable(spec));
    return;
  }
  FUZZ_CHECK(!tiers->empty(), "no tiers from " + printable(spec));
  for (const auto& tier : *tiers) {
    const std::string where = printable(spec) + " tier " + printable(tier.name);
    FUZZ_CHECK(!tier.name.empty() && tier.name.find_first_of(",:") == std::string::npos, "name: " + where);
    // "inf" (or 1e999) is accepted and means no limit; take_tokens below must cope with it.
    FUZZ_CHECK(tier.rate_per_second > 0, "rate: " + where);
    FUZZ_CHECK(tier.burst > 0, "burst: " + where);
    for (const std::uint32_t cost : {0U, 1U, tier.burst, tier.burst + 1U}) {
      TokenBucket bucket;
      std::int64_t now_ns = 1'700'000'000'000'000'000;
      for (const std::int64_t step : {0LL, 0LL, 1LL, 1'000'000LL, 86'400'000'000'000LL}) {
        now_ns += step;
        const api::RateLimitDecision d = api::take_tokens(bucket, tier, cost, now_ns);
        FUZZ_CHECK(d.limit == tier.burst && d.remaining <= d.limit && d.reset_ms >= 0, "decision: " + where);
        FUZZ_CHECK(d.allowed || d.retry_after_ms >= 0, "retry_after: " + where);
      }
    }
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

void check_pepper(std::string_view content) {
  static const fs::path file = [] {
    const fs::path dir = ::access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm") : fs::temp_directory_path();
    return dir / ("keyledger-fuzz-pepper-" + std::to_string(::getpid()));
  }();
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  const auto pepper = read_pepper_file(file);
  std::error_code ec;
  fs::remove(file, ec);

  std::optional<std::array<std::uint8_t, Pepper::kSize>> expected;
  if (content.size() == Pepper::kSize) {
    expected.emplace();
    std::copy(content.begin(), content.end(), expected->begin());
  } else {
    std::string_view hex = content;
    if (hex.ends_with("\r\n")) {
      hex.remove_suffix(2);
    } else if (hex.ends_with('\n')) {
      hex.remove_suffix(1);
    }
    bool ok = hex.size() == 2 * Pepper::kSize;
    std::array<std::uint8_t, Pepper::kSize> bytes{};
    for (std::size_t i = 0; ok && i < Pepper::kSize; ++i) {
      const int hi = hex_value(hex[2 * i]);
      const int lo = hex_value(hex[2 * i + 1]);
      ok = hi >= 0 && lo >= 0;
      bytes[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    }
    if (ok) {
      expected = bytes;
    }
  }
  FUZZ_CHECK(pepper.ok() == expected.has_value(), "read_pepper_file disagrees on " + printable(content));
  if (pepper.ok()) {
    FUZZ_CHECK(pepper->bytes() == *expected, "pepper bytes of " + printable(content));
  }
}

void run(std::string_view input) {
  Config c;
  po::options_description desc = options(c);
  std::istringstream in{std::string(input)};
  bool parsed = false;
  try {
    po::variables_map vm;
    po::store(po::parse_config_file(in, desc), vm);
    po::notify(vm);
    parsed = true;
  } catch (const po::error&) {
    // Refused: `keyledger serve` prints the message and exits 2.
  }
  if (parsed && !c.tiers.empty()) {
    check_tiers(c.tiers);
  }
  // The value alone too: the fuzzer reaches the tier grammar faster without the file around it.
  check_tiers(input);
  check_pepper(input);
}

}  // namespace
}  // namespace keyledger::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keyledger::fuzz::run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
