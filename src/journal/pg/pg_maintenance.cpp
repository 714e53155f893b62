// maintenance.cpp's changes in PostgreSQL's SQL, for `iarelay` and (purge) the relay's
// retention: resend, the queue commands (retry, hold, release, delete), move and purge, in
// batches, each a transaction of its own through the JournalBackend seam, audited as on SQLite.
#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "journal/backend.h"
#include "journal/pg/pg_admin.h"
#include "journal/pg/pg_sql_parts.h"

namespace iarelay {

using namespace pg_parts;

namespace {

bool resendable(WebhookState s) {
  return s == WebhookState::kFailed || s == WebhookState::kDiscarded ||
         s == WebhookState::kDelivered;
}

struct Candidate {
  std::string id;
  WebhookState state;
};

// The audit row of one command (maintenance.cpp's AuditRow): written in the first batch that
// changes something (or, for a selection by filter, in the first batch at all), kept current
// after; `id` is the caller's copy, committed with its transaction.
class AuditRow {
 public:
  AuditRow(PgConnection& db, const AuditInfo& info, std::string action)
      : db_(db), info_(info), action_(std::move(action)) {}
  void update(JournalTx& tx, std::optional<std::int64_t>& id, std::int64_t affected) {
    if (info_.actor.empty()) return;
    if (!id) {
      tx.add_audit(info_.actor, action_, info_.filter, affected, info_.detail);
      // The identity value this session's INSERT just took (the transaction's own).
      auto rows = must(db_.query("SELECT currval(pg_get_serial_sequence('audit', 'id'))"));
      id = integer(rows[0][0]);
      return;
    }
    must(db_.command("UPDATE audit SET affected = $1 WHERE id = $2",
                     {std::to_string(affected), std::to_string(*id)}));
  }
  void link(JournalTx& tx, std::optional<std::int64_t>& id, std::int64_t affected_so_far,
            const std::string& webhook_id) {
    if (info_.actor.empty()) return;
    if (!id) update(tx, id, affected_so_far);
    must(db_.command(
        "INSERT INTO audit_webhooks (webhook_id, audit_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        {webhook_id, std::to_string(*id)}));
  }
  // link() for several webhooks in one statement.
  void link_all(JournalTx& tx, std::optional<std::int64_t>& id, std::int64_t affected_so_far,
                const std::vector<std::string>& webhook_ids) {
    if (info_.actor.empty() || webhook_ids.empty()) return;
    if (!id) update(tx, id, affected_so_far);
    must(db_.command(
        "INSERT INTO audit_webhooks (webhook_id, audit_id) SELECT unnest($1::text[]), $2 ON "
        "CONFLICT DO NOTHING",
        {pg_text_array(webhook_ids), std::to_string(*id)}));
  }

 private:
  PgConnection& db_;
  const AuditInfo& info_;
  std::string action_;
};

Result<std::vector<Candidate>> check_ids(PgConnection& db, const std::vector<std::string>& ids) {
  auto rows =
      db.query("SELECT id, state FROM webhooks WHERE id = ANY($1::text[])", {pg_text_array(ids)});
  if (!rows) return rows.status();
  std::map<std::string, std::string> states;
  for (const PgRow& r : *rows) states[*r[0]] = *r[1];
  std::vector<Candidate> found;
  std::vector<std::string> problems;
  for (const auto& id : ids) {
    auto it = states.find(id);
    if (it == states.end()) {
      problems.push_back(id + " not found");
      continue;
    }
    auto s = parse_state(it->second);
    if (!s || !resendable(*s)) {
      problems.push_back(id + " is " + it->second);
      continue;
    }
    found.push_back({id, *s});
  }
  if (!problems.empty()) {
    std::string msg = "cannot resend (only failed, discarded or delivered webhooks can be): ";
    for (std::size_t i = 0; i < problems.size() && i < 5; ++i) msg += (i ? ", " : "") + problems[i];
    if (problems.size() > 5) msg += ", and " + std::to_string(problems.size() - 5) + " more";
    return Status::invalid_argument(msg);
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.id < b.id; });
  found.erase(
      std::unique(found.begin(), found.end(), [](auto& a, auto& b) { return a.id == b.id; }),
      found.end());
  return found;
}

}  // namespace

Result<std::int64_t> pg_resend(PgConnection& db, const WebhookFilter& filter,
                               const std::optional<std::string>& to_agent,
                               const MaintenanceOptions& options) {
  const int batch = std::max(1, options.batch_size);
  if (filter.ids.empty()) {
    if (filter.states.empty())
      return Status::invalid_argument(
          "resend needs webhook ids or a state (failed, discarded or delivered)");
    for (auto s : filter.states)
      if (!resendable(s))
        return Status::invalid_argument("cannot resend webhooks in state '" +
                                        std::string(to_string(s)) +
                                        "' (only failed, discarded or delivered)");
  }
  if (to_agent && to_agent->empty()) return Status::invalid_argument("empty agent for --to-agent");
  TransitionFields fields;
  fields.attempts = 0;
  fields.next_attempt_at = std::optional<Millis>();
  fields.clear_delivered_at = true;
  if (to_agent) fields.assigned_agent = std::optional<std::string>(*to_agent);

  auto backend = pg_backend(db);
  AuditRow audit(db, options.audit, "resend");
  std::optional<std::int64_t> audit_id;  // as committed
  std::int64_t total = 0;                // as committed

  if (!filter.ids.empty()) {
    auto checked = check_ids(db, filter.ids);
    if (!checked) return checked.status();
    if (options.dry_run) return static_cast<std::int64_t>(checked->size());
    const auto& rows = *checked;
    std::size_t pos = 0;
    do {
      const std::size_t end = std::min(rows.size(), pos + static_cast<std::size_t>(batch));
      // Set inside the transaction (which may run again on a deadlock), kept once committed.
      std::optional<std::int64_t> id;
      std::int64_t changed = 0;
      Status s = backend->transact([&](JournalTx& tx) {
        id = audit_id;
        changed = 0;
        for (std::size_t i = pos; i < end; ++i)
          if (tx.transition(rows[i].id, rows[i].state, WebhookState::kQueued, fields)) {
            audit.link(tx, id, total + changed, rows[i].id);
            ++changed;
          }
        audit.update(tx, id, total + changed);
      });
      if (!s) return s;
      audit_id = id;
      total += changed;
      pos = end;
      if (options.progress) options.progress(total);
    } while (pos < rows.size());
    return total;
  }

  // The webhooks that matched when the command began: batches stop at the newest seq then.
  Where base;
  add_filters(base, filter);
  {
    auto newest = db.query("SELECT coalesce(max(seq), 0) FROM webhooks");
    if (!newest) return newest.status();
    base.sql += " AND seq <= " + base.param(*(*newest)[0][0]);
  }
  std::vector<WebhookState> states = filter.states;
  std::sort(states.begin(), states.end());
  states.erase(std::unique(states.begin(), states.end()), states.end());

  if (options.dry_run) {
    std::vector<std::string> names;
    for (auto s : states) names.emplace_back(to_string(s));
    Where w = base;
    const std::string in_states = w.param(pg_text_array(names));
    auto n = db.query(
        "SELECT count(*) FROM webhooks WHERE state = ANY(" + in_states + "::text[])" + w.sql,
        w.params);
    if (!n) return n.status();
    total = integer((*n)[0][0]);
    if (total > 0 && options.progress) options.progress(total);
    return total;
  }

  bool first = true;
  for (WebhookState state : states) {
    // Keyset cursor over (received_at, seq): each batch costs its own size.
    std::string cursor_time;
    std::int64_t cursor_seq = 0;
    for (;;) {
      std::optional<std::int64_t> id;
      std::int64_t changed = 0;
      std::size_t fetched = 0;
      std::string next_time;
      std::int64_t next_seq = 0;
      Status s = backend->transact([&](JournalTx& tx) {
        id = audit_id;
        changed = 0;
        next_time = cursor_time;
        next_seq = cursor_seq;
        Where w = base;
        const std::string sql = "SELECT id, seq, received_at FROM webhooks WHERE state = " +
                                w.param(std::string(to_string(state))) +
                                " AND (received_at, seq) > (" + w.param(cursor_time) + ", " +
                                w.param(std::to_string(cursor_seq)) + "::bigint)" + w.sql +
                                " ORDER BY received_at, seq LIMIT " + std::to_string(batch);
        auto rows = must(db.query(sql, w.params));
        fetched = rows.size();
        for (const PgRow& r : rows) {
          next_seq = integer(r[1]);
          next_time = *r[2];
          if (tx.transition(*r[0], state, WebhookState::kQueued, fields)) {
            audit.link(tx, id, total + changed, *r[0]);
            ++changed;
          }
        }
        // The audit row even when nothing matched: the operator's action is recorded.
        if (changed > 0 || first) audit.update(tx, id, total + changed);
      });
      if (!s) return s;
      audit_id = id;
      total += changed;
      cursor_time = next_time;
      cursor_seq = next_seq;
      first = false;
      if (fetched > 0 && options.progress) options.progress(total);
      if (fetched < static_cast<std::size_t>(batch)) break;
    }
  }
  return total;
}

namespace {

std::string states_text(const std::vector<WebhookState>& states) {
  std::string out;
  for (auto s : states) out += (out.empty() ? "" : ", ") + std::string(to_string(s));
  return out;
}

std::vector<FeedConsumerAck> feed_consumers(PgConnection& db) {
  std::vector<FeedConsumerAck> out;
  // In byte order of the names, as SQLite lists them (whatever the database's collation).
  for (const PgRow& r :
       must(db.query("SELECT name, acked_seq FROM consumers ORDER BY name COLLATE \"C\"")))
    out.push_back({*r[0], integer(r[1])});
  return out;
}

// Stored rows are deleted only up to what every consumer has acknowledged (none when no
// consumer is known: min() over no rows is NULL, and seq <= NULL is never true).
constexpr const char* kAcknowledgedByAll = " AND seq <= (SELECT min(acked_seq) FROM consumers)";

// Applies `op` to one row (read in state `r.state`) through its guarded statement, in `tx`;
// whether it changed. A delete takes the row's attempts and audit_webhooks links with it.
bool apply_op(PgConnection& db, JournalTx& tx, QueueOp op, const WebhookRow& r) {
  auto state = parse_state(r.state);
  if (!state) return false;
  TransitionFields f;
  switch (op) {
    case QueueOp::kRetry:
      f.next_attempt_at = std::optional<Millis>();
      return tx.transition(r.id, WebhookState::kQueued, WebhookState::kQueued, f);
    case QueueOp::kHold:
      return tx.transition(r.id, WebhookState::kQueued, WebhookState::kHeld);
    case QueueOp::kRelease:
      return tx.transition(r.id, WebhookState::kHeld, WebhookState::kQueued);
    case QueueOp::kDelete:
      break;
  }
  if (must(db.command("DELETE FROM webhooks WHERE id = $1 AND state = $2", {r.id, r.state})) != 1)
    return false;
  must(db.command("DELETE FROM attempts WHERE webhook_id = $1", {r.id}));
  must(db.command("DELETE FROM audit_webhooks WHERE webhook_id = $1", {r.id}));
  return true;
}

}  // namespace

Result<std::int64_t> pg_change_webhooks(PgConnection& db, QueueOp op, const WebhookFilter& filter,
                                        Millis now, const MaintenanceOptions& options,
                                        const std::function<void(const WebhookRow&)>& each) {
  const std::string name(queue_op_name(op));
  const std::vector<WebhookState> allowed = queue_op_states(op);
  auto applies = [&](WebhookState s) {
    return std::find(allowed.begin(), allowed.end(), s) != allowed.end();
  };
  std::vector<WebhookState> states = filter.states;
  if (filter.ids.empty()) {
    if (states.empty() && op == QueueOp::kDelete)
      return Status::invalid_argument("delete needs webhook ids or --state (" +
                                      states_text(allowed) + ")");
    for (auto s : states)
      if (!applies(s))
        return Status::invalid_argument(name + " applies to " + states_text(allowed) +
                                        " webhooks, not " + std::string(to_string(s)));
    if (states.empty()) states = allowed;
    std::sort(states.begin(), states.end());
    states.erase(std::unique(states.begin(), states.end()), states.end());
  }
  const int batch = std::max(1, options.batch_size);
  auto backend = pg_backend(db);
  AuditRow audit(db, options.audit, name);
  std::optional<std::int64_t> audit_id;  // as committed
  std::int64_t total = 0;                // as committed

  // Applies op to `rows` (in seq order: the order their row locks are taken) in a transaction
  // of its own, or (dry run) counts them. `each` is called once the batch has committed: the
  // transaction may run again after a deadlock.
  auto run_batch = [&](const std::vector<WebhookRow>& rows, bool first) -> Status {
    if (options.dry_run) {
      for (const auto& r : rows)
        if (each) each(r);
      total += static_cast<std::int64_t>(rows.size());
      return Status::ok();
    }
    std::optional<std::int64_t> id;
    std::vector<const WebhookRow*> changed;
    Status s = backend->transact([&](JournalTx& tx) {
      id = audit_id;
      changed.clear();
      std::vector<std::string> ids;
      for (const auto& r : rows)
        if (apply_op(db, tx, op, r)) {
          changed.push_back(&r);
          ids.push_back(r.id);
        }
      const auto n = static_cast<std::int64_t>(changed.size());
      // The audit row even when nothing changed: the operator's action is recorded. After a
      // delete too (the row's older links went with it): the audit keeps the ids a delete took.
      if (n > 0 || first) audit.update(tx, id, total + n);
      audit.link_all(tx, id, total + n, ids);
    });
    if (!s) return s;
    audit_id = id;
    total += static_cast<std::int64_t>(changed.size());
    if (each)
      for (const WebhookRow* r : changed) each(*r);
    return Status::ok();
  };

  if (!filter.ids.empty()) {
    auto found = db.query(
        std::string("SELECT ") + kWebhookColumns + " FROM webhooks WHERE id = ANY($1::text[])",
        {pg_text_array(filter.ids)});
    if (!found) return found.status();
    std::map<std::string, WebhookRow> by_id;
    for (const PgRow& r : *found) {
      WebhookRow row = webhook_row(r);
      by_id.emplace(row.id, std::move(row));
    }
    std::vector<WebhookRow> rows;
    std::vector<std::string> problems;
    std::optional<std::vector<FeedConsumerAck>> consumers;
    bool unacknowledged = false;
    for (const auto& id : filter.ids) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        problems.push_back(id + " not found");
        continue;
      }
      const WebhookRow& r = it->second;
      auto s = parse_state(r.state);
      if (!s || !applies(*s)) {
        problems.push_back(id + " is " + queue_op_refusal(op, r.state));
        continue;
      }
      // A stored row is kept for the feed: as purge, delete leaves one a consumer lacks.
      if (op == QueueOp::kDelete && *s == WebhookState::kStored && !options.force) {
        if (!consumers) {
          try {
            consumers = feed_consumers(db);
          } catch (const JournalError& e) {
            return e.status();
          }
        }
        std::string lacking = consumers_lacking(*consumers, r.seq);
        if (!lacking.empty()) {
          problems.push_back(id + " is stored and not acknowledged by every feed consumer (" +
                             lacking + ")");
          unacknowledged = true;
          continue;
        }
      }
      if (std::none_of(rows.begin(), rows.end(), [&](auto& x) { return x.id == r.id; }))
        rows.push_back(r);
    }
    if (!problems.empty()) {
      std::string msg = "cannot " + name + " (nothing changed): ";
      for (std::size_t i = 0; i < problems.size() && i < 5; ++i)
        msg += (i ? "; " : "") + problems[i];
      if (problems.size() > 5) msg += "; and " + std::to_string(problems.size() - 5) + " more";
      if (unacknowledged) msg += kUnacknowledgedStoredHint;
      return Status::invalid_argument(msg);
    }
    // A dry run lists them in the order given; a change takes their row locks by seq.
    if (!options.dry_run)
      std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.seq < b.seq; });
    for (std::size_t pos = 0; pos < rows.size(); pos += static_cast<std::size_t>(batch)) {
      std::vector<WebhookRow> part(
          rows.begin() + static_cast<long>(pos),
          rows.begin() + static_cast<long>(std::min(rows.size(), pos + batch)));
      if (Status s = run_batch(part, pos == 0); !s) return s;
      if (options.progress) options.progress(total);
    }
    return total;
  }

  // The webhooks that matched when the command began: batches stop at the newest seq then.
  Where base;
  add_filters(base, filter);
  {
    auto newest = db.query("SELECT coalesce(max(seq), 0) FROM webhooks");
    if (!newest) return newest.status();
    base.sql += " AND seq <= " + base.param(*(*newest)[0][0]) + "::bigint";
  }
  // Stored rows a feed consumer lacks: refused as a whole, before anything changes.
  if (op == QueueOp::kDelete && !options.force &&
      std::count(states.begin(), states.end(), WebhookState::kStored) > 0) {
    auto n = db.query(
        "SELECT count(*), max(seq) FROM webhooks WHERE state = 'stored' AND seq > "
        "coalesce((SELECT min(acked_seq) FROM consumers), 0)" +
            base.sql,
        base.params);
    if (!n) return n.status();
    const std::int64_t count = integer((*n)[0][0]);
    const std::int64_t newest = integer((*n)[0][1]);
    if (count > 0) {
      std::vector<FeedConsumerAck> consumers;
      try {
        consumers = feed_consumers(db);
      } catch (const JournalError& e) {
        return e.status();
      }
      return Status::invalid_argument(
          "refusing to delete " + std::to_string(count) + " stored webhook" +
          (count == 1 ? "" : "s") + " not acknowledged by every feed consumer (" +
          consumers_lacking(consumers, newest) + "); nothing changed" + kUnacknowledgedStoredHint);
    }
  }
  if (op == QueueOp::kRetry) base.sql += " AND next_attempt_at > " + base.param(format_time(now));

  bool first = true;
  for (WebhookState state : states) {
    // The check above ran before; a stored row that arrived since is not taken either.
    const bool acknowledged_only =
        op == QueueOp::kDelete && state == WebhookState::kStored && !options.force;
    std::int64_t cursor = 0;  // keyset by seq: each batch costs its own size
    for (;;) {
      Where w = base;
      const std::string sql =
          std::string("SELECT ") + kWebhookColumns +
          " FROM webhooks WHERE state = " + w.param(std::string(to_string(state))) + " AND seq > " +
          w.param(std::to_string(cursor)) + "::bigint" + w.sql +
          (acknowledged_only ? kAcknowledgedByAll : "") + " ORDER BY seq LIMIT " +
          std::to_string(batch);
      auto read = db.query(sql, w.params);
      if (!read) return read.status();
      std::vector<WebhookRow> rows;
      rows.reserve(read->size());
      for (const PgRow& r : *read) rows.push_back(webhook_row(r));
      if (!rows.empty()) cursor = rows.back().seq;
      // Each row changes through a guarded statement in its batch's transaction: one a relay
      // moved since this read is left as it is.
      if (Status s = run_batch(rows, first); !s) return s;
      first = false;
      if (!rows.empty() && options.progress) options.progress(total);
      if (rows.size() < static_cast<std::size_t>(batch)) break;
    }
  }
  return total;
}

