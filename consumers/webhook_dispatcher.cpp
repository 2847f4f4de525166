#include "consumers/webhook_dispatcher.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "domain/agent.h"
#include "domain/event_json.h"
#include "domain/guarded.h"
#include "domain/ids.h"
#include "domain/thread_name.h"
#include "eventstore/command_service.h"

namespace keyledger::consumers {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kColumnFamily = "webhooks";
constexpr std::string_view kCursorKey = "cursor";
// Events the stored cursor may trail the tailer by while they schedule nothing.
constexpr std::uint64_t kCursorLag = 4096;
constexpr char kPendingPrefix = 'p';
constexpr std::string_view kDelivered = "delivered";
constexpr std::string_view kRetrying = "retrying";
constexpr std::string_view kFailed = "failed";

std::int64_t to_unix_ms(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

TimePoint from_unix_ms(std::int64_t ms) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::milliseconds(ms)));
}

// One delivery waiting for its next attempt (or making it).
struct Pending {
  std::string event_id;
  std::string agent_id;
  std::uint64_t position = 0;
  std::uint32_t attempt = 1;        // the number of the next attempt
  std::uint32_t first_attempt = 1;  // where this round's budget started (a manual retry resets it)
  TimePoint due{};
};

std::string pending_key(std::string_view event_id) {
  std::string key(1, kPendingPrefix);
  key += event_id;
  return key;
}

std::string encode_pending(const Pending& p) {
  return Json{{"agent_id", p.agent_id},
              {"position", p.position},
              {"attempt", p.attempt},
              {"first_attempt", p.first_attempt},
              {"due_ms", to_unix_ms(p.due)}}
      .dump();
}

bool decode_pending(std::string_view event_id, std::string_view value, Pending& out) {
  const Json j = Json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("agent_id") || !j["agent_id"].is_string() || !j.contains("position") ||
      !j["position"].is_number_unsigned() || !j.contains("attempt") || !j["attempt"].is_number_unsigned() ||
      !j.contains("first_attempt") || !j["first_attempt"].is_number_unsigned() || !j.contains("due_ms") ||
      !j["due_ms"].is_number_integer()) {
    return false;
  }
  out.event_id = std::string(event_id);
  out.agent_id = j["agent_id"].get<std::string>();
  out.position = j["position"].get<std::uint64_t>();
  out.attempt = j["attempt"].get<std::uint32_t>();
  out.first_attempt = j["first_attempt"].get<std::uint32_t>();
  out.due = from_unix_ms(j["due_ms"].get<std::int64_t>());
  return true;
}

// The last recorded attempt of one delivery in an agent's stream.
struct Recorded {
  std::uint32_t attempt = 0;  // 0: none recorded
  std::string outcome;
};

Recorded last_recorded(const std::vector<v1::Event>& stream, std::string_view event_id) {
  Recorded out;
  for (const auto& e : stream) {
    if (e.payload_case() != v1::Event::kWebhookDeliveryRecorded) {
      continue;
    }
    const auto& d = e.webhook_delivery_recorded();
    if (d.event_id() == event_id && d.attempt() >= out.attempt) {
      out.attempt = d.attempt();
      out.outcome = d.outcome();
    }
  }
  return out;
}

// Ordered by due time, then log position (so one agent's events go out in order).
using QueueEntry = std::tuple<TimePoint, std::uint64_t, std::string>;

}  // namespace

std::vector<std::string> webhook_column_families() { return {std::string(kColumnFamily)}; }

DeliveryRecorder record_with(CommandService& commands, std::string actor) {
  return [&commands, actor = std::move(actor)](const std::string& agent_id,
                                               const v1::WebhookDeliveryRecorded& record) -> Status {
    auto decision =
        commands.on_agent(agent_id, actor, [&record](const AgentState& state, CommandContext& ctx) {
          return record_webhook_delivery(state, {.record = record, .event_id = {}, .occurred_at = {}}, ctx);
        });
    return decision.ok() ? Status::Ok() : decision.status();
  };
}

struct WebhookDispatcher::Impl {
  Impl(EventStore& s, const SecretBox& b, const Clock& c, DeliveryRecorder r, WebhookDispatcherOptions o)
      : store(s), secrets(b), clock(c), record(std::move(r)), options(std::move(o)) {}

