#include "consumers/outbox_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>

#include "consumers/kafka_client.h"
#include "consumers/state_snapshots.h"
#include "domain/thread_name.h"

namespace keyledger::consumers {

namespace {

constexpr std::string_view kRelayCf = "kafka_relay";
constexpr std::string_view kPublishedKey = "published";
// With nothing to do the thread still wakes this often (persisting, noticing stop()).
constexpr int kIdleWaitMs = 1000;

bool decode_position(std::string_view bytes, std::uint64_t& out) {
  if (bytes.size() != 8) {
    return false;
  }
  out = decode_be64(bytes);
  return true;
}

// One message to produce: topic, key, value, and the position it belongs to.
struct OutgoingMessage {
  const std::string* topic;
  std::string key;
  std::string value;
  const v1::Event* event;  // for the headers
};

}  // namespace

std::vector<std::string> consumer_column_families() { return {std::string(kRelayCf)}; }

std::string event_message_key(const v1::Event& event) {
  if (event.stream() == kTokensStream) {
    return std::string(kTokensStream);
  }
  std::string agent_id = event_agent_id(event);
  if (agent_id.empty() && event.stream().starts_with("agent-")) {
    agent_id = event.stream().substr(6);
  }
  return agent_id;
}

struct OutboxRelay::Impl {
  Impl(EventStore& s, const Projector& p, PublisherOptions o)
      : store(s), projector(p), options(std::move(o)) {}

  ~Impl() {
    if (wake_read >= 0) {
      ::close(wake_read);
    }
    if (wake_write >= 0) {
      ::close(wake_write);
    }
  }

  EventStore& store;
  const Projector& projector;
  const PublisherOptions options;
  ColumnFamily cf;  // kRelayCf

  // The producer and its main queue (delivery reports); replaced after a fatal error.
  KafkaHandle producer;
  std::unique_ptr<rd_kafka_queue_t, KafkaDeleter> main_queue;
  // notify(), stop() and librdkafka (a delivery report is queued) write a byte here.
  int wake_read = -1;
  int wake_write = -1;

  std::thread thread;
  CommitSubscription subscription;  // wakes the thread from start() to stop()
  std::atomic<bool> stopping{false};
  bool started = false;
  bool stopped = false;

  std::atomic<std::uint64_t> confirmed{0};  // every position <= this is delivered
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> failures{0};

  // Relay thread only (delivery reports run on it too, inside rd_kafka_poll/flush).
  std::optional<std::uint64_t> persisted;  // last position written to kafka_relay
  std::uint64_t next = 1;                  // next position to publish
  std::uint64_t base = 1;                  // position of unconfirmed.front()
  std::deque<std::uint8_t> unconfirmed;    // messages not yet delivered, per position from base
  std::size_t outstanding = 0;             // messages handed to librdkafka, no report yet
  bool failed = false;                     // a delivery failed: rewind once outstanding is 0
  std::chrono::milliseconds backoff{0};
  std::chrono::steady_clock::time_point resume_at{};
  bool warned_persist = false;

  Status open() {
    auto family = store.extra_column_family(kRelayCf);
    if (!family.ok()) {
      return Status::IoError(family.status().message() + "; open the store with consumer_column_families()");
    }
    cf = *family;
    if (options.brokers.empty()) {
      return Status::InvalidArgument("Kafka brokers are required", {{"brokers", "must not be empty"}});
    }
    if (options.events_topic.empty()) {
      return Status::InvalidArgument("the events topic is required", {{"events_topic", "must not be empty"}});
    }
    if (options.max_in_flight == 0 || options.read_batch == 0) {
      return Status::InvalidArgument("max_in_flight and read_batch must be positive");
    }
    if (options.republish_from_start) {
      confirmed = 0;
    } else {
      const auto value = cf.get(kPublishedKey);
      if (!value.ok()) {
        return value.status();
      }
      std::uint64_t position = 0;
      if (value->has_value() && !decode_position(**value, position)) {
        return Status::Corruption("kafka_relay: the published position is not 8 bytes");
      }
      // A log that was wiped and rebuilt behind a stale position would never publish again.
      confirmed = std::min(position, store.last_position());
    }
    next = base = confirmed + 1;
    if (Status s = persist(); !s.ok()) {
      return s;
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      return Status::IoError(std::string("pipe2: ") + std::strerror(errno));
    }
    wake_read = fds[0];
    wake_write = fds[1];
    return make_producer();
  }

