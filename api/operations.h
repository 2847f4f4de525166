#pragma once
// The operations routes' answers, alike on the primary and the replica.

#include <string_view>

#include "api/http.h"
#include "api/metrics.h"

namespace keyledger::api {

// GET /healthz, GET /readyz (503 not_ready with `not_ready_message`), GET /metrics.
http::Response healthz_response();
http::Response readyz_response(const http::Request& req, bool ready, std::string_view not_ready_message);
http::Response metrics_response(const Metrics& metrics);

}  // namespace keyledger::api