  EventStore& store;
  const SecretBox& secrets;
  const Clock& clock;
  DeliveryRecorder record;
  WebhookDispatcherOptions options;
  ColumnFamily cf;  // kColumnFamily
  std::unique_ptr<WebhookClient> client;

  mutable std::mutex mu;
  std::condition_variable cv;              // the workers': the schedule changed
  std::condition_variable tail_cv;         // the tailer's: the log advanced, or room in `pending`
  std::map<std::string, Pending> pending;  // by event id: scheduled or in flight
  std::set<QueueEntry> queue;              // scheduled (not in flight)
  std::set<std::string> busy_agents;       // agents with an attempt in flight
  bool started = false;
  bool stopping = false;
  bool log_advanced = false;  // set by notify(): new events may be in the log
  Guarded<std::mt19937_64> jitter_rng{std::random_device{}()};
  std::atomic<std::uint64_t> cursor{0};
  std::uint64_t persisted_cursor = 0;  // the cursor as last written (the tailer's)
  std::thread tailer;
  std::vector<std::thread> workers;
  CommitSubscription subscription;  // wakes the tailer (notify) from start() to stop()

  // Agents folded so far, brought up to date before each attempt.
  std::mutex agents_mu;
  std::map<std::string, AgentState> agents;

  Status load_cursor() {
    const auto value = cf.get(kCursorKey);
    if (!value.ok()) {
      return value.status();
    }
    if (!value->has_value()) {
      // A new dispatcher on an existing log starts at its end: history is not replayed.
      const std::uint64_t start = options.from_beginning ? 0 : store.last_position();
      cursor = start;
      persisted_cursor = start;
      return cf.put(kCursorKey, encode_be64(start), /*sync=*/true);
    }
    if ((*value)->size() != 8) {
      return Status::Corruption("webhooks cursor is not 8 bytes");
    }
    cursor = decode_be64(**value);
    persisted_cursor = cursor;
    return Status::Ok();
  }

  // Loads the pending deliveries and reconciles them with the attempts already recorded.
  Status load_pending() {
    std::vector<Pending> loaded;
    std::unique_ptr<rocksdb::Iterator> it = cf.iterator();
    const std::string prefix(1, kPendingPrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      Pending p;
      if (!decode_pending(key.substr(1), std::string_view(it->value().data(), it->value().size()), p)) {
        return Status::Corruption("webhooks: unreadable pending entry " + std::string(key.substr(1)));
      }
      loaded.push_back(std::move(p));
    }
    if (Status s = from_rocks(it->status(), "webhooks pending"); !s.ok()) {
      return s;
    }
    std::map<std::string, std::vector<v1::Event>> streams;
    rocksdb::WriteBatch batch;
    const TimePoint now = clock.now();
    for (Pending& p : loaded) {
      auto found = streams.find(p.agent_id);
      if (found == streams.end()) {
        auto events = store.read_stream(agent_stream(p.agent_id));
        if (!events.ok()) {
          return events.status();
        }
        found = streams.emplace(p.agent_id, std::move(events).value()).first;
      }
      const Recorded last = last_recorded(found->second, p.event_id);
      if (last.attempt >= p.attempt) {
        // Recorded, but the schedule was not updated before the restart.
        if (last.outcome == kDelivered || last.outcome == kFailed) {
          cf.erase(batch, pending_key(p.event_id));
          continue;
        }
        p.attempt = last.attempt + 1;
        p.due = now;
        cf.put(batch, pending_key(p.event_id), encode_pending(p));
      }
      queue.emplace(p.due, p.position, p.event_id);
      pending.emplace(p.event_id, std::move(p));
    }
    return store.write(batch).Annotate("webhooks reconcile");
  }

  bool sleep_unless_stopping(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    tail_cv.wait_for(lock, d, [&] { return stopping; });
    return !stopping;
  }

