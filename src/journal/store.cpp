// Journal operations and queries over SQLiteCpp.
#include "journal/store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <unistd.h>

#include <map>
#include <memory>

#include "common/crypto.h"
#include "journal/statement_cache.h"

namespace iarelay {
namespace {

constexpr std::string_view kStateNames[] = {"stored", "queued",    "inflight", "delivered",
                                            "failed", "discarded", "held"};
constexpr int kStateCount = static_cast<int>(std::size(kStateNames));

template <typename T>
void bind_opt(SQLite::Statement& s, int i, const std::optional<T>& v) {
  if (v)
    s.bind(i, *v);
  else
    s.bind(i);
}

std::optional<std::string> opt_text(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getString();
}
std::optional<int> opt_int(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getInt();
}
std::optional<Millis> opt_time(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  auto t = parse_time(c.getString(), 0);
  if (!t) return std::nullopt;
  return *t;
}

}  // namespace

std::string_view to_string(WebhookState s) {
  return kStateNames[static_cast<int>(s)];
}

std::optional<WebhookState> parse_state(std::string_view s) {
  for (int i = 0; i < kStateCount; ++i)
    if (kStateNames[i] == s) return static_cast<WebhookState>(i);
  return std::nullopt;
}

InsertOutcome insert_webhook(SQLite::Database& db, const NewWebhook& w) {
  std::string id = w.id;
  if (w.source_id && *w.source_id == w.id) {
    // An upstream's webhook keeps its id here: stored already (under any source name), it is
    // the same webhook come again; another webhook with that id (never made by a ULID
    // generator, but an upstream is outside input) is stored under an id of our own.
    auto q = cached_statement(db, "SELECT state, seq, source_id FROM webhooks WHERE id=?");
    q->bind(1, w.id);
    if (q->executeStep()) {
      if (!q->getColumn(2).isNull() && q->getColumn(2).getString() == w.id)
        return {w.id, *parse_state(q->getColumn(0).getString()), true, q->getColumn(1).getInt64()};
      id = new_webhook_id();
    }
  }
  if (w.source_id) {
    auto q =
        cached_statement(db, "SELECT id, state, seq FROM webhooks WHERE source=? AND source_id=?");
    q->bind(1, w.source);
    q->bind(2, *w.source_id);
    if (q->executeStep())
      return {q->getColumn(0).getString(), *parse_state(q->getColumn(1).getString()), true,
              q->getColumn(2).getInt64()};
  }
  if (w.idempotency_key) {
    auto q = cached_statement(
        db, "SELECT id, state, seq FROM webhooks WHERE service=? AND idempotency_key=?");
    q->bind(1, w.service);
    q->bind(2, *w.idempotency_key);
    if (q->executeStep())
      return {q->getColumn(0).getString(), *parse_state(q->getColumn(1).getString()), true,
              q->getColumn(2).getInt64()};
  }
  auto ins = cached_statement(
      db,
      "INSERT INTO webhooks (id, source, source_id, idempotency_key, received_at, service, agent, "
      "type, event_id, state, assigned_agent, last_error, payload) "
      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
  ins->bind(1, id);
  ins->bind(2, w.source);
  bind_opt(*ins, 3, w.source_id);
  bind_opt(*ins, 4, w.idempotency_key);
  ins->bind(5, format_time(w.received_at));
  ins->bind(6, w.service);
  bind_opt(*ins, 7, w.agent);
  ins->bind(8, w.type);
  bind_opt(*ins, 9, w.event_id);
  ins->bind(10, std::string(to_string(w.state)));
  bind_opt(*ins, 11, w.assigned_agent);
  bind_opt(*ins, 12, w.reason);
  ins->bindNoCopy(13, w.payload);
  ins->exec();
  return {id, w.state, false, db.getLastInsertRowid()};
}

bool transition(SQLite::Database& db, std::string_view id, WebhookState from, WebhookState to,
                const TransitionFields& f) {
  std::string sql = "UPDATE webhooks SET state=?";
  if (f.assigned_agent) sql += ", assigned_agent=?";
  if (f.next_attempt_at) sql += ", next_attempt_at=?";
  if (f.attempts) sql += ", attempts=?";
  if (f.increment_attempts) sql += ", attempts=attempts+1";
  if (f.delivered_at) sql += ", delivered_at=?";
  if (f.clear_delivered_at) sql += ", delivered_at=NULL";
  if (f.last_status) sql += ", last_status=?";
  if (f.last_error) sql += ", last_error=?";
  sql += " WHERE id=? AND state=?";
  auto u = cached_statement(db, sql);
  int i = 1;
  u->bind(i++, std::string(to_string(to)));
  if (f.assigned_agent) bind_opt(*u, i++, *f.assigned_agent);
  if (f.next_attempt_at) {
    if (*f.next_attempt_at)
      u->bind(i++, format_time(**f.next_attempt_at));
    else
      u->bind(i++);
  }
  if (f.attempts) u->bind(i++, *f.attempts);
  if (f.delivered_at) u->bind(i++, format_time(*f.delivered_at));
  if (f.last_status) bind_opt(*u, i++, *f.last_status);
  if (f.last_error) bind_opt(*u, i++, *f.last_error);
  u->bind(i++, std::string(id));
  u->bind(i++, std::string(to_string(from)));
  return u->exec() == 1;
}

bool delete_webhook(SQLite::Database& db, std::string_view id, WebhookState state) {
  auto d = cached_statement(db, "DELETE FROM webhooks WHERE id=? AND state=?");
  d->bind(1, std::string(id));
  d->bind(2, std::string(to_string(state)));
  if (d->exec() != 1) return false;
  auto a = cached_statement(db, "DELETE FROM attempts WHERE webhook_id=?");
  a->bind(1, std::string(id));
  a->exec();
  auto l = cached_statement(db, "DELETE FROM audit_webhooks WHERE webhook_id=?");
  l->bind(1, std::string(id));
  l->exec();
  return true;
}

void link_audit(SQLite::Database& db, std::int64_t audit_id, std::string_view webhook_id) {
  auto s = cached_statement(
      db, "INSERT OR IGNORE INTO audit_webhooks (webhook_id, audit_id) VALUES (?,?)");
  s->bind(1, std::string(webhook_id));
  s->bind(2, audit_id);
  s->exec();
}

int requeue_inflight(SQLite::Database& db) {
  return db.exec("UPDATE webhooks SET state='queued' WHERE state='inflight'");
}

void record_attempt(SQLite::Database& db, const AttemptRecord& a) {
  auto s = cached_statement(db,
                            "INSERT INTO attempts (webhook_id, attempt, agent, started_at, "
                            "duration_ms, http_status, error, outcome) VALUES (?,?,?,?,?,?,?,?)");
  s->bind(1, a.webhook_id);
  s->bind(2, a.attempt);
  s->bind(3, a.agent);
  s->bind(4, format_time(a.started_at));
  s->bind(5, static_cast<std::int64_t>(a.duration_ms));
  bind_opt(*s, 6, a.http_status);
  bind_opt(*s, 7, a.error);
  s->bind(8, a.outcome);
  s->exec();
}

namespace {
AgentRow read_agent(SQLite::Statement& q) {
  AgentRow r;
  r.id = q.getColumn(0).getString();
  r.state = q.getColumn(1).getString();
  r.state_since = q.getColumn(2).getString();
  r.reason = opt_text(q.getColumn(3));
  r.paused_until = opt_time(q.getColumn(4));
  return r;
}
}  // namespace

std::vector<AgentRow> load_agents(SQLite::Database& db) {
  SQLite::Statement q(
      db, "SELECT id, state, state_since, reason, paused_until FROM agents ORDER BY id");
  std::vector<AgentRow> out;
  while (q.executeStep()) out.push_back(read_agent(q));
  return out;
}

std::optional<AgentRow> load_agent(SQLite::Database& db, std::string_view id) {
  SQLite::Statement q(db,
                      "SELECT id, state, state_since, reason, paused_until FROM agents WHERE id=?");
  q.bind(1, std::string(id));
  if (!q.executeStep()) return std::nullopt;
  return read_agent(q);
}

bool set_agent_state(SQLite::Database& db, std::string_view id, std::string_view state,
                     std::optional<std::string> reason, std::optional<Millis> paused_until,
                     bool unless_paused) {
  std::string now = format_time(now_millis());
  // state_since moves only when the state really changes.
  std::string sql =
      "INSERT INTO agents (id, state, state_since, reason, paused_until) VALUES (?1,?2,?3,?4,?5) "
      "ON CONFLICT(id) DO UPDATE SET state_since=CASE WHEN state=?2 THEN state_since ELSE ?3 END, "
      "state=?2, reason=?4, paused_until=?5";
  if (unless_paused) sql += " WHERE state<>'paused'";
  auto s = cached_statement(db, sql);
  s->bind(1, std::string(id));
  s->bind(2, std::string(state));
  s->bind(3, now);
  bind_opt(*s, 4, reason);
  if (paused_until)
    s->bind(5, format_time(*paused_until));
  else
    s->bind(5);
  return s->exec() == 1;
}

std::int64_t load_cursor(SQLite::Database& db, std::string_view name) {
  SQLite::Statement q(db, "SELECT seq FROM cursors WHERE name=?");
  q.bind(1, std::string(name));
  return q.executeStep() ? q.getColumn(0).getInt64() : 0;
}

void save_cursor(SQLite::Database& db, std::string_view name, std::int64_t seq) {
  auto s = cached_statement(db,
                            "INSERT INTO cursors (name, seq, updated_at) VALUES (?1,?2,?3) "
                            "ON CONFLICT(name) DO UPDATE SET seq=max(seq, ?2), updated_at=?3");
  s->bind(1, std::string(name));
  s->bind(2, seq);
  s->bind(3, format_time(now_millis()));
  s->exec();
}

void ack_consumer(SQLite::Database& db, std::string_view name, std::int64_t seq) {
  auto s = cached_statement(db,
                            "INSERT INTO consumers (name, acked_seq, acked_at) VALUES (?1,?2,?3) "
                            "ON CONFLICT(name) DO UPDATE SET acked_seq=max(acked_seq, ?2), "
                            "acked_at=?3");
  s->bind(1, std::string(name));
  s->bind(2, seq);
  s->bind(3, format_time(now_millis()));
  s->exec();
}

void add_audit(SQLite::Database& db, std::string_view actor, std::string_view action,
               std::string_view filter, std::int64_t affected, std::string_view detail) {
  SQLite::Statement s(db,
                      "INSERT INTO audit (at, actor, action, filter, affected, detail) "
                      "VALUES (?,?,?,?,?,?)");
  s.bind(1, format_time(now_millis()));
  s.bind(2, std::string(actor));
  s.bind(3, std::string(action));
  s.bind(4, std::string(filter));
  s.bind(5, affected);
  if (detail.empty())
    s.bind(6);
  else
    s.bind(6, std::string(detail));
  s.exec();
}

namespace {
// A row of seq, id, service, agent, type, event_id, attempts, next_attempt_at, received_at.
QueuedWebhook queued_webhook(SQLite::Statement& q) {
  QueuedWebhook w;
  w.seq = q.getColumn(0).getInt64();
  w.id = q.getColumn(1).getString();
  w.service = q.getColumn(2).getString();
  w.agent = opt_text(q.getColumn(3));
  w.type = q.getColumn(4).getString();
  w.event_id = q.getColumn(5).isNull() ? "" : q.getColumn(5).getString();
  w.attempts = q.getColumn(6).getInt();
  w.next_attempt_at = opt_time(q.getColumn(7));
  w.received_at = opt_time(q.getColumn(8)).value_or(0);
  return w;
}
}  // namespace

std::vector<QueuedWebhook> scan_queue(SQLite::Database& db, const std::optional<std::string>& agent,
                                      std::int64_t after_seq, int limit) {
  auto q = cached_statement(
      db, agent ? "SELECT seq, id, service, agent, type, event_id, attempts, next_attempt_at, "
                  "received_at FROM webhooks WHERE assigned_agent=? AND state='queued' AND seq>? "
                  "ORDER BY seq LIMIT ?"
                : "SELECT seq, id, service, agent, type, event_id, attempts, next_attempt_at, "
                  "received_at FROM webhooks WHERE assigned_agent IS ? AND state='queued' AND "
                  "seq>? ORDER BY seq LIMIT ?");
  bind_opt(*q, 1, agent);
  q->bind(2, after_seq);
  q->bind(3, limit);
  std::vector<QueuedWebhook> out;
  while (q->executeStep()) out.push_back(queued_webhook(*q));
  return out;
}

std::vector<std::string> agents_with_queued(SQLite::Database& db) {
  std::vector<std::string> out;
  auto exists = cached_statement(
      db, "SELECT 1 FROM webhooks WHERE assigned_agent=? AND state='queued' LIMIT 1");
  // Skips from one assigned_agent value to the next; with state in the condition SQLite would
  // walk every row of agents without queued ones, so state is checked per value instead.
  auto step =
      cached_statement(db, "SELECT min(assigned_agent) FROM webhooks WHERE assigned_agent>?");
  std::string last;  // "" sorts before every identifier (identifiers are never empty)
  for (;;) {
    step->reset();
    step->bind(1, last);
    if (!step->executeStep() || step->getColumn(0).isNull()) break;
    last = step->getColumn(0).getString();
    step->reset();
    exists->reset();
    exists->bind(1, last);
    if (exists->executeStep()) out.push_back(last);
    exists->reset();
  }
  return out;
}

bool queued_before(SQLite::Database& db, std::string_view agent, std::string_view event_id,
                   std::int64_t before_seq) {
  auto q = cached_statement(db,
                            // "+": only the event index applies (the agent's queue before `seq`
                            // may have thousands of rows). It reads every row the alert ever had
                            // before `seq`, delivered ones too (kept until retention): a cost in
                            // the walk past the head window for alerts with long histories.
                            "SELECT 1 FROM webhooks WHERE event_id=? AND +assigned_agent=? AND "
                            "+state='queued' AND +seq<? LIMIT 1");
  q->bind(1, std::string(event_id));
  q->bind(2, std::string(agent));
  q->bind(3, before_seq);
  return q->executeStep();
}

std::int64_t last_queued_seq(SQLite::Database& db, std::string_view agent) {
  auto q = cached_statement(
      db, "SELECT max(seq) FROM webhooks WHERE assigned_agent=? AND state='queued'");
  q->bind(1, std::string(agent));
  std::int64_t out = 0;
  if (q->executeStep() && !q->getColumn(0).isNull()) out = q->getColumn(0).getInt64();
  q->reset();
  return out;
}

std::optional<QueuedWebhook> next_queued_of_event(SQLite::Database& db, std::string_view agent,
                                                  std::string_view event_id,
                                                  std::int64_t after_seq) {
  // "+": the event index, whose entries of one event are in seq (rowid) order, from after_seq.
  auto q = cached_statement(db,
                            "SELECT seq, id, service, agent, type, event_id, attempts, "
                            "next_attempt_at, received_at FROM webhooks WHERE event_id=? AND "
                            "seq>? AND +assigned_agent=? AND +state='queued' ORDER BY seq LIMIT 1");
  q->bind(1, std::string(event_id));
  q->bind(2, after_seq);
  q->bind(3, std::string(agent));
  std::optional<QueuedWebhook> out;
  if (q->executeStep()) out = queued_webhook(*q);
  q->reset();
  return out;
}

int queued_ahead(SQLite::Database& db, std::string_view agent, std::int64_t before_seq, int limit) {
  auto q = cached_statement(db,
                            "SELECT count(*) FROM (SELECT 1 FROM webhooks WHERE assigned_agent=? "
                            "AND state='queued' AND seq<? LIMIT ?)");
  q->bind(1, std::string(agent));
  q->bind(2, before_seq);
  q->bind(3, limit);
  int n = q->executeStep() ? q->getColumn(0).getInt() : 0;
  q->reset();
  return n;
}

bool queued_of_event_ahead(SQLite::Database& db, std::string_view agent, std::string_view event_id,
                           std::int64_t before_seq) {
  auto q = cached_statement(db,
                            // "+": only the queue index applies.
                            "SELECT 1 FROM webhooks WHERE assigned_agent=? AND state='queued' AND "
                            "seq<? AND +event_id=? LIMIT 1");
  q->bind(1, std::string(agent));
  q->bind(2, before_seq);
  q->bind(3, std::string(event_id));
  bool found = q->executeStep();
  q->reset();
  return found;
}

std::optional<bool> queued_of_event_within(SQLite::Database& db, std::string_view agent,
                                           std::string_view event_id, std::int64_t before_seq,
                                           int limit) {
  auto q = cached_statement(db,
                            "SELECT event_id IS ? FROM webhooks WHERE assigned_agent=? AND "
                            "state='queued' AND seq<? ORDER BY seq LIMIT ?");
  q->bind(1, std::string(event_id));
  q->bind(2, std::string(agent));
  q->bind(3, before_seq);
  q->bind(4, limit);
  int read = 0;
  std::optional<bool> out = false;
  while (q->executeStep()) {
    ++read;
    if (q->getColumn(0).getInt()) {
      out = true;
      break;
    }
  }
  if (out == false && read >= limit) out = std::nullopt;
  q->reset();
  return out;
}

// Through the index of held rows only (0003): a probe, however long the alert's history (with
// the event index, each call read every row the alert ever had). Any agent: failover, a
// reroute or a move may have taken the later webhooks of the alert elsewhere.
const char* const kHeldOfAlertBeforeSql =
    "SELECT 1 FROM webhooks INDEXED BY webhooks_held WHERE state='held' AND event_id=? AND "
    "seq<? AND service=? LIMIT 1";

bool held_before(SQLite::Database& db, std::string_view agent, std::string_view event_id,
                 std::string_view service, std::int64_t before_seq) {
  if (event_id.empty()) {
    auto q = cached_statement(
        db, "SELECT 1 FROM webhooks WHERE assigned_agent=? AND state='held' AND seq<? LIMIT 1");
    q->bind(1, std::string(agent));
    q->bind(2, before_seq);
    bool found = q->executeStep();
    q->reset();
    return found;
  }
  auto q = cached_statement(db, kHeldOfAlertBeforeSql);
  q->bind(1, std::string(event_id));
  q->bind(2, before_seq);
  q->bind(3, std::string(service));
  bool found = q->executeStep();
  q->reset();
  return found;
}

bool any_held_webhook(SQLite::Database& db) {
  auto q = cached_statement(db, "SELECT 1 FROM webhooks WHERE state='held' LIMIT 1");
  bool found = q->executeStep();
  q->reset();
  return found;
}

std::optional<std::string> load_payload(SQLite::Database& db, std::string_view id) {
  auto q = cached_statement(db, "SELECT payload FROM webhooks WHERE id=?");
  q->bind(1, std::string(id));
  if (!q->executeStep()) return std::nullopt;
  return q->getColumn(0).getString();
}

std::vector<FeedMessage> feed_after(SQLite::Database& db, std::int64_t after, int max) {
  // "+state": walk the primary key from `after` instead of the state index, which would sort
  // every stored row on each call (an edge's rows are all stored).
  auto q = cached_statement(db,
                            "SELECT seq, id, service, type, agent, received_at, payload FROM "
                            "webhooks WHERE seq>? AND +state='stored' ORDER BY seq LIMIT ?");
  q->bind(1, after);
  q->bind(2, max);
  std::vector<FeedMessage> out;
  while (q->executeStep()) {
    FeedMessage m;
    m.seq = q->getColumn(0).getInt64();
    m.id = q->getColumn(1).getString();
    m.service = q->getColumn(2).getString();
    m.type = q->getColumn(3).getString();
    m.agent = opt_text(q->getColumn(4));
    m.received_at = opt_time(q->getColumn(5)).value_or(0);
    m.payload = q->getColumn(6).getString();
    out.push_back(std::move(m));
  }
  return out;
}

const char* const kWebhookRowColumns =
    "seq, id, source, source_id, received_at, service, agent, type, event_id, state, "
    "assigned_agent, attempts, next_attempt_at, delivered_at, last_status, last_error, NULL";

WebhookRow read_webhook_row(SQLite::Statement& q) {
  WebhookRow r;
  r.seq = q.getColumn(0).getInt64();
  r.id = q.getColumn(1).getString();
  r.source = q.getColumn(2).getString();
  r.source_id = opt_text(q.getColumn(3));
  r.received_at = q.getColumn(4).getString();
  r.service = q.getColumn(5).getString();
  r.agent = opt_text(q.getColumn(6));
  r.type = q.getColumn(7).getString();
  r.event_id = opt_text(q.getColumn(8));
  r.state = q.getColumn(9).getString();
  r.assigned_agent = opt_text(q.getColumn(10));
  r.attempts = q.getColumn(11).getInt();
  r.next_attempt_at = opt_text(q.getColumn(12));
  r.delivered_at = opt_text(q.getColumn(13));
  r.last_status = opt_int(q.getColumn(14));
  r.last_error = opt_text(q.getColumn(15));
  r.payload = opt_text(q.getColumn(16));
  return r;
}

void for_each_webhook(SQLite::Database& db, const WebhookFilter& f, bool with_payload,
                      const std::function<bool(const WebhookRow&)>& fn) {
  std::string sql =
      "SELECT seq, id, source, source_id, received_at, service, agent, type, event_id, state, "
      "assigned_agent, attempts, next_attempt_at, delivered_at, last_status, last_error";
  sql += with_payload ? ", payload" : ", NULL";
  sql += " FROM webhooks WHERE 1=1";
  if (!f.states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < f.states.size(); ++i) sql += i ? ",?" : "?";
    sql += ")";
  }
  if (f.agent) sql += " AND (agent=? OR assigned_agent=?)";
  if (f.service) sql += " AND service=?";
  if (f.type) sql += " AND type=?";
  if (f.event) sql += " AND event_id=?";
  if (f.since) sql += " AND received_at>=?";
  if (f.until) sql += " AND received_at<?";
  if (!f.ids.empty()) {
    sql += " AND id IN (";
    for (size_t i = 0; i < f.ids.size(); ++i) sql += i ? ",?" : "?";
    sql += ")";
  }
  sql += f.oldest_first ? " ORDER BY seq" : " ORDER BY seq DESC";
  if (f.limit) sql += " LIMIT " + std::to_string(*f.limit);
  SQLite::Statement q(db, sql);
  int i = 1;
  for (auto s : f.states) q.bind(i++, std::string(to_string(s)));
  if (f.agent) {
    q.bind(i++, *f.agent);
    q.bind(i++, *f.agent);
  }
  if (f.service) q.bind(i++, *f.service);
  if (f.type) q.bind(i++, *f.type);
  if (f.event) q.bind(i++, *f.event);
  if (f.since) q.bind(i++, format_time(*f.since));
  if (f.until) q.bind(i++, format_time(*f.until));
  for (const auto& id : f.ids) q.bind(i++, id);
  while (q.executeStep()) {
    WebhookRow r = read_webhook_row(q);
    if (!fn(r)) break;
  }
}

std::vector<FeedMessage> feed_after_bounded(SQLite::Database& db, std::int64_t after, int max,
                                            std::size_t max_bytes) {
  // As feed_after ("+state": walk the primary key), reading row by row so a batch of large
  // payloads is never all in memory.
  auto q = cached_statement(db,
                            "SELECT seq, id, service, type, agent, received_at, payload FROM "
                            "webhooks WHERE seq>? AND +state='stored' ORDER BY seq LIMIT ?");
  q->bind(1, after);
  q->bind(2, max);
  std::vector<FeedMessage> out;
  std::size_t bytes = 0;
  while (bytes <= max_bytes && q->executeStep()) {
    FeedMessage m;
    m.seq = q->getColumn(0).getInt64();
    m.id = q->getColumn(1).getString();
    m.service = q->getColumn(2).getString();
    m.type = q->getColumn(3).getString();
    m.agent = opt_text(q->getColumn(4));
    m.received_at = opt_time(q->getColumn(5)).value_or(0);
    m.payload = q->getColumn(6).getString();
    bytes += m.payload.size();
    out.push_back(std::move(m));
  }
  q->reset();  // the statement is cached: do not leave it holding a read snapshot
  return out;
}

std::int64_t newest_seq(SQLite::Database& db) {
  return db
      .execAndGet(
          "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name='webhooks'), 0), "
          "coalesce((SELECT max(seq) FROM webhooks), 0))")
      .getInt64();
}

std::vector<QueueDepth> queue_depths(SQLite::Database& db) {
  // The queue index (assigned_agent, state, seq): a range of the backlog, not of the history.
  SQLite::Statement q(db,
                      "SELECT coalesce(assigned_agent,''), state, count(*), min(received_at) "
                      "FROM webhooks WHERE state IN ('queued','inflight') GROUP BY 1, 2");
  std::vector<QueueDepth> out;
  while (q.executeStep())
    out.push_back({q.getColumn(0).getString(), q.getColumn(1).getString(),
                   q.getColumn(2).getInt64(), opt_time(q.getColumn(3)).value_or(0)});
  return out;
}

void rewind_cursor(SQLite::Database& db, std::string_view name, std::int64_t seq) {
  auto s = cached_statement(db,
                            "INSERT INTO cursors (name, seq, updated_at) VALUES (?1,?2,?3) "
                            "ON CONFLICT(name) DO UPDATE SET seq=?2, updated_at=?3");
  s->bind(1, std::string(name));
  s->bind(2, seq);
  s->bind(3, format_time(now_millis()));
  s->exec();
}

}  // namespace iarelay
