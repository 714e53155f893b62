// Resend and purge in batches: each batch reads its rows through the (state, received_at) index
// with a keyset cursor, so every batch costs its own size, not the size of the backlog. Also
// what guards the feed: acknowledgements for purging stored rows, and the seq floor.
#include "journal/maintenance.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <set>

#include "journal/statement_cache.h"

namespace iarelay {
namespace {

Status from_sqlite(const SQLite::Exception& e, const std::string& what) {
  int code = e.getErrorCode();
  std::string msg = what + ": " + e.getErrorStr();
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) return Status::unavailable(msg);
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) return Status::corruption(msg);
  return Status::io_error(msg);
}

// Runs `fn` in its own IMMEDIATE transaction when the connection is in autocommit mode, or
// inside the caller's transaction otherwise.
template <typename Fn>
void in_transaction(SQLite::Database& db, bool own, Fn&& fn) {
  if (!own) {
    fn();
    return;
  }
  SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
  fn();
  tx.commit();
}

// The audit row of one command, written in the first batch and kept current afterwards.
class AuditRow {
 public:
  AuditRow(const AuditInfo& info, std::string action) : info_(info), action_(std::move(action)) {}
  void update(SQLite::Database& db, std::int64_t affected) {
    if (info_.actor.empty()) return;
    if (!id_) {
      add_audit(db, info_.actor, action_, info_.filter, affected, info_.detail);
      id_ = db.getLastInsertRowid();
      return;
    }
    SQLite::Statement u(db, "UPDATE audit SET affected=? WHERE id=?");
    u.bind(1, affected);
    u.bind(2, *id_);
    u.exec();
  }
  // Ties the audit row (written first if need be) to a webhook it changed.
  void link(SQLite::Database& db, std::int64_t affected_so_far, const std::string& webhook_id) {
    if (info_.actor.empty()) return;
    if (!id_) update(db, affected_so_far);
    link_audit(db, *id_, webhook_id);
  }

 private:
  const AuditInfo& info_;
  std::string action_;
  std::optional<std::int64_t> id_;
};

// Stored rows are purged only up to what every consumer has acknowledged (none when no
// consumer is known: min() over no rows is NULL, and seq <= NULL is never true).
constexpr const char* kAcknowledgedByAll = " AND seq <= (SELECT min(acked_seq) FROM consumers)";

std::string placeholders(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += i ? ",?" : "?";
  return s;
}

// Filters other than state and ids as SQL, and their bindings in the same order.
struct ExtraFilter {
  std::string sql;
  std::vector<std::string> values;
};
ExtraFilter extra_filter(const WebhookFilter& f) {
  ExtraFilter x;
  if (f.agent) {
    x.sql += " AND (agent=? OR assigned_agent=?)";
    x.values.push_back(*f.agent);
    x.values.push_back(*f.agent);
  }
  if (f.service) {
    x.sql += " AND service=?";
    x.values.push_back(*f.service);
  }
  if (f.type) {
    x.sql += " AND type=?";
    x.values.push_back(*f.type);
  }
  if (f.event) {
    x.sql += " AND event_id=?";
    x.values.push_back(*f.event);
  }
  if (f.since) {
    x.sql += " AND received_at>=?";
    x.values.push_back(format_time(*f.since));
  }
  if (f.until) {
    x.sql += " AND received_at<?";
    x.values.push_back(format_time(*f.until));
  }
  return x;
}

// A command given a filter acts on the webhooks that matched it when the command began: its
// batches stop at the newest seq of that moment. Without this bound, a webhook acknowledged
// while the batches run would be deleted by a `delete --force`, or queued again by a replay
// that had just been delivered (review of the sixth session).
void only_webhooks_of_before(SQLite::Database& db, ExtraFilter& x) {
  x.sql += " AND seq<=?";
  x.values.push_back(
      std::to_string(db.execAndGet("SELECT coalesce(max(seq), 0) FROM webhooks").getInt64()));
}

bool resendable(WebhookState s) {
  return s == WebhookState::kFailed || s == WebhookState::kDiscarded ||
         s == WebhookState::kDelivered;
}