  void tail() {
    while (true) {
      {
        std::unique_lock lock(mu);
        if (stopping) {
          return;
        }
        if (pending.size() >= options.max_pending) {
          tail_cv.wait_for(lock, options.poll_interval);
          continue;
        }
      }
      auto events = store.read_all(cursor + 1, options.batch_size);
      if (!events.ok()) {
        spdlog::warn("webhooks: reading the log: {}", events.status().ToString());
        if (!sleep_unless_stopping(options.poll_interval)) {
          return;
        }
        continue;
      }
      if (events->empty()) {
        std::unique_lock lock(mu);
        tail_cv.wait_for(lock, options.poll_interval, [&] { return stopping || log_advanced; });
        log_advanced = false;
        if (stopping) {
          return;
        }
        continue;
      }
      const TimePoint now = clock.now();
      std::vector<Pending> fresh;
      rocksdb::WriteBatch batch;
      std::unique_lock lock(mu);
      for (const auto& e : *events) {
        const std::string agent_id = event_agent_id(e);
        // Already pending: a schedule restored on start that the cursor had not passed yet.
        if (!is_key_event(e) || agent_id.empty() || pending.contains(e.event_id())) {
          continue;
        }
        Pending p;
        p.event_id = e.event_id();
        p.agent_id = agent_id;
        p.position = e.position();
        p.due = now;
        cf.put(batch, pending_key(p.event_id), encode_pending(p));
        fresh.push_back(std::move(p));
      }
      lock.unlock();
      const std::uint64_t last = events->back().position();
      // Events that schedule nothing need no record: re-reading them after a restart
      // schedules nothing either. The cursor still moves every kCursorLag events, so a
      // restart re-reads few.
      if (!fresh.empty() || last - persisted_cursor >= kCursorLag) {
        cf.put(batch, kCursorKey, encode_be64(last));
        // Unsynced: the log's next fsync makes it durable (one WAL, written in order), and
        // every attempt is recorded through that fsync first. A crash before it re-reads
        // these events and schedules them again, and attempt() drops what is recorded.
        if (Status s = store.write(batch, /*sync=*/false).Annotate("webhooks cursor"); !s.ok()) {
          spdlog::warn("webhooks: {}", s.ToString());
          if (!sleep_unless_stopping(options.poll_interval)) {
            return;
          }
          continue;
        }
        persisted_cursor = last;
      }
      lock.lock();
      for (Pending& p : fresh) {
        queue.emplace(p.due, p.position, p.event_id);
        pending.emplace(p.event_id, std::move(p));
      }
      cursor = last;
      lock.unlock();
      if (!fresh.empty()) {
        cv.notify_all();
      }
    }
  }

  // Picks the earliest due delivery whose agent has nothing in flight; false when stopping.
  bool next_job(Pending& job) {
    std::unique_lock lock(mu);
    while (!stopping) {
      const TimePoint now = clock.now();
      for (auto it = queue.begin(); it != queue.end() && std::get<0>(*it) <= now; ++it) {
        const Pending& p = pending.at(std::get<2>(*it));
        if (busy_agents.contains(p.agent_id)) {
          continue;
        }
        busy_agents.insert(p.agent_id);
        job = p;
        queue.erase(it);
        return true;
      }
      cv.wait_for(lock, options.poll_interval);
    }
    return false;
  }

  std::chrono::milliseconds backoff(std::uint32_t failures) {
    double delay = static_cast<double>(options.base_delay.count());
    for (std::uint32_t i = 1; i < failures && delay < static_cast<double>(options.max_delay.count()); ++i) {
      delay *= 2;
    }
    delay = std::min(delay, static_cast<double>(options.max_delay.count()));
    std::uniform_real_distribution<double> stretch(1.0, 1.0 + std::max(options.jitter, 0.0));
    delay *= jitter_rng.with([&](std::mt19937_64& rng) { return stretch(rng); });
    return std::chrono::milliseconds(static_cast<std::int64_t>(delay));
  }

  // Drops a delivery from the schedule and the column family.
  void finish(const Pending& job) {
    if (const Status s = cf.erase(pending_key(job.event_id)); !s.ok()) {
      // Harmless: on restart the recorded outcome drops it.
      spdlog::warn("webhooks: deleting pending {}: {}", job.event_id, s.ToString());
    }
    std::lock_guard lock(mu);
    pending.erase(job.event_id);
    busy_agents.erase(job.agent_id);
  }

  // Puts a delivery back in the schedule at `job.due`.
  void reschedule(const Pending& job) {
    if (const Status s = cf.put(pending_key(job.event_id), encode_pending(job)); !s.ok()) {
      // The old entry stays; on restart the recorded attempts bring it up to date.
      spdlog::warn("webhooks: persisting pending {}: {}", job.event_id, s.ToString());
    }
    std::lock_guard lock(mu);
    pending[job.event_id] = job;
    queue.emplace(job.due, job.position, job.event_id);
    busy_agents.erase(job.agent_id);
  }

