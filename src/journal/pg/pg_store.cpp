// The seam's PostgreSQL side: store.h's operations as SQL for PostgreSQL (docs/journal.md).
#include <algorithm>
#include <unordered_map>
#include "common/crypto.h"

#include "common/time.h"
#include "journal/pg/pg_journal.h"

namespace iarelay {
namespace {

template <typename T>
T must(Result<T> r) {
  if (!r) throw JournalError(r.status());
  return std::move(*r);
}

std::optional<std::string> opt_time_text(const std::optional<Millis>& t) {
  if (!t) return std::nullopt;
  return format_time(*t);
}

std::optional<Millis> parse_opt_time(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  auto t = parse_time(*text, 0);
  if (!t) return std::nullopt;
  return *t;
}

// The columns of a QueuedWebhook, in the order queued_webhook() reads them.
constexpr const char* kQueuedColumns =
    "seq, id, service, agent, type, event_id, attempts, next_attempt_at, received_at";

QueuedWebhook queued_webhook(const PgRow& r) {
  QueuedWebhook w;
  w.seq = std::stoll(*r[0]);
  w.id = *r[1];
  w.service = *r[2];
  w.agent = r[3];
  w.type = *r[4];
  w.event_id = r[5].value_or("");
  w.attempts = std::stoi(*r[6]);
  w.next_attempt_at = parse_opt_time(r[7]);
  w.received_at = parse_opt_time(r[8]).value_or(0);
  return w;
}

AgentRow agent_row(const PgRow& r) {
  AgentRow a;
  a.id = *r[0];
  a.state = *r[1];
  a.state_since = *r[2];
  a.reason = r[3];
  a.paused_until = parse_opt_time(r[4]);
  return a;
}

std::string number(std::int64_t n) {
  return std::to_string(n);
}

WebhookState state_of(const std::optional<std::string>& text) {
  auto s = parse_state(text.value_or(""));
  if (!s)
    throw JournalError(Status::corruption("unknown webhook state '" + text.value_or("") + "'"));
  return *s;
}

class PgTx final : public JournalTx {
 public:
  explicit PgTx(PgConnection& db) : db_(db) {}

  InsertOutcome insert_webhook(const NewWebhook& w) override {
    std::string id = w.id;
    if (w.source_id && *w.source_id == w.id) {
      // As in SQLite: an upstream's webhook keeps its id; stored already under any source
      // name it is a duplicate; another webhook of that id makes it stored under our own id.
      auto rows =
          must(db_.query("SELECT state, seq, source_id FROM webhooks WHERE id = $1", {w.id}));
      if (!rows.empty()) {
        if (rows[0][2] == w.id) return {w.id, state_of(rows[0][0]), true, std::stoll(*rows[0][1])};
        id = new_webhook_id();
      }
    }
    // Concurrent inserts of one webhook (two relays, one Idempotency-Key): ON CONFLICT waits for
    // the other's commit, then this one finds the stored row below.
    lock_seq_order();
    auto inserted = must(db_.query(
        "INSERT INTO webhooks (id, source, source_id, idempotency_key, received_at, service, "
        "agent, type, event_id, state, assigned_agent, last_error, payload) VALUES ($1, $2, $3, "
        "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING RETURNING seq",
        {id, w.source, w.source_id, w.idempotency_key, format_time(w.received_at), w.service,
         w.agent, w.type, w.event_id, std::string(to_string(w.state)), w.assigned_agent, w.reason,
         PgValue::bytes(w.payload)}));
    if (!inserted.empty()) return {id, w.state, false, std::stoll(*inserted[0][0])};
    NewWebhook same = w;
    same.id = id;
    return stored_duplicate(same);
  }

  // The stored webhook `w` conflicted with (INSERT ... ON CONFLICT DO NOTHING inserted nothing).
  InsertOutcome stored_duplicate(const NewWebhook& w) {
    if (w.source_id) {
      auto rows =
          must(db_.query("SELECT id, state, seq FROM webhooks WHERE source = $1 AND source_id = $2",
                         {w.source, w.source_id}));
      if (!rows.empty()) return {*rows[0][0], state_of(rows[0][1]), true, std::stoll(*rows[0][2])};
    }
    if (w.idempotency_key) {
      auto rows = must(db_.query(
          "SELECT id, state, seq FROM webhooks WHERE service = $1 AND idempotency_key = $2",
          {w.service, w.idempotency_key}));
      if (!rows.empty()) return {*rows[0][0], state_of(rows[0][1]), true, std::stoll(*rows[0][2])};
    }
    // The id itself was taken (an id we made colliding): never silently dropped.
    throw JournalError(Status::conflict("webhook id " + w.id + " is already stored"));
  }