TransitionFields resend_fields(const std::optional<std::string>& to_agent) {
  TransitionFields f;
  f.attempts = 0;
  f.next_attempt_at = std::optional<Millis>();
  // delivered_at says when it was delivered; a replay is not, until the agent takes it again
  // (the earlier delivery stays in its attempts).
  f.clear_delivered_at = true;
  if (to_agent) f.assigned_agent = std::optional<std::string>(*to_agent);
  return f;
}

struct Candidate {
  std::string id;
  WebhookState state;
};

// Looks up `ids` and refuses (InvalidArgument, naming them) any that is missing or not
// failed/discarded.
Result<std::vector<Candidate>> check_ids(SQLite::Database& db,
                                         const std::vector<std::string>& ids) {
  std::vector<Candidate> found;
  std::vector<std::string> problems;
  constexpr size_t kChunk = 500;
  for (size_t start = 0; start < ids.size(); start += kChunk) {
    size_t n = std::min(kChunk, ids.size() - start);
    SQLite::Statement q(db, "SELECT id, state FROM webhooks WHERE id IN (" + placeholders(n) + ")");
    for (size_t i = 0; i < n; ++i) q.bind(static_cast<int>(i + 1), ids[start + i]);
    std::map<std::string, std::string> states;
    while (q.executeStep()) states[q.getColumn(0).getString()] = q.getColumn(1).getString();
    for (size_t i = 0; i < n; ++i) {
      const std::string& id = ids[start + i];
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
  }
  if (!problems.empty()) {
    std::string msg = "cannot resend (only failed, discarded or delivered webhooks can be): ";
    for (size_t i = 0; i < problems.size() && i < 5; ++i) msg += (i ? ", " : "") + problems[i];
    if (problems.size() > 5) msg += ", and " + std::to_string(problems.size() - 5) + " more";
    return Status::invalid_argument(msg);
  }
  // The same id given twice is resent once.
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.id < b.id; });
  found.erase(
      std::unique(found.begin(), found.end(), [](auto& a, auto& b) { return a.id == b.id; }),
      found.end());
  return found;
}

// Up to `limit` rows of `state` matching the filter after the keyset cursor, in index order.
std::vector<Candidate> next_batch(SQLite::Database& db, WebhookState state, const ExtraFilter& x,
                                  std::string& cursor_time, std::int64_t& cursor_seq, int limit) {
  SQLite::Statement q(db,
                      "SELECT id, seq, received_at FROM webhooks WHERE state=? AND "
                      "(received_at, seq) > (?, ?)" +
                          x.sql + " ORDER BY received_at, seq LIMIT ?");
  int i = 1;
  q.bind(i++, std::string(to_string(state)));
  q.bind(i++, cursor_time);
  q.bind(i++, cursor_seq);
  for (const auto& v : x.values) q.bind(i++, v);
  q.bind(i++, limit);
  std::vector<Candidate> out;
  while (q.executeStep()) {
    out.push_back({q.getColumn(0).getString(), state});
    cursor_seq = q.getColumn(1).getInt64();
    cursor_time = q.getColumn(2).getString();
  }
  return out;
}

}  // namespace

