#include "consumers/delivery_publisher.h"

#include <spdlog/spdlog.h>

#include <future>

#include "domain/agent.h"
#include "domain/ids.h"
#include "domain/thread_name.h"

namespace keyledger::consumers {

namespace {

constexpr int kPollTimeoutMs = 100;
// Beyond message.timeout.ms, how long record() keeps waiting for the report librdkafka owes.
constexpr auto kReportGrace = std::chrono::seconds(5);

using Acknowledgement = std::promise<rd_kafka_resp_err_t>;

}  // namespace

v1::Event delivery_record_event(const std::string& agent_id, const v1::WebhookDeliveryRecorded& record,
                                TimePoint now) {
  // Its id derives from the delivery and attempt, so the server records a repeat once.
  return webhook_delivery_event(agent_id, record,
                                derived_event_id("keyledger.webhook-delivery/" + record.event_id() + "/" +
                                                 std::to_string(record.attempt())),
                                now, std::string(kWebhooksActor));
}

DeliveryPublisher::DeliveryPublisher(DeliveryPublisherOptions options, const Clock& clock, EventStore* mirror)
    : options_(std::move(options)), clock_(clock), mirror_(mirror) {}

Result<std::unique_ptr<DeliveryPublisher>> DeliveryPublisher::create(DeliveryPublisherOptions options,
                                                                     const Clock& clock, EventStore* mirror) {
  if (options.brokers.empty() || options.topic.empty()) {
    return Status::InvalidArgument("the delivery publisher needs Kafka brokers and a topic");
  }
  if (options.ack_timeout.count() <= 0) {
    return Status::InvalidArgument("ack_timeout must be positive");
  }
  std::unique_ptr<DeliveryPublisher> publisher(new DeliveryPublisher(std::move(options), clock, mirror));
  const DeliveryPublisherOptions& o = publisher->options_;
  auto conf = make_kafka_producer_conf(o.brokers,
                                       {
                                           {"client.id", "keyledger-webhooks"},
                                           {"linger.ms", "1"},
                                           {"message.timeout.ms", std::to_string(o.ack_timeout.count())},
                                       },
                                       o.producer_config);
  if (!conf.ok()) {
    return conf.status();
  }
  rd_kafka_conf_set_dr_msg_cb(conf->get(), &DeliveryPublisher::on_delivery);
  auto client = make_kafka_client(RD_KAFKA_PRODUCER, std::move(conf).value());
  if (!client.ok()) {
    return client.status();
  }
  publisher->producer_ = std::move(client).value();
  DeliveryPublisher* self = publisher.get();
  publisher->poller_ = std::thread([self] {
    name_this_thread("kl-deliveries");
    while (!self->stopping_) {
      rd_kafka_poll(self->producer_.get(), kPollTimeoutMs);  // serves delivery reports
    }
  });
  return publisher;
}

DeliveryPublisher::~DeliveryPublisher() {
  stopping_ = true;
  if (poller_.joinable()) {
    poller_.join();
  }
  if (producer_) {
    const rd_kafka_resp_err_t err =
        rd_kafka_flush(producer_.get(), static_cast<int>(options_.ack_timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Their record() calls already failed; the dispatcher makes those attempts again.
      spdlog::warn("webhooks: {} delivery records unacknowledged at shutdown",
                   rd_kafka_outq_len(producer_.get()));
    }
  }
}

void DeliveryPublisher::on_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void*) {
  // The per-message opaque is the promise record() waits on; the report owns it.
  std::unique_ptr<Acknowledgement> ack(static_cast<Acknowledgement*>(message->_private));
  if (ack) {
    ack->set_value(message->err);
  }
}

Status DeliveryPublisher::record(const std::string& agent_id, const v1::WebhookDeliveryRecorded& record) {
  const v1::Event event = delivery_record_event(agent_id, record, clock_.now());
  const std::string value = event.SerializeAsString();
  rd_kafka_headers_t* headers = rd_kafka_headers_new(2);
  for (const auto& [name, header] :
       {std::pair<const char*, const std::string*>{"event-id", &event.event_id()},
        {"event-type", &event.type()}}) {
    const rd_kafka_resp_err_t err =
        rd_kafka_header_add(headers, name, -1, header->data(), static_cast<ssize_t>(header->size()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_destroy(headers);
      return Status::Unavailable(std::string("cannot add header ") + name + ": " + kafka_error_text(err));
    }
  }
  auto ack = std::make_unique<Acknowledgement>();
  std::future<rd_kafka_resp_err_t> acknowledged = ack->get_future();
  const rd_kafka_resp_err_t err = rd_kafka_producev(
      producer_.get(), RD_KAFKA_V_TOPIC(options_.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(agent_id.data(), agent_id.size()),
      RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_HEADERS(headers),
      RD_KAFKA_V_OPAQUE(ack.get()), RD_KAFKA_V_END);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(headers);  // ownership passes only on success
    return Status::Unavailable("cannot produce to " + options_.topic + ": " + kafka_error_text(err));
  }
  (void)ack.release();  // on_delivery owns it now
  if (acknowledged.wait_for(options_.ack_timeout + kReportGrace) != std::future_status::ready) {
    return Status::Unavailable("no acknowledgement from Kafka for the delivery record");
  }
  if (const rd_kafka_resp_err_t result = acknowledged.get(); result != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("Kafka refused the delivery record: " + kafka_error_text(result));
  }
  ++acknowledged_;
  if (mirror_ != nullptr) {
    // Best effort: the record comes back through the server's log anyway.
    auto stored = mirror_->append(event.stream(), kAnyVersion, {event});
    if (!stored.ok() && !mirror_->read_event(event.event_id()).ok()) {
      spdlog::warn("webhooks: cannot add delivery record {} to the mirror: {}", event.event_id(),
                   stored.status().ToString());
    }
  }
  return Status::Ok();
}

DeliveryRecorder DeliveryPublisher::recorder() {
  return [this](const std::string& agent_id, const v1::WebhookDeliveryRecorded& r) {
    return record(agent_id, r);
  };
}

}  // namespace keyledger::consumers
