// Indirect mode (SPEC §4.2, [upstream]): long-polls another relay's feed, stores each batch and
// the cursor in one transaction, then acks. Redelivered batches are stored once (dedup on
// source and id). Upstream failures back off with jitter and are logged and counted.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "common/status.h"

namespace iarelay {

class Writer;
class AgentDirectory;
class Metrics;

struct PollerContext {
  Writer* writer = nullptr;             // not owned
  AgentDirectory* directory = nullptr;  // not owned
  Metrics* metrics = nullptr;           // not owned
  std::string journal_path;             // to read the stored cursor at start
  UpstreamConfig upstream;
  std::string token;  // bearer token for the upstream, may be empty
};

class Poller {
 public:
  static Result<std::unique_ptr<Poller>> start(PollerContext ctx);
  virtual ~Poller() = default;
  // Stops polling (an in-progress long-poll is abandoned; its batch is not stored or acked).
  virtual void stop() = 0;
};

}  // namespace iarelay