Result<std::int64_t> resend(SQLite::Database& db, const WebhookFilter& filter,
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
  const bool own_tx = sqlite3_get_autocommit(db.getHandle()) != 0;
  // transition() prepares its UPDATE through the statement cache: reuse it across the rows.
  StatementCacheScope statements(db);
  const TransitionFields fields = resend_fields(to_agent);
  std::int64_t total = 0;
  AuditRow audit(options.audit, "resend");
  try {
    if (!filter.ids.empty()) {
      auto checked = check_ids(db, filter.ids);
      if (!checked) return checked.status();
      if (options.dry_run) return static_cast<std::int64_t>(checked->size());
      const auto& rows = *checked;
      size_t pos = 0;
      do {
        size_t end = std::min(rows.size(), pos + static_cast<size_t>(batch));
        in_transaction(db, own_tx, [&] {
          std::int64_t changed = 0;
          for (size_t i = pos; i < end; ++i)
            if (transition(db, rows[i].id, rows[i].state, WebhookState::kQueued, fields)) {
              audit.link(db, total + changed, rows[i].id);
              ++changed;
            }
          audit.update(db, total + changed);
          total += changed;
        });
        pos = end;
        if (options.progress) options.progress(total);
      } while (pos < rows.size());
      return total;
    }

    ExtraFilter x = extra_filter(filter);
    only_webhooks_of_before(db, x);
    std::vector<WebhookState> states = filter.states;
    std::sort(states.begin(), states.end());
    states.erase(std::unique(states.begin(), states.end()), states.end());
    bool first = true;
    for (WebhookState state : states) {
      std::string cursor_time;
      std::int64_t cursor_seq = 0;
      for (;;) {
        size_t fetched = 0;
        if (options.dry_run) {
          fetched = next_batch(db, state, x, cursor_time, cursor_seq, batch).size();
          total += static_cast<std::int64_t>(fetched);
        } else {
          in_transaction(db, own_tx, [&] {
            auto rows = next_batch(db, state, x, cursor_time, cursor_seq, batch);
            fetched = rows.size();
            std::int64_t changed = 0;
            for (const auto& r : rows)
              if (transition(db, r.id, r.state, WebhookState::kQueued, fields)) {
                audit.link(db, total + changed, r.id);
                ++changed;
              }
            // Write the audit row even when nothing matched: the operator's action is recorded.
            if (changed > 0 || first) audit.update(db, total + changed);
            total += changed;
          });
          first = false;
        }
        if (fetched > 0 && options.progress) options.progress(total);
        if (fetched < static_cast<size_t>(batch)) break;
      }
    }
    return total;
  } catch (const SQLite::Exception& e) {
    return from_sqlite(e, "resend");
  }
}

Result<std::int64_t> move_webhooks(SQLite::Database& db, const MoveFrom& from,
                                   const std::string& to, const WebhookFilter& filter,
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
  const ExtraFilter x = extra_filter(f);
  const WebhookState state = from.stored ? WebhookState::kStored : WebhookState::kQueued;
  // Where they wait, by index: webhooks_queue (assigned_agent, state, seq) for queues, the
  // primary key for stored rows.
  // Stored rows a feed consumer has acknowledged went downstream already: moving them would
  // deliver them twice (unless the caller insists).
  const std::string where =
      from.stored
          ? std::string(from.include_acknowledged ? "state='stored'"
                                                  : "state='stored' AND seq > coalesce((SELECT "
                                                    "max(acked_seq) FROM consumers), 0)")
      : from.agent ? std::string("assigned_agent=? AND state='queued'")
                   : std::string("assigned_agent IS NULL AND state='queued'");
  const int batch = std::max(1, options.batch_size);
  const bool own_tx = sqlite3_get_autocommit(db.getHandle()) != 0;
  StatementCacheScope statements(db);
  TransitionFields fields;
  fields.assigned_agent = std::optional<std::string>(to);
  fields.next_attempt_at = std::optional<Millis>();
  if (from.stored) fields.attempts = 0;
  std::int64_t total = 0;
  AuditRow audit(options.audit, "move");
  try {
    // An inflight webhook of a selected alert where they wait: moving its successors would let
    // them overtake it. Checked once before anything changes (a running daemon claims only
    // from configured, unpaused agents; the operator pauses the agent first).
    if (!from.stored) {
      SQLite::Statement q(db,
                          "SELECT count(*) FROM webhooks w WHERE " + where + x.sql +
                              " AND w.event_id IS NOT NULL AND EXISTS (SELECT 1 FROM webhooks i "
                              "WHERE i.event_id=w.event_id AND i.state='inflight' AND "
                              "i.assigned_agent IS w.assigned_agent)");
      int i = 1;
      if (from.agent) q.bind(i++, *from.agent);
      for (const auto& v : x.values) q.bind(i++, v);
      if (q.executeStep() && q.getColumn(0).getInt64() > 0)
        return Status::invalid_argument(
            std::to_string(q.getColumn(0).getInt64()) +
            " of these webhooks belong to alerts with a webhook inflight on " +
            (from.agent ? *from.agent : std::string("the held queue")) +
            "; moving them could overtake it. Pause the agent (iarelay agent pause), wait until "
            "its inflight count is 0 (iarelay status), then move");
    }
    std::int64_t cursor = 0;
    bool first = true;
    for (;;) {
      std::vector<std::string> ids;
      auto read = [&] {  // the next batch after the cursor, in arrival order
        SQLite::Statement q(db, "SELECT id, seq FROM webhooks WHERE " + where + " AND seq>?" +
                                    x.sql + " ORDER BY seq LIMIT ?");
        int i = 1;
        if (from.agent && !from.stored) q.bind(i++, *from.agent);
        q.bind(i++, cursor);
        for (const auto& v : x.values) q.bind(i++, v);
        q.bind(i++, batch);
        ids.clear();
        while (q.executeStep()) {
          ids.push_back(q.getColumn(0).getString());
          cursor = q.getColumn(1).getInt64();
        }
      };
      if (options.dry_run) {
        read();
        total += static_cast<std::int64_t>(ids.size());
      } else {
        in_transaction(db, own_tx, [&] {
          read();
          std::int64_t changed = 0;
          for (const auto& id : ids)
            if (transition(db, id, state, WebhookState::kQueued, fields)) ++changed;
          if (changed > 0 || first) audit.update(db, total + changed);
          total += changed;
        });
        first = false;
      }
      if (!ids.empty() && options.progress) options.progress(total);
      if (ids.size() < static_cast<size_t>(batch)) break;
    }
    return total;
  } catch (const SQLite::Exception& e) {
    return from_sqlite(e, "move");
  }
}

