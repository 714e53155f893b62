// Wiring of the relay's parts, their start and stop order, reload, and scrape-time metrics.
#include "daemon/relay.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <random>
#include <set>

#include "common/log.h"
#include "common/tokens.h"
#include "dispatch/dispatcher.h"
#include "dispatch/signature.h"
#include "intake/poller.h"
#include "intake/server.h"
#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_admin.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_lease_keeper.h"
#include "journal/pg/pg_notifier.h"
#include "journal/pg/pg_writer.h"
#include "journal/routing.h"
#include "journal/status_report.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay {

namespace {

std::string shown(const std::string& v) {
  return v.empty() ? "(unset)" : v;
}

}  // namespace

std::vector<std::pair<std::string, std::pair<std::string, std::string>>> restart_keys(
    const Config& running, const Config& fresh) {
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> out;
  auto note = [&](const std::string& key, const std::string& was, const std::string& now) {
    if (was != now) out.push_back({key, {shown(was), shown(now)}});
  };
  auto sync = [](SyncLevel s) { return std::string(s == SyncLevel::kFull ? "full" : "normal"); };
  note("journal", journal_for_display(running.journal), journal_for_display(fresh.journal));
  note("sync", sync(running.sync), sync(fresh.sync));
  note("lease", format_duration(running.lease), format_duration(fresh.lease));
  note("log_format", running.log_format, fresh.log_format);
  const ListenConfig no_listen{"", "", 0, 0, "", "", ""};
  const ListenConfig& a = running.listen ? *running.listen : no_listen;
  const ListenConfig& b = fresh.listen ? *fresh.listen : no_listen;
  if (running.listen.has_value() != fresh.listen.has_value())
    note("[listen]", running.listen ? "present" : "absent", fresh.listen ? "present" : "absent");
  note("[listen] address", a.address, b.address);
  note("[listen] token_file", a.token_file, b.token_file);
  note("[listen] max_body", a.max_body ? std::to_string(a.max_body) + " bytes" : "",
       b.max_body ? std::to_string(b.max_body) + " bytes" : "");
  note("[listen] max_connections", a.max_connections ? std::to_string(a.max_connections) : "",
       b.max_connections ? std::to_string(b.max_connections) : "");
  note("[listen] tls_cert", a.tls_cert, b.tls_cert);
  note("[listen] tls_key", a.tls_key, b.tls_key);
  if (running.upstream.has_value() != fresh.upstream.has_value())
    note("[upstream]", running.upstream ? "present" : "absent",
         fresh.upstream ? "present" : "absent");
  if (running.upstream && fresh.upstream) {
    const UpstreamConfig& u = *running.upstream;
    const UpstreamConfig& v = *fresh.upstream;
    note("[upstream] url", u.url, v.url);
    note("[upstream] token_file", u.token_file, v.token_file);
    note("[upstream] name", u.name, v.name);
    note("[upstream] consumer", u.consumer, v.consumer);
    note("[upstream] poll_wait", format_duration(u.poll_wait), format_duration(v.poll_wait));
    note("[upstream] batch", std::to_string(u.batch), std::to_string(v.batch));
    note("[upstream] proxy", u.proxy, v.proxy);
    note("[upstream] ca_file", u.ca_file, v.ca_file);
  }
  return out;
}

namespace {

// The identifiers of the agents that sign, reading every agent's secret; the first secret that
// cannot be read or used is a configuration error.
Result<std::set<std::string>> signing_agents(const Config& config) {
  std::set<std::string> out;
  for (const auto& a : config.agents) {
    auto key = agent_signing_key(a);
    if (!key)
      return Status::invalid_argument((config.file.empty() ? "" : config.file + ": ") +
                                      key.status().message());
    if (!key->empty()) out.insert(a.id);
  }
  return out;
}

// The identifiers of the configured agents (the leases a relay holds).
std::vector<std::string> agent_ids(const Config& config) {
  std::vector<std::string> ids;
  for (const auto& a : config.agents) ids.push_back(a.id);
  return ids;
}

}  // namespace

