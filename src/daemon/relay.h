// The running relay: owns the journal writer, the agent directory, metrics, the HTTP server,
// the poller, the dispatcher and the janitor, built in dependency order and torn down in
// reverse. start() and stop() are called from the main thread only; reload() too.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/metrics.h"
#include "common/status.h"
#include "journal/journal.h"

namespace iarelay {

class AgentDirectory;
class DaemonLock;
class Dispatcher;
class JournalBackend;
class JournalTx;
class JournalWriter;
class PgLeaseKeeper;
class PgNotifier;
class PgConnection;
class Poller;
class Server;
class Writer;

// Every agent's secret can be read and used as a signing key (docs/architecture.md, "Calling
// apia_callback"): ok, or the configuration error of the first agent whose secret cannot, naming
// the configuration file, the agent's section and the secret's file or environment variable. Reads
// the secrets.
Status check_agent_secrets(const Config& config);

// The keys a reload cannot apply (their `reloadable` is false) whose value differs between the
// running configuration and a fresh one: ("[listen] address", (running value, fresh value)),
// in the key table's order. A reload logs each and keeps the running value.
std::vector<std::pair<std::string, std::pair<std::string, std::string>>> restart_keys(
    const Config& running, const Config& fresh);

class Relay {
 public:
  explicit Relay(Config config);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Reads the agents' secrets (check_agent_secrets), takes the journal lock, opens and migrates
  // the journal, requeues inflight webhooks and starts every configured part. On failure
  // everything started is stopped again.
  Status start();
  // Stops intake and polling, lets in-flight calls finish up to drain_grace, drains the
  // writer. Idempotent.
  void stop();
  // SIGHUP: re-reads the configuration file; agents, services, log level and retention take
  // effect; a bad file, or an agent secret that cannot be read, keeps the running
  // configuration and says why. An agent that signed and no longer has a secret is warned of.
  Status reload(const ConfigOverrides& overrides);
  // Listening port (0 without a listener).
  int port() const;
  // Whether the relay is ready: ok, or why not (the last journal commit failed, or anything
  // liveness() reports). Drives /readyz. Any thread.
  Status health() const;
  // Whether the relay can still do its job without a restart: not ok when the writer failed
  // for good or the dispatcher's or poller's thread is not running. Drives the systemd
  // watchdog; a transient failure (a full disk that may be freed) does not. Any thread.
  Status liveness() const;
  // Whether the journal writer can never write again (an fdatasync failed): the daemon exits
  // non-zero so that systemd restarts it and SQLite recovers the WAL. Any thread.
  bool writer_failed_for_good() const;

 private:
  Status open_sqlite();
  Status open_postgresql();
  Status read_journal(const std::function<void(JournalTx&)>& op);
  std::size_t held_count() const;
  std::string status_document();
  std::string pg_status_json();
  void janitor_loop();
  // One retention pass on the janitor's connection `db` (opened when null, dropped on error).
  void purge_expired(DatabasePtr& db, Millis before, const std::string& age);
  void purge_expired_pg(std::unique_ptr<PgConnection>& db, Millis before, const std::string& age);
  void purge_expired_pg_once(std::unique_ptr<PgConnection>& db, Millis before,
                             const std::string& age);
  void register_collectors();
  // The start's and each reload's warning when a delivering relay has no agent.
  void warn_if_no_agents();

  Config config_;
  std::set<std::string> signing_agents_;  // ids of the agents that sign; main thread only
  // What the last reload could not apply (restart_keys); shown by /v1/status.
  // GUARDED_BY(config_mu_)
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> restart_needed_;
  std::mutex config_mu_;  // guards config_ between reload() and the janitor / status
  Metrics metrics_;
  std::unique_ptr<DaemonLock> lock_;
  // The journal's writer (either backend); sqlite_writer_ is it on SQLite (null on
  // PostgreSQL), for what only SQLite has (raw connection work, its commit statistics).
  std::unique_ptr<JournalWriter> writer_;
  Writer* sqlite_writer_ = nullptr;
  // Opens a read connection of its own (any thread; the feed's, the poller's, the start's).
  std::function<Result<std::unique_ptr<JournalBackend>>()> open_reader_;
  std::unique_ptr<PgNotifier> notifier_;       // PostgreSQL: wake-ups between relays
  std::unique_ptr<PgLeaseKeeper> leases_;      // PostgreSQL: this relay's agent leases
  std::string relay_id_;                       // PostgreSQL: its owner name in the lease rows
  std::atomic<bool> dispatcher_ready_{false};  // the lease keeper may wake the dispatcher
  std::unique_ptr<AgentDirectory> directory_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Poller> poller_;
  std::thread janitor_;
  std::mutex janitor_mu_;
  std::condition_variable janitor_cv_;
  bool stopping_ = false;  // GUARDED_BY(janitor_mu_)
  bool stopped_ = false;
};

}  // namespace iarelay