  std::vector<InsertOutcome> insert_webhooks(const std::vector<NewWebhook>& batch) override {
    // Runs of rows that need no check of their own id first go as one multi-row INSERT each;
    // a feed message keeping its upstream's id goes alone between them (as insert_webhook
    // does it), so seqs follow the batch's order.
    std::vector<InsertOutcome> out(batch.size());
    std::vector<std::size_t> run;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const NewWebhook& w = batch[i];
      if (w.source_id && *w.source_id == w.id) {
        insert_together(batch, run, out);
        run.clear();
        out[i] = insert_webhook(w);
      } else {
        run.push_back(i);
      }
    }
    insert_together(batch, run, out);
    return out;
  }

  // One INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING for the rows `which` of `batch`
  // (in order: their seqs follow it). Rows it did not insert conflicted with a stored webhook
  // or one earlier in the statement: looked up after it, as insert_webhook would find them.
  void insert_together(const std::vector<NewWebhook>& batch, const std::vector<std::size_t>& which,
                       std::vector<InsertOutcome>& out) {
    constexpr std::size_t kColumns = 13, kMaxRows = 65535 / kColumns;
    for (std::size_t from = 0; from < which.size(); from += kMaxRows) {
      const std::size_t to = std::min(which.size(), from + kMaxRows);
      std::string sql =
          "INSERT INTO webhooks (id, source, source_id, idempotency_key, received_at, service, "
          "agent, type, event_id, state, assigned_agent, last_error, payload) VALUES ";
      PgParams p;
      p.reserve((to - from) * kColumns);
      for (std::size_t k = from; k < to; ++k) {
        const NewWebhook& w = batch[which[k]];
        sql += k == from ? "(" : ", (";
        for (std::size_t c = 1; c <= kColumns; ++c) {
          sql += "$" + std::to_string(p.size() + c);
          sql += c == kColumns ? ")" : ", ";
        }
        p.insert(p.end(),
                 {w.id, w.source, w.source_id, w.idempotency_key, format_time(w.received_at),
                  w.service, w.agent, w.type, w.event_id, std::string(to_string(w.state)),
                  w.assigned_agent, w.reason, PgValue::bytes(w.payload)});
      }
      sql += " ON CONFLICT DO NOTHING RETURNING id, seq";
      lock_seq_order();
      auto rows = must(db_.query(sql, p));
      std::unordered_map<std::string, std::int64_t> inserted;
      for (const PgRow& r : rows) inserted.emplace(*r[0], std::stoll(*r[1]));
      for (std::size_t k = from; k < to; ++k) {
        const NewWebhook& w = batch[which[k]];
        auto it = inserted.find(w.id);
        if (it != inserted.end()) {
          out[which[k]] = {w.id, w.state, false, it->second};
          inserted.erase(it);  // a second row of the same id in the batch is not this one
        } else {
          out[which[k]] = stored_duplicate(w);
        }
      }
    }
  }

  bool transition(std::string_view id, WebhookState from, WebhookState to,
                  const TransitionFields& f) override {
    PgParams p;
    const std::string sql = transition_sql(id, from, to, f, p);
    return must(db_.command(sql, p)) == 1;
  }

  bool claim_next_of_alert(const QueuedWebhook& w, std::string_view agent,
                           std::string_view event_id) override {
    PgStatement st = claim_statement(w, agent, event_id);
    return must(db_.command(st.sql, st.params)) == 1;
  }

  std::vector<bool> claim_next_of_alerts(const std::vector<AlertStep>& steps,
                                         const std::vector<const QueuedWebhook*>& next) override {
    std::vector<PgStatement> all;
    all.reserve(steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i)
      all.push_back(claim_statement(*next[i], steps[i].agent, steps[i].event_id));
    return changed_one(all);
  }

  static PgStatement claim_statement(const QueuedWebhook& w, std::string_view agent,
                                     std::string_view event_id) {
    TransitionFields f;
    f.assigned_agent = std::optional<std::string>(std::string(agent));
    f.increment_attempts = true;
    PgParams p;
    std::string sql = transition_sql(w.id, WebhookState::kQueued, WebhookState::kInflight, f, p);
    auto param = [&p](PgValue v) {
      p.push_back(std::move(v));
      return "$" + std::to_string(p.size());
    };
    // The event index; the same earlier webhooks as next_of_alert_near_head and held_before.
    sql += " AND NOT EXISTS (SELECT 1 FROM webhooks e WHERE e.event_id = " +
           param(std::string(event_id)) + " AND e.seq < " + param(number(w.seq)) +
           " AND ((e.state = 'queued' AND e.assigned_agent = " + param(std::string(agent)) +
           ") OR (e.state = 'held' AND e.service = " + param(w.service) + ")))";
    return {std::move(sql), std::move(p)};
  }