  Status make_producer() {
    main_queue.reset();
    producer.reset();
    auto conf = make_kafka_producer_conf(
        options.brokers,
        {{"client.id", "keyledger-outbox-relay"}, {"linger.ms", std::to_string(options.linger_ms)}},
        options.producer_config);
    if (!conf.ok()) {
      return conf.status();
    }
    rd_kafka_conf_set_opaque(conf->get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf->get(), &Impl::on_delivery);
    auto client = make_kafka_client(RD_KAFKA_PRODUCER, std::move(conf).value());
    if (!client.ok()) {
      return client.status();
    }
    producer = std::move(client).value();
    main_queue.reset(rd_kafka_queue_get_main(producer.get()));
    if (!main_queue) {
      return Status::Unavailable("the Kafka producer has no main queue");
    }
    static const char kByte = 'k';
    rd_kafka_queue_io_event_enable(main_queue.get(), wake_write, &kByte, 1);
    return Status::Ok();
  }

  Status persist() {
    const std::uint64_t position = confirmed;
    if (persisted == position) {
      return Status::Ok();
    }
    // Unsynced: losing the last moves to a crash only republishes a few events.
    if (Status s = cf.put(kPublishedKey, encode_be64(position)); !s.ok()) {
      return s;
    }
    persisted = position;
    return Status::Ok();
  }

  void persist_or_warn() {
    if (Status s = persist(); !s.ok()) {
      if (!warned_persist) {
        spdlog::warn("outbox relay: cannot persist the published position: {}", s.ToString());
        warned_persist = true;
      }
    } else {
      warned_persist = false;
    }
  }

  void wake() {
    static const char kByte = 'n';
    // A full pipe already holds a wake-up; nothing else can go wrong here worth reporting.
    [[maybe_unused]] const ssize_t n = ::write(wake_write, &kByte, 1);
  }

  void drain_wakes() {
    std::array<char, 256> buf{};
    while (::read(wake_read, buf.data(), buf.size()) > 0) {
    }
  }

  void wait_for_wake(int timeout_ms) {
    pollfd fd{wake_read, POLLIN, 0};
    if (::poll(&fd, 1, timeout_ms) < 0 && errno != EINTR) {
      spdlog::warn("outbox relay: poll: {}", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    }
  }

  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
    static_cast<Impl*>(opaque)->delivered_report(message);
  }

