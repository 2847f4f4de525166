#pragma once
// The error body of api/openapi.yaml: {"error": {"code", "message", "request_id", "details"}}.

#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "domain/status.h"

namespace keyledger::api {

http::Response error_response(unsigned status, std::string_view code, std::string_view message,
                              const std::string& request_id, const std::vector<FieldError>& details = {});

// Maps a domain/store Status to the contract's status and code (422 validation_failed,
// 404 agent_not_found/key_not_found, 409 key_not_active/…/version_conflict, 500 otherwise).
http::Response status_response(const Status& status, const std::string& request_id);

}  // namespace keyledger::api