Status check_agent_secrets(const Config& config) {
  auto signing = signing_agents(config);
  return signing ? Status::ok() : signing.status();
}

Relay::Relay(Config config) : config_(std::move(config)) {}

Relay::~Relay() {
  stop();
}

int Relay::port() const {
  return server_ ? server_->port() : 0;
}

Status Relay::health() const {
  if (Status s = liveness(); !s) return s;
  if (!writer_->healthy()) return Status::unavailable("the last journal commit failed");
  return Status::ok();
}

Status Relay::liveness() const {
  // Read without a lock: the parts are set in start() before anything calls this, and reset
  // only in stop(), after the listener and the monitor (the only other callers) have stopped.
  if (!writer_) return Status::unavailable("journal not open");
  if (Status s = writer_->permanent_failure(); !s) return s;
  if (dispatcher_ && !dispatcher_->alive())
    return Status::unavailable("the dispatcher thread is not running");
  if (poller_ && !poller_->alive()) return Status::unavailable("the poller thread is not running");
  return Status::ok();
}

bool Relay::writer_failed_for_good() const {
  return writer_ && !writer_->permanent_failure().is_ok();
}

Status Relay::open_sqlite() {
  auto lock = DaemonLock::acquire(config_.journal);
  if (!lock) return lock.status();
  lock_ = std::move(*lock);
  auto writer = Writer::open(config_.journal, config_.sync);
  if (!writer) return writer.status();
  sqlite_writer_ = writer->get();
  writer_ = std::move(*writer);
  // At-least-once: a call that was under way when the last process died is made again.
  int requeued = 0;
  if (Status s =
          sqlite_writer_->run([&](SQLite::Database& db) { requeued = requeue_inflight(db); });
      !s)
    return s;
  if (requeued) spdlog::info("requeued {} webhooks left inflight by the previous run", requeued);
  std::string path = config_.journal;
  // Readers that may move between threads (the feed's pool): no statement cache. (The
  // dispatcher opens its own, caching, on its thread.)
  open_reader_ = [path] { return open_sqlite_reader(path, /*cache_statements=*/false); };
  return Status::ok();
}

// Several relays may share the journal: no lock file, and no requeue of every inflight webhook
// at start (other relays' calls): each agent's inflight webhooks go back to the queue when a
// relay takes its lease (pg_leases.h), this one included.
Status Relay::open_postgresql() {
  // Wake-ups between relays (a hint: the dispatcher polls anyway): another relay queued
  // webhooks, perhaps for an agent this one delivers to; this one announces its own.
  auto notifier = PgNotifier::start(config_.journal, [this] {
    if (dispatcher_ready_) dispatcher_->wake(true);
  });
  if (!notifier) return notifier.status();
  notifier_ = std::move(*notifier);
  auto writer = PgWriter::open(config_.journal);
  if (!writer) return writer.status();
  (*writer)->set_insert_listener([n = notifier_.get()] { n->announce(); });
  writer_ = std::move(*writer);
  std::string conninfo = config_.journal;
  open_reader_ = [conninfo] { return open_pg_reader(conninfo); };
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "relay");
  std::random_device random;
  char tail[16];
  std::snprintf(tail, sizeof tail, "%08x", random());
  relay_id_ = std::string(host) + "/" + std::to_string(::getpid()) + "/" + tail;
  auto leases =
      PgLeaseKeeper::start(conninfo, relay_id_, config_.lease, agent_ids(config_), [this] {
        if (dispatcher_ready_) dispatcher_->wake(false);
      });
  if (!leases) return leases.status();
  leases_ = std::move(*leases);
  spdlog::info("relay {} on a shared PostgreSQL journal: delivering to {} of {} agents (lease {})",
               relay_id_, held_count(), config_.agents.size(), format_duration(config_.lease));
  return Status::ok();
}

// One read of the journal on a connection of its own (the scrape's thread, not the
// dispatcher's): SQLite's read-only connection or a PostgreSQL session, opened for it.
Status Relay::read_journal(const std::function<void(JournalTx&)>& op) {
  auto reader = open_reader_();
  if (!reader) return reader.status();
  return (*reader)->read(op);
}