  // One statement: the attempt row inserted by a data-modifying WITH, the transition its main
  // statement (both or neither, as any statement).
  bool record_outcome(const AttemptRecord* a, std::string_view id, WebhookState from,
                      WebhookState to, const TransitionFields& f) override {
    PgStatement st = outcome_statement(a, id, from, to, f);
    return must(db_.command(st.sql, st.params)) == 1;
  }

  std::vector<bool> record_outcomes(const std::vector<OutcomeWrite>& batch) override {
    std::vector<PgStatement> all;
    all.reserve(batch.size());
    for (const OutcomeWrite& o : batch)
      all.push_back(
          outcome_statement(o.attempt ? &*o.attempt : nullptr, o.id, o.from, o.to, o.fields));
    return changed_one(all);
  }

  static PgStatement outcome_statement(const AttemptRecord* a, std::string_view id,
                                       WebhookState from, WebhookState to,
                                       const TransitionFields& f) {
    PgParams p;
    if (!a) {
      std::string sql = transition_sql(id, from, to, f, p);
      return {std::move(sql), std::move(p)};
    }
    p = attempt_params(*a);
    std::string sql = std::string("WITH attempt AS (") + kInsertAttempt + ") " +
                      transition_sql(id, from, to, f, p);
    return {std::move(sql), std::move(p)};
  }

  // Runs the statements in one round trip: whether each changed one row.
  std::vector<bool> changed_one(const std::vector<PgStatement>& all) {
    auto outputs = must(db_.run_all(all));
    std::vector<bool> out;
    out.reserve(outputs.size());
    for (const PgOutput& o : outputs) out.push_back(o.changed == 1);
    return out;
  }

  // The UPDATE of a transition, its parameters appended to `p` (numbered after those in it).
  static std::string transition_sql(std::string_view id, WebhookState from, WebhookState to,
                                    const TransitionFields& f, PgParams& p) {
    auto param = [&p](PgValue v) {
      p.push_back(std::move(v));
      return "$" + std::to_string(p.size());
    };
    std::string sql = "UPDATE webhooks SET state = " + param(std::string(to_string(to)));
    if (f.assigned_agent) sql += ", assigned_agent = " + param(*f.assigned_agent);
    if (f.next_attempt_at) sql += ", next_attempt_at = " + param(opt_time_text(*f.next_attempt_at));
    // One assignment per column, the one SQLite keeps (it ignores all but the rightmost of
    // store.cpp's list); PostgreSQL refuses a column assigned twice.
    if (f.attempts && !f.increment_attempts)
      sql += ", attempts = " + param(std::to_string(*f.attempts));
    if (f.increment_attempts) sql += ", attempts = attempts + 1";
    if (f.delivered_at && !f.clear_delivered_at)
      sql += ", delivered_at = " + param(format_time(*f.delivered_at));
    if (f.clear_delivered_at) sql += ", delivered_at = NULL";
    if (f.last_status)
      sql += ", last_status = " +
             param(*f.last_status ? std::optional<std::string>(std::to_string(**f.last_status))
                                  : std::nullopt);
    if (f.last_error) sql += ", last_error = " + param(*f.last_error);
    sql += " WHERE id = " + param(std::string(id));
    sql += " AND state = " + param(std::string(to_string(from)));
    return sql;
  }

  // On a journal several relays share, a relay starting up takes back only the calls of
  // agents no relay holds a live lease for: another relay's calls are its own (they go back to
  // queued when a relay takes their agent over: take_lease).
  int requeue_inflight() override {
    return static_cast<int>(must(db_.command(
        "UPDATE webhooks SET state = 'queued' WHERE state = 'inflight' AND NOT EXISTS (SELECT 1 "
        "FROM agent_leases l WHERE l.agent = webhooks.assigned_agent AND l.epoch > 0 AND "
        "l.expires_at > now())")));
  }

  int requeue_inflight_of(std::string_view agent) override {
    return static_cast<int>(must(db_.command(
        "UPDATE webhooks SET state = 'queued' WHERE state = 'inflight' AND assigned_agent = $1",
        {std::string(agent)})));
  }

  static constexpr const char* kInsertAttempt =
      "INSERT INTO attempts (webhook_id, attempt, agent, started_at, duration_ms, http_status, "
      "error, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

  static PgParams attempt_params(const AttemptRecord& a) {
    return {
        a.webhook_id,
        std::to_string(a.attempt),
        a.agent,
        format_time(a.started_at),
        std::to_string(a.duration_ms),
        a.http_status ? std::optional<std::string>(std::to_string(*a.http_status)) : std::nullopt,
        a.error,
        a.outcome};
  }

  void record_attempt(const AttemptRecord& a) override {
    must(db_.command(kInsertAttempt, attempt_params(a)));
  }