  void delivered_report(const rd_kafka_message_t* message) {
    --outstanding;
    const auto position = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(message->_private));
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++failures;
      if (!failed) {
        spdlog::warn(
            "outbox relay: delivery of position {} to {} failed: {}; will republish from position {}",
            position, rd_kafka_topic_name(message->rkt), kafka_error_text(message->err),
            confirmed.load() + 1);
      }
      failed = true;
      return;
    }
    ++delivered;
    backoff = std::chrono::milliseconds(0);
    if (position < base || position - base >= unconfirmed.size()) {
      return;  // a report from before a rewind
    }
    std::uint8_t& left = unconfirmed[position - base];
    if (left > 0) {
      --left;
    }
    while (!unconfirmed.empty() && unconfirmed.front() == 0) {
      unconfirmed.pop_front();
      confirmed = base;
      ++base;
    }
  }

  // After a failed delivery, once every outstanding report is in: forget the unconfirmed
  // positions and publish again from the first of them, after a backoff.
  Status rewind() {
    std::array<char, 512> reason{};
    const rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(producer.get(), reason.data(), reason.size());
    if (fatal != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::warn("outbox relay: the producer hit a fatal error ({}: {}); creating a new one",
                   rd_kafka_err2name(fatal), reason.data());
      if (Status s = make_producer(); !s.ok()) {
        return s;
      }
    }
    unconfirmed.clear();
    next = base = confirmed + 1;
    failed = false;
    backoff = std::clamp(backoff * 2, options.min_backoff, options.max_backoff);
    resume_at = std::chrono::steady_clock::now() + backoff;
    return Status::Ok();
  }

  // Hands one message to librdkafka. False (and logged) if it refused.
  bool produce(const OutgoingMessage& m) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(3);
    const std::string position = std::to_string(m.event->position());
    const std::string type =
        m.event->type().empty() ? std::string(event_type_name(m.event->payload_case())) : m.event->type();
    for (const auto& [name, value] :
         {std::pair<const char*, const std::string*>{"event-id", &m.event->event_id()},
          {"event-type", &type},
          {"position", &position}}) {
      const rd_kafka_resp_err_t err =
          rd_kafka_header_add(headers, name, -1, value->data(), static_cast<ssize_t>(value->size()));
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(headers);
        spdlog::warn("outbox relay: cannot add header {}: {}", name, kafka_error_text(err));
        return false;
      }
    }
    void* opaque = reinterpret_cast<void*>(static_cast<std::uintptr_t>(m.event->position()));
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        producer.get(), RD_KAFKA_V_TOPIC(m.topic->c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(m.key.data(), m.key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(m.value.data()), m.value.size()), RD_KAFKA_V_HEADERS(headers),
        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_destroy(headers);  // ownership passes only on success
      ++failures;
      spdlog::warn("outbox relay: cannot produce position {} to {}: {}", m.event->position(), *m.topic,
                   kafka_error_text(err));
      return false;
    }
    ++outstanding;
    return true;
  }

  // Publishes one event and its key-state snapshot. False if anything failed.
  bool publish(const v1::Event& event) {
    if (is_unreadable(event)) {
      // A record the store cannot decode (it logged and counts it): there is nothing to
      // publish, and stopping here would stop publication for every agent for good.
      if (unconfirmed.empty()) {
        confirmed = event.position();
      } else {
        unconfirmed.push_back(0);
      }
      return true;
    }
    std::vector<OutgoingMessage> messages;
    messages.push_back({&options.events_topic, event_message_key(event), event.SerializeAsString(), &event});
    if (!options.state_topic.empty()) {
      auto snapshot = snapshot_after(event, store, projector);
      if (!snapshot.ok()) {
        spdlog::warn("outbox relay: cannot build the key-state record of position {}: {}", event.position(),
                     snapshot.status().ToString());
        return false;
      }
      if (*snapshot) {
        messages.push_back(
            {&options.state_topic, (*snapshot)->key, (*snapshot)->snapshot.SerializeAsString(), &event});
      }
    }
    if (unconfirmed.empty()) {
      base = event.position();
    }
    unconfirmed.push_back(static_cast<std::uint8_t>(messages.size()));
    for (const auto& m : messages) {
      if (!produce(m)) {
        return false;
      }
    }
    return true;
  }

  // Reads the next events of the log and publishes them. True if more are waiting now.
  bool publish_some() {
    const std::uint64_t last = store.last_position();
    if (next > last || unconfirmed.size() >= options.max_in_flight) {
      return false;
    }
    const std::size_t room = options.max_in_flight - unconfirmed.size();
    const std::size_t count =
        static_cast<std::size_t>(std::min<std::uint64_t>({options.read_batch, room, last - next + 1}));
    auto events = store.read_all(next, count);
    if (!events.ok()) {
      spdlog::warn("outbox relay: cannot read the log at position {}: {}", next, events.status().ToString());
      backoff = std::clamp(backoff * 2, options.min_backoff, options.max_backoff);
      resume_at = std::chrono::steady_clock::now() + backoff;
      return false;
    }
    for (const auto& event : *events) {
      if (event.position() != next) {
        spdlog::error("outbox relay: the log skips from position {} to {}", next, event.position());
        failed = true;
        return false;
      }
      if (!publish(event)) {
        failed = true;
        return false;
      }
      ++next;
    }
    return next <= last && unconfirmed.size() < options.max_in_flight;
  }

  void run() {
    while (!stopping) {
      drain_wakes();
      if (!producer) {
        // A replacement producer could not be created: try again after the longest backoff.
        if (std::chrono::steady_clock::now() >= resume_at) {
          if (Status s = make_producer(); !s.ok()) {
            spdlog::error("outbox relay: {}", s.ToString());
            resume_at = std::chrono::steady_clock::now() + options.max_backoff;
          }
        }
        wait_for_wake(static_cast<int>(options.max_backoff.count()));
        continue;
      }
      rd_kafka_poll(producer.get(), 0);  // delivery reports
      persist_or_warn();
      if (failed && outstanding == 0) {
        if (Status s = rewind(); !s.ok()) {
          spdlog::error("outbox relay: {}", s.ToString());
          resume_at = std::chrono::steady_clock::now() + options.max_backoff;
        }
      }
      const auto now = std::chrono::steady_clock::now();
      if (now < resume_at) {
        const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(resume_at - now).count();
        wait_for_wake(static_cast<int>(std::clamp<std::int64_t>(wait, 1, kIdleWaitMs)));
        continue;
      }
      if (!failed && publish_some()) {
        continue;
      }
      wait_for_wake(kIdleWaitMs);
    }
    if (!producer) {
      persist_or_warn();
      return;
    }
    const rd_kafka_resp_err_t err =
        rd_kafka_flush(producer.get(), static_cast<int>(options.flush_timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::warn(
          "outbox relay: {} messages still undelivered at shutdown ({}); they are republished on the "
          "next start",
          rd_kafka_outq_len(producer.get()), kafka_error_text(err));
    }
    persist_or_warn();
  }
};