std::size_t Relay::held_count() const {
  std::size_t n = 0;
  if (leases_)
    for (const auto& a : config_.agents) n += leases_->held(a.id).has_value();
  return n;
}

Status Relay::start() {
  auto signing = signing_agents(config_);
  if (!signing) return signing.status();
  signing_agents_ = std::move(*signing);

  if (is_postgresql_journal(config_.journal)) {
    if (Status s = open_postgresql(); !s) return s;
  } else if (Status s = open_sqlite(); !s) {
    return s;
  }

  directory_ = std::make_unique<AgentDirectory>(config_.agents, config_.services, config_.role);
  // An edge's feed seqs never go back, even after a lost commit or a restored backup.
  // (PostgreSQL's seqs come from a sequence, which never goes back.)
  if (directory_->is_edge() && sqlite_writer_) {
    auto floor = [](SQLite::Database& db) { raise_seq_floor(db, now_millis()); };
    if (Status s = sqlite_writer_->run(floor); !s) return s;
  }
  // Availability as the journal last knew it; a configured agent without a row starts up.
  {
    auto reader = open_reader_();
    if (!reader) return reader.status();
    std::vector<AgentRow> rows;
    if (Status s = (*reader)->read([&](JournalTx& tx) { rows = tx.load_agents(); }); !s)
      return Status::io_error(journal_for_display(config_.journal) + ": " + s.message());
    std::vector<std::string> known;
    for (const AgentRow& row : rows) {
      known.push_back(row.id);
      Availability a = row.state == "paused" ? Availability::kPaused
                       : row.state == "down" ? Availability::kDown
                                             : Availability::kUp;
      directory_->set_availability(row.id, a);
    }
    std::vector<std::string> missing;
    for (const auto& a : config_.agents)
      if (std::find(known.begin(), known.end(), a.id) == known.end()) missing.push_back(a.id);
    if (!missing.empty()) {
      std::promise<Status> done;
      writer_->submit_tx(
          [&](JournalTx& tx) {
            for (const auto& id : missing)
              tx.set_agent_state(id, "up", std::nullopt, std::nullopt, true);
          },
          [&](const Status& s) { done.set_value(s); });
      if (Status s = done.get_future().get(); !s) return s;
    }
  }

  register_collectors();

  DispatcherContext dctx;
  dctx.writer = writer_.get();
  dctx.directory = directory_.get();
  dctx.metrics = &metrics_;
  dctx.journal_path = config_.journal;
  if (!sqlite_writer_) dctx.open_reader = open_reader_;
  dctx.leases = leases_.get();
  auto dispatcher = Dispatcher::start(dctx);
  if (!dispatcher) return dispatcher.status();
  dispatcher_ = std::move(*dispatcher);
  dispatcher_ready_ = true;

  if (config_.listen) {
    auto tokens = read_tokens(config_.listen->token_file, "IARELAY_LISTEN_TOKEN");
    if (!tokens) return tokens.status();
    ServerContext sctx;
    sctx.writer = writer_.get();
    sctx.directory = directory_.get();
    sctx.metrics = &metrics_;
    sctx.journal_path = config_.journal;
    sctx.open_reader = open_reader_;
    sctx.listen = *config_.listen;
    sctx.credentials = {std::move(*tokens), config_.listen->user};
    sctx.status_json = [this] { return status_document(); };
    sctx.ready = [this] { return health().is_ok(); };
    auto server = Server::start(std::move(sctx));
    if (!server) return server.status();
    server_ = std::move(*server);
    spdlog::info("listening on {} (port {}){}", config_.listen->address, server_->port(),
                 config_.listen->tls_cert.empty() ? "" : " with TLS");
  }

  writer_->set_commit_listener([this](bool appends_only) {
    if (server_) server_->notify_committed();
    if (dispatcher_) dispatcher_->wake(appends_only);
  });

  if (config_.upstream) {
    auto token = read_single_token(config_.upstream->token_file, "IARELAY_UPSTREAM_TOKEN");
    if (!token) return token.status();
    PollerContext pctx;
    pctx.writer = writer_.get();
    pctx.directory = directory_.get();
    pctx.metrics = &metrics_;
    pctx.journal_path = config_.journal;
    pctx.open_reader = open_reader_;
    pctx.upstream = *config_.upstream;
    pctx.token = *token;
    auto poller = Poller::start(std::move(pctx));
    if (!poller) return poller.status();
    poller_ = std::move(*poller);
    spdlog::info("polling {} as consumer '{}'", config_.upstream->url, config_.upstream->consumer);
  }

  janitor_ = std::thread([this] { janitor_loop(); });
  warn_if_no_agents();
  spdlog::info("iarelayd {} started: journal {} (sync={}), {} agents{}", IARELAY_VERSION,
               journal_for_display(config_.journal),
               config_.sync == SyncLevel::kFull ? "full" : "normal", config_.agents.size(),
               directory_->is_edge() ? " (edge: storing for the feed)" : "");
  return Status::ok();
}

