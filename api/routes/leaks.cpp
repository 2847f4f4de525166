#include "api/routes/impl.h"

namespace keyledger::api {

// Under the caller's Idempotency-Key like every POST: a repeated report replays its first
// answer ("revoked") instead of a new one ("already_inactive").
Response Api::Impl::leaks(Request& req, const Caller& caller, const Params&) {
  return idempotent(req, caller, [&](Replay&) { return report_leaks(req); });
}

// GitHub's secret-scanning partner call: the ECDSA signature over the raw body is the
// credential; then it is a leak report like any other, by actor leak:github.
Response Api::Impl::github_leaks(Request& req, const Caller&, const Params&) {
  const GithubSignature checked =
      ctx.github_keys == nullptr
          ? GithubSignature::kUnknownKey
          : ctx.github_keys->verify(req.headers.get(kGithubKeyIdentifierHeader).value_or(""),
                                    req.headers.get(kGithubKeySignatureHeader).value_or(""), req.body);
  if (checked != GithubSignature::kOk) {
    Response res =
        error_response(401, "invalid_signature",
                       checked == GithubSignature::kMissing
                           ? "Github-Public-Key-Identifier and Github-Public-Key-Signature are required"
                       : checked == GithubSignature::kUnknownKey
                           ? "the signing key is not one of GitHub's known secret-scanning keys"
                           : "the signature does not match the body",
                       req.request_id);
    res.headers.set("WWW-Authenticate", "Signature realm=\"keyledger\"");
    return res;
  }
  Caller github;
  github.id = "github";
  github.actor = "leak:github";
  return idempotent(req, github, [&](Replay&) { return report_leaks(req, "leak:github"); });
}

Response Api::Impl::report_leaks(const Request& req, std::optional<std::string> fixed_actor) {
  Json body;
  if (auto bad = json_body(req, body, true)) {
    return *bad;
  }
  if (body.size() > kMaxLeakItems) {
    return error_response(422, "validation_failed", "at most 100 items per report", req.request_id,
                          {{"items", "must be at most 100"}});
  }
  struct Item {
    std::string token, type, source;
  };
  std::vector<Item> items;
  std::vector<FieldError> details;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (!body[i].is_object()) {
      return error_response(400, "invalid_json", "every item must be an object", req.request_id);
    }
    FieldReader f(body[i], {"token", "type", "url", "source"});
    Item item{f.text("token").value_or(""), f.text("type").value_or(""), f.text("source").value_or("")};
    (void)f.text("url");
    if (auto bad = f.problem(req.request_id)) {
      return *bad;
    }
    if (item.token.empty()) {
      details.push_back({"[" + std::to_string(i) + "].token", "is required"});
    }
    items.push_back(std::move(item));
  }
  if (!details.empty()) {
    return error_response(422, "validation_failed", "leak report items break field rules", req.request_id,
                          details);
  }
  Json results = Json::array();
  for (const auto& item : items) {
    Json r = {{"token_hash", sha256_hex(item.token)}, {"token_type", item.type}};
    if (!is_well_formed_api_key(item.token)) {
      r["label"] = "false_positive";
      r["result"] = "malformed";
    } else if (auto entry = ctx.projector.key_table().find(ctx.hasher.digest(item.token)); !entry) {
      r["label"] = "false_positive";
      r["result"] = "unknown";
    } else {
      r["label"] = "true_positive";
      const auto now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(now().time_since_epoch()).count();
      if (entry->condition_at(now_ms) != KeyCondition::kActive) {
        r["result"] = "already_inactive";
      } else {
        // A leak report never fails for cosmetic reasons: whatever the scanner sent as
        // source is made storable (characters kept whole, control characters replaced) and
        // cut to the limits of the note's source and of an actor.
        const std::string source = item.source.empty() ? "unknown" : item.source;
        const std::string actor = fixed_actor
                                      ? *fixed_actor
                                      : std::string(kLeakActorPrefix) +
                                            sanitize_text(source, kMaxActorChars - kLeakActorPrefix.size());
        ReportCompromise cmd{entry->key_id.str(), "reported by secret scanning",
                             sanitize_text(source, kMaxCompromiseSourceChars), false};
        auto decision = ctx.commands.on_key(cmd.key_id, actor, [&](const AgentState& s, CommandContext& c) {
          return report_compromise(s, cmd, c);
        });
        if (decision.ok()) {
          r["result"] = "revoked";
        } else if (decision.status().IsConflict()) {
          r["result"] = "already_inactive";
        } else {
          return status_response(decision.status(), req.request_id);
        }
      }
    }
    results.push_back(r);
  }
  return json_response(200, results);
}

}  // namespace keyledger::api
