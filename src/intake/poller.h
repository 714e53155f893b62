// Indirect mode (docs/deployment.md, [upstream]): long-polls another relay's feed, stores each
// batch and the cursor in one transaction, then acks. Redelivered batches are stored once (dedup on
// source and id). Upstream failures back off with jitter and are logged and counted. A message
// that cannot be admitted is stored as failed (never dropped: the upstream is acked past it).
// An upstream whose newest seq is below the cursor (its journal restored from a backup) is
// logged, counted and the cursor rewound to it, so what it assigns next is not skipped. An
// answer over the size limit makes the poller ask for fewer messages, not retry forever.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/status.h"

namespace iarelay {

class JournalBackend;
class JournalWriter;
class AgentDirectory;
class Metrics;

struct PollerContext {
  JournalWriter* writer = nullptr;      // not owned
  AgentDirectory* directory = nullptr;  // not owned
  Metrics* metrics = nullptr;           // not owned
  std::string journal_path;             // to read the stored cursor at start
  // Opens a read connection of its own to the journal (either backend). Unset: the SQLite
  // journal at journal_path.
  std::function<Result<std::unique_ptr<JournalBackend>>()> open_reader;
  UpstreamConfig upstream;
  std::string token;  // bearer token for the upstream, may be empty
  // A feed answer larger than this is refused (not buffered); the poller asks the upstream for
  // at most a quarter of it per answer (max_bytes), and for fewer messages when one is refused.
  size_t max_response_bytes = 512u << 20;
};

class Poller {
 public:
  static Result<std::unique_ptr<Poller>> start(PollerContext ctx);
  virtual ~Poller() = default;
  // Stops polling (an in-progress long-poll is abandoned; its batch is not stored or acked).
  virtual void stop() = 0;
  // The heartbeat: true while the poll thread runs and has gone round within the last
  // kHeartbeatSeconds (it beats at least once a second while it waits on the network or backs
  // off); false once it has exited (stop(), or an unexpected error) or is stuck. Any thread.
  virtual bool alive() const = 0;
  static constexpr int kHeartbeatSeconds = 60;
};

}  // namespace iarelay
