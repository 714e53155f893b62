// The seam's SQLite side: store.h's functions inside BEGIN IMMEDIATE ... COMMIT.
#include <SQLiteCpp/SQLiteCpp.h>

#include <sqlite3.h>

#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/statement_cache.h"
#include "journal/status_report.h"

namespace iarelay {
namespace {

std::optional<std::string> opt_text(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getString();
}

WebhookState state_of(const SQLite::Column& c) {
  auto s = parse_state(c.getString());
  if (!s) throw JournalError(Status::corruption("unknown webhook state '" + c.getString() + "'"));
  return *s;
}

class SqliteTx final : public JournalTx {
 public:
  explicit SqliteTx(SQLite::Database& db) : db_(db) {}
  InsertOutcome insert_webhook(const NewWebhook& w) override {
    return iarelay::insert_webhook(db_, w);
  }
  bool transition(std::string_view id, WebhookState from, WebhookState to,
                  const TransitionFields& fields) override {
    return iarelay::transition(db_, id, from, to, fields);
  }
  int requeue_inflight() override { return iarelay::requeue_inflight(db_); }
  int requeue_inflight_of(std::string_view agent) override {
    auto s = cached_statement(
        db_, "UPDATE webhooks SET state='queued' WHERE state='inflight' AND assigned_agent=?");
    s->bind(1, std::string(agent));
    s->exec();
    return db_.getChanges();
  }
  void record_attempt(const AttemptRecord& a) override { iarelay::record_attempt(db_, a); }
  std::optional<AgentRow> load_agent(std::string_view id) override {
    return iarelay::load_agent(db_, id);
  }
  bool set_agent_state(std::string_view id, std::string_view state,
                       std::optional<std::string> reason, std::optional<Millis> paused_until,
                       bool unless_paused) override {
    return iarelay::set_agent_state(db_, id, state, std::move(reason), paused_until, unless_paused);
  }
  std::int64_t load_cursor(std::string_view name) override {
    return iarelay::load_cursor(db_, name);
  }
  void save_cursor(std::string_view name, std::int64_t seq) override {
    iarelay::save_cursor(db_, name, seq);
  }
  void ack_consumer(std::string_view name, std::int64_t seq) override {
    iarelay::ack_consumer(db_, name, seq);
  }
  void rewind_cursor(std::string_view name, std::int64_t seq) override {
    iarelay::rewind_cursor(db_, name, seq);
  }
  void add_audit(std::string_view actor, std::string_view action, std::string_view filter,
                 std::int64_t affected, std::string_view detail) override {
    iarelay::add_audit(db_, actor, action, filter, affected, detail);
  }
  std::vector<QueuedWebhook> scan_queue(const std::optional<std::string>& agent,
                                        std::int64_t after_seq, int limit) override {
    return iarelay::scan_queue(db_, agent, after_seq, limit);
  }
  std::optional<std::string> load_payload(std::string_view id) override {
    return iarelay::load_payload(db_, id);
  }
  std::vector<AgentRow> load_agents() override { return iarelay::load_agents(db_); }
  std::int64_t last_queued_seq(std::string_view agent) override {
    return iarelay::last_queued_seq(db_, agent);
  }
  bool queued_before(std::string_view agent, std::string_view event_id,
                     std::int64_t before_seq) override {
    return iarelay::queued_before(db_, agent, event_id, before_seq);
  }
  std::optional<QueuedWebhook> next_queued_of_event(std::string_view agent,
                                                    std::string_view event_id,
                                                    std::int64_t after_seq) override {
    return iarelay::next_queued_of_event(db_, agent, event_id, after_seq);
  }
  int queued_ahead(std::string_view agent, std::int64_t before_seq, int limit) override {
    return iarelay::queued_ahead(db_, agent, before_seq, limit);
  }
  bool queued_of_event_ahead(std::string_view agent, std::string_view event_id,
                             std::int64_t before_seq) override {
    return iarelay::queued_of_event_ahead(db_, agent, event_id, before_seq);
  }
  std::optional<bool> queued_of_event_within(std::string_view agent, std::string_view event_id,
                                             std::int64_t before_seq, int limit) override {
    return iarelay::queued_of_event_within(db_, agent, event_id, before_seq, limit);
  }
  std::vector<std::string> agents_with_queued() override {
    return iarelay::agents_with_queued(db_);
  }
  bool held_before(std::string_view agent, std::string_view event_id, std::string_view service,
                   std::int64_t before_seq) override {
    return iarelay::held_before(db_, agent, event_id, service, before_seq);
  }
  bool any_held_webhook() override { return iarelay::any_held_webhook(db_); }
  std::vector<FeedMessage> feed_after_bounded(std::int64_t after, int max,
                                              std::size_t max_bytes) override {
    return iarelay::feed_after_bounded(db_, after, max, max_bytes);
  }
  std::int64_t newest_seq() override { return iarelay::newest_seq(db_); }
  std::vector<QueueDepth> queue_depths() override { return iarelay::queue_depths(db_); }
  OperatorBacklog operator_backlog() override { return iarelay::operator_backlog(db_); }
  std::optional<std::int64_t> data_version() override {
    auto q = cached_statement(db_, "PRAGMA data_version");
    std::optional<std::int64_t> v;
    if (q->executeStep()) v = q->getColumn(0).getInt64();
    q->reset();
    return v;
  }

