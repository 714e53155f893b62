// Calls to agents through libcurl (http_call.h): a call's body, headers and options, its start
// on the multi handle, and its answer read into a CallOutcome for outcomes.cpp.
#include "dispatch/http_call.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "common/utf8.h"
#include "dispatch/ia_format.h"
#include "dispatch/retry_policy.h"
#include "dispatch/signature.h"
#include "journal/store.h"

namespace iarelay::dispatch_internal {

std::string truncate(const std::string& s, std::size_t n) {
  return text_excerpt(s, n);
}

std::string header_value(std::string_view raw) {
  const std::string v = replace_invalid_utf8(raw);
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7F) out.push_back(c);
  }
  return out;
}

namespace {

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* call = static_cast<Call*>(user);
  size_t bytes = size * n;
  if (call->excerpt.size() < kBodyBytesKept)
    call->excerpt.append(data, std::min(bytes, kBodyBytesKept - call->excerpt.size()));
  return bytes;  // the rest of the body is read and dropped
}

// The trimmed value when `line` is the header `name` (lower case, with its colon).
std::optional<std::string> header_named(std::string_view line, std::string_view name) {
  if (line.size() <= name.size()) return std::nullopt;
  for (size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return std::nullopt;
  std::string v(line.substr(name.size()));
  while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
  while (!v.empty() && v.front() == ' ') v.erase(v.begin());
  return v;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* call = static_cast<Call*>(user);
  std::string_view line(data, size * n);
  if (auto v = header_named(line, "retry-after:")) call->retry_after = std::move(*v);
  // The agent's bytes go to last_error and attempts.error: bounded, UTF-8, no control chars.
  if (auto v = header_named(line, "location:"))
    call->location = header_value(std::string_view(*v).substr(0, 300));
  return size * n;
}

}  // namespace

CURL* DispatcherImpl::take_easy() {
  if (!easy_pool_.empty()) {
    CURL* e = easy_pool_.back();
    easy_pool_.pop_back();
    curl_easy_reset(e);
    return e;
  }
  return curl_easy_init();
}

// Prepares and starts the call. Anything that goes wrong before the request is under way
// fails this webhook alone (or, for a read error, retries it): never the loop.
void DispatcherImpl::start_call(Agent& a, InHand item) {
  const Millis now = now_millis();
  auto call = std::make_unique<Call>();
  std::string problem;
  bool retry = false;
  try {
    prepare_call(a, item, *call, now);
  } catch (const JournalError& e) {
    // The read connection, not the webhook: retried with the attempt given back (no call was
    // made; max_attempts counts real attempts), backed off while such errors go on.
    read_failed(nullptr, "payload", e.what());
    problem = std::string("reading the payload failed: ") + e.what();
    retry = true;
  } catch (const std::exception& e) {
    problem = std::string("cannot prepare the call: ") + e.what();
  }
  if (problem.empty() && !call->problem.empty()) problem = std::move(call->problem);
  CURLMcode added = CURLM_OK;
  if (problem.empty()) {
    call->agent = &a;
    call->item = std::move(item);
    call->started_at = now;
    call->steady_start = steady_millis();
    added = curl_multi_add_handle(multi_, call->easy);
    if (added == CURLM_OK) {
      a.local_backoff = 0;
      ++a.calls;
      ++outstanding_;
      calls_.insert(call.release());
      return;
    }
    item = std::move(call->item);
    problem = std::string("cannot start the call: ") + curl_multi_strerror(added);
    retry = true;
  }
  if (call->easy) easy_pool_.push_back(call->easy);
  curl_slist_free_all(call->headers);
  spdlog::warn("webhook {} for {}: {}", item.w.id, a.cfg.id, truncate(problem, 200));
  CallOutcome none;
  RetryDecision d;
  d.reason = problem;
  if (retry) {
    // A local error, no call made: back to queued with the attempt given back (finish does it
    // for calls not made), so the next try sends the same X-Iarelay-Attempt.
    a.local_backoff = std::clamp<Millis>(a.local_backoff * 2, kReadBackoffMin, kReadBackoffMax);
    d.kind = RetryDecision::Kind::kRetryable;
    d.next_attempt_at = now + a.local_backoff;
  } else {
    // A problem of this webhook (no payload, cannot be converted): fail it at once.
    d.kind = RetryDecision::Kind::kPermanent;
  }
  finish(a, std::move(item), none, d, now, 0, /*called=*/false);
}