Result<std::int64_t> purge_webhooks(SQLite::Database& db, Millis before,
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
  const bool own_tx = sqlite3_get_autocommit(db.getHandle()) != 0;
  const std::string before_text = format_time(before);
  std::int64_t total = 0;
  AuditRow audit(options.audit, "purge");
  try {
    if (options.dry_run) {
      for (auto s : states) {
        SQLite::Statement q(
            db, std::string("SELECT count(*) FROM webhooks WHERE state=? AND "
                            "received_at<?") +
                    (s == WebhookState::kStored && !options.force ? kAcknowledgedByAll : ""));
        q.bind(1, std::string(to_string(s)));
        q.bind(2, before_text);
        q.executeStep();
        total += q.getColumn(0).getInt64();
      }
      return total;
    }
    bool first = true;
    for (auto state : states) {
      const std::string state_text(to_string(state));
      const std::string acknowledged =
          state == WebhookState::kStored && !options.force ? kAcknowledgedByAll : "";
      for (;;) {
        size_t fetched = 0;
        in_transaction(db, own_tx, [&] {
          // Deleted rows leave the range, so each batch simply takes the oldest remaining.
          SQLite::Statement q(db, "SELECT seq, id FROM webhooks WHERE state=? AND received_at<?" +
                                      acknowledged + " ORDER BY received_at, seq LIMIT ?");
          q.bind(1, state_text);
          q.bind(2, before_text);
          q.bind(3, batch);
          std::vector<std::int64_t> seqs;
          std::vector<std::string> ids;
          while (q.executeStep()) {
            seqs.push_back(q.getColumn(0).getInt64());
            ids.push_back(q.getColumn(1).getString());
          }
          fetched = seqs.size();
          std::int64_t deleted = 0;
          if (fetched > 0) {
            SQLite::Statement da(
                db, "DELETE FROM attempts WHERE webhook_id IN (" + placeholders(ids.size()) + ")");
            for (size_t i = 0; i < ids.size(); ++i) da.bind(static_cast<int>(i + 1), ids[i]);
            da.exec();
            SQLite::Statement dl(db, "DELETE FROM audit_webhooks WHERE webhook_id IN (" +
                                         placeholders(ids.size()) + ")");
            for (size_t i = 0; i < ids.size(); ++i) dl.bind(static_cast<int>(i + 1), ids[i]);
            dl.exec();
            // "+state": look rows up by seq; SQLite would otherwise pick the state index and
            // walk every row of that state for each batch.
            SQLite::Statement dw(db, "DELETE FROM webhooks WHERE +state=? AND seq IN (" +
                                         placeholders(seqs.size()) + ")");
            dw.bind(1, state_text);
            for (size_t i = 0; i < seqs.size(); ++i) dw.bind(static_cast<int>(i + 2), seqs[i]);
            deleted = dw.exec();
          }
          if (deleted > 0 || first) audit.update(db, total + deleted);
          total += deleted;
        });
        first = false;
        if (fetched > 0 && options.progress) options.progress(total);
        if (fetched < static_cast<size_t>(batch)) break;
      }
    }
    return total;
  } catch (const SQLite::Exception& e) {
    return from_sqlite(e, "purge");
  }
}

