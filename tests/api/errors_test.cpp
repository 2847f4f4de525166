#include "api/errors.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace keyledger::api {
namespace {

nlohmann::json body_of(const http::Response& response) { return nlohmann::json::parse(response.body); }

}  // namespace

TEST_CASE("error_response has the documented shape and omits empty details", "[errors]") {
  const http::Response response = error_response(404, "not_found", "no such route", "req-1");

  CHECK(response.status == 404);
  CHECK(response.content_type == "application/json");
  const auto body = body_of(response);
  REQUIRE(body.size() == 1);
  const auto& error = body.at("error");
  CHECK(error.at("code") == "not_found");
  CHECK(error.at("message") == "no such route");
  CHECK(error.at("request_id") == "req-1");
  CHECK_FALSE(error.contains("details"));
  CHECK(error.size() == 3);
}

TEST_CASE("error_response lists every field error", "[errors]") {
  const std::vector<FieldError> details = {{"name", "must be 1-100 characters"},
                                           {"skills", "must not be empty"}};
  const auto body = body_of(error_response(422, "validation_failed", "invalid request", "req-2", details));

  const auto& listed = body.at("error").at("details");
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].at("field") == "name");
  CHECK(listed[0].at("message") == "must be 1-100 characters");
  CHECK(listed[1].at("field") == "skills");
  CHECK(listed[1].at("message") == "must not be empty");
}

TEST_CASE("error_response escapes text and survives invalid UTF-8", "[errors]") {
  const std::string quoted = "say \"hi\"\n\\";
  const auto body = body_of(error_response(400, "invalid_json", quoted, "req-3"));
  CHECK(body.at("error").at("message") == quoted);

  const http::Response bad_utf8 = error_response(400, "invalid_json", "bad \xff byte", "req-4");
  CHECK_NOTHROW(body_of(bad_utf8));
}

TEST_CASE("status_response maps each Status code to the contract", "[errors]") {
  SECTION("invalid argument: 422 with the reason and details") {
    const auto response =
        status_response(Status::InvalidArgument("invalid request", {{"label", "too long"}}), "r");
    CHECK(response.status == 422);
    const auto error = body_of(response).at("error");
    CHECK(error.at("code") == "validation_failed");
    CHECK(error.at("message") == "invalid request");
    CHECK(error.at("request_id") == "r");
    REQUIRE(error.at("details").size() == 1);
    CHECK(error.at("details")[0].at("field") == "label");
  }
  SECTION("not found: 404 with the reason") {
    const auto response = status_response(Status::NotFound("key_not_found", "no key key_1"), "r");
    CHECK(response.status == 404);
    CHECK(body_of(response).at("error").at("code") == "key_not_found");
    CHECK(body_of(response).at("error").at("message") == "no key key_1");
  }
  SECTION("conflict: 409 with the reason") {
    const auto response = status_response(Status::Conflict("too_many_active_keys", "at most 10"), "r");
    CHECK(response.status == 409);
    CHECK(body_of(response).at("error").at("code") == "too_many_active_keys");
  }
  SECTION("version conflict: 409 version_conflict") {
    const auto response = status_response(Status::VersionConflict("stream moved on"), "r");
    CHECK(response.status == 409);
    CHECK(body_of(response).at("error").at("code") == "version_conflict");
  }
  SECTION("unavailable: 503 with the reason") {
    const auto response = status_response(Status::Unavailable("projections catching up"), "r");
    CHECK(response.status == 503);
    CHECK(body_of(response).at("error").at("code") == "unavailable");
  }
  SECTION("storage failures: 503 storage_unavailable or 500 internal_error, without internals") {
    for (const Status& status : {Status::IoError("/var/lib/keyledger/000123.log: disk full"),
                                 Status::Corruption("bad block in /var/lib/keyledger/db")}) {
      const auto response = status_response(status, "r");
      const auto error = body_of(response).at("error");
      if (status.IsIoError()) {  // the log cannot take writes now: a retry later may work
        CHECK(response.status == 503);
        CHECK(error.at("code") == "storage_unavailable");
      } else {
        CHECK(response.status == 500);
        CHECK(error.at("code") == "internal_error");
      }
      CHECK(error.at("request_id") == "r");
      CHECK(response.body.find("/var/lib") == std::string::npos);
      CHECK(response.body.find("disk full") == std::string::npos);
    }
  }
}

}  // namespace keyledger::api