// The body, headers and options of one call; sets call.problem for a webhook that cannot be
// sent; throws on errors of the read connection (JournalError) or anything unforeseen.
void DispatcherImpl::prepare_call(const Agent& a, const InHand& item, Call& call, Millis now) {
  const auto& w = item.w;
  std::optional<std::string> payload;
  with_reader([&](JournalTx& tx) { payload = tx.load_payload(w.id); });
  if (!payload) {
    call.problem = "payload missing from the journal";
    return;
  }
  if (a.cfg.format == AgentFormat::kIa) {
    auto converted = to_ia_message(w.type, *payload);
    if (!converted) {
      call.problem = "cannot convert payload to the ia format: " + converted.status().message();
      return;
    }
    call.body = std::move(*converted);
  } else {
    call.body = std::move(*payload);
  }
  // The id is signed as sent: both come from the same cleaned value.
  const std::string id = header_value(w.id);
  const std::string ts = std::to_string(now / 1000);
  auto add = [&](const std::string& h) {
    curl_slist* next = curl_slist_append(call.headers, h.c_str());
    if (!next) throw std::runtime_error("out of memory for headers");
    call.headers = next;
  };
  add("Content-Type: application/json");
  add("webhook-id: " + id);
  add("webhook-timestamp: " + ts);
  if (!a.signing_key.empty())
    add("webhook-signature: " + sign_webhook(a.signing_key, id, ts, call.body));
  add("X-Iarelay-Attempt: " + std::to_string(item.attempt));
  add("X-Iarelay-Service: " + header_value(w.service));
  add("X-Iarelay-Type: " + header_value(w.type));
  add("Expect:");
  call.easy = take_easy();
  if (!call.easy) throw std::runtime_error("curl_easy_init failed");
  CURL* e = call.easy;
  // {domain} and {service} filled in for this webhook (libcurl copies the string).
  curl_easy_setopt(e, CURLOPT_URL, callback_url(a.cfg, w.service).c_str());
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, call.body.data());
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, call.headers);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<Millis>(a.cfg.timeout, 1)));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &call);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &call);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call.errbuf);
  curl_easy_setopt(e, CURLOPT_PRIVATE, &call);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "iarelay/" IARELAY_VERSION);
  // Direct unless the agent names its own proxy: "" keeps libcurl from applying http_proxy,
  // https_proxy or all_proxy (meant for the upstream poller) to agents' payloads; an agent's
  // proxy is explicit, so no_proxy does not bypass it.
  curl_easy_setopt(e, CURLOPT_PROXY, a.cfg.proxy.c_str());
  curl_easy_setopt(e, CURLOPT_NOPROXY, "");
  // Never followed: a signed body must not go elsewhere (a 3xx is retried, see retry_policy).
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
}

bool DispatcherImpl::read_finished_calls() {
  bool any = false;
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    any = true;
    Call* call = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &call);
    CURLcode rc = msg->data.result;
    curl_multi_remove_handle(multi_, call->easy);
    // Should recording fail, the webhook stays inflight (requeued at next start); the loop
    // goes on.
    guarded("recording a call", [&] { on_call_done(call, rc); });
  }
  return any;
}

void DispatcherImpl::on_call_done(Call* call, CURLcode rc) {
  Agent& a = *call->agent;
  const Millis now = now_millis();
  const Millis duration = steady_millis() - call->steady_start;
  CallOutcome outcome;
  if (rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    outcome.kind = CallOutcome::Kind::kHttp;
    outcome.status = static_cast<int>(status);
    outcome.retry_after = call->retry_after;
    outcome.location = call->location;
    outcome.body_excerpt = call->excerpt;
  } else {
    outcome.kind = rc == CURLE_OPERATION_TIMEDOUT ? CallOutcome::Kind::kTimeout
                                                  : CallOutcome::Kind::kTransport;
    outcome.error = call->errbuf[0] ? std::string(call->errbuf) : curl_easy_strerror(rc);
  }
  calls_.erase(call);
  easy_pool_.push_back(call->easy);
  curl_slist_free_all(call->headers);
  --a.calls;
  --outstanding_;
  InHand item = std::move(call->item);
  Millis started = call->started_at;
  delete call;

  RetryPolicy policy{a.cfg.max_attempts, a.cfg.backoff_initial, a.cfg.backoff_max};
  RetryDecision d = decide_retry(item.attempt, outcome, now, policy, draw_(rng_));
  if (item.probe && d.kind == RetryDecision::Kind::kPermanent && d.agent_failure &&
      outcome.kind != CallOutcome::Kind::kHttp) {
    // A probe that found the agent unreachable says nothing about the webhook: it keeps
    // waiting for its agent instead of failing on the budget (documented in the header).
    d.kind = RetryDecision::Kind::kRetryable;
    d.next_attempt_at = now;
  }
  if (a.duration) a.duration->observe(static_cast<double>(duration) / 1000.0);
  track_health(a, item, d);
  finish(a, std::move(item), outcome, d, started, duration, /*called=*/true);
}

}  // namespace iarelay::dispatch_internal