Result<std::vector<UnacknowledgedStored>> unacknowledged_stored(SQLite::Database& db, Millis before,
                                                                std::int64_t* total) {
  const std::string before_text = format_time(before);
  try {
    std::vector<UnacknowledgedStored> out;
    std::int64_t kept = 0;
    SQLite::Statement consumers(db, "SELECT name, acked_seq FROM consumers ORDER BY name");
    bool any_consumer = false;
    while (consumers.executeStep()) {
      any_consumer = true;
      UnacknowledgedStored u;
      u.consumer = consumers.getColumn(0).getString();
      u.acked_seq = consumers.getColumn(1).getInt64();
      SQLite::Statement q(db,
                          "SELECT count(*) FROM webhooks WHERE state='stored' AND received_at<? "
                          "AND seq>?");
      q.bind(1, before_text);
      q.bind(2, u.acked_seq);
      q.executeStep();
      u.rows = q.getColumn(0).getInt64();
      kept = std::max(kept, u.rows);  // the least advanced consumer holds back the most
      if (u.rows > 0) out.push_back(std::move(u));
    }
    if (!any_consumer) {
      SQLite::Statement q(db,
                          "SELECT count(*) FROM webhooks WHERE state='stored' AND received_at<?");
      q.bind(1, before_text);
      q.executeStep();
      UnacknowledgedStored u;
      u.rows = kept = q.getColumn(0).getInt64();
      if (u.rows > 0) out.push_back(std::move(u));
    }
    if (total) *total = kept;
    return out;
  } catch (const SQLite::Exception& e) {
    return from_sqlite(e, "unacknowledged stored webhooks");
  }
}

namespace {

constexpr std::size_t kCandidatesShown = 5;

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string::npos;
}

// Ids beginning with `prefix`, in id order, at most `limit` (by the unique index on id: text
// compares bytewise, so the range [prefix, prefix + 0xFF) holds exactly them).
std::vector<std::string> ids_with_prefix(SQLite::Database& db, const std::string& prefix,
                                         int limit) {
  auto q = cached_statement(db, "SELECT id FROM webhooks WHERE id>=? AND id<? ORDER BY id LIMIT ?");
  q->bind(1, prefix);
  q->bind(2, prefix + "\xff");
  q->bind(3, limit);
  std::vector<std::string> out;
  while (q->executeStep()) out.push_back(q->getColumn(0).getString());
  q->reset();
  return out;
}

}  // namespace