  Result<AgentState> load_agent(const std::string& agent_id) {
    std::lock_guard lock(agents_mu);
    AgentState& state = agents[agent_id];
    auto events = store.read_stream(agent_stream(agent_id), state.version + 1);
    if (!events.ok()) {
      return events.status();
    }
    for (const auto& e : *events) {
      state = apply(std::move(state), e);
    }
    return state;
  }

  // One POST of the event to the agent's webhook URL, signed with the agent's secret.
  WebhookAttempt send(const Pending& job, const AgentState& agent, const v1::Event& event) {
    auto secret = secrets.open(agent.webhook_secret, job.agent_id);
    if (!secret.ok()) {
      WebhookAttempt result;
      result.error = "secret_unavailable";
      result.permanent = true;
      return result;
    }
    const std::string body = webhook_body(event);
    const auto t = std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"},
        {"ClawGig-Event-Id", job.event_id},
        {"ClawGig-Signature", webhook_signature(*secret, t, body)},
    };
    sodium_memzero(secret->data(), secret->size());
    return client->post(agent.profile.webhook_url, body, headers);
  }

  void attempt(Pending job) {
    const auto retry_later = [&](std::string_view why) {
      spdlog::warn("webhooks: {} for {}: retrying later", why, job.event_id);
      job.due = clock.now() + options.record_retry_delay;
      reschedule(job);
    };
    auto event = store.read_event(job.event_id);
    if (!event.ok()) {
      if (event.status().IsNotFound()) {
        spdlog::warn("webhooks: event {} is gone; dropping its delivery", job.event_id);
        finish(job);
        return;
      }
      return retry_later(event.status().ToString());
    }
    // Attempts recorded by someone else (the in-process dispatcher before a switch to
    // `keyledger webhooks`, or this process before a crash) follow the event in its stream:
    // a delivery recorded delivered or failed is not sent again, and attempt numbers go on
    // from the last recorded one.
    auto later = store.read_stream(agent_stream(job.agent_id), event->stream_version() + 1);
    if (!later.ok()) {
      return retry_later(later.status().ToString());
    }
    if (const Recorded last = last_recorded(*later, job.event_id); last.attempt >= job.attempt) {
      if (last.outcome == kDelivered || last.outcome == kFailed) {
        finish(job);
        return;
      }
      job.attempt = last.attempt + 1;
    }
    auto agent = load_agent(job.agent_id);
    if (!agent.ok()) {
      return retry_later(agent.status().ToString());
    }
    if (!agent->exists() || agent->profile.webhook_url.empty()) {
      finish(job);  // nowhere to send it
      return;
    }

    const WebhookAttempt result = send(job, *agent, *event);
    const std::uint32_t round_attempts = job.attempt - job.first_attempt + 1;
    std::string_view outcome = kRetrying;
    if (result.delivered()) {
      outcome = kDelivered;
    } else if (result.permanent || round_attempts >= options.max_attempts) {
      outcome = kFailed;
    }
    v1::WebhookDeliveryRecorded record_msg;
    record_msg.set_agent_id(job.agent_id);
    record_msg.set_event_id(job.event_id);
    record_msg.set_attempt(job.attempt);
    record_msg.set_status_code(result.status_code);
    record_msg.set_error(result.error);
    record_msg.set_duration_ms(static_cast<std::uint32_t>(
        std::clamp<std::int64_t>(result.duration.count(), 0, std::numeric_limits<std::uint32_t>::max())));
    record_msg.set_outcome(std::string(outcome));
    record_msg.set_event_type(std::string(event_type_name(event->payload_case())));
    if (Status s = record(job.agent_id, record_msg); !s.ok()) {
      // Not recorded: the attempt is made again (at least once; the receiver dedupes by id).
      return retry_later("recording the attempt: " + s.ToString());
    }
    if (outcome != kRetrying) {
      finish(job);
      return;
    }
    job.attempt += 1;
    job.due = clock.now() + backoff(round_attempts);
    reschedule(job);
  }

  void work() {
    Pending job;
    while (next_job(job)) {
      attempt(job);
      cv.notify_all();       // its agent is free again
      tail_cv.notify_one();  // and `pending` may have room
    }
  }
};

