#include "api/assets.h"
#include "api/routes/impl.h"

namespace keyledger::api {

namespace {

Response asset_response(const Asset& asset) {
  Response res;
  res.status = 200;
  res.content_type = asset.content_type;
  res.body = std::string(asset.body);
  res.headers.set("X-Content-Type-Options", "nosniff");
  return res;
}

}  // namespace

Response Api::Impl::openapi(Request& req, const Caller&, const Params&) {
  const std::optional<Asset> document = find_asset("/openapi.json");
  if (!document) {
    return error_response(404, "not_found", "no such route", req.request_id);
  }
  Response res = asset_response(*document);
  res.headers.set("Cache-Control", "no-cache");
  res.headers.set("Access-Control-Allow-Origin", "*");  // API tools in a browser may read it
  return res;
}

Response Api::Impl::dashboard(Request& req, const Caller&, const Params&) {
  const std::optional<Asset> asset = ctx.dashboard ? find_asset(req.path) : std::nullopt;
  // A missing file is answered under the same policy as the files: a browser shows that
  // answer in the dashboard's place too.
  Response res =
      asset ? asset_response(*asset)
            : error_response(404, "not_found",
                             ctx.dashboard ? "no such file" : "the dashboard is off (--dashboard off)",
                             req.request_id);
  set_dashboard_headers(res);
  return res;
}

}  // namespace keyledger::api