Result<std::vector<std::string>> resolve_webhook_refs(SQLite::Database& db,
                                                      const std::vector<std::string>& refs) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  try {
    StatementCacheScope statements(db);
    for (const auto& ref : refs) {
      if (ref.empty()) return Status::invalid_argument("an empty webhook id was given");
      std::optional<std::string> id;
      auto exact = cached_statement(db, "SELECT id FROM webhooks WHERE id=?");
      exact->bind(1, ref);
      if (exact->executeStep()) id = exact->getColumn(0).getString();
      exact->reset();
      if (!id && all_digits(ref)) {
        auto by_seq = cached_statement(db, "SELECT id FROM webhooks WHERE seq=?");
        by_seq->bind(1, static_cast<std::int64_t>(std::stoll(ref)));
        if (by_seq->executeStep()) id = by_seq->getColumn(0).getString();
        by_seq->reset();
      }
      if (!id) {
        auto matches = ids_with_prefix(db, ref, static_cast<int>(kCandidatesShown) + 1);
        if (matches.empty()) {
          std::string upper = ref;
          for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          if (upper != ref)
            matches = ids_with_prefix(db, upper, static_cast<int>(kCandidatesShown) + 1);
        }
        if (matches.empty())
          return Status::not_found("no webhook has the id, id prefix or seq '" + ref + "'" +
                                   " (iarelay list shows ids and seqs)");
        if (matches.size() > 1) {
          std::string msg = "'" + ref + "' is the beginning of more than one webhook id (";
          for (std::size_t i = 0; i < matches.size() && i < kCandidatesShown; ++i)
            msg += (i ? ", " : "") + matches[i];
          if (matches.size() > kCandidatesShown) msg += ", ...";
          return Status::invalid_argument(msg + "); give more of the id, or the seq");
        }
        id = matches.front();
      }
      if (seen.insert(*id).second) out.push_back(*id);
    }
    return out;
  } catch (const SQLite::Exception& e) {
    return from_sqlite(e, "looking up webhooks");
  }
}

std::string_view queue_op_name(QueueOp op) {
  switch (op) {
    case QueueOp::kRetry:
      return "retry";
    case QueueOp::kHold:
      return "hold";
    case QueueOp::kRelease:
      return "release";
    case QueueOp::kDelete:
      break;
  }
  return "delete";
}

std::vector<WebhookState> queue_op_states(QueueOp op) {
  switch (op) {
    case QueueOp::kRetry:
    case QueueOp::kHold:
      return {WebhookState::kQueued};
    case QueueOp::kRelease:
      return {WebhookState::kHeld};
    case QueueOp::kDelete:
      break;
  }
  return {WebhookState::kStored, WebhookState::kQueued,    WebhookState::kDelivered,
          WebhookState::kFailed, WebhookState::kDiscarded, WebhookState::kHeld};
}

namespace {

std::string states_text(const std::vector<WebhookState>& states) {
  std::string out;
  for (auto s : states) out += (out.empty() ? "" : ", ") + std::string(to_string(s));
  return out;
}

// Applies `op` to one row through its guarded statement; whether it changed.
bool apply_op(SQLite::Database& db, QueueOp op, const WebhookRow& r) {
  auto state = parse_state(r.state);
  if (!state) return false;
  TransitionFields f;
  switch (op) {
    case QueueOp::kRetry:
      f.next_attempt_at = std::optional<Millis>();
      return transition(db, r.id, WebhookState::kQueued, WebhookState::kQueued, f);
    case QueueOp::kHold:
      return transition(db, r.id, WebhookState::kQueued, WebhookState::kHeld);
    case QueueOp::kRelease:
      return transition(db, r.id, WebhookState::kHeld, WebhookState::kQueued);
    case QueueOp::kDelete:
      break;
  }
  return delete_webhook(db, r.id, *state);
}

}  // namespace

std::string queue_op_refusal(QueueOp op, const std::string& state) {
  if (state == "inflight")
    return "inflight: a call is under way (wait for its outcome; iarelay show says it)";
  switch (op) {
    case QueueOp::kRetry:
      return state == "held" ? "held (iarelay release it first)" : state + " (not waiting)";
    case QueueOp::kHold:
      return state == "held" ? "held already" : state + " (only queued webhooks can be held)";
    case QueueOp::kRelease:
      return state + " (not held)";
    case QueueOp::kDelete:
      break;
  }
  return state;
}

std::string consumers_lacking(const std::vector<FeedConsumerAck>& consumers, std::int64_t seq) {
  if (consumers.empty()) return "no feed consumer has acknowledged any (none is known)";
  std::string out;
  for (const auto& c : consumers)
    if (c.acked_seq < seq)
      out += (out.empty() ? "" : ", ") + std::string("consumer '") + c.name +
             "' has acknowledged up to seq " + std::to_string(c.acked_seq);
  return out;
}

const char* const kUnacknowledgedStoredHint =
    ". Once every consumer has them, 'iarelay purge --state stored --before T' deletes them; "
    "--force-unacknowledged deletes them anyway (the consumers never get them)";