Result<std::int64_t> pg_move_webhooks(PgConnection& db, const MoveFrom& from, const std::string& to,
                                      const WebhookFilter& filter,
                                      const MaintenanceOptions& options) {
  if (to.empty()) return Status::invalid_argument("move needs an agent to move to");
  if (from.agent && *from.agent == to)
    return Status::invalid_argument("--from and --to name the same agent (" + to + ")");
  WebhookFilter f;  // only these filters apply
  f.service = filter.service;
  f.type = filter.type;
  f.event = filter.event;
  f.since = filter.since;
  f.until = filter.until;
  const WebhookState state = from.stored ? WebhookState::kStored : WebhookState::kQueued;
  // Where they wait. Stored rows a feed consumer has acknowledged went downstream already:
  // moving them would deliver them twice (unless the caller insists).
  Where base;
  if (from.stored)
    base.sql = from.include_acknowledged ? "state = 'stored'"
                                         : "state = 'stored' AND seq > coalesce((SELECT "
                                           "max(acked_seq) FROM consumers), 0)";
  else if (from.agent)
    base.sql = "assigned_agent = " + base.param(*from.agent) + " AND state = 'queued'";
  else
    base.sql = "assigned_agent IS NULL AND state = 'queued'";
  add_filters(base, f);
  TransitionFields fields;
  fields.assigned_agent = std::optional<std::string>(to);
  fields.next_attempt_at = std::optional<Millis>();
  if (from.stored) fields.attempts = 0;
  const int batch = std::max(1, options.batch_size);

  // An inflight webhook of a selected alert where they wait: moving its successors would let
  // them overtake it. Checked once before anything changes (the operator pauses the agent
  // first; a relay claims only from unpaused agents).
  if (!from.stored) {
    auto n = db.query("SELECT count(*) FROM webhooks w WHERE " + base.sql +
                          " AND w.event_id IS NOT NULL AND EXISTS (SELECT 1 FROM webhooks i "
                          "WHERE i.event_id = w.event_id AND i.state = 'inflight' AND "
                          "i.assigned_agent IS NOT DISTINCT FROM w.assigned_agent)",
                      base.params);
    if (!n) return n.status();
    if (const std::int64_t count = integer((*n)[0][0]); count > 0)
      return Status::invalid_argument(
          std::to_string(count) +
          " of these webhooks belong to alerts with a webhook inflight on " +
          (from.agent ? *from.agent : std::string("the held queue")) +
          "; moving them could overtake it. Pause the agent (iarelay agent pause), wait until "
          "its inflight count is 0 (iarelay status), then move");
  }
  auto backend = pg_backend(db);
  AuditRow audit(db, options.audit, "move");
  std::optional<std::int64_t> audit_id;  // as committed
  std::int64_t total = 0;                // as committed
  std::int64_t cursor = 0;               // keyset by seq: arrival order, each batch its own size
  bool first = true;
  for (;;) {
    Where w = base;
    const std::string sql = "SELECT id, seq FROM webhooks WHERE " + w.sql + " AND seq > " +
                            w.param(std::to_string(cursor)) + "::bigint ORDER BY seq LIMIT " +
                            std::to_string(batch);
    std::size_t fetched = 0;
    if (options.dry_run) {
      auto rows = db.query(sql, w.params);
      if (!rows) return rows.status();
      fetched = rows->size();
      if (fetched > 0) cursor = integer(rows->back()[1]);
      total += static_cast<std::int64_t>(fetched);
    } else {
      std::optional<std::int64_t> id;
      std::int64_t changed = 0;
      std::int64_t next = cursor;
      Status s = backend->transact([&](JournalTx& tx) {
        id = audit_id;
        changed = 0;
        next = cursor;
        // Locked as read (FOR UPDATE makes PostgreSQL test the selection again on a row a
        // relay changed meanwhile): a webhook a relay's failover moved to another agent after
        // this batch was chosen is no longer where it waited, and stays where it went (its
        // alert's earlier webhook may be inflight there).
        auto rows = must(db.query(sql + " FOR UPDATE", w.params));
        fetched = rows.size();
        // In seq order: each row keeps its seq, so an alert's webhooks keep their order in the
        // new queue, and the row locks are taken in the order every batch takes them.
        for (const PgRow& r : rows) {
          next = integer(r[1]);
          if (tx.transition(*r[0], state, WebhookState::kQueued, fields)) ++changed;
        }
        if (changed > 0 || first) audit.update(tx, id, total + changed);
      });
      if (!s) return s;
      audit_id = id;
      total += changed;
      cursor = next;
      first = false;
    }
    if (fetched > 0 && options.progress) options.progress(total);
    if (fetched < static_cast<std::size_t>(batch)) break;
  }
  return total;
}

