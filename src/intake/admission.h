// Admission: turns one arriving webhook (a direct POST, or a message of an upstream's feed) into
// the NewWebhook row to journal, with its trigger type (SPEC §6) and routing decision (SPEC §1)
// made here. Pure functions over their inputs and the directory; nothing is stored.
#pragma once

#include <string>

#include "common/status.h"
#include "common/time.h"
#include "intake/feed.h"
#include "journal/routing.h"
#include "journal/store.h"

namespace iarelay {

struct IntakeRequest {
  std::string service;          // as in the path ("hpnnmi" or "applications|hpnnmi"), decoded
  std::string agent;            // ?agent=, decoded; "" (or blanks): none
  std::string type;             // ?type=; "": infer from the payload
  std::string idempotency_key;  // Idempotency-Key header; "": none
  std::string body;             // the raw body, stored byte for byte
};

// The longest Idempotency-Key accepted.
inline constexpr size_t kMaxIdempotencyKey = 256;

// A direct webhook (source "direct", a new id, received now). InvalidArgument with a message
// for the client when the service is empty, the body is not a JSON object, the type cannot be
// inferred, or the Idempotency-Key is too long.
Result<NewWebhook> admit_direct(IntakeRequest request, const AgentDirectory& directory, Millis now);

// A message of upstream `source`'s feed, routed here as if it had arrived here directly
// (source_id = its id upstream, so a redelivery is recognised). InvalidArgument when the
// message cannot be stored (payload not an object, empty service, type not inferable).
Result<NewWebhook> admit_feed_item(FeedItem item, const std::string& source,
                                   const AgentDirectory& directory, Millis now);

}  // namespace iarelay