OutboxRelay::OutboxRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OutboxRelay::~OutboxRelay() { stop(); }

Result<std::unique_ptr<OutboxRelay>> OutboxRelay::create(EventStore& store, const Projector& projector,
                                                         PublisherOptions options) {
  auto impl = std::make_unique<Impl>(store, projector, std::move(options));
  if (Status s = impl->open(); !s.ok()) {
    return s;
  }
  return std::unique_ptr<OutboxRelay>(new OutboxRelay(std::move(impl)));
}

void OutboxRelay::start() {
  if (impl_->started) {
    return;
  }
  impl_->started = true;
  impl_->thread = std::thread([this] {
    name_this_thread("kl-outbox-relay");
    impl_->run();
  });
  impl_->subscription =
      impl_->store.subscribe([impl = impl_.get()](const std::vector<v1::Event>&) { impl->wake(); });
}

void OutboxRelay::notify() { impl_->wake(); }

void OutboxRelay::stop() {
  if (impl_->stopped) {
    return;
  }
  impl_->stopped = true;
  impl_->subscription.reset();
  impl_->stopping = true;
  impl_->wake();
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  } else {
    impl_->persist_or_warn();
  }
  impl_->main_queue.reset();
  impl_->producer.reset();
}

std::uint64_t OutboxRelay::published_position() const { return impl_->confirmed; }

std::uint64_t OutboxRelay::lag() const {
  const std::uint64_t last = impl_->store.last_position();
  const std::uint64_t published = impl_->confirmed;
  return last > published ? last - published : 0;
}

std::uint64_t OutboxRelay::messages_delivered() const { return impl_->delivered; }
std::uint64_t OutboxRelay::delivery_failures() const { return impl_->failures; }

}  // namespace keyledger::consumers
