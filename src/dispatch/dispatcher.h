// The dispatcher (SPEC §1, §5): calls each agent's apia_callback from its journal queue with
// libcurl's multi interface, per-agent max_inflight and ordering keys, retries with backoff,
// agent availability (down/probe/up, operator pauses read from the journal) and failover.
// Every attempt and outcome is journaled through the Writer. Runs on its own thread.
//
// How it works (details in dispatcher.cpp):
// - Work is read by index (scan_queue) in pages of 256, at most 4096 rows walked per fill, so
//   memory stays flat whatever the backlog. A webhook is claimed (queued → inflight, attempts
//   + 1, one Writer op per batch) and sent only once the claim is durable; its outcome and the
//   attempts row are journaled asynchronously, and its ordering key stays busy until that
//   commit, so a later webhook of the same alert never overtakes it.
// - Operator changes (pause, resume, resend) are seen by polling PRAGMA data_version every
//   250 ms (and reloading the agents table at least once a second).
// - Availability: `down_after` consecutive agent failures (transport errors, timeouts, 408,
//   425, 429, 5xx) make an agent down; while down one probe (the oldest webhook, due or not)
//   is sent at 1 s, 2 s, 4 s ... 30 s. A probe that finds the agent unreachable never spends
//   the webhook's last attempt: a webhook does not fail because its agent was away. When the
//   agent answers again, webhooks backed off during the outage are due at once.
// - Any HTTP answer that is not an agent failure (2xx, other 4xx) counts as the agent being up.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "common/time.h"

namespace iarelay {

class Writer;
class AgentDirectory;
class Metrics;

struct DispatcherContext {
  Writer* writer = nullptr;             // not owned
  AgentDirectory* directory = nullptr;  // not owned; agents' configuration and availability
  Metrics* metrics = nullptr;           // not owned
  std::string journal_path;             // for its own read connection
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
  virtual void wake() = 0;
};

}  // namespace iarelay