void Relay::warn_if_no_agents() {
  if (!config_.role_given && config_.role == Role::kEdge)
    spdlog::warn(
        "role is not set and no agent is configured: running as an edge (every webhook stored "
        "for the feed, no agent called); say role = edge, or role = deliver to hold webhooks "
        "until agents are configured");
  if (config_.role == Role::kDeliver && config_.agents.empty())
    spdlog::warn(
        "no agents configured: every webhook is held (queued) until an agent is configured for it "
        "(iarelay status shows them); a relay that only stores for its feed says role = edge");
}

void Relay::stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(janitor_mu_);
    stopping_ = true;
  }
  janitor_cv_.notify_all();
  if (janitor_.joinable()) janitor_.join();
  // Reverse order of start: no new webhooks in, then no new calls out, then drain the journal.
  if (poller_) poller_->stop();
  if (server_) server_->stop();
  if (dispatcher_) dispatcher_->stop(config_.drain_grace);
  dispatcher_ready_ = false;
  // The writer goes first: destroying it drains every pending commit and runs every callback
  // (answers to intake requests, the poller's and dispatcher's outcomes, the commit listener),
  // and those capture the server, poller and dispatcher. They are stopped but still alive
  // here, so no callback can run into a destroyed one, however long a commit took.
  writer_.reset();
  sqlite_writer_ = nullptr;
  // Every write of the dispatcher is done: its agents go to another relay at once, and what it
  // left inflight is put back by whoever takes them.
  if (leases_) leases_->release_all();
  leases_.reset();
  // After the leases: its thread may be waiting for a connection. Its last wake-up of the
  // dispatcher is over once it is gone.
  notifier_.reset();
  poller_.reset();
  server_.reset();
  dispatcher_.reset();
  directory_.reset();
  lock_.reset();
}

