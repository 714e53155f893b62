// Building NewWebhook rows: validation, type inference and the routing decision.
#include "intake/admission.h"

#include "common/crypto.h"
#include "common/payload.h"

namespace iarelay {
namespace {

void apply_route(NewWebhook& w, const AgentDirectory& directory) {
  RouteDecision d = directory.route(w.service, w.agent);
  w.state = d.state;
  w.assigned_agent = std::move(d.assigned_agent);
  w.reason = std::move(d.reason);
}

}  // namespace

Result<NewWebhook> admit_direct(IntakeRequest request, const AgentDirectory& directory,
                                Millis now) {
  NewWebhook w;
  w.service = normalize_service(request.service);
  if (w.service.empty()) return Status::invalid_argument("the service name in the path is empty");
  if (request.idempotency_key.size() > kMaxIdempotencyKey)
    return Status::invalid_argument("Idempotency-Key is longer than " +
                                    std::to_string(kMaxIdempotencyKey) + " characters");
  auto info = inspect_payload(request.body, request.type);
  if (!info) return info.status();
  w.id = new_webhook_id();
  w.source = "direct";
  w.received_at = now;
  std::string agent = normalize_agent(request.agent);
  if (!agent.empty()) w.agent = std::move(agent);
  w.type = std::move(info->type);
  if (!info->event_id.empty()) w.event_id = std::move(info->event_id);
  if (!request.idempotency_key.empty()) w.idempotency_key = std::move(request.idempotency_key);
  w.payload = std::move(request.body);
  apply_route(w, directory);
  return w;
}

Result<NewWebhook> admit_feed_item(FeedItem item, const std::string& source,
                                   const AgentDirectory& directory, Millis now) {
  if (!item.payload_is_object)
    return Status::invalid_argument("upstream message " + item.id + ": payload is not an object");
  NewWebhook w;
  w.service = normalize_service(item.service);
  if (w.service.empty())
    return Status::invalid_argument("upstream message " + item.id + ": no service");
  PayloadInfo info;
  if (item.inspected) {
    // parse_feed already read the payload; parsing it again would double the poller's work.
    if (item.inferred_type.empty())
      return Status::invalid_argument("upstream message " + item.id +
                                      ": trigger type is not given and cannot be inferred");
    info.type = std::move(item.inferred_type);
    info.event_id = std::move(item.event_id);
  } else {
    auto inspected = inspect_payload(item.payload, item.type);
    if (!inspected)
      return Status::invalid_argument("upstream message " + item.id + ": " +
                                      inspected.status().message());
    info = std::move(*inspected);
  }
  w.id = new_webhook_id();
  w.source = source;
  w.source_id = std::move(item.id);
  w.received_at = now;
  if (item.agent) {
    std::string agent = normalize_agent(*item.agent);
    if (!agent.empty()) w.agent = std::move(agent);
  }
  w.type = std::move(info.type);
  if (!info.event_id.empty()) w.event_id = std::move(info.event_id);
  w.payload = std::move(item.payload);
  apply_route(w, directory);
  return w;
}

}  // namespace iarelay
