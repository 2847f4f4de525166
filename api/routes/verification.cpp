#include "api/routes/impl.h"

namespace keyledger::api {

Response Api::Impl::verify(Request& req, const Caller&, const Params&) {
  return verify_response(req, ctx.verifier, ctx.metrics);
}

Response Api::Impl::forward_auth(Request&, const Caller& caller, const Params&) {
  return forward_auth_response(caller.agent);
}

}  // namespace keyledger::api
