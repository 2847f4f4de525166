#pragma once
// Files compiled into the binary at build time (api/embed_assets.py): the OpenAPI document,
// converted from api/openapi.yaml to JSON, and the dashboard's sources under api/dashboard/.
// Nothing is read from disk or fetched at run time.

#include <optional>
#include <string_view>

namespace keyledger::api {

struct Asset {
  std::string_view content_type;
  std::string_view body;
};

// By request path: "/openapi.json", "/" (the dashboard's index.html), "/ui/<file>".
std::optional<Asset> find_asset(std::string_view path);

}  // namespace keyledger::api
