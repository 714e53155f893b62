// The retry policy: classification of call outcomes, exponential backoff with jitter,
// Retry-After parsing, and the attempt budget.
#include "dispatch/retry_policy.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "common/utf8.h"

namespace iarelay {

bool is_retryable_status(int status) {
  return (status >= 300 && status <= 399) || status == 408 || status == 425 || status == 429 ||
         (status >= 500 && status <= 599);
}

Millis backoff_delay(int attempt, const RetryPolicy& policy, double draw) {
  const Millis cap = std::max<Millis>(policy.backoff_max, 0);
  double base = static_cast<double>(std::max<Millis>(policy.backoff_initial, 0));
  // Doubling stops at the cap; no overflow however large `attempt` is.
  for (int i = 1; i < attempt && base < static_cast<double>(cap); ++i) base *= 2;
  base = std::min(base, static_cast<double>(cap));
  draw = std::clamp(draw, 0.0, 1.0);
  double jittered = base * (0.8 + 0.4 * draw);
  return std::min<Millis>(static_cast<Millis>(std::llround(jittered)), cap);
}

std::optional<Millis> parse_retry_after(const std::string& value, Millis now) {
  std::string v = value;
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  size_t start = 0;
  while (start < v.size() && std::isspace(static_cast<unsigned char>(v[start]))) ++start;
  v = v.substr(start);
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) {
    if (v.size() > 9) return Millis{999'999'999} * 1000;  // absurdly long: the cap applies
    return static_cast<Millis>(std::stoll(v)) * 1000;
  }
  // HTTP-date (IMF-fixdate, RFC 850 or asctime); curl_getdate is a pure parser.
  time_t t = curl_getdate(v.c_str(), nullptr);
  if (t == -1) return std::nullopt;
  return std::max<Millis>(static_cast<Millis>(t) * 1000 - now, 0);
}

RetryDecision decide_retry(int attempt, const CallOutcome& outcome, Millis now,
                           const RetryPolicy& policy, double draw) {
  RetryDecision d;
  std::string why;
  if (outcome.kind == CallOutcome::Kind::kHttp) {
    if (outcome.status >= 200 && outcome.status <= 299) {
      d.kind = RetryDecision::Kind::kDelivered;
      return d;
    }
    why = "HTTP " + std::to_string(outcome.status);
    if (outcome.status >= 300 && outcome.status <= 399) {
      // Not followed (a signed body must not go elsewhere): the agent moved or is misconfigured
      // (an http -> https redirect, say), which its operator must fix; retried meanwhile.
      why = "redirect " + std::to_string(outcome.status) +
            (outcome.location ? " to " + *outcome.location : " without a Location") +
            " (not followed)";
    } else if (!outcome.body_excerpt.empty()) {
      // The answer's bytes are the agent's: any charset, cut anywhere. The reason is stored and
      // shown, so it is made valid UTF-8 here, cut on a character boundary.
      why += ": " + text_excerpt(outcome.body_excerpt, kBodyExcerptBytes);
    }
    if (!is_retryable_status(outcome.status)) {
      d.kind = RetryDecision::Kind::kPermanent;
      d.reason = why;
      return d;
    }
  } else {
    why = outcome.error.empty()
              ? (outcome.kind == CallOutcome::Kind::kTimeout ? "timeout" : "transport error")
              : text_excerpt(outcome.error, kBodyExcerptBytes);
  }
  d.agent_failure = true;
  if (attempt >= policy.max_attempts) {
    d.kind = RetryDecision::Kind::kPermanent;
    d.reason = "attempt budget spent (" + std::to_string(attempt) + " attempts); last: " + why;
    return d;
  }
  d.kind = RetryDecision::Kind::kRetryable;
  d.reason = why;
  Millis delay = backoff_delay(attempt, policy, draw);
  if (outcome.kind == CallOutcome::Kind::kHttp && outcome.retry_after) {
    if (auto ra = parse_retry_after(*outcome.retry_after, now))
      delay = std::min(*ra, std::max<Millis>(policy.backoff_max, 0));
  }
  d.next_attempt_at = now + delay;
  return d;
}

}  // namespace iarelay
