// Building NewWebhook rows: validation, type inference and the routing decision.
#include "intake/admission.h"

#include <spdlog/spdlog.h>

#include "common/crypto.h"
#include "common/payload.h"
#include "common/utf8.h"

namespace iarelay {
namespace {

void apply_route(NewWebhook& w, const AgentDirectory& directory) {
  // ?agent=nnmi1 where nnmi1 is a section name: the webhook is that agent's, under the
  // identifier its queue and the journal know (otherwise it would wait where nothing delivers).
  if (w.agent)
    if (auto id = directory.configured_id(*w.agent)) w.agent = std::move(*id);
  RouteDecision d = directory.route(w.service, w.agent, w.type);
  w.state = d.state;
  w.assigned_agent = std::move(d.assigned_agent);
  w.reason = std::move(d.reason);
}

// A stored text that is never empty and always safe.
std::string safe_or_unknown(std::string_view s, size_t max_bytes) {
  std::string out = sanitize_utf8(s, max_bytes);
  return out.empty() ? std::string("unknown") : out;
}

}  // namespace

Status check_text_field(std::string_view field, std::string_view value, size_t max_bytes) {
  std::string problem = text_field_problem(value, max_bytes);
  if (problem.empty()) return Status::ok();
  return Status::invalid_argument(std::string(field) + " " + problem);
}

Result<NewWebhook> admit_direct(IntakeRequest request, const AgentDirectory& directory,
                                Millis now) {
  NewWebhook w;
  if (Status s = check_text_field("service", request.service, kMaxServiceName); !s) return s;
  if (Status s = check_text_field("agent", request.agent, kMaxAgentId); !s) return s;
  if (Status s = check_text_field("type", request.type, kMaxTriggerType); !s) return s;
  if (Status s = check_text_field("Idempotency-Key", request.idempotency_key, kMaxIdempotencyKey);
      !s)
    return s;
  w.service = normalize_service(request.service);
  if (w.service.empty()) return Status::invalid_argument("the service name in the path is empty");
  auto info = inspect_payload(request.body, request.type);
  if (!info) return info.status();
  // An inferred type comes from the payload (xmatters_callback_type): check it like a given one.
  if (Status s = check_text_field("type", info->type, kMaxTriggerType); !s) return s;
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

Result<NewWebhook> admit_feed_item(FeedItem&& item, const std::string& source,
                                   const AgentDirectory& directory, Millis now) {
  if (Status s = check_text_field("id", item.id, kMaxSourceId); !s)
    return Status::invalid_argument("upstream message: " + s.message());
  auto refuse = [&](const std::string& why) {
    return Status::invalid_argument("upstream message " + item.id + ": " + why);
  };
  if (Status s = check_text_field("service", item.service, kMaxServiceName); !s)
    return refuse(s.message());
  if (item.agent)
    if (Status s = check_text_field("agent", *item.agent, kMaxAgentId); !s)
      return refuse(s.message());
  if (Status s = check_text_field("type", item.type, kMaxTriggerType); !s)
    return refuse(s.message());
  if (!item.payload_is_object) return refuse("payload is not an object");
  if (!item.framing_error.empty()) return refuse(item.framing_error);
  NewWebhook w;
  w.service = normalize_service(item.service);
  if (w.service.empty())
    return Status::invalid_argument("upstream message " + item.id + ": no service");
  PayloadInfo info;
  if (item.inspected) {
    // parse_feed already read the payload; parsing it again would double the poller's work.
    // The depth limit of direct intake holds here too: turning such a payload back into text
    // (format = ia, `iarelay show`) recurses once per level.
    if (item.too_deep)
      return refuse("payload is nested deeper than " + std::to_string(kMaxPayloadDepth) +
                    " levels");
    if (item.inferred_type.empty())
      return Status::invalid_argument("upstream message " + item.id +
                                      ": trigger type is not given and cannot be inferred");
    info.type = item.inferred_type;  // copied: on failure `item` must stay whole
    info.event_id = item.event_id;
  } else {
    auto inspected = inspect_payload(item.payload, item.type);
    if (!inspected)
      return Status::invalid_argument("upstream message " + item.id + ": " +
                                      inspected.status().message());
    info = std::move(*inspected);
  }
  if (Status s = check_text_field("type", info.type, kMaxTriggerType); !s)
    return refuse(s.message());
  // The upstream's id is kept (a ULID is unique), so webhook-id is the same end to end and a
  // webhook that comes again by another path (the upstream renamed) is the same row.
  w.id = is_webhook_id(item.id) ? item.id : new_webhook_id();
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

NewWebhook quarantine_feed_item(const FeedItem& item, const std::string& source,
                                std::string_view why, Millis now) {
  NewWebhook w;
  w.id = is_webhook_id(item.id) ? item.id : new_webhook_id();
  w.source = source;
  if (text_field_problem(item.id, kMaxSourceId).empty()) {
    w.source_id = item.id;
  } else {
    // Deterministic, so a redelivery maps to the same row; the hash keeps distinct ids apart.
    w.source_id = sanitize_utf8(item.id, kMaxSourceId - 72) + "~sha256:" + sha256_hex(item.id);
  }
  w.received_at = now;
  w.service = safe_or_unknown(normalize_service(item.service), kMaxServiceName);
  if (item.agent) {
    std::string agent = sanitize_utf8(normalize_agent(*item.agent), kMaxAgentId);
    if (!agent.empty()) w.agent = std::move(agent);
  }
  w.type =
      safe_or_unknown(item.inferred_type.empty() ? item.type : item.inferred_type, kMaxTriggerType);
  w.state = WebhookState::kFailed;
  w.reason = sanitize_utf8("refused from the upstream's feed: " + std::string(why), 1024);
  w.payload = item.payload;
  return w;
}

bool UnconfiguredAgentLog::note(const NewWebhook& w, const AgentDirectory& directory) {
  if (directory.is_edge() || !w.agent || w.state != WebhookState::kQueued ||
      w.assigned_agent != w.agent || directory.configured_id(*w.agent))
    return false;
  {
    std::lock_guard lock(mu_);
    if (full_ || logged_.count(*w.agent)) return false;
    if (logged_.size() >= kMaxLogged) {
      full_ = true;
      spdlog::warn(
          "webhooks for {} agent identifiers no agent is configured with have been logged; "
          "further ones are not (iarelay status lists them under NOT CONFIGURED)",
          kMaxLogged);
      return true;
    }
    logged_.insert(*w.agent);
  }
  std::string configured;
  for (const auto& a : directory.agents())
    configured += (configured.empty() ? "" : ", ") +
                  (a.handle == a.id ? a.id : a.id + " ([agent." + a.handle + "])");
  spdlog::warn(
      "webhook {} for service {} is queued for agent identifier '{}', which no configured agent "
      "has (configured: {}); it waits until an agent with that id is configured (iarelay status: "
      "NOT CONFIGURED; iarelay move --from '{}' --to ID moves them). Further webhooks for '{}' "
      "are not logged",
      w.id, w.service, *w.agent, configured.empty() ? "none" : configured, *w.agent, *w.agent);
  return true;
}

}  // namespace iarelay
