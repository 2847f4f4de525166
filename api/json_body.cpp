#include "api/json_body.h"

#include <algorithm>
#include <cmath>

#include "api/errors.h"

namespace keyledger::api {

using http::Request;
using http::Response;

namespace {

bool is_json_media_type(std::optional<std::string_view> content_type) {
  if (!content_type) {
    return false;
  }
  std::string_view v = *content_type;
  const auto semi = v.find(';');
  v = v.substr(0, semi);
  while (!v.empty() && v.back() == ' ') {
    v.remove_suffix(1);
  }
  std::string lower(v);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return lower == "application/json";
}

}  // namespace

Response json_response(unsigned status, const Json& body) {
  Response res;
  res.status = status;
  res.body = body.dump();
  return res;
}

std::optional<Response> read_json_body(const Request& req, Json& body, bool array) {
  if (req.body.empty()) {
    body = array ? Json::array() : Json::object();
    return std::nullopt;
  }
  if (!is_json_media_type(req.headers.get("content-type"))) {
    return error_response(415, "unsupported_media_type", "POST bodies must be application/json",
                          req.request_id);
  }
  body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    return error_response(400, "invalid_json", "the body is not valid JSON", req.request_id);
  }
  if (array ? !body.is_array() : !body.is_object()) {
    return error_response(400, "invalid_json",
                          array ? "the body must be a JSON array" : "the body must be a JSON object",
                          req.request_id);
  }
  return std::nullopt;
}

FieldReader::FieldReader(const Json& object, std::initializer_list<std::string_view> allowed)
    : object_(object) {
  for (const auto& [name, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      unknown_.push_back({name, "unknown field"});
    }
  }
}

std::optional<std::string> FieldReader::text(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_string()) {
    return type_error(name, "a string");
  }
  return v->get<std::string>();
}

std::optional<std::int64_t> FieldReader::integer(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_number_integer()) {
    if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
        std::abs(v->get<double>()) < 9e15) {
      return static_cast<std::int64_t>(v->get<double>());
    }
    return type_error(name, "an integer");
  }
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    return INT64_MAX;
  }
  return v->get<std::int64_t>();
}

std::optional<bool> FieldReader::boolean(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_boolean()) {
    return type_error(name, "a boolean");
  }
  return v->get<bool>();
}

std::optional<std::vector<std::string>> FieldReader::strings(const char* name) {
  const Json* v = find(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_array() || !std::all_of(v->begin(), v->end(), [](const Json& e) { return e.is_string(); })) {
    return type_error(name, "an array of strings");
  }
  return v->get<std::vector<std::string>>();
}

std::optional<Response> FieldReader::problem(const std::string& request_id) const {
  if (!type_error_.empty()) {
    return error_response(400, "invalid_json", type_error_, request_id);
  }
  if (!unknown_.empty()) {
    return error_response(422, "validation_failed", "the request has unknown fields", request_id, unknown_);
  }
  return std::nullopt;
}

const Json* FieldReader::find(const char* name) const {
  auto it = object_.find(name);
  return it == object_.end() || it->is_null() ? nullptr : &*it;
}

std::nullopt_t FieldReader::type_error(const char* name, const char* expected) {
  if (type_error_.empty()) {
    type_error_ = std::string("field '") + name + "' must be " + expected;
  }
  return std::nullopt;
}

}  // namespace keyledger::api