Result<std::int64_t> pg_purge_webhooks(PgConnection& db, Millis before,
                                       const std::vector<WebhookState>& states_in,
                                       const MaintenanceOptions& options) {
  std::vector<WebhookState> states = states_in;
  if (states.empty()) states.push_back(WebhookState::kDelivered);
  for (auto s : states)
    if (s == WebhookState::kQueued || s == WebhookState::kInflight || s == WebhookState::kHeld)
      return Status::invalid_argument("purge never deletes " + std::string(to_string(s)) +
                                      " webhooks (they are still to be delivered; iarelay "
                                      "delete ID --force deletes one)");
  std::sort(states.begin(), states.end());
  states.erase(std::unique(states.begin(), states.end()), states.end());
  const int batch = std::max(1, options.batch_size);
  const std::string before_text = format_time(before);
  if (options.dry_run) {
    std::int64_t total = 0;
    for (auto s : states) {
      auto n = db.query(
          std::string("SELECT count(*) FROM webhooks WHERE state = $1 AND received_at < $2") +
              (s == WebhookState::kStored && !options.force ? kAcknowledgedByAll : ""),
          {std::string(to_string(s)), before_text});
      if (!n) return n.status();
      total += integer((*n)[0][0]);
    }
    return total;
  }
  auto backend = pg_backend(db);
  AuditRow audit(db, options.audit, "purge");
  std::optional<std::int64_t> audit_id;  // as committed
  std::int64_t total = 0;                // as committed
  bool first = true;
  for (auto state : states) {
    const std::string state_text(to_string(state));
    const std::string acknowledged =
        state == WebhookState::kStored && !options.force ? kAcknowledgedByAll : "";
    std::int64_t cursor = 0;  // keyset by seq
    for (;;) {
      std::optional<std::int64_t> id;
      std::int64_t deleted = 0;
      std::size_t fetched = 0;
      std::int64_t next = cursor;
      Status s = backend->transact([&](JournalTx& tx) {
        id = audit_id;
        next = cursor;
        deleted = 0;
        auto rows = must(db.query(
            "SELECT seq FROM webhooks WHERE state = $1 AND received_at < $2 AND seq > $3::bigint" +
                acknowledged + " ORDER BY seq LIMIT " + std::to_string(batch),
            {state_text, before_text, std::to_string(cursor)}));
        fetched = rows.size();
        if (!rows.empty()) {
          next = integer(rows.back()[0]);
          std::vector<std::string> seqs;
          for (const PgRow& r : rows) seqs.push_back(*r[0]);
          // Locked in seq order first, then deleted if still in the state read: a row that left
          // it meanwhile is skipped.
          auto gone = must(
              db.query("DELETE FROM webhooks WHERE seq IN (SELECT seq FROM webhooks WHERE seq = "
                       "ANY($1::bigint[]) ORDER BY seq FOR UPDATE) AND state = $2 RETURNING id",
                       {pg_text_array(seqs), state_text}));
          deleted = static_cast<std::int64_t>(gone.size());
          if (!gone.empty()) {
            std::vector<std::string> ids;
            for (const PgRow& r : gone) ids.push_back(*r[0]);
            // No foreign keys: their attempts and audit links go with them here.
            must(db.command("DELETE FROM attempts WHERE webhook_id = ANY($1::text[])",
                            {pg_text_array(ids)}));
            must(db.command("DELETE FROM audit_webhooks WHERE webhook_id = ANY($1::text[])",
                            {pg_text_array(ids)}));
          }
        }
        if (deleted > 0 || first) audit.update(tx, id, total + deleted);
      });
      if (!s) return s;
      audit_id = id;
      total += deleted;
      cursor = next;
      first = false;
      if (fetched > 0 && options.progress) options.progress(total);
      if (fetched < static_cast<std::size_t>(batch)) break;
    }
  }
  return total;
}

