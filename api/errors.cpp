#include "api/errors.h"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace keyledger::api {

namespace {

constexpr unsigned kUnprocessableEntity = 422;
constexpr unsigned kNotFound = 404;
constexpr unsigned kConflict = 409;
constexpr unsigned kInternalServerError = 500;
constexpr unsigned kServiceUnavailable = 503;

// What a client learns about a failure of ours: nothing about storage paths or RocksDB.
constexpr std::string_view kInternalErrorCode = "internal_error";
constexpr std::string_view kInternalErrorMessage = "internal error";

// A Status built without a reason still needs a contract code.
std::string_view reason_or(const Status& status, std::string_view fallback) {
  return status.reason().empty() ? fallback : std::string_view(status.reason());
}

}  // namespace

http::Response error_response(unsigned status, std::string_view code, std::string_view message,
                              const std::string& request_id, const std::vector<FieldError>& details) {
  // ordered_json keeps the documented member order, which makes the body easier to read.
  nlohmann::ordered_json error = {{"code", code}, {"message", message}, {"request_id", request_id}};
  if (!details.empty()) {
    nlohmann::ordered_json items = nlohmann::ordered_json::array();
    for (const FieldError& detail : details) {
      items.push_back({{"field", detail.field}, {"message", detail.message}});
    }
    error["details"] = std::move(items);
  }
  const nlohmann::ordered_json body = {{"error", std::move(error)}};

  http::Response response;
  response.status = status;
  // Messages may quote client input; replace invalid UTF-8 rather than throw on the request path.
  response.body = body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  return response;
}

http::Response status_response(const Status& status, const std::string& request_id) {
  switch (status.code()) {
    case Status::Code::kInvalidArgument:
      return error_response(kUnprocessableEntity, reason_or(status, "validation_failed"), status.message(),
                            request_id, status.details());
    case Status::Code::kNotFound:
      return error_response(kNotFound, reason_or(status, "not_found"), status.message(), request_id);
    case Status::Code::kConflict:
      return error_response(kConflict, reason_or(status, "conflict"), status.message(), request_id);
    case Status::Code::kVersionConflict:
      return error_response(kConflict, "version_conflict", status.message(), request_id);
    case Status::Code::kUnavailable:
      return error_response(kServiceUnavailable, reason_or(status, "unavailable"), status.message(),
                            request_id);
    case Status::Code::kIoError:
      // The log could not take the change (API contract: commands fail, verification goes on).
      spdlog::warn("request {}: answering 503 for {}", request_id, status.ToString());
      return error_response(kServiceUnavailable, "storage_unavailable",
                            "the event log is not available right now; try again later", request_id);
    case Status::Code::kOk:
    case Status::Code::kCorruption:
      break;
  }
  // The operator needs the cause; the client gets a generic answer and the request id to quote.
  spdlog::warn("request {}: answering 500 for {}", request_id, status.ToString());
  return error_response(kInternalServerError, kInternalErrorCode, kInternalErrorMessage, request_id);
}

}  // namespace keyledger::api
