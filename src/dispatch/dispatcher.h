// The dispatcher (SPEC §1, §5): calls each agent's apia_callback from its journal queue with
// libcurl's multi interface, per-agent max_inflight and ordering keys, retries with backoff,
// agent availability (down/probe/up, operator pauses read from the journal) and failover.
// Every attempt and outcome is journaled through the Writer. Runs on its own thread.
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