  std::optional<AgentRow> load_agent(std::string_view id) override {
    auto rows = must(
        db_.query("SELECT id, state, state_since, reason, paused_until FROM agents WHERE id = $1",
                  {std::string(id)}));
    if (rows.empty()) return std::nullopt;
    return agent_row(rows[0]);
  }

  bool set_agent_state(std::string_view id, std::string_view state,
                       std::optional<std::string> reason, std::optional<Millis> paused_until,
                       bool unless_paused) override {
    // state_since moves only when the state really changes.
    std::string sql =
        "INSERT INTO agents AS a (id, state, state_since, reason, paused_until) VALUES ($1, $2, "
        "$3, $4, $5) ON CONFLICT (id) DO UPDATE SET state_since = CASE WHEN a.state = $2 THEN "
        "a.state_since ELSE $3 END, state = $2, reason = $4, paused_until = $5";
    if (unless_paused) sql += " WHERE a.state <> 'paused'";
    return must(db_.command(sql, {std::string(id), std::string(state), format_time(now_millis()),
                                  std::move(reason), opt_time_text(paused_until)})) == 1;
  }

  std::int64_t load_cursor(std::string_view name) override {
    auto rows = must(db_.query("SELECT seq FROM cursors WHERE name = $1", {std::string(name)}));
    return rows.empty() ? 0 : std::stoll(*rows[0][0]);
  }

  void save_cursor(std::string_view name, std::int64_t seq) override {
    must(db_.command(
        "INSERT INTO cursors AS c (name, seq, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) "
        "DO UPDATE SET seq = GREATEST(c.seq, EXCLUDED.seq), updated_at = EXCLUDED.updated_at",
        {std::string(name), std::to_string(seq), format_time(now_millis())}));
  }

  void ack_consumer(std::string_view name, std::int64_t seq) override {
    must(db_.command(
        "INSERT INTO consumers AS c (name, acked_seq, acked_at) VALUES ($1, $2, $3) ON CONFLICT "
        "(name) DO UPDATE SET acked_seq = GREATEST(c.acked_seq, EXCLUDED.acked_seq), acked_at = "
        "EXCLUDED.acked_at",
        {std::string(name), std::to_string(seq), format_time(now_millis())}));
  }

  void rewind_cursor(std::string_view name, std::int64_t seq) override {
    must(db_.command(
        "INSERT INTO cursors (name, seq, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO "
        "UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at",
        {std::string(name), std::to_string(seq), format_time(now_millis())}));
  }

  void add_audit(std::string_view actor, std::string_view action, std::string_view filter,
                 std::int64_t affected, std::string_view detail) override {
    std::optional<std::string> detail_value;
    if (!detail.empty()) detail_value = std::string(detail);
    must(db_.command(
        "INSERT INTO audit (at, actor, action, filter, affected, detail) VALUES ($1, $2, $3, $4, "
        "$5, $6)",
        {format_time(now_millis()), std::string(actor), std::string(action), std::string(filter),
         std::to_string(affected), detail_value}));
  }

  std::vector<QueuedWebhook> scan_queue(const std::optional<std::string>& agent,
                                        std::int64_t after_seq, int limit) override {
    const std::string columns =
        "SELECT seq, id, service, agent, type, event_id, attempts, next_attempt_at, received_at "
        "FROM webhooks WHERE ";
    auto rows = must(
        agent
            ? db_.query(columns + "assigned_agent = $1 AND state = 'queued' AND seq > $2 ORDER BY "
                                  "seq LIMIT $3",
                        {*agent, std::to_string(after_seq), std::to_string(limit)})
            : db_.query(columns + "assigned_agent IS NULL AND state = 'queued' AND seq > $1 ORDER "
                                  "BY seq LIMIT $2",
                        {std::to_string(after_seq), std::to_string(limit)}));
    std::vector<QueuedWebhook> out;
    out.reserve(rows.size());
    for (const PgRow& r : rows) out.push_back(queued_webhook(r));
    return out;
  }

  std::optional<std::string> load_payload(std::string_view id) override {
    auto rows =
        must(db_.query("SELECT payload FROM webhooks WHERE id = $1", {std::string(id)}, true));
    if (rows.empty()) return std::nullopt;
    return rows[0][0];
  }

  std::vector<AgentRow> load_agents() override {
    auto rows = must(db_.query(
        "SELECT id, state, state_since, reason, paused_until FROM agents ORDER BY id COLLATE "
        "\"C\""));
    std::vector<AgentRow> out;
    for (const PgRow& r : rows) out.push_back(agent_row(r));
    return out;
  }

  std::int64_t last_queued_seq(std::string_view agent) override {
    auto rows = must(
        db_.query("SELECT max(seq) FROM webhooks WHERE assigned_agent = $1 AND state = 'queued'",
                  {std::string(agent)}));
    return rows.empty() || !rows[0][0] ? 0 : std::stoll(*rows[0][0]);
  }

