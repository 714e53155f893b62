// Admission: turns one arriving webhook (a direct POST, or a message of an upstream's feed) into
// the NewWebhook row to journal, with its trigger type (docs/architecture.md "Payload dialects")
// and routing decision (docs/architecture.md "Routing") made here. This is the border: every text
// field taken from a request line, a header or a feed is checked here, once (valid UTF-8, no
// control characters, bounded length), so nothing inside (journal, dispatcher, status) ever meets
// raw outside bytes. Pure functions over their inputs and the directory; nothing is stored.
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <string_view>

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

// The longest text fields accepted, in bytes after percent-decoding (docs/operations.md).
inline constexpr size_t kMaxServiceName = 256;
inline constexpr size_t kMaxAgentId = 256;
inline constexpr size_t kMaxTriggerType = 256;
inline constexpr size_t kMaxIdempotencyKey = 256;
inline constexpr size_t kMaxSourceId = 256;  // a feed message's id upstream

// The one check of a text field taken from outside: InvalidArgument "<field> <problem>" (e.g.
// "type is not valid UTF-8") when `value` is not valid UTF-8, holds a control character
// (C0, DEL, C1) or is longer than `max_bytes`.
Status check_text_field(std::string_view field, std::string_view value, size_t max_bytes);

// A direct webhook (source "direct", a new id, received now). An agent named by the handle of a
// configured agent (its [agent.HANDLE] section's name) is recorded as that agent's identifier;
// any other agent name is kept as given (docs/architecture.md "Routing": it waits for an agent with
// that id). InvalidArgument with a message for the client, naming the field, when the service is
// empty, service, agent, type or Idempotency-Key fails check_text_field, the body is not a JSON
// object, or the type cannot be inferred.
Result<NewWebhook> admit_direct(IntakeRequest request, const AgentDirectory& directory, Millis now);

// A message of upstream `source`'s feed, routed here as if it had arrived here directly
// (source_id = its id upstream, so a redelivery is recognised; a handle resolved as above).
// InvalidArgument when the message cannot be admitted (payload not an object, empty service, type
// not inferable, or id, service, agent or type failing check_text_field). Moves the payload and id
// out of `item` only on success; on failure `item` is left as it was, for quarantine_feed_item.
Result<NewWebhook> admit_feed_item(FeedItem&& item, const std::string& source,
                                   const AgentDirectory& directory, Millis now);

// A feed message admit_feed_item refused, kept instead of lost (the upstream is acked past it):
// state failed, `why` as its reason (last_error), service/agent/type made safe with
// sanitize_utf8 ("unknown" when empty), the payload byte for byte. Its source_id is its id
// upstream when that passes check_text_field, else a safe prefix plus a hash of the original,
// so a redelivered batch is still recognised. `iarelay list --state failed` shows it.
NewWebhook quarantine_feed_item(const FeedItem& item, const std::string& source,
                                std::string_view why, Millis now);

// The warning for webhooks queued for an agent identifier no configured agent has (they wait,
// silently otherwise): logged once per identifier, naming it and the configured agents. At most
// kMaxLogged identifiers are remembered (the names come from outside); past that, one more line
// says that further ones are not logged. Thread-safe.
class UnconfiguredAgentLog {
 public:
  static constexpr size_t kMaxLogged = 1000;
  // Logs when `w` is queued for an agent `directory` does not configure, the first time for
  // its identifier. Returns whether it logged.
  bool note(const NewWebhook& w, const AgentDirectory& directory);

 private:
  std::mutex mu_;
  std::set<std::string> logged_;  // GUARDED_BY(mu_)
  bool full_ = false;             // GUARDED_BY(mu_)
};

}  // namespace iarelay