WebhookDispatcher::WebhookDispatcher(EventStore& store, const SecretBox& secrets, const Clock& clock,
                                     DeliveryRecorder record, WebhookDispatcherOptions options)
    : impl_(std::make_unique<Impl>(store, secrets, clock, std::move(record), std::move(options))) {}

WebhookDispatcher::~WebhookDispatcher() { stop(); }

Status WebhookDispatcher::start() {
  Impl& m = *impl_;
  auto family = m.store.extra_column_family(kColumnFamily);
  {
    std::lock_guard lock(m.mu);
    if (m.started) {
      return Status::Conflict("dispatcher_started", "the webhook dispatcher is already started");
    }
    m.started = true;
    if (!family.ok()) {
      return Status::InvalidArgument(family.status().message() +
                                     "; open the store with webhook_column_families()");
    }
    m.cf = *family;  // under mu: retry() reads it
  }
  auto client = WebhookClient::create(m.options.client);
  if (!client.ok()) {
    return client.status();
  }
  m.client = std::move(client).value();
  if (Status s = m.load_cursor(); !s.ok()) {
    return s;
  }
  if (Status s = m.load_pending(); !s.ok()) {
    return s;
  }
  m.tailer = std::thread([&m] {
    name_this_thread("kl-webhook-tail");
    m.tail();
  });
  const std::size_t workers = std::max<std::size_t>(1, m.options.workers);
  for (std::size_t i = 0; i < workers; ++i) {
    m.workers.emplace_back([&m] {
      name_this_thread("kl-webhook");
      m.work();
    });
  }
  m.subscription = m.store.subscribe([this](const std::vector<v1::Event>&) { notify(); });
  return Status::Ok();
}

void WebhookDispatcher::notify() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    m.log_advanced = true;
  }
  m.tail_cv.notify_one();
}

void WebhookDispatcher::stop() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    m.stopping = true;
  }
  m.subscription.reset();
  m.cv.notify_all();
  m.tail_cv.notify_all();
  if (m.tailer.joinable()) {
    m.tailer.join();
  }
  for (auto& w : m.workers) {
    if (w.joinable()) {
      w.join();
    }
  }
  m.workers.clear();
}

Status WebhookDispatcher::retry(const std::string& agent_id, const std::string& event_id) {
  Impl& m = *impl_;
  const auto not_found = [&] {
    return Status::NotFound("event_not_found", "no such key event for this agent");
  };
  auto event = m.store.read_event(event_id);
  if (!event.ok()) {
    return event.status().IsNotFound() ? not_found() : event.status();
  }
  if (!is_key_event(*event) || event_agent_id(*event) != agent_id) {
    return not_found();
  }
  auto stream = m.store.read_stream(agent_stream(agent_id));
  if (!stream.ok()) {
    return stream.status();
  }
  const Recorded last = last_recorded(*stream, event_id);
  std::lock_guard lock(m.mu);
  if (!m.cf.valid()) {
    return Status::Unavailable("the webhook dispatcher is not started");
  }
  if (m.pending.contains(event_id)) {
    return Status::Conflict("delivery_pending", "the delivery of " + event_id + " is still scheduled");
  }
  if (last.outcome != kFailed) {
    return Status::Conflict("delivery_not_failed", "the delivery of " + event_id + " has not failed");
  }
  Pending p;
  p.event_id = event_id;
  p.agent_id = agent_id;
  p.position = event->position();
  p.attempt = last.attempt + 1;
  p.first_attempt = p.attempt;
  p.due = m.clock.now();
  if (Status s = m.cf.put(pending_key(event_id), encode_pending(p), /*sync=*/true).Annotate("webhooks retry");
      !s.ok()) {
    return s;
  }
  m.queue.emplace(p.due, p.position, p.event_id);
  m.pending.emplace(event_id, std::move(p));
  m.cv.notify_all();
  return Status::Ok();
}

std::uint64_t WebhookDispatcher::cursor() const { return impl_->cursor; }

std::size_t WebhookDispatcher::pending() const {
  std::lock_guard lock(impl_->mu);
  return impl_->pending.size();
}

}  // namespace keyledger::consumers