Result<std::vector<UnacknowledgedStored>> pg_unacknowledged_stored(PgConnection& db, Millis before,
                                                                   std::int64_t* total) {
  const std::string before_text = format_time(before);
  std::vector<FeedConsumerAck> consumers;
  try {
    consumers = feed_consumers(db);
  } catch (const JournalError& e) {
    return e.status();
  }
  std::vector<UnacknowledgedStored> out;
  std::int64_t kept = 0;
  for (const auto& c : consumers) {
    auto n = db.query(
        "SELECT count(*) FROM webhooks WHERE state = 'stored' AND received_at < $1 AND seq > "
        "$2::bigint",
        {before_text, std::to_string(c.acked_seq)});
    if (!n) return n.status();
    UnacknowledgedStored u;
    u.consumer = c.name;
    u.acked_seq = c.acked_seq;
    u.rows = integer((*n)[0][0]);
    kept = std::max(kept, u.rows);  // the least advanced consumer holds back the most
    if (u.rows > 0) out.push_back(std::move(u));
  }
  if (consumers.empty()) {
    auto n = db.query("SELECT count(*) FROM webhooks WHERE state = 'stored' AND received_at < $1",
                      {before_text});
    if (!n) return n.status();
    UnacknowledgedStored u;
    u.rows = kept = integer((*n)[0][0]);
    if (u.rows > 0) out.push_back(std::move(u));
  }
  if (total) *total = kept;
  return out;
}

}  // namespace iarelay