Status Relay::reload(const ConfigOverrides& overrides) {
  std::string file;
  {
    std::lock_guard lock(config_mu_);
    file = config_.file;
  }
  auto fresh = load_config(file, overrides);
  if (!fresh) return fresh.status();
  // An agent secret that cannot be read refuses the whole reload: every agent keeps the
  // configuration (and the key) it runs with, instead of one being held without a word.
  auto signing = signing_agents(*fresh);
  if (!signing) return signing.status();
  std::lock_guard lock(config_mu_);
  // The listen tokens are read again from the running token_file (its path needs a restart),
  // so a token can be added, and the old one removed, without a restart. A file that cannot
  // be read or holds no token refuses the reload: the tokens in use stay.
  std::optional<ListenCredentials> credentials;
  if (server_ && config_.listen && fresh->listen) {
    auto tokens = read_tokens(config_.listen->token_file, "IARELAY_LISTEN_TOKEN");
    if (!tokens)
      return Status::invalid_argument("[listen] token_file: " + tokens.status().message());
    credentials = ListenCredentials{std::move(*tokens), fresh->listen->user};
  }
  // The role is the one the relay started with: a file that sets another one describes another
  // relay, and applying its agents under this role would strand what arrives meanwhile.
  if (fresh->role_given && fresh->role != config_.role)
    return Status::invalid_argument(
        std::string("role = ") + (fresh->role == Role::kEdge ? "edge" : "deliver") +
        " differs from the running role; a role change needs a restart");
  // Only reloadable keys change; each other key that changed is named, and keeps its value.
  restart_needed_ = restart_keys(config_, *fresh);
  for (const auto& [key, values] : restart_needed_)
    spdlog::warn(
        "reload: {} changed from {} to {}, which needs a restart; keeping {} until iarelayd is "
        "restarted",
        key, values.first, values.second, values.first);
  config_.agents = fresh->agents;
  config_.services = fresh->services;
  config_.retain_delivered = fresh->retain_delivered;
  config_.drain_grace = fresh->drain_grace;
  config_.log_level = fresh->log_level;
  if (credentials) {
    config_.listen->user = fresh->listen->user;
    server_->set_credentials(*credentials);
  }
  spdlog::set_level(
      spdlog::level::from_str(config_.log_level == "warn" ? "warning" : config_.log_level));
  for (const auto& a : config_.agents)
    if (signing_agents_.count(a.id) && !signing->count(a.id))
      spdlog::warn(
          "reload: agent {} no longer signs its deliveries (it had a secret; now neither "
          "secret_file nor {} is set)",
          a.id, agent_secret_env(a.handle));
  signing_agents_ = std::move(*signing);
  directory_->reconfigure(config_.agents, config_.services);
  // Leases for the agents configured now: a new one is taken, a removed one let lapse.
  if (leases_) leases_->set_agents(agent_ids(config_));
  if (dispatcher_) dispatcher_->reconfigured();
  warn_if_no_agents();
  spdlog::info("reloaded {}: {} agents, {} services", file, config_.agents.size(),
               config_.services.size());
  return Status::ok();
}

// The PostgreSQL journal's document: `iarelay status`'s (pg_admin.h: the queue report and every
// agent's lease), with this relay's identifier, and which leases are its own.
std::string Relay::pg_status_json() {
  auto db = PgConnection::connect(config_.journal);
  if (!db) return nlohmann::json{{"error", "journal unreadable: " + db.status().message()}}.dump();
  Config config;
  {
    std::lock_guard lock(config_mu_);
    config = config_;
  }
  // Not under config_mu_: a reload waits for no journal query.
  auto text = iarelay::pg_status_json(**db, &config, journal_for_display(config.journal));
  if (!text)
    return nlohmann::json{{"error", "journal unreadable: " + text.status().message()}}.dump();
  nlohmann::json doc = nlohmann::json::parse(*text);
  doc["relay_id"] = relay_id_;
  for (auto& lease : doc["leases"]) lease["this_relay"] = lease["owner"] == relay_id_;
  return doc.dump();
}

