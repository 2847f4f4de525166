#include "api/routes/impl.h"

namespace keyledger::api {

Response Api::Impl::healthz(Request&, const Caller&, const Params&) { return healthz_response(); }

Response Api::Impl::readyz(Request& req, const Caller&, const Params&) {
  if (const Status storage = ctx.commands.write_health(); storage.IsIoError()) {
    // A failed fsync: only a restart recovers, so the node says so to whoever routes to it.
    return readyz_response(req, false, storage.message());
  }
  return readyz_response(req, ctx.ready && ctx.ready(), "projections are catching up");
}

Response Api::Impl::metrics(Request&, const Caller&, const Params&) { return metrics_response(ctx.metrics); }

}  // namespace keyledger::api
