// The retry policy (docs/architecture.md, "Calling apia_callback") as a pure function: what to do
// after one callback attempt, from the attempt number, how the call ended, the current time, the
// agent's policy and a random draw. No clock, no network, no journal: the dispatcher supplies every
// input.
#pragma once

#include <optional>
#include <string>

#include "common/time.h"

namespace iarelay {

// How one HTTP call ended, as the transport saw it.
struct CallOutcome {
  enum class Kind {
    kHttp,       // the agent answered with `status`
    kTransport,  // could not connect, connection reset, bad response (error says which)
    kTimeout,    // no complete answer within the agent's timeout
  };
  Kind kind = Kind::kHttp;
  int status = 0;                          // kHttp only
  std::optional<std::string> retry_after;  // the Retry-After header, as received
  std::optional<std::string> location;     // the Location header (of a 3xx), made safe to store
  std::string body_excerpt;  // the answer's first bytes as received (kBodyExcerptBytes + 3)
  std::string error;         // transport or timeout description
};

// The longest body excerpt in a reason. The caller keeps 3 bytes more, so that a character
// this cut splits is whole and left out whole (text_excerpt, common/utf8.h).
inline constexpr std::size_t kBodyExcerptBytes = 500;
inline constexpr std::size_t kBodyBytesKept = kBodyExcerptBytes + 3;

struct RetryPolicy {
  int max_attempts = 25;  // real attempts; the budget is spent when attempt >= this
  Millis backoff_initial = 1'000;
  Millis backoff_max = 300'000;
};

// What the caller should do next with the webhook.
struct RetryDecision {
  enum class Kind {
    kDelivered,  // 2xx
    kRetryable,  // back to queued, not before `next_attempt_at`
    kPermanent,  // failed: `reason` goes to last_error
  };
  Kind kind = Kind::kDelivered;
  Millis next_attempt_at = 0;  // kRetryable only (absolute, ms since epoch)
  // kRetryable: why it failed; kPermanent: why it is final. Valid UTF-8 without control
  // characters, whatever the agent answered (its body excerpt is made so: text_excerpt).
  std::string reason;
  // True when the agent itself looks unwell (transport error, timeout, 3xx/408/425/429/5xx):
  // these count towards `down_after`.
  bool agent_failure = false;
};

// Whether an HTTP status is retried (3xx, 408, 425, 429, 5xx). A 3xx is never followed.
bool is_retryable_status(int status);

// The exponential backoff before attempt `attempt + 1`: backoff_initial * 2^(attempt-1),
// capped at backoff_max, times (0.8 + 0.4 * draw) for ±20% jitter, never above backoff_max.
// `draw` is uniform in [0, 1).
Millis backoff_delay(int attempt, const RetryPolicy& policy, double draw);

// Parses Retry-After: delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT")
// relative to `now`. Returns the delay in ms (>= 0), or nullopt when unparsable.
std::optional<Millis> parse_retry_after(const std::string& value, Millis now);

// The decision after attempt number `attempt` (1-based, already counted) ended in `outcome`.
// Retry-After, when given and valid on a retryable answer, replaces the backoff, capped at
// backoff_max. A retryable outcome at attempt >= max_attempts is Permanent ("attempt budget
// spent"). A 3xx is retryable, its reason "redirect <status> to <Location> (not followed)".
RetryDecision decide_retry(int attempt, const CallOutcome& outcome, Millis now,
                           const RetryPolicy& policy, double draw);

}  // namespace iarelay
