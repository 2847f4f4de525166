// POST /v1/leaks/github through the composed node (api/openapi.yaml): GitHub's ECDSA signature over
// the raw body is the credential; a good one makes it a leak report by actor leak:github.
#include "api/node/primary.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <string>

#include "api/api_fixture.h"
#include "api/node/node_client.h"
#include "domain/clock.h"
#include "support/github_signer.h"
#include "support/temp_dir.h"

namespace keyledger::api {
namespace {

namespace bhttp = boost::beast::http;
using Json = nlohmann::json;
using Headers = std::map<std::string, std::string>;

const std::string kGithubKeyId = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c";

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

TEST_CASE("GitHub's signed leak reports revoke the key; unsigned, tampered or foreign ones are 401",
          "[api][node][github]") {
  testing::TempDir dir;
  ManualClock clock(test::test_epoch());
  SeededRandom random(20261206);
  const testing::Pkey github = testing::generate("EC", "P-256");
  const testing::Pkey stranger = testing::generate("EC", "P-256");
  const auto keys_file = dir.path() / "github-keys.json";
  write_file(keys_file, testing::keys_json({{kGithubKeyId, testing::public_pem(github.get()), true}}));

  Config config = test::node_config(dir.path() / "data");
  config.github_keys_file = keys_file.string();
  auto primary = Primary::open(config, NodeEnvironment{.clock = &clock, .random = &random});
  REQUIRE(primary.ok());
  REQUIRE((*primary)->start().ok());
  const std::uint16_t port = (*primary)->port();
  const Headers admin = {
      {"Authorization", "Bearer " + test::read_token(config.data_dir / "bootstrap-token")}};

  const auto agent = test::call(port, bhttp::verb::post, "/v1/agents", admin, test::agent_body());
  REQUIRE(agent.status == 201);
  const auto key =
      test::call(port, bhttp::verb::post, "/v1/agents/" + agent.body["agent_id"].get<std::string>() + "/keys",
                 admin, Json::object());
  REQUIRE(key.status == 201);
  const std::string api_key = key.body["api_key"];
  const std::string key_id = key.body["key"]["key_id"];

  // GitHub's body, byte for byte as it would send it.
  const std::string body = R"([{"token":")" + api_key +
                           R"(","type":"clawgig_api_key","url":"https://github.com/o/r/blob/main/.env",)"
                           R"("source":"content"}])";
  const auto post = [&](const Headers& headers, const std::string& raw) {
    Headers with_type = headers;
    with_type["Content-Type"] = "application/json";
    return test::call(port, bhttp::verb::post, "/v1/leaks/github", with_type, nullptr, &raw);
  };
  const auto signed_by = [&](EVP_PKEY* pkey, const std::string& signed_body) {
    return Headers{{"Github-Public-Key-Identifier", kGithubKeyId},
                   {"Github-Public-Key-Signature", testing::sign(pkey, signed_body)}};
  };

  SECTION("refused, nothing changes") {
    const std::vector<std::pair<std::string, test::Answer>> refused = {
        {"no signature", post({}, body)},
        {"a bearer token instead", post(admin, body)},
        {"signed by another key", post(signed_by(stranger.get(), body), body)},
        {"a tampered body", post(signed_by(github.get(), body), body + " ")},
        {"an unknown key id", post({{"Github-Public-Key-Identifier", "00ff"},
                                    {"Github-Public-Key-Signature", testing::sign(github.get(), body)}},
                                   body)},
        {"garbage",
         post({{"Github-Public-Key-Identifier", kGithubKeyId}, {"Github-Public-Key-Signature", "!!"}}, body)},
    };
    for (const auto& [what, answer] : refused) {
      INFO(what);
      CHECK(answer.status == 401);
      CHECK(answer.body["error"]["code"] == "invalid_signature");
    }
    const auto still = test::call(port, bhttp::verb::get, "/v1/keys/" + key_id, admin);
    CHECK(still.body["status"] == "active");
  }

  SECTION("signed by GitHub: a true positive, revoked by leak:github") {
    const auto answer = post(signed_by(github.get(), body), body);
    REQUIRE(answer.status == 200);
    REQUIRE(answer.body.size() == 1);
    CHECK(answer.body[0]["label"] == "true_positive");
    CHECK(answer.body[0]["result"] == "revoked");
    CHECK(answer.body[0]["token_type"] == "clawgig_api_key");
    const auto revoked = test::call(port, bhttp::verb::get, "/v1/keys/" + key_id, admin);
    CHECK(revoked.body["status"] == "revoked");
    CHECK(revoked.body["revocation_reason"] == "compromised");
    const auto audit = test::call(port, bhttp::verb::get, "/v1/audit?type=key.compromised", admin);
    REQUIRE(audit.body["events"].size() == 1);
    CHECK(audit.body["events"][0]["actor"] == "leak:github");
    // GitHub sends the same report again: already inactive, no new event.
    const auto again = post(signed_by(github.get(), body), body);
    REQUIRE(again.status == 200);
    CHECK(again.body[0]["result"] == "already_inactive");
  }
}

}  // namespace
}  // namespace keyledger::api