std::string Relay::status_document() {
  std::string journal_doc;
  if (sqlite_writer_) {
    auto reader = open_journal_for_read(config_.journal);
    if (!reader) return std::string(R"({"error":"journal unreadable"})");
    std::lock_guard lock(config_mu_);
    journal_doc = status_json(**reader, &config_, config_.journal);
  } else {
    journal_doc = pg_status_json();
  }
  std::lock_guard lock(config_mu_);
  // The journal's document, and the values this process runs with: after a reload that
  // changed a key needing a restart, the file says one thing and the daemon does another.
  nlohmann::json doc = nlohmann::json::parse(journal_doc);
  nlohmann::json in_use;
  in_use["config_file"] =
      config_.file.empty() ? nlohmann::json(nullptr) : nlohmann::json(config_.file);
  in_use["journal"] = journal_for_display(config_.journal);
  in_use["sync"] = config_.sync == SyncLevel::kFull ? "full" : "normal";
  in_use["listen_address"] =
      config_.listen ? nlohmann::json(config_.listen->address) : nlohmann::json(nullptr);
  in_use["listen_port"] = server_ ? nlohmann::json(server_->port()) : nlohmann::json(nullptr);
  in_use["tls"] = config_.listen && !config_.listen->tls_cert.empty();
  in_use["upstream_url"] =
      config_.upstream ? nlohmann::json(config_.upstream->url) : nlohmann::json(nullptr);
  nlohmann::json pending = nlohmann::json::array();
  for (const auto& [key, values] : restart_needed_)
    pending.push_back({{"key", key}, {"in_use", values.first}, {"in_file", values.second}});
  in_use["restart_needed"] = std::move(pending);
  doc["in_use"] = std::move(in_use);
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Relay::register_collectors() {
  metrics_
      .gauge("iarelay_build_info",
             "Always 1; the labels name this build: iarelayd's version and the SQLite library's",
             {{"version", IARELAY_VERSION}, {"sqlite", sqlite3_libversion()}})
      .set(1);
  metrics_.add_collector([](std::string& out) { out += render_process_metrics(); });
  if (notifier_)
    metrics_.add_collector([this](std::string& out) {
      out +=
          "# HELP iarelay_relay_notifications_total NOTIFYs on the PostgreSQL journal: sent "
          "(this relay queued webhooks) and heard (another relay did; the dispatcher woke)\n"
          "# TYPE iarelay_relay_notifications_total counter\n"
          "iarelay_relay_notifications_total{direction=\"sent\"} " +
          std::to_string(notifier_->sent()) +
          "\niarelay_relay_notifications_total{direction=\"heard\"} " +
          std::to_string(notifier_->heard()) + "\n";
    });
  // PostgreSQL: the agents this relay delivers to.
  if (leases_)
    metrics_.add_collector([this](std::string& out) {
      out +=
          "# HELP iarelay_agent_lease_held 1 while this relay holds the agent's delivery "
          "lease (PostgreSQL journal)\n# TYPE iarelay_agent_lease_held gauge\n";
      std::lock_guard lock(config_mu_);
      for (const auto& a : config_.agents)
        out += "iarelay_agent_lease_held" + Metrics::render_labels({{"agent", a.id}}) + " " +
               (leases_->held(a.id) ? "1" : "0") + "\n";
    });
  // Failed, discarded and held webhooks wait for an operator: no retry will deliver them. A count
  // of an index range per state (the backlog's size), run at most every 5 s, and less often when a
  // big backlog makes it slow. Journal-wide: on PostgreSQL every relay reports the same figures.
  metrics_.add_collector(throttled_collector(
      [this]() -> std::string {
        OperatorBacklog b;
        if (Status s = read_journal([&](JournalTx& tx) { b = tx.operator_backlog(); }); !s) {
          spdlog::warn("metrics: failed/discarded/held count failed: {}", s.message());
          return "";
        }
        return "# HELP iarelay_webhooks_waiting_for_operator Failed and discarded webhooks: no "
               "retry will deliver them; iarelay resend (or purge) does. Held webhooks: an "
               "operator held them; iarelay release (or delete) ends that\n"
               "# TYPE iarelay_webhooks_waiting_for_operator gauge\n"
               "iarelay_webhooks_waiting_for_operator{state=\"failed\"} " +
               std::to_string(b.failed) +
               "\niarelay_webhooks_waiting_for_operator{state=\"discarded\"} " +
               std::to_string(b.discarded) +
               "\niarelay_webhooks_waiting_for_operator{state=\"held\"} " + std::to_string(b.held) +
               "\n";
      },
      std::chrono::seconds(5)));
  // Queue depth and oldest age per agent and state, read from the journal at scrape time (an
  // index range scan of the queue, not of the whole table).
  metrics_.add_collector([this](std::string& out) {
    std::vector<QueueDepth> rows;
    if (Status s = read_journal([&](JournalTx& tx) { rows = tx.queue_depths(); }); !s) {
      spdlog::warn("metrics: queue depth query failed: {}", s.message());
      return;
    }
    std::string depth =
        "# HELP iarelay_queue_depth Webhooks waiting or in flight, per agent and state "
        "(agent \"\": held for any agent of its service)\n# TYPE iarelay_queue_depth gauge\n";
    std::string age =
        "# HELP iarelay_queue_oldest_age_seconds Age of the oldest webhook per agent and "
        "state\n# TYPE iarelay_queue_oldest_age_seconds gauge\n";
    std::string unconfigured =
        "# HELP iarelay_queue_unconfigured Queued webhooks assigned to an agent the "
        "configuration does not have (a retired agent, or an identifier nobody configured)\n"
        "# TYPE iarelay_queue_unconfigured gauge\n";
    std::set<std::string> configured;
    {
      std::lock_guard lock(config_mu_);
      for (const auto& a : config_.agents) configured.insert(a.id);
    }
    const Millis now = now_millis();
    for (const QueueDepth& q : rows) {
      std::string labels = Metrics::render_labels({{"agent", q.agent}, {"state", q.state}});
      depth += "iarelay_queue_depth" + labels + " " + std::to_string(q.webhooks) + "\n";
      double seconds =
          q.oldest_received_at ? static_cast<double>(now - q.oldest_received_at) / 1000.0 : 0.0;
      age += "iarelay_queue_oldest_age_seconds" + labels + " " + std::to_string(seconds) + "\n";
      if (!q.agent.empty() && !configured.count(q.agent) && q.state == "queued")
        unconfigured += "iarelay_queue_unconfigured" +
                        Metrics::render_labels({{"agent", q.agent}}) + " " +
                        std::to_string(q.webhooks) + "\n";
    }
    out += depth + age + unconfigured;
  });
  metrics_.add_collector([this](std::string& out) {
    if (!sqlite_writer_) return;
    Writer::Stats s = sqlite_writer_->stats();
    out +=
        "# HELP iarelay_journal_commit_seconds Time from each journal COMMIT until it is durable\n";
    out += "# TYPE iarelay_journal_commit_seconds histogram\n";
    std::uint64_t cumulative = 0;
    for (int i = 0; i < 8; ++i) {
      cumulative += s.commit_buckets[i];
      std::string le = i < 7 ? std::to_string(Writer::kCommitBucketsMs[i] / 1000.0) : "+Inf";
      out += "iarelay_journal_commit_seconds_bucket{le=\"" + le + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += "iarelay_journal_commit_seconds_sum " + std::to_string(s.commit_seconds_total) + "\n";
    out += "iarelay_journal_commit_seconds_count " + std::to_string(s.commits) + "\n";
    out += "# HELP iarelay_journal_operations_total Operations committed by the journal writer\n";
    out += "# TYPE iarelay_journal_operations_total counter\n";
    out += "iarelay_journal_operations_total " + std::to_string(s.ops) + "\n";
    out += "# HELP iarelay_journal_failed_commits_total Journal commits that failed\n";
    out += "# TYPE iarelay_journal_failed_commits_total counter\n";
    out += "iarelay_journal_failed_commits_total " + std::to_string(s.failed_commits) + "\n";
  });
}

void Relay::janitor_loop() {
  // Periodic maintenance: retention (off unless retain_delivered > 0) of delivered webhooks
  // and of stored ones every feed consumer has acknowledged. It uses one connection of its own
  // for its whole life (opened at the first pass) and small transactions (purge_webhooks
  // batches), like `iarelay purge` would, so intake and dispatch commits interleave with it.
  DatabasePtr db;
  std::unique_ptr<PgConnection> pg;
  std::unique_lock lock(janitor_mu_);
  for (auto wait = std::chrono::seconds(2); !stopping_; wait = std::chrono::seconds(60)) {
    janitor_cv_.wait_for(lock, wait, [&] { return stopping_; });
    if (stopping_) break;
    Millis keep;
    {
      std::lock_guard config_lock(config_mu_);
      keep = config_.retain_delivered;
    }
    if (keep <= 0) continue;
    lock.unlock();
    if (sqlite_writer_)
      purge_expired(db, now_millis() - keep, format_duration(keep));
    else
      purge_expired_pg(pg, now_millis() - keep, format_duration(keep));
    lock.lock();
  }
}

namespace {
constexpr const char* kRetentionWhat =
    "retention: delivered, and stored acknowledged by every consumer, older than ";
}  // namespace

// As purge_expired, on the shared PostgreSQL journal: the relay that gets the retention lock
// (a session advisory lock of its own key, tried, not waited for) purges; the others skip this
// pass. Inserts never wait for it (their lock is another key).
void Relay::purge_expired_pg(std::unique_ptr<PgConnection>& db, Millis before,
                             const std::string& age) {
  try {
    purge_expired_pg_once(db, before, age);
  } catch (const std::exception& e) {
    spdlog::warn("retention: {}", e.what());
    db.reset();  // its session and lock end: opened again at the next pass
  }
}

void Relay::purge_expired_pg_once(std::unique_ptr<PgConnection>& db, Millis before,
                                  const std::string& age) {
  if (!db) {
    auto opened = PgConnection::connect(config_.journal);
    if (!opened) {
      spdlog::warn("retention: {}", opened.status().message());
      return;
    }
    db = std::move(*opened);
  }
  auto failed = [&](const Status& s) {
    spdlog::warn("retention: {}", s.message());
    if (s.kind() == StatusKind::kUnavailable) db.reset();
  };
  const std::string key = std::to_string(kRetentionLockKey);
  auto mine = db->query("SELECT pg_try_advisory_lock(" + key + ")");
  if (!mine) return failed(mine.status());
  if ((*mine)[0][0] != "t") return;  // another relay is purging
  auto probe = db->query(
      "SELECT 1 FROM webhooks WHERE state = 'delivered' AND received_at < $1 UNION ALL "
      "SELECT 1 FROM webhooks WHERE state = 'stored' AND received_at < $1 AND seq <= "
      "(SELECT min(acked_seq) FROM consumers) LIMIT 1",
      {format_time(before)});
  if (!probe) {
    failed(probe.status());
  } else if (!probe->empty()) {
    MaintenanceOptions options;
    options.audit.actor = "iarelayd";
    options.audit.filter = kRetentionWhat + age;
    auto purged =
        pg_purge_webhooks(*db, before, {WebhookState::kDelivered, WebhookState::kStored}, options);
    if (!purged)
      failed(purged.status());
    else
      spdlog::info("retention: purged {} delivered or acknowledged stored webhooks older than {}",
                   *purged, age);
  }
  if (db)
    if (Status s = db->exec("SELECT pg_advisory_unlock(" + key + ")"); !s) failed(s);
}

void Relay::purge_expired(DatabasePtr& db, Millis before, const std::string& age) {
  try {
    if (!db) {
      auto opened = open_journal_for_write(config_.journal, config_.sync);
      if (!opened) {
        spdlog::warn("retention: {}", opened.status().message());
        return;
      }
      db = std::move(*opened);
    }
    // Cheap probes by index so an idle relay writes no audit rows. Stored rows count only
    // once every feed consumer has acknowledged them (none while no consumer is known).
    SQLite::Statement probe(*db,
                            "SELECT 1 FROM webhooks WHERE state='delivered' AND received_at<?1 "
                            "UNION ALL SELECT 1 FROM webhooks WHERE state='stored' AND "
                            "received_at<?1 AND seq <= (SELECT min(acked_seq) FROM consumers) "
                            "LIMIT 1");
    probe.bind(1, format_time(before));
    if (!probe.executeStep()) return;
    probe.reset();
    MaintenanceOptions options;
    options.audit.actor = "iarelayd";
    options.audit.filter = kRetentionWhat + age;
    auto purged =
        purge_webhooks(*db, before, {WebhookState::kDelivered, WebhookState::kStored}, options);
    if (!purged)
      spdlog::warn("retention: purge failed: {}", purged.status().message());
    else
      spdlog::info("retention: purged {} delivered or acknowledged stored webhooks older than {}",
                   *purged, age);
  } catch (const std::exception& e) {
    spdlog::warn("retention: {}", e.what());
    db.reset();  // a SQLite close: opened again at the next pass
  }
}

}  // namespace iarelay
