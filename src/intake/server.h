// The HTTP listener of iarelayd (docs/architecture.md "HTTP endpoints"): direct intake POST
// /v1/webhooks/{service}, the edge feed (GET /v1/feed, POST /v1/feed/ack) and admin (/healthz,
// /readyz, /metrics, /v1/status). The /v1 routes need a listen token when any is configured
// (auth.h); the routes never see the `token` query parameter. A 202 is sent only after the
// webhook's group commit is durable. Handlers never throw past the routing boundary. start() binds
// and serves on its own threads; stop() is idempotent.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/status.h"
#include "intake/auth.h"

namespace iarelay {

class JournalBackend;
class JournalWriter;
class AgentDirectory;
class Metrics;

struct ServerContext {
  JournalWriter* writer = nullptr;      // not owned; outlives the server
  AgentDirectory* directory = nullptr;  // not owned
  Metrics* metrics = nullptr;           // not owned
  std::string journal_path;             // for read connections (feed, status)
  // Opens a read connection of its own to the journal (either backend). Unset: the SQLite
  // journal at journal_path.
  std::function<Result<std::unique_ptr<JournalBackend>>()> open_reader;
  ListenConfig listen;
  ListenCredentials credentials;             // no tokens: no authentication
  std::function<std::string()> status_json;  // body of GET /v1/status
  std::function<bool()> ready;               // GET /readyz: 200 when true
};

class Server {
 public:
  // Binds listen.address (port 0: an ephemeral port) and starts serving.
  static Result<std::unique_ptr<Server>> start(ServerContext ctx);
  virtual ~Server() = default;
  // Stops accepting and returns when handlers have finished.
  virtual void stop() = 0;
  virtual int port() const = 0;
  // Wakes feed long-polls; call after each journal commit.
  virtual void notify_committed() = 0;
  // Replaces the accepted credentials (a reload re-read the token file); requests whose check
  // has not begun are checked against the new ones. Any thread.
  virtual void set_credentials(const ListenCredentials& credentials) = 0;
};

// The 413 answer for a body over `max_body` bytes, naming the limit and its key:
// "body is larger than 1 MiB ([listen] max_body = 1MiB)".
std::string body_too_large_message(std::int64_t max_body);

}  // namespace iarelay