  bool queued_before(std::string_view agent, std::string_view event_id,
                     std::int64_t before_seq) override {
    return exists(
        "SELECT 1 FROM webhooks WHERE event_id = $1 AND assigned_agent = $2 AND state = "
        "'queued' AND seq < $3 LIMIT 1",
        {std::string(event_id), std::string(agent), number(before_seq)});
  }

  std::optional<QueuedWebhook> next_queued_of_event(std::string_view agent,
                                                    std::string_view event_id,
                                                    std::int64_t after_seq) override {
    auto rows = must(db_.query(std::string("SELECT ") + kQueuedColumns +
                                   " FROM webhooks WHERE event_id = $1 AND seq > $2 AND "
                                   "assigned_agent = $3 AND state = 'queued' ORDER BY seq LIMIT 1",
                               {std::string(event_id), number(after_seq), std::string(agent)}));
    if (rows.empty()) return std::nullopt;
    return queued_webhook(rows[0]);
  }

  // One statement for the three reads: the next webhook of the alert (event index), then the
  // queue ahead of it (queue index) and the alert's webhooks before it (event index), each
  // bounded. Subqueries rather than NOT EXISTS: an anti join was planned as a bitmap of every
  // queued row (webhooks_state), a subquery takes the event index with n.seq as its bound.
  std::optional<QueuedWebhook> next_of_alert_near_head(std::string_view agent,
                                                       std::string_view event_id,
                                                       std::int64_t after_seq, int walk) override {
    PgStatement st =
        next_of_alert_statement({std::string(agent), std::string(event_id), after_seq}, walk);
    auto rows = must(db_.query(st.sql, st.params));
    if (rows.empty()) return std::nullopt;
    return queued_webhook(rows[0]);
  }

  std::vector<std::optional<QueuedWebhook>> next_of_alerts_near_head(
      const std::vector<AlertStep>& steps, int walk) override {
    std::vector<PgStatement> all;
    all.reserve(steps.size());
    for (const AlertStep& s : steps) all.push_back(next_of_alert_statement(s, walk));
    auto outputs = must(db_.run_all(all));
    std::vector<std::optional<QueuedWebhook>> out;
    out.reserve(outputs.size());
    for (const PgOutput& o : outputs)
      out.push_back(o.rows.empty() ? std::nullopt
                                   : std::optional<QueuedWebhook>(queued_webhook(o.rows[0])));
    return out;
  }

  static PgStatement next_of_alert_statement(const AlertStep& s, int walk) {
    // Built once: one per chain step of every batch.
    static const std::string sql =
        std::string("SELECT ") + kQueuedColumns + " FROM (SELECT " + kQueuedColumns +
        " FROM webhooks WHERE event_id = $1 AND seq > $2 AND assigned_agent = $3 AND state = "
        "'queued' ORDER BY seq LIMIT 1) n WHERE (SELECT count(*) FROM (SELECT 1 FROM webhooks w "
        "WHERE w.assigned_agent = $3 AND w.state = 'queued' AND w.seq < n.seq LIMIT $4) ahead) < "
        "$4 AND (SELECT count(*) FROM (SELECT 1 FROM webhooks w WHERE w.event_id = $1 AND w.seq < "
        "n.seq AND w.assigned_agent = $3 AND w.state = 'queued' LIMIT 1) earlier) = 0";
    return {sql, {s.event_id, number(s.after_seq), s.agent, number(walk)}};
  }

  int queued_ahead(std::string_view agent, std::int64_t before_seq, int limit) override {
    auto rows = must(db_.query(
        "SELECT count(*) FROM (SELECT 1 FROM webhooks WHERE assigned_agent = $1 AND state = "
        "'queued' AND seq < $2 LIMIT $3) ahead",
        {std::string(agent), number(before_seq), number(limit)}));
    return std::stoi(*rows[0][0]);
  }

  bool queued_of_event_ahead(std::string_view agent, std::string_view event_id,
                             std::int64_t before_seq) override {
    return exists(
        "SELECT 1 FROM webhooks WHERE assigned_agent = $1 AND state = 'queued' AND seq < $2 AND "
        "event_id = $3 LIMIT 1",
        {std::string(agent), number(before_seq), std::string(event_id)});
  }

  std::optional<bool> queued_of_event_within(std::string_view agent, std::string_view event_id,
                                             std::int64_t before_seq, int limit) override {
    // The first `limit` queued rows of the agent before before_seq: whether one is of the
    // event, and how many were read (all of them: not known past them).
    auto rows = must(db_.query(
        "SELECT coalesce(bool_or(event_id IS NOT DISTINCT FROM $1), false), count(*) FROM "
        "(SELECT event_id FROM webhooks WHERE assigned_agent = $2 AND state = 'queued' AND seq "
        "< $3 ORDER BY seq LIMIT $4) head",
        {std::string(event_id), std::string(agent), number(before_seq), number(limit)}));
    if (*rows[0][0] == "t") return true;
    if (std::stoll(*rows[0][1]) >= limit) return std::nullopt;
    return false;
  }

