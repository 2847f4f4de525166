#pragma once
// JSON request and response bodies: reading a request's body as the contract wants it (media
// type, JSON, one object or array) and its fields by type, and writing a JSON response.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "api/views.h"
#include "domain/status.h"

namespace keyledger::api {

// A response with `body` serialized as JSON.
http::Response json_response(unsigned status, const Json& body);

// Parses the request body as a JSON object (or array): an empty body is an empty one. Returns
// the 415 (not application/json) or 400 (not JSON, wrong top-level type) to send, else nullopt.
std::optional<http::Response> read_json_body(const http::Request& req, Json& body, bool array = false);

// Reads typed fields of a JSON object, collecting unknown fields (422) and the first type
// error (400). A null field counts as absent.
class FieldReader {
 public:
  FieldReader(const Json& object, std::initializer_list<std::string_view> allowed);

  std::optional<std::string> text(const char* name);
  // Whole numbers also when written as floats; unsigned values past INT64_MAX clamp to it.
  std::optional<std::int64_t> integer(const char* name);
  std::optional<bool> boolean(const char* name);
  std::optional<std::vector<std::string>> strings(const char* name);

  // The response to send if the body broke a type or named unknown fields, else nullopt.
  std::optional<http::Response> problem(const std::string& request_id) const;

 private:
  const Json* find(const char* name) const;
  std::nullopt_t type_error(const char* name, const char* expected);

  const Json& object_;
  std::vector<FieldError> unknown_;
  std::string type_error_;
};

}  // namespace keyledger::api
