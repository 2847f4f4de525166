#include "api/routes/impl.h"

namespace keyledger::api {

namespace {

constexpr std::size_t kMaxUsageBuckets = 10'000;
constexpr auto kDefaultUsageWindow = std::chrono::hours(24);

struct UsageQuery {
  UsageGranularity granularity = UsageGranularity::kMinute;
  std::int64_t since = 0;  // Unix seconds
  std::int64_t until = 0;
};

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// ?since=&until=&granularity=: the query, or the 422 to send (every broken rule listed).
std::variant<UsageQuery, Response> usage_query(const Request& req, TimePoint now) {
  UsageQuery q;
  std::optional<TimePoint> since;
  std::optional<TimePoint> until;
  std::vector<FieldError> details;
  for (const auto& [name, value] : req.query) {
    if (name == "since" || name == "until") {
      TimePoint t;
      if (!parse_rfc3339(value, t) || t.time_since_epoch().count() < 0) {
        details.push_back({name, "must be an RFC 3339 time after 1970"});
      } else {
        (name == "since" ? since : until) = t;
      }
    } else if (name == "granularity") {
      if (value != "minute" && value != "hour") {
        details.push_back({"granularity", "must be minute or hour"});
      }
      q.granularity = value == "hour" ? UsageGranularity::kHour : UsageGranularity::kMinute;
    } else {
      details.push_back({name, "unknown query parameter"});
    }
  }
  if (details.empty()) {
    // Defaults: the last 24 hours, up to now (the current bucket included).
    q.until = until ? unix_seconds(*until) : unix_seconds(now) + 1;
    q.since = since ? unix_seconds(*since) : q.until - std::chrono::seconds(kDefaultUsageWindow).count();
    const std::int64_t step = bucket_seconds(q.granularity);
    const std::int64_t first = bucket_start(q.granularity, q.since);
    if (q.since >= q.until) {
      details.push_back({"since", "must be before until"});
    } else if (static_cast<std::uint64_t>((q.until - first + step - 1) / step) > kMaxUsageBuckets) {
      details.push_back({since ? "since" : "until",
                         "the range holds more than 10000 " +
                             std::string(q.granularity == UsageGranularity::kMinute ? "minute" : "hour") +
                             " buckets; narrow it or use a coarser granularity"});
    }
  }
  if (!details.empty()) {
    return error_response(422, "validation_failed", "the usage query breaks field rules", req.request_id,
                          details);
  }
  return q;
}

Json usage_json(const std::vector<UsageBucket>& buckets) {
  Json out = Json::array();
  for (const UsageBucket& bucket : buckets) {
    Json counts = Json::object();
    for (std::size_t i = 0; i < kUsageOutcomes; ++i) {
      counts[std::string(usage_outcome_name(static_cast<UsageOutcome>(i)))] = bucket.counts.by_outcome[i];
    }
    Json sources = Json::array();
    for (const auto& [address, count] : bucket.counts.sources) {
      sources.push_back({{"address", address}, {"count", count}});
    }
    out.push_back({{"start", format_rfc3339(TimePoint(std::chrono::seconds(bucket.start)))},
                   {"counts", std::move(counts)},
                   {"sources", std::move(sources)}});
  }
  return {{"buckets", std::move(out)}};
}

}  // namespace

Response Api::Impl::usage_of(const Request& req, const std::vector<std::string>& key_ids) {
  if (ctx.usage == nullptr) {
    return error_response(503, "usage_unavailable", "this node keeps no key usage", req.request_id);
  }
  auto query = usage_query(req, now());
  if (auto* bad = std::get_if<Response>(&query)) {
    return std::move(*bad);
  }
  const UsageQuery& q = std::get<UsageQuery>(query);
  auto buckets = ctx.usage->buckets(key_ids, q.granularity, q.since, q.until);
  if (!buckets.ok()) {
    return status_response(buckets.status(), req.request_id);
  }
  return json_response(200, usage_json(*buckets));
}

Response Api::Impl::agent_usage_of(const Request& req, std::string_view agent_id) {
  auto agent = ctx.projector.load_agent(agent_id);
  if (!agent.ok()) {
    return status_response(agent.status(), req.request_id);
  }
  std::vector<std::string> key_ids;
  for (const KeyState& key : agent->keys) {
    key_ids.push_back(key.key_id);
  }
  return usage_of(req, key_ids);
}

Response Api::Impl::key_usage(Request& req, const Caller&, const Params& params) {
  if (!ctx.projector.key_table().find_key(params[0])) {
    return error_response(404, "key_not_found", "no such key", req.request_id);
  }
  return usage_of(req, {params[0]});
}

Response Api::Impl::agent_usage(Request& req, const Caller&, const Params& params) {
  return agent_usage_of(req, params[0]);
}

Response Api::Impl::self_usage(Request& req, const Caller& caller, const Params&) {
  Response res = agent_usage_of(req, caller.agent.entry->agent_id.view());
  set_ratelimit_headers(res, *caller.agent.tier, *caller.agent.ratelimit, caller.agent.at);
  return res;
}

}  // namespace keyledger::api