namespace {
std::vector<FeedConsumerAck> feed_consumers(SQLite::Database& db) {
  std::vector<FeedConsumerAck> out;
  SQLite::Statement q(db, "SELECT name, acked_seq FROM consumers ORDER BY name");
  while (q.executeStep()) out.push_back({q.getColumn(0).getString(), q.getColumn(1).getInt64()});
  return out;
}
}  // namespace

Result<std::int64_t> change_webhooks(SQLite::Database& db, QueueOp op, const WebhookFilter& filter,
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
  const bool own_tx = sqlite3_get_autocommit(db.getHandle()) != 0;
  StatementCacheScope statements(db);
  std::int64_t total = 0;
  AuditRow audit(options.audit, name);
  // Applies op to `rows` (or, dry run, counts them), in the caller's transaction.
  auto run_batch = [&](const std::vector<WebhookRow>& rows, bool first) {
    if (options.dry_run) {
      for (const auto& r : rows)
        if (each) each(r);
      total += static_cast<std::int64_t>(rows.size());
      return;
    }
    std::int64_t changed = 0;
    for (const auto& r : rows)
      if (apply_op(db, op, r)) {
        // After a delete too (delete_webhook dropped the row's older links): the audit keeps
        // the ids a delete took.
        audit.link(db, total + changed, r.id);
        if (each) each(r);
        ++changed;
      }
    // The audit row even when nothing changed: the operator's action is recorded.
    if (changed > 0 || first) audit.update(db, total + changed);
    total += changed;
  };
  try {
    if (!filter.ids.empty()) {
      std::vector<WebhookRow> rows;
      std::vector<std::string> problems;
      std::optional<std::vector<FeedConsumerAck>> consumers;
      bool unacknowledged = false;
      {
        // Reset after each row: a statement left on a row keeps its read transaction open, and
        // the BEGIN IMMEDIATE below would then have to upgrade it to a write, which SQLite
        // refuses at once (SQLITE_BUSY, no busy handler) whenever the daemon is writing.
        SQLite::Statement q(
            db, std::string("SELECT ") + kWebhookRowColumns + " FROM webhooks WHERE id=?");
        for (const auto& id : filter.ids) {
          q.bind(1, id);
          const bool found = q.executeStep();
          std::optional<WebhookRow> row;
          if (found) row = read_webhook_row(q);
          q.reset();
          if (!row) {
            problems.push_back(id + " not found");
            continue;
          }
          WebhookRow& r = *row;
          auto s = parse_state(r.state);
          if (!s || !applies(*s)) {
            problems.push_back(id + " is " + queue_op_refusal(op, r.state));
            continue;
          }
          // A stored row is kept for the feed: as purge, delete leaves one a consumer lacks.
          if (op == QueueOp::kDelete && *s == WebhookState::kStored && !options.force) {
            if (!consumers) consumers = feed_consumers(db);
            std::string lacking = consumers_lacking(*consumers, r.seq);
            if (!lacking.empty()) {
              problems.push_back(id + " is stored and not acknowledged by every feed consumer (" +
                                 lacking + ")");
              unacknowledged = true;
              continue;
            }
          }
          if (std::none_of(rows.begin(), rows.end(), [&](auto& x) { return x.id == r.id; }))
            rows.push_back(std::move(r));
        }
      }
      if (!problems.empty()) {
        std::string msg = "cannot " + name + " (nothing changed): ";
        for (size_t i = 0; i < problems.size() && i < 5; ++i) msg += (i ? "; " : "") + problems[i];
        if (problems.size() > 5) msg += "; and " + std::to_string(problems.size() - 5) + " more";
        if (unacknowledged) msg += kUnacknowledgedStoredHint;
        return Status::invalid_argument(msg);
      }
      for (size_t pos = 0; pos < rows.size(); pos += static_cast<size_t>(batch)) {
        std::vector<WebhookRow> part(
            rows.begin() + static_cast<long>(pos),
            rows.begin() + static_cast<long>(std::min(rows.size(), pos + batch)));
        if (options.dry_run)
          run_batch(part, pos == 0);
        else
          in_transaction(db, own_tx, [&] { run_batch(part, pos == 0); });
        if (options.progress) options.progress(total);
      }
      return total;
    }
    ExtraFilter x = extra_filter(filter);
    only_webhooks_of_before(db, x);
    // Stored rows a feed consumer lacks: refused as a whole, before anything changes.
    if (op == QueueOp::kDelete && !options.force &&
        std::count(states.begin(), states.end(), WebhookState::kStored) > 0) {
      SQLite::Statement q(db,
                          "SELECT count(*), max(seq) FROM webhooks WHERE state='stored' AND "
                          "seq > coalesce((SELECT min(acked_seq) FROM consumers), 0)" +
                              x.sql);
      int i = 1;
      for (const auto& v : x.values) q.bind(i++, v);
      q.executeStep();
      const std::int64_t n = q.getColumn(0).getInt64();
      const std::int64_t newest = q.getColumn(1).isNull() ? 0 : q.getColumn(1).getInt64();
      q.reset();
      if (n > 0)
        return Status::invalid_argument("refusing to delete " + std::to_string(n) +
                                        " stored webhook" + (n == 1 ? "" : "s") +
                                        " not acknowledged by every feed consumer (" +
                                        consumers_lacking(feed_consumers(db), newest) +
                                        "); nothing changed" + kUnacknowledgedStoredHint);
    }
    if (op == QueueOp::kRetry) {
      x.sql += " AND next_attempt_at>?";
      x.values.push_back(format_time(now));
    }
    bool first = true;
    for (WebhookState state : states) {
      std::string cursor_time;
      std::int64_t cursor_seq = 0;
      for (;;) {
        std::vector<WebhookRow> rows;
        auto read = [&] {
          // The check above ran before; a stored row that arrived since is not taken either.
          const bool acknowledged_only =
              op == QueueOp::kDelete && state == WebhookState::kStored && !options.force;
          SQLite::Statement q(db, std::string("SELECT ") + kWebhookRowColumns +
                                      " FROM webhooks WHERE state=? AND (received_at, seq) > "
                                      "(?, ?)" +
                                      x.sql + (acknowledged_only ? kAcknowledgedByAll : "") +
                                      " ORDER BY received_at, seq LIMIT ?");
          int i = 1;
          q.bind(i++, std::string(to_string(state)));
          q.bind(i++, cursor_time);
          q.bind(i++, cursor_seq);
          for (const auto& v : x.values) q.bind(i++, v);
          q.bind(i++, batch);
          while (q.executeStep()) {
            rows.push_back(read_webhook_row(q));
            cursor_seq = rows.back().seq;
            cursor_time = rows.back().received_at;
          }
        };
        // A dry run reads outside any transaction; a real run reads in the batch's own.
        if (options.dry_run) {
          read();
          run_batch(rows, first);
        } else {
          in_transaction(db, own_tx, [&] {
            read();
            run_batch(rows, first);
          });
        }
        first = false;
        if (!rows.empty() && options.progress) options.progress(total);
        if (rows.size() < static_cast<size_t>(batch)) break;
      }
    }
    return total;
  } catch (const SQLite::Exception& e) {
    return from_sqlite(e, name);
  }
}

std::int64_t raise_seq_floor(SQLite::Database& db, Millis now) {
  const std::int64_t floor = static_cast<std::int64_t>(now) * 1000;
  // sqlite_sequence has the row once a first webhook was inserted; create it otherwise.
  // SQLite takes the larger of this and max(seq) for the next rowid, so it never goes back.
  SQLite::Statement add(db,
                        "INSERT INTO sqlite_sequence (name, seq) SELECT 'webhooks', 0 "
                        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name='webhooks')");
  add.exec();
  SQLite::Statement raise(db,
                          "UPDATE sqlite_sequence SET seq=max(seq, ?, "
                          "(SELECT coalesce(max(seq), 0) FROM webhooks)) WHERE name='webhooks'");
  raise.bind(1, floor);
  raise.exec();
  return db.execAndGet("SELECT seq FROM sqlite_sequence WHERE name='webhooks'").getInt64();
}

}  // namespace iarelay
