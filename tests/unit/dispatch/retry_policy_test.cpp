// The retry policy as a pure function: classification, backoff bounds and jitter, Retry-After
// (seconds and HTTP-date), caps and the attempt budget.
#include "dispatch/retry_policy.h"

#include <gtest/gtest.h>

namespace iarelay {
namespace {

constexpr Millis kNow = 1'800'000'000'000;  // 2027-01-15T08:00:00Z

CallOutcome http(int status, std::optional<std::string> retry_after = std::nullopt,
                 std::string body = "") {
  CallOutcome o;
  o.kind = CallOutcome::Kind::kHttp;
  o.status = status;
  o.retry_after = std::move(retry_after);
  o.body_excerpt = std::move(body);
  return o;
}

RetryPolicy policy(int max_attempts = 25, Millis initial = 1'000, Millis max = 300'000) {
  return RetryPolicy{max_attempts, initial, max};
}

TEST(RetryPolicy, TwoHundredsAreDelivered) {
  for (int s : {200, 201, 202, 204, 299})
    EXPECT_EQ(decide_retry(1, http(s), kNow, policy(), 0.5).kind, RetryDecision::Kind::kDelivered)
        << s;
}

TEST(RetryPolicy, RetryableStatusesAndTransportErrorsAreRetried) {
  for (int s : {408, 425, 429, 500, 502, 503, 504, 599}) {
    auto d = decide_retry(1, http(s), kNow, policy(), 0.5);
    EXPECT_EQ(d.kind, RetryDecision::Kind::kRetryable) << s;
    EXPECT_TRUE(d.agent_failure) << s;
  }
  CallOutcome refused;
  refused.kind = CallOutcome::Kind::kTransport;
  refused.error = "Connection refused";
  auto d = decide_retry(1, refused, kNow, policy(), 0.5);
  EXPECT_EQ(d.kind, RetryDecision::Kind::kRetryable);
  EXPECT_EQ(d.reason, "Connection refused");
  CallOutcome timeout;
  timeout.kind = CallOutcome::Kind::kTimeout;
  EXPECT_EQ(decide_retry(1, timeout, kNow, policy(), 0.5).kind, RetryDecision::Kind::kRetryable);
}

TEST(RetryPolicy, OtherClientErrorsFailAtOnceWithStatusAndExcerpt) {
  for (int s : {400, 401, 403, 404, 410, 422}) {
    auto d = decide_retry(1, http(s, std::nullopt, "no such script"), kNow, policy(), 0.5);
    EXPECT_EQ(d.kind, RetryDecision::Kind::kPermanent) << s;
    EXPECT_FALSE(d.agent_failure);
    EXPECT_EQ(d.reason, "HTTP " + std::to_string(s) + ": no such script");
  }
  // The excerpt is bounded even if the caller passed more.
  auto d = decide_retry(1, http(400, std::nullopt, std::string(2000, 'x')), kNow, policy(), 0.5);
  EXPECT_LE(d.reason.size(), std::string("HTTP 400: ").size() + kBodyExcerptBytes);
}

// Issue 11: the reason is stored (last_error, attempts.error) and shown by status and show,
// so it is valid UTF-8 whatever the agent answered: a Latin-1 error page, a UTF-8 character
// split by the dispatcher's cut of the body, control characters, a transport error's bytes.
TEST(RetryPolicy, ReasonIsValidUtf8WhateverTheAnswer) {
  auto d = decide_retry(1,
                        http(500, std::nullopt,
                             "Donn\xE9"
                             "es\r\n"),
                        kNow, policy(), 0.5);
  EXPECT_EQ(d.reason,
            "HTTP 500: Donn\xEF\xBF\xBD"
            "es  ");
  // The dispatcher keeps kBodyExcerptBytes + 3 bytes: U+00E9 at bytes 499-500 is whole, and
  // left out whole.
  std::string body = std::string(kBodyExcerptBytes - 1, 'y') + "\xC3\xA9" + "z";
  d = decide_retry(1, http(404, std::nullopt, body), kNow, policy(), 0.5);
  EXPECT_EQ(d.reason, "HTTP 404: " + std::string(kBodyExcerptBytes - 1, 'y'));
  CallOutcome refused;
  refused.kind = CallOutcome::Kind::kTransport;
  refused.error = "Could not resolve host: h\xFF\n";
  EXPECT_EQ(decide_retry(1, refused, kNow, policy(), 0.5).reason,
            "Could not resolve host: h\xEF\xBF\xBD ");
}

TEST(RetryPolicy, BackoffDoublesFromInitialAndCapsAtMax) {
  auto p = policy(25, 1'000, 60'000);
  EXPECT_EQ(backoff_delay(1, p, 0.5), 1'000);
  EXPECT_EQ(backoff_delay(2, p, 0.5), 2'000);
  EXPECT_EQ(backoff_delay(3, p, 0.5), 4'000);
  EXPECT_EQ(backoff_delay(6, p, 0.5), 32'000);
  EXPECT_EQ(backoff_delay(7, p, 0.5), 60'000);  // 64 s capped
  EXPECT_EQ(backoff_delay(1000, p, 0.5), 60'000);
  EXPECT_EQ(backoff_delay(1000, p, 0.999), 60'000);  // jitter never exceeds the cap
}

TEST(RetryPolicy, JitterStaysWithinTwentyPercent) {
  auto p = policy(25, 10'000, 300'000);
  EXPECT_EQ(backoff_delay(1, p, 0.0), 8'000);
  EXPECT_EQ(backoff_delay(1, p, 0.5), 10'000);
  EXPECT_NEAR(static_cast<double>(backoff_delay(1, p, 0.999999)), 12'000, 1);
  Millis lo = INT64_MAX, hi = 0;
  for (int i = 0; i < 1000; ++i) {
    Millis d = backoff_delay(3, p, i / 1000.0);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_EQ(lo, 32'000);
  EXPECT_GE(hi, 47'900);
  EXPECT_LE(hi, 48'000);
  auto d = decide_retry(3, http(503), kNow, p, 0.0);
  EXPECT_EQ(d.next_attempt_at, kNow + 32'000);
}

TEST(RetryPolicy, HonoursRetryAfterSeconds) {
  auto d = decide_retry(1, http(503, "7"), kNow, policy(), 0.5);
  EXPECT_EQ(d.kind, RetryDecision::Kind::kRetryable);
  EXPECT_EQ(d.next_attempt_at, kNow + 7'000);
  d = decide_retry(1, http(429, " 0 "), kNow, policy(), 0.5);
  EXPECT_EQ(d.next_attempt_at, kNow);
}

TEST(RetryPolicy, HonoursRetryAfterHttpDate) {
  // kNow is 2027-01-15T08:00:00Z; the agent asks for 90 s later.
  auto d = decide_retry(1, http(503, "Fri, 15 Jan 2027 08:01:30 GMT"), kNow, policy(), 0.5);
  EXPECT_EQ(d.next_attempt_at, kNow + 90'000);
  // A date in the past means now.
  d = decide_retry(1, http(503, "Thu, 14 Jan 2027 08:00:00 GMT"), kNow, policy(), 0.5);
  EXPECT_EQ(d.next_attempt_at, kNow);
  EXPECT_EQ(parse_retry_after("Fri, 15 Jan 2027 08:01:30 GMT", kNow), 90'000);
}

TEST(RetryPolicy, RetryAfterIsCappedAtBackoffMax) {
  auto p = policy(25, 1'000, 60'000);
  EXPECT_EQ(decide_retry(1, http(503, "3600"), kNow, p, 0.5).next_attempt_at, kNow + 60'000);
  EXPECT_EQ(decide_retry(1, http(503, "99999999999999"), kNow, p, 0.5).next_attempt_at,
            kNow + 60'000);
  EXPECT_EQ(
      decide_retry(1, http(503, "Sat, 01 Jan 2028 00:00:00 GMT"), kNow, p, 0.5).next_attempt_at,
      kNow + 60'000);
}

TEST(RetryPolicy, UnparsableRetryAfterFallsBackToBackoff) {
  auto d = decide_retry(2, http(503, "soon"), kNow, policy(), 0.5);
  EXPECT_EQ(d.next_attempt_at, kNow + 2'000);
  EXPECT_FALSE(parse_retry_after("", kNow));
  EXPECT_FALSE(parse_retry_after("-5", kNow));
}

TEST(RetryPolicy, BudgetSpentFailsAtMaxAttempts) {
  auto p = policy(3);
  EXPECT_EQ(decide_retry(2, http(500), kNow, p, 0.5).kind, RetryDecision::Kind::kRetryable);
  auto d = decide_retry(3, http(500, std::nullopt, "boom"), kNow, p, 0.5);
  EXPECT_EQ(d.kind, RetryDecision::Kind::kPermanent);
  EXPECT_EQ(d.reason.rfind("attempt budget spent (3 attempts)", 0), 0u) << d.reason;
  EXPECT_NE(d.reason.find("HTTP 500: boom"), std::string::npos);
  // A success on the last attempt is still a success.
  EXPECT_EQ(decide_retry(3, http(204), kNow, p, 0.5).kind, RetryDecision::Kind::kDelivered);
  // A client error on the last attempt is reported as such, not as the budget.
  EXPECT_EQ(decide_retry(3, http(404), kNow, p, 0.5).reason, "HTTP 404");
}

// An agent answering 3xx (an http -> https redirect, say) is an agent-side problem: the redirect
// is not followed (a signed body must not go elsewhere) but retried with backoff like a 5xx,
// counted towards down_after, and the error says where the agent pointed.
TEST(RetryPolicy, RedirectIsRetriedAsAnAgentFailureNamingTheLocation) {
  for (int s : {300, 301, 302, 303, 307, 308}) {
    CallOutcome o = http(s, std::nullopt, "<html>moved</html>");
    o.location = "https://agent.example.net/apia_callback";
    auto d = decide_retry(1, o, kNow, policy(25, 1'000, 300'000), 0.5);
    EXPECT_EQ(d.kind, RetryDecision::Kind::kRetryable) << s;
    EXPECT_TRUE(d.agent_failure) << s;
    EXPECT_EQ(d.next_attempt_at, kNow + 1'000) << s;
    EXPECT_EQ(
        d.reason.rfind(
            "redirect " + std::to_string(s) + " to https://agent.example.net/apia_callback", 0),
        0u)
        << d.reason;
  }
  CallOutcome bare = http(302);
  auto d = decide_retry(1, bare, kNow, policy(), 0.5);
  EXPECT_EQ(d.kind, RetryDecision::Kind::kRetryable);
  EXPECT_EQ(d.reason.rfind("redirect 302 without a Location", 0), 0u) << d.reason;
  // Retry-After on a redirect is honoured like on any retryable answer.
  CallOutcome later = http(301, "7");
  later.location = "https://x/";
  EXPECT_EQ(decide_retry(1, later, kNow, policy(), 0.5).next_attempt_at, kNow + 7'000);
  // The budget applies: the last attempt fails the webhook, still naming the Location.
  CallOutcome last = http(301);
  last.location = "https://agent.example.net/apia_callback";
  auto spent = decide_retry(5, last, kNow, policy(5), 0.5);
  EXPECT_EQ(spent.kind, RetryDecision::Kind::kPermanent);
  EXPECT_TRUE(spent.agent_failure);
  EXPECT_NE(spent.reason.find("redirect 301 to https://agent.example.net/apia_callback"),
            std::string::npos)
      << spent.reason;
}

}  // namespace
}  // namespace iarelay
