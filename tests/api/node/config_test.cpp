// The command line's usage retention flags: parsed as given (a negative value is not wrapped
// around into years) and refused at start-up unless within their bounds.
#include "api/node/config.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "api/node/ledger.h"

namespace keyledger::api {
namespace {

namespace po = boost::program_options;

Config parsed(std::vector<std::string> args) {
  args.insert(args.begin(), "keyledger");
  std::vector<char*> argv;
  for (std::string& arg : args) {
    argv.push_back(arg.data());
  }
  po::options_description extra;
  Config config;
  std::string error;
  if (!parse_config(static_cast<int>(argv.size()), argv.data(), extra, config, error)) {
    FAIL(error);
  }
  return config;
}

TEST_CASE("usage retention flags are refused unless from 1 to their bound", "[api][node][usage]") {
  const auto defaults = usage_retention_for(parsed({}));
  REQUIRE(defaults.ok());
  CHECK(defaults->minutes == std::chrono::hours(48));
  CHECK(defaults->hours == std::chrono::hours(90 * 24));
  const auto longest = usage_retention_for(parsed({"--usage-minute-retention-hours=8784",
                                                   "--usage-hour-retention-days", "3660"}));
  REQUIRE(longest.ok());
  CHECK(longest->hours == std::chrono::hours(3660 * 24));

  struct Refused {
    std::vector<std::string> args;
    std::string message;
  };
  // -5 and 4294967291 are what a 32-bit unsigned flag made of "-5": both refused.
  for (const Refused& refused : {
           Refused{{"--usage-minute-retention-hours=0"},
                   "--usage-minute-retention-hours must be from 1 to 8784, not 0"},
           Refused{{"--usage-minute-retention-hours=-5"}, "not -5"},
           Refused{{"--usage-minute-retention-hours=8785"}, "not 8785"},
           Refused{{"--usage-hour-retention-days", "0"},
                   "--usage-hour-retention-days must be from 1 to 3660, not 0"},
           Refused{{"--usage-hour-retention-days=-1"}, "not -1"},
           Refused{{"--usage-hour-retention-days=4294967291"}, "not 4294967291"},
       }) {
    INFO(refused.args.front());
    const auto checked = usage_retention_for(parsed(refused.args));
    REQUIRE_FALSE(checked.ok());
    CHECK(checked.status().IsInvalidArgument());
    CHECK_THAT(checked.status().ToString(), Catch::Matchers::Contains(refused.message));
  }
}

}  // namespace
}  // namespace keyledger::api