  std::vector<std::string> agents_with_queued() override {
    // One index probe per agent (the partial queue index), not a scan of the backlog.
    auto rows = must(db_.query(
        "WITH RECURSIVE a(agent) AS ((SELECT assigned_agent FROM webhooks WHERE state = "
        "'queued' AND assigned_agent IS NOT NULL ORDER BY assigned_agent LIMIT 1) UNION ALL "
        "SELECT (SELECT w.assigned_agent FROM webhooks w WHERE w.state = 'queued' AND "
        "w.assigned_agent > a.agent ORDER BY w.assigned_agent LIMIT 1) FROM a WHERE a.agent IS "
        "NOT NULL) SELECT agent FROM a WHERE agent IS NOT NULL"));
    std::vector<std::string> out;
    for (const PgRow& r : rows) out.push_back(*r[0]);
    std::sort(out.begin(), out.end());  // byte order, as SQLite's, whatever the collation
    return out;
  }

  bool held_before(std::string_view agent, std::string_view event_id, std::string_view service,
                   std::int64_t before_seq) override {
    if (event_id.empty())
      return exists(
          "SELECT 1 FROM webhooks WHERE assigned_agent = $1 AND state = 'held' AND seq < $2 "
          "LIMIT 1",
          {std::string(agent), number(before_seq)});
    // Any agent: failover, a reroute or a move may have taken the alert's later webhooks
    // elsewhere (the partial index of held rows).
    return exists(
        "SELECT 1 FROM webhooks WHERE state = 'held' AND event_id = $1 AND seq < $2 AND service "
        "= $3 LIMIT 1",
        {std::string(event_id), number(before_seq), std::string(service)});
  }

  bool any_held_webhook() override {
    return exists("SELECT 1 FROM webhooks WHERE state = 'held' LIMIT 1", {});
  }

  std::vector<FeedMessage> feed_after_bounded(std::int64_t after, int max,
                                              std::size_t max_bytes) override {
    // As SQLite's: rows after `after` until the payloads before a row add up to more than
    // max_bytes (the row that crosses it comes too), summed by the server so that a batch of
    // large payloads is never all sent.
    auto rows = must(db_.query(
        "SELECT seq::text, id, service, type, agent, received_at, payload FROM (SELECT *, "
        "sum(octet_length(payload)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) - "
        "octet_length(payload) AS before FROM (SELECT seq, id, service, type, agent, "
        "received_at, payload FROM webhooks WHERE seq > $1 AND state = 'stored' ORDER BY seq "
        "LIMIT $2) page) counted WHERE before <= $3 ORDER BY seq",
        {number(after), number(max), number(static_cast<std::int64_t>(max_bytes))}, true));
    std::vector<FeedMessage> out;
    out.reserve(rows.size());
    for (const PgRow& r : rows) {
      FeedMessage m;
      m.seq = std::stoll(*r[0]);  // as text: the other columns come as their bytes
      m.id = *r[1];
      m.service = *r[2];
      m.type = *r[3];
      m.agent = r[4];
      m.received_at = parse_opt_time(r[5]).value_or(0);
      m.payload = *r[6];
      out.push_back(std::move(m));
    }
    return out;
  }

  std::vector<QueueDepth> queue_depths() override {
    // One query per state, so that each reads its partial index (the backlog, not the
    // history), whatever the planner guesses of the states.
    auto rows = must(db_.query(
        "SELECT coalesce(assigned_agent, ''), 'queued', count(*), min(received_at) FROM webhooks "
        "WHERE state = 'queued' GROUP BY assigned_agent UNION ALL SELECT coalesce(assigned_agent, "
        "''), 'inflight', count(*), min(received_at) FROM webhooks WHERE state = 'inflight' GROUP "
        "BY assigned_agent"));
    std::vector<QueueDepth> out;
    for (const PgRow& r : rows)
      out.push_back({*r[0], *r[1], std::stoll(*r[2]), parse_opt_time(r[3]).value_or(0)});
    return out;
  }

  OperatorBacklog operator_backlog() override {
    auto rows = must(db_.query(
        "SELECT state, count(*) FROM webhooks WHERE state IN ('failed', 'discarded', 'held') "
        "GROUP BY state"));
    OperatorBacklog b;
    for (const PgRow& r : rows)
      (*r[0] == "failed" ? b.failed : *r[0] == "held" ? b.held : b.discarded) = std::stoll(*r[1]);
    return b;
  }

