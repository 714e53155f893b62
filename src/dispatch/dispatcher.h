// The dispatcher (docs/architecture.md, "Routing" to "Calling apia_callback"): calls each agent's
// apia_callback from its journal queue with libcurl's multi interface, per-agent max_inflight and
// ordering keys, retries with backoff, agent availability (down/probe/up, operator pauses read from
// the journal) and failover. Every attempt and outcome is journaled through the Writer. Runs on its
// own thread.
//
// How it works (details in dispatcher_impl.h and the files it names):
// - Work is read by index (scan_queue) in pages of 256, so memory stays flat whatever the
//   backlog. Each fill walks at most 4096 rows from the head of the agent's queue and, when
//   those hold nothing to send, up to 4096 more from where the previous fill stopped (a cursor
//   that wraps at the end of the queue; one window per 50 ms, a new pass 1 s after the last
//   reached the end), so due webhooks behind thousands of backing-off ones are found within a
//   few loop turns. A row found past the head window is sent only if no
//   earlier queued webhook of its ordering key exists (asked of the journal, by event index;
//   `ordering = none` has no constraint). With `ordering = fifo` nothing is sent past the head:
//   no walk past it is made. A reload (SIGHUP) starts the walk afresh from the head, and while
//   webhooks claimed under an ordering a reload changed are in hand, nothing new is claimed.
//   A webhook is claimed (queued → inflight, attempts + 1, one Writer op per batch) and sent
//   only once the claim is durable; its outcome and the attempts row are journaled
//   asynchronously, and its ordering key stays busy until that commit, so a later webhook of
//   the same alert never overtakes it. Under event ordering a delivered webhook's outcome op
//   also claims the alert's next webhook when the journal, in that transaction, shows it may
//   go (a chain step: one commit per step, no walk; see Chain in chain_step.h). The
//   dispatcher's claims and outcomes are submitted quiet: their commits do not wake it.
// - A webhook whose type the agent's `kinds` leave out is not claimed: picked like any other
//   (its key busy), it goes queued → discarded with the reason, no call and no attempt.
//   The call's URL is the agent's callback with {domain} and {service} filled in.
// - One webhook never stops the thread: a problem of the webhook itself while preparing its
//   call (payload missing, ia conversion) fails that webhook; a local error with no call made
//   (reading the payload, starting the call) requeues it with its attempt given back
//   (max_attempts counts real attempts; X-Iarelay-Attempt stays consecutive), due again after
//   a per-agent backoff (100 ms doubling to 5 s). Errors of the read connection (scans, pauses,
//   the agents table) are logged and backed off (100 ms doubling to 5 s; each agent's queue
//   scan and failover sweep on its own, so one agent's failing read holds back no other), and
//   the connection is reopened after 3 reads failed in a row. Values from the
//   journal put into headers lose their control characters (no header injection). An outcome
//   whose journal write fails is written again on its own, so it cannot hold back others.
// - Operator changes (pause, resume, resend) are seen by polling PRAGMA data_version every
//   250 ms (and reloading the agents table at least once a second).
// - Availability: `down_after` consecutive agent failures (transport errors, timeouts, 3xx,
//   408, 425, 429, 5xx) make an agent down; while down one probe (the oldest webhook, due or not)
//   is sent at 1 s, 2 s, 4 s ... 30 s. A probe that finds the agent unreachable never spends
//   the webhook's last attempt: a webhook does not fail because its agent was away. When the
//   agent answers again, webhooks backed off during the outage are due at once.
// - Any HTTP answer that is not an agent failure (2xx, other 4xx) counts as the agent being up.
// - A 3xx is never followed (a signed body must not go elsewhere); its Location goes to the
//   error. Callbacks go direct (no *_proxy variables) unless the agent names its own `proxy`.
// - A reload applies to running agents too: a new down_after from the next failure, a new
//   ordering once the webhooks claimed under the old one are done, a secret that cannot be read
//   keeps the key the agent had (the daemon refuses such a reload before it gets here).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "common/time.h"

namespace iarelay {

class AgentLeases;
class JournalBackend;
class JournalWriter;
class AgentDirectory;
class Metrics;

struct DispatcherContext {
  JournalWriter* writer = nullptr;      // not owned
  AgentDirectory* directory = nullptr;  // not owned; agents' configuration and availability
  Metrics* metrics = nullptr;           // not owned
  std::string journal_path;             // for its own read connection
  // Opens the dispatcher's own read connection to the journal (again after failing reads).
  // Unset: the SQLite journal at journal_path.
  std::function<Result<std::unique_ptr<JournalBackend>>()> open_reader;
  // Not owned. Set (PostgreSQL, several relays): delivers only to the agents whose lease this
  // relay holds, and fences each write for an agent by the epoch it was made under. Unset: this
  // relay owns every agent.
  AgentLeases* leases = nullptr;
};

class Dispatcher {
 public:
  // Expects inflight webhooks to have been requeued already (the daemon does it at start).
  static Result<std::unique_ptr<Dispatcher>> start(DispatcherContext ctx);
  virtual ~Dispatcher() = default;
  // Stops taking new work; waits up to `grace` for calls in flight (their outcomes are
  // journaled), then abandons the rest (they stay inflight and are requeued at next start).
  virtual void stop(Millis grace) = 0;
  // The directory's agents changed (SIGHUP): pick up new callbacks, secrets and limits.
  virtual void reconfigured() = 0;
  // Something changed in the journal that may create work (a new webhook was queued).
  // `appends_only`: the change was only new rows (Writer::submit_append: intake, the poller),
  // so each agent's queue needs reading only past the rows its last walk saw.
  virtual void wake(bool appends_only) = 0;
  // Heartbeat for /readyz and the watchdog: true while the dispatcher thread runs and has gone
  // round its loop within the last kHeartbeatWithin; false once it has stopped. Any thread.
  static constexpr Millis kHeartbeatWithin = 10'000;
  virtual bool alive() const = 0;
};

}  // namespace iarelay
