// maintenance.cpp's changes in PostgreSQL's SQL, for `iarelay`: resend, in batches, each a
// transaction of its own through the JournalBackend seam, audited as on SQLite.
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

}  // namespace iarelay