  std::int64_t newest_seq() override {
    // The largest seq ever handed out (a sequence's value is not rolled back), else the
    // largest stored: as SQLite's AUTOINCREMENT record.
    auto rows = must(db_.query(
        "SELECT greatest(coalesce(pg_sequence_last_value(pg_get_serial_sequence('webhooks', "
        "'seq')), 0), coalesce((SELECT max(seq) FROM webhooks), 0))"));
    return std::stoll(*rows[0][0]);
  }

  Status in_savepoint(const std::function<void()>& fn) override {
    // Sent with the savepoint's first statement, and the RELEASE with the transaction's next
    // one: the chain step of each outcome costs no round trips of its own.
    db_.defer("SAVEPOINT step");
    // Locks taken inside the savepoint (the turn to take seqs: lock_seq_order) go with it when
    // it is rolled back: taken again by the transaction's next insert.
    const bool seq_order_locked = seq_order_locked_;
    Status out;
    try {
      fn();
    } catch (const JournalError& e) {
      // The connection is gone: so is the transaction.
      if (e.status().kind() == StatusKind::kUnavailable) throw;
      out = e.status();
    } catch (const std::exception& e) {
      out = Status::io_error(e.what());
    }
    // Undoes the failed statement's abort too: the transaction goes on.
    if (!out) {
      must(db_.command("ROLLBACK TO SAVEPOINT step"));
      seq_order_locked_ = seq_order_locked;
    }
    db_.defer("RELEASE SAVEPOINT step");
    return out;
  }

  std::optional<WebhookPlace> locate(std::string_view id) override {
    auto rows = must(
        db_.query("SELECT state, assigned_agent FROM webhooks WHERE id = $1", {std::string(id)}));
    if (rows.empty()) return std::nullopt;
    return WebhookPlace{state_of(rows[0][0]), rows[0][1]};
  }

  std::vector<TailRow> alert_tail(std::string_view agent, std::string_view event_id,
                                  std::int64_t after_seq) override {
    auto rows = must(db_.query(
        "SELECT agent, type, service, state FROM webhooks WHERE event_id = $1 AND seq > $2 AND "
        "assigned_agent = $3 AND state IN ('queued', 'held') ORDER BY seq",
        {std::string(event_id), number(after_seq), std::string(agent)}));
    std::vector<TailRow> out;
    for (const PgRow& r : rows) out.push_back({r[0], *r[1], *r[2], state_of(r[3])});
    return out;
  }

  bool reassign_queued(std::string_view id, const std::optional<std::string>& from,
                       std::string_view to) override {
    return must(db_.command("UPDATE webhooks SET assigned_agent = $1, next_attempt_at = NULL "
                            "WHERE id = $2 AND state = 'queued' AND assigned_agent IS NOT "
                            "DISTINCT FROM $3",
                            {std::string(to), std::string(id), from})) == 1;
  }

  int reassign_alert_tail(std::string_view from, std::string_view to, std::string_view event_id,
                          std::int64_t after_seq) override {
    return static_cast<int>(must(db_.command(
        "UPDATE webhooks SET assigned_agent = $1 WHERE event_id = $2 AND seq > $3 AND "
        "assigned_agent = $4 AND state = 'queued'",
        {std::string(to), std::string(event_id), number(after_seq), std::string(from)})));
  }

  // Seqs become visible in their order, whatever the relays inserting: a transaction takes this
  // lock before it takes its first seq and holds it until it ends (committed and visible, or
  // rolled back), so the next one takes higher seqs only after it. A seq taken at INSERT and
  // committed later would otherwise let seq 8 be read before seq 7: a dispatcher would break
  // the alert's order, a feed consumer's cursor would skip 7. The relays' transactions that
  // insert webhooks are serialized, commits included; each relay's group commit batches what
  // waits meanwhile.
  bool fence(std::string_view agent, std::string_view owner, std::int64_t epoch) override {
    // FOR SHARE: a takeover (UPDATE of the row) waits for this transaction's end.
    return exists(
        "SELECT 1 FROM agent_leases WHERE agent = $1 AND owner = $2 AND epoch = $3 FOR SHARE",
        {std::string(agent), std::string(owner), std::to_string(epoch)});
  }

  bool leased_elsewhere(std::string_view agent, std::string_view owner) override {
    return exists(
        "SELECT 1 FROM agent_leases WHERE agent = $1 AND owner <> $2 AND expires_at > now()",
        {std::string(agent), std::string(owner)});
  }

  void lock_seq_order() override {
    if (seq_order_locked_) return;
    static const std::string lock =
        "SELECT pg_advisory_xact_lock(" + std::to_string(kSeqOrderLockKey) + ")";
    must(db_.query(lock));
    seq_order_locked_ = true;
  }