  Status in_savepoint(const std::function<void()>& fn) override {
    cached_statement(db_, "SAVEPOINT step")->exec();
    Status out;
    try {
      fn();
    } catch (const std::exception& e) {
      // SQLite rolled the whole transaction back (I/O error, disk full): nothing to go on with.
      if (sqlite3_get_autocommit(db_.getHandle())) throw;
      cached_statement(db_, "ROLLBACK TO step")->exec();
      out = Status::io_error(e.what());
    }
    cached_statement(db_, "RELEASE step")->exec();
    return out;
  }

  std::optional<WebhookPlace> locate(std::string_view id) override {
    auto q = cached_statement(db_, "SELECT state, assigned_agent FROM webhooks WHERE id=?");
    q->bind(1, std::string(id));
    std::optional<WebhookPlace> out;
    if (q->executeStep()) out = WebhookPlace{state_of(q->getColumn(0)), opt_text(q->getColumn(1))};
    q->reset();
    return out;
  }

  std::vector<TailRow> alert_tail(std::string_view agent, std::string_view event_id,
                                  std::int64_t after_seq) override {
    auto q = cached_statement(db_,
                              // "+": the event index (an alert has few rows).
                              "SELECT agent, type, service, state FROM webhooks WHERE event_id=? "
                              "AND seq>? AND +assigned_agent=? AND (+state='queued' OR "
                              "+state='held')");
    q->bind(1, std::string(event_id));
    q->bind(2, after_seq);
    q->bind(3, std::string(agent));
    std::vector<TailRow> out;
    while (q->executeStep())
      out.push_back({opt_text(q->getColumn(0)), q->getColumn(1).getString(),
                     q->getColumn(2).getString(), state_of(q->getColumn(3))});
    q->reset();
    return out;
  }

  bool reassign_queued(std::string_view id, const std::optional<std::string>& from,
                       std::string_view to) override {
    auto u = cached_statement(db_,
                              "UPDATE webhooks SET assigned_agent=?, next_attempt_at=NULL WHERE "
                              "id=? AND state='queued' AND assigned_agent IS ?");
    u->bind(1, std::string(to));
    u->bind(2, std::string(id));
    if (from)
      u->bind(3, *from);
    else
      u->bind(3);
    const bool moved = u->exec() == 1;
    u->reset();
    return moved;
  }

  int reassign_alert_tail(std::string_view from, std::string_view to, std::string_view event_id,
                          std::int64_t after_seq) override {
    auto u = cached_statement(db_,
                              "UPDATE webhooks SET assigned_agent=? WHERE event_id=? AND seq>? AND "
                              "+assigned_agent=? AND +state='queued'");
    u->bind(1, std::string(to));
    u->bind(2, std::string(event_id));
    u->bind(3, after_seq);
    u->bind(4, std::string(from));
    int n = u->exec();
    u->reset();
    return n;
  }

