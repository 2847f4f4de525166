#include "api/operations.h"

#include "api/errors.h"
#include "api/json_body.h"

namespace keyledger::api {

using http::Request;
using http::Response;

Response healthz_response() { return json_response(200, {{"status", "ok"}}); }

Response readyz_response(const Request& req, bool ready, std::string_view not_ready_message) {
  if (ready) {
    return json_response(200, {{"status", "ready"}});
  }
  return error_response(503, "not_ready", not_ready_message, req.request_id);
}

Response metrics_response(const Metrics& metrics) {
  Response res;
  res.body = metrics.render();
  res.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return res;
}

}  // namespace keyledger::api