 private:
  bool exists(const std::string& sql, const PgParams& params) {
    return !must(db_.query(sql, params)).empty();
  }

  PgConnection& db_;
  bool seq_order_locked_ = false;
};

class PgBackend final : public JournalBackend {
 public:
  explicit PgBackend(PgConnection& db) : db_(db) {}
  Status transact(const std::function<void(JournalTx&)>& op) override {
    // A deadlock or serialization failure (two relays inserting the same keyed webhooks in
    // opposite orders, say) ends one side's transaction: it runs again.
    constexpr int kTries = 5;
    Status s;
    for (int attempt = 1; attempt <= kTries; ++attempt) {
      s = transact_once(op);
      if (s.kind() != StatusKind::kConflict) return s;
    }
    return s;
  }

  Status read(const std::function<void(JournalTx&)>& op) override {
    // One snapshot for every read of `op` (as SQLite's read transaction), and a write fails.
    if (Status s = begin_and_run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", op); !s)
      return s;
    const bool failed = db_.in_failed_transaction();
    // Nothing to keep: ended either way. A read whose statement failed (and was caught) fails.
    if (Status s = db_.exec("ROLLBACK"); !s) return s;
    if (failed)
      return Status::io_error(
          "postgresql: a statement of the read failed (its error was caught and the operation "
          "went on)");
    return Status::ok();
  }

 private:
  // BEGINs with `begin` and runs `op`. Ok: the transaction is open, for the caller to end.
  // When `op` throws, the transaction is rolled back and the error returned.
  Status begin_and_run(const char* begin, const std::function<void(JournalTx&)>& op) {
    // Sent with the transaction's first statement, in one round trip with it.
    db_.defer(begin);
    try {
      PgTx tx(db_);
      op(tx);
      return Status::ok();
    } catch (const JournalError& e) {
      (void)db_.exec("ROLLBACK");
      return e.status();
    } catch (const std::exception& e) {
      (void)db_.exec("ROLLBACK");
      return Status::io_error(e.what());
    }
  }

  Status transact_once(const std::function<void(JournalTx&)>& op) {
    if (Status s = begin_and_run("BEGIN ISOLATION LEVEL READ COMMITTED", op); !s) return s;
    // What the operation deferred (a savepoint's release) first: a COMMIT after a failed one
    // would never run, leaving the transaction open and failed.
    if (Status s = db_.flush(); !s) {
      (void)db_.exec("ROLLBACK");
      return s;
    }
    // A statement failed and the operation caught it and went on: PostgreSQL has aborted the
    // whole transaction (SQLite undoes that statement alone). Nothing of it is stored: never
    // reported as committed.
    if (db_.in_failed_transaction()) {
      (void)db_.exec("ROLLBACK");
      return Status::io_error(
          "postgresql: a statement of the transaction failed (its error was caught and the "
          "operation went on): the whole transaction was rolled back");
    }
    // synchronous_commit = on (set by the connection): COMMIT returns once the commit is
    // durable on the primary, and on the synchronous standbys it names.
    auto tag = db_.command_tag("COMMIT");
    if (!tag) return tag.status();
    if (*tag != "COMMIT") return Status::io_error("postgresql: COMMIT answered " + *tag);
    return Status::ok();
  }

  PgConnection& db_;
};

// open_pg_reader's backend: owns its connection.
class PgReader final : public JournalBackend {
 public:
  explicit PgReader(std::unique_ptr<PgConnection> db) : db_(std::move(db)), backend_(*db_) {}
  Status transact(const std::function<void(JournalTx&)>&) override {
    return Status::invalid_argument("a journal reader cannot write");
  }
  Status read(const std::function<void(JournalTx&)>& op) override { return backend_.read(op); }
  // Each statement on its own, outside a transaction (its connection takes no writes): one
  // round trip for a single read, not three.
  Status read_each(const std::function<void(JournalTx&)>& op) override {
    try {
      PgTx tx(*db_);
      op(tx);
      return Status::ok();
    } catch (const JournalError& e) {
      return e.status();
    } catch (const std::exception& e) {
      return Status::io_error(e.what());
    }
  }

 private:
  std::unique_ptr<PgConnection> db_;
  PgBackend backend_;
};

}  // namespace

std::unique_ptr<JournalBackend> pg_backend(PgConnection& db) {
  return std::make_unique<PgBackend>(db);
}

Result<std::unique_ptr<JournalBackend>> open_pg_reader(const std::string& conninfo) {
  auto db = PgConnection::connect(conninfo);
  if (!db) return db.status();
  // read_each runs outside a transaction: a write fails there too.
  if (Status s = (*db)->exec("SET default_transaction_read_only = on"); !s) return s;
  return std::unique_ptr<JournalBackend>(new PgReader(std::move(*db)));
}

}  // namespace iarelay