 private:
  SQLite::Database& db_;
};

class SqliteBackend final : public JournalBackend {
 public:
  explicit SqliteBackend(SQLite::Database& db) : db_(db) {}
  Status transact(const std::function<void(JournalTx&)>& op) override {
    try {
      SQLite::Transaction tx(db_, SQLite::TransactionBehavior::IMMEDIATE);
      SqliteTx journal(db_);
      op(journal);
      tx.commit();
      return Status::ok();
    } catch (const JournalError& e) {
      return e.status();
    } catch (const std::exception& e) {
      return Status::io_error(e.what());
    }
  }

  Status read(const std::function<void(JournalTx&)>& op) override {
    // Deferred: the snapshot starts at the first read, and no write lock is taken. A write
    // fails: a connection opened read-only refuses it by itself, another one is made to
    // (query_only). BEGIN and COMMIT are cached statements: the dispatcher reads many times a
    // second.
    const bool read_only = sqlite3_db_readonly(db_.getHandle(), "main") == 1;
    bool begun = false;
    try {
      cached_statement(db_, "BEGIN")->exec();
      begun = true;
      if (!read_only) db_.exec("PRAGMA query_only=1");
      SqliteTx journal(db_);
      op(journal);
      end_read(read_only, "COMMIT");
      return Status::ok();
    } catch (const JournalError& e) {
      if (begun) end_read(read_only, "ROLLBACK");
      return e.status();
    } catch (const std::exception& e) {
      if (begun) end_read(read_only, "ROLLBACK");
      return Status::io_error(e.what());
    }
  }

  Status read_each(const std::function<void(JournalTx&)>& op) override {
    // No transaction: each statement reads in its own. A connection not opened read-only is
    // made to refuse writes meanwhile, as in read().
    if (sqlite3_db_readonly(db_.getHandle(), "main") != 1) return read(op);
    try {
      SqliteTx journal(db_);
      op(journal);
      return Status::ok();
    } catch (const JournalError& e) {
      return e.status();
    } catch (const std::exception& e) {
      return Status::io_error(e.what());
    }
  }

 private:
  // Ends a read transaction; never throws (a connection too broken to end it fails its next
  // read, and the dispatcher reopens it).
  void end_read(bool read_only, const char* end) {
    try {
      if (!read_only) db_.exec("PRAGMA query_only=0");
    } catch (const std::exception&) {
      // The connection is closing or broken: it is not used for writes again.
    }
    try {
      if (!sqlite3_get_autocommit(db_.getHandle())) cached_statement(db_, end)->exec();
    } catch (const std::exception&) {
      // As above.
    }
  }

  SQLite::Database& db_;
};

// open_sqlite_reader's backend: owns its connection and, from the first read on, the cache of
// its statements on the reading thread.
class SqliteReader final : public JournalBackend {
 public:
  SqliteReader(DatabasePtr db, bool cache) : db_(std::move(db)), backend_(*db_), cache_on_(cache) {}
  ~SqliteReader() override { cache_.reset(); }  // statements finalized before the connection
  Status transact(const std::function<void(JournalTx&)>&) override {
    return Status::invalid_argument("a read-only journal connection cannot write");
  }
  Status read(const std::function<void(JournalTx&)>& op) override {
    if (cache_on_ && !cache_) cache_.emplace(*db_);
    return backend_.read(op);
  }
  Status read_each(const std::function<void(JournalTx&)>& op) override {
    if (cache_on_ && !cache_) cache_.emplace(*db_);
    return backend_.read_each(op);
  }

 private:
  DatabasePtr db_;
  SqliteBackend backend_;
  const bool cache_on_;
  std::optional<StatementCacheScope> cache_;
};

}  // namespace

Result<std::unique_ptr<JournalBackend>> open_sqlite_reader(const std::string& path,
                                                           bool cache_statements) {
  auto db = open_journal_for_read(path);
  if (!db) return db.status();
  return std::unique_ptr<JournalBackend>(new SqliteReader(std::move(*db), cache_statements));
}

std::unique_ptr<JournalBackend> sqlite_backend(SQLite::Database& db) {
  return std::make_unique<SqliteBackend>(db);
}

void run_in_sqlite_tx(SQLite::Database& db, const std::function<void(JournalTx&)>& op) {
  SqliteTx tx(db);
  op(tx);
}

}  // namespace iarelay
