// The operator's reads and changes of the PostgreSQL journal: status_report.cpp's document and
// maintenance.cpp's resend in PostgreSQL's SQL, and `iarelay sql`'s read-only transaction.
// Text order: the database's collation need not be byte order (the tests' clusters use ICU),
// so lists the SQLite journal returns in byte order are sorted here (std::map, std::sort).
#include "journal/pg/pg_admin.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "common/config.h"
#include "journal/backend.h"
#include "journal/pg/pg_sql_parts.h"
#include "journal/status_report.h"

namespace iarelay {
namespace {

using namespace pg_parts;
using Json = nlohmann::ordered_json;

constexpr Millis kHourMs = 3'600'000;

Json text_or_null(const std::optional<std::string>& text) {
  return text ? Json(*text) : Json(nullptr);
}

std::string text_array(const std::vector<std::string>& items) {
  return pg_text_array(items);
}

// --- the status document ----------------------------------------------------------------------

struct QueueFigures {
  std::int64_t queued = 0, inflight = 0;
  Json oldest_at = nullptr;
  Json oldest_age_ms = nullptr;
};

struct RecentOutcomes {
  std::int64_t delivered = 0, failed = 0, retried = 0;
};

// The received_at of the first queued webhook by seq of `agent` (nullopt: the unassigned
// ones), through the partial index webhooks_queue.
void oldest_queued(PgConnection& db, const std::optional<std::string>& agent, Millis now,
                   QueueFigures& f) {
  auto rows = must(
      agent ? db.query("SELECT received_at FROM webhooks WHERE assigned_agent = $1 AND state = "
                       "'queued' ORDER BY seq LIMIT 1",
                       {*agent})
            : db.query("SELECT received_at FROM webhooks WHERE assigned_agent IS NULL AND state "
                       "= 'queued' ORDER BY seq LIMIT 1"));
  if (rows.empty() || !rows[0][0]) return;
  f.oldest_at = *rows[0][0];
  if (auto t = parse_time(*rows[0][0], now)) f.oldest_age_ms = std::max<Millis>(0, now - *t);
}

// As status_report.cpp's recent_attempts: the first attempt started since `cutoff` found by
// bisecting the ids (they grow with time), then counted by agent and outcome from there.
std::map<std::string, RecentOutcomes> recent_attempts(PgConnection& db, Millis cutoff) {
  std::map<std::string, RecentOutcomes> out;
  auto bounds = must(db.query("SELECT min(id), max(id) FROM attempts"));
  if (bounds.empty() || !bounds[0][0]) return out;
  std::int64_t lo = integer(bounds[0][0]);
  std::int64_t hi = integer(bounds[0][1]) + 1;
  const std::string cutoff_text = format_time(cutoff);
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    auto probe = must(db.query("SELECT started_at FROM attempts WHERE id >= $1 ORDER BY id LIMIT 1",
                               {std::to_string(mid)}));
    if (probe.empty() || probe[0][0].value_or("") >= cutoff_text)
      hi = mid;
    else
      lo = mid + 1;
  }
  // Attempts are inserted as they finish, so start times are only nearly in id order.
  constexpr std::int64_t kDisorderMargin = 1000;
  auto rows = must(db.query(
      "SELECT agent, outcome, count(*) FROM attempts WHERE id >= $1 AND started_at >= $2 GROUP "
      "BY agent, outcome",
      {std::to_string(lo - kDisorderMargin), cutoff_text}));
  for (const PgRow& r : rows) {
    RecentOutcomes& o = out[*r[0]];
    const std::int64_t n = integer(r[2]);
    if (r[1] == "delivered")
      o.delivered += n;
    else if (r[1] == "failed")
      o.failed += n;
    else
      o.retried += n;
  }
  return out;
}

Json last_rewind(PgConnection& db, const std::string& name) {
  auto rows = must(db.query(
      "SELECT at, detail FROM audit WHERE action = $1 AND filter = $2 ORDER BY id DESC LIMIT 1",
      {std::string(kCursorRewindAction), name}));
  if (rows.empty()) return nullptr;
  Json detail = Json::parse(rows[0][1].value_or(""), nullptr, /*allow_exceptions=*/false);
  Json out = {{"at", text_or_null(rows[0][0])}, {"from", nullptr}, {"to", nullptr}};
  if (detail.is_object()) {
    if (detail.contains("from")) out["from"] = detail["from"];
    if (detail.contains("to")) out["to"] = detail["to"];
  }
  return out;
}

// Every lease taken at least once, on the database's clock (a relay's own may differ). A lease
// released at a clean stop expires at -infinity.
Json leases(PgConnection& db) {
  auto rows = must(db.query(
      "SELECT agent, owner, epoch, CASE WHEN isfinite(expires_at) THEN to_char(expires_at AT "
      "TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') END, CASE WHEN isfinite(expires_at) "
      "THEN floor(extract(epoch FROM expires_at - now()) * 1000)::bigint END, expires_at > now() "
      "FROM agent_leases WHERE epoch > 0"));
  std::sort(rows.begin(), rows.end(), [](const PgRow& a, const PgRow& b) { return a[0] < b[0]; });
  Json out = Json::array();
  for (const PgRow& r : rows)
    out.push_back({{"agent", *r[0]},
                   {"owner", *r[1]},
                   {"epoch", integer(r[2])},
                   {"expires_at", text_or_null(r[3])},
                   {"expires_in_ms", r[4] ? Json(integer(r[4])) : Json(nullptr)},
                   {"live", r[5] == "t"}});
  return out;
}

std::string status_document(PgConnection& db, const Config* config,
                            const std::string& journal_display) {
  const Millis now = now_millis();
  Json doc;
  doc["generated_at"] = format_time(now);
  doc["journal"] = journal_display;
  doc["daemon"] = {{"running", nullptr}, {"pid", nullptr}};
  doc["role"] = !config                       ? Json(nullptr)
                : config->role == Role::kEdge ? Json("edge")
                                              : Json("deliver");

  Json totals;
  for (const char* s : {"stored", "queued", "inflight", "delivered", "failed", "discarded", "held"})
    totals[s] = 0;
  for (const PgRow& r : must(db.query("SELECT state, count(*) FROM webhooks GROUP BY state")))
    totals[*r[0]] = integer(r[1]);
  doc["totals"] = totals;

  // Queued and inflight by assigned agent (the unassigned ones apart), in byte order.
  QueueFigures held;
  std::map<std::string, QueueFigures> figures;
  for (const PgRow& r : must(db.query(
           "SELECT assigned_agent, count(*) FILTER (WHERE state = 'queued'), count(*) FILTER "
           "(WHERE state = 'inflight') FROM webhooks WHERE state IN ('queued', 'inflight') GROUP "
           "BY assigned_agent"))) {
    QueueFigures& f = r[0] ? figures[*r[0]] : held;
    f.queued = integer(r[1]);
    f.inflight = integer(r[2]);
  }
  if (held.queued > 0) oldest_queued(db, std::nullopt, now, held);
  for (auto& [id, f] : figures)
    if (f.queued > 0) oldest_queued(db, id, now, f);
  doc["held"] = {{"queued", held.queued},
                 {"oldest_queued_at", held.oldest_at},
                 {"oldest_queued_age_ms", held.oldest_age_ms}};
  doc["unassigned"] = doc["held"];
  {
    auto rows =
        must(db.query("SELECT count(*), min(received_at) FROM webhooks WHERE state = 'held'"));
    Json oldest_at = nullptr, oldest_age_ms = nullptr;
    if (rows[0][1]) {
      oldest_at = *rows[0][1];
      if (auto t = parse_time(*rows[0][1], now)) oldest_age_ms = std::max<Millis>(0, now - *t);
    }
    doc["held_by_operator"] = {{"webhooks", integer(rows[0][0])},
                               {"oldest_received_at", oldest_at},
                               {"oldest_received_age_ms", oldest_age_ms}};
  }

  // Which agents to list, in order: configured, then the agents table, then assignees.
  std::vector<std::string> ids;
  std::set<std::string> listed;
  std::map<std::string, const AgentConfig*> configured;
  if (config)
    for (const auto& a : config->agents) {
      configured[a.id] = &a;
      if (listed.insert(a.id).second) ids.push_back(a.id);
    }
  std::map<std::string, PgRow> rows;
  for (PgRow& r : must(db.query("SELECT id, state, state_since, reason, paused_until FROM agents")))
    rows.emplace(*r[0], std::move(r));
  for (const auto& [id, r] : rows)
    if (listed.insert(id).second) ids.push_back(id);
  auto recent = recent_attempts(db, now - kHourMs);
  for (const auto& [id, f] : figures)
    if ((f.queued > 0 || f.inflight > 0 || recent.count(id)) && listed.insert(id).second)
      ids.push_back(id);
  for (const auto& [id, r] : recent)
    if (listed.insert(id).second) ids.push_back(id);

  Json agents = Json::array();
  for (const auto& id : ids) {
    Json a;
    a["id"] = id;
    auto c = configured.find(id);
    a["handle"] = c != configured.end() ? Json(c->second->handle) : Json(nullptr);
    a["configured"] = c != configured.end();
    auto r = rows.find(id);
    if (r != rows.end()) {
      const PgRow& row = r->second;
      a["state"] = text_or_null(row[1]);
      a["state_since"] = text_or_null(row[2]);
      a["reason"] = text_or_null(row[3]);
      // As load_agent reads it: a time that does not parse is no pause end.
      std::optional<Millis> until;
      if (row[4])
        if (auto t = parse_time(*row[4], 0)) until = *t;
      a["paused_until"] = until ? Json(format_time(*until)) : Json(nullptr);
    } else {
      a["state"] = c != configured.end() ? Json("up") : Json(nullptr);
      a["state_since"] = nullptr;
      a["reason"] = nullptr;
      a["paused_until"] = nullptr;
    }
    auto f = figures.find(id);
    QueueFigures q = f != figures.end() ? f->second : QueueFigures{};
    a["queued"] = q.queued;
    a["inflight"] = q.inflight;
    a["oldest_queued_at"] = q.oldest_at;
    a["oldest_queued_age_ms"] = q.oldest_age_ms;
    auto rc = recent.find(id);
    RecentOutcomes o = rc != recent.end() ? rc->second : RecentOutcomes{};
    a["delivered_last_hour"] = o.delivered;
    a["failed_last_hour"] = o.failed;
    a["retried_last_hour"] = o.retried;
    agents.push_back(std::move(a));
  }
  doc["agents"] = std::move(agents);

  if (config) {
    std::int64_t waiting = 0;
    Json which = Json::array();
    for (const auto& [id, f] : figures)
      if (f.queued > 0 && !configured.count(id)) {
        waiting += f.queued;
        which.push_back(id);
      }
    doc["unconfigured"] = {{"queued", waiting}, {"agents", std::move(which)}};
  } else {
    doc["unconfigured"] = nullptr;
  }

  Json upstream = Json::array();
  bool configured_cursor_seen = false;
  for (const PgRow& r :
       must(db.query("SELECT name, seq, updated_at FROM cursors ORDER BY name COLLATE \"C\""))) {
    const std::string name = *r[0];
    const bool is_configured = config && config->upstream && config->upstream->name == name;
    configured_cursor_seen |= is_configured;
    upstream.push_back({{"name", name},
                        {"seq", integer(r[1])},
                        {"updated_at", text_or_null(r[2])},
                        {"configured", is_configured},
                        {"rewound", last_rewind(db, name)}});
  }
  if (config && config->upstream && !configured_cursor_seen)
    upstream.push_back({{"name", config->upstream->name},
                        {"seq", 0},
                        {"updated_at", nullptr},
                        {"configured", true},
                        {"rewound", nullptr}});
  doc["upstream"] = std::move(upstream);

  std::int64_t max_seq = 0;
  Json consumers = Json::array();
  {
    auto list = must(
        db.query("SELECT name, acked_seq, acked_at FROM consumers ORDER BY name COLLATE \"C\""));
    auto m = must(db.query("SELECT max(seq) FROM webhooks WHERE state = 'stored'"));
    if (!m.empty() && m[0][0]) max_seq = integer(m[0][0]);
    for (const PgRow& r : list)
      consumers.push_back({{"name", *r[0]},
                           {"acked_seq", integer(r[1])},
                           {"acked_at", text_or_null(r[2])},
                           {"lag", std::max<std::int64_t>(0, max_seq - integer(r[1]))}});
  }
  doc["feed"] = {{"max_seq", max_seq}, {"consumers", std::move(consumers)}};
  doc["leases"] = leases(db);
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// --- sql ----------------------------------------------------------------------------------------

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

std::string one_line(std::string m) {
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  for (char& c : m)
    if (c == '\n' || c == '\t') c = ' ';
  return m;
}

// The server's error in one line: "postgresql: ERROR: cannot execute INSERT in a read-only
// transaction" (with the position in the statement when it names one).
std::string error_text(PGconn* conn, const PGresult* r) {
  const char* severity = r ? PQresultErrorField(r, PG_DIAG_SEVERITY) : nullptr;
  const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  if (!primary) return "postgresql: " + one_line(PQerrorMessage(conn));
  std::string out = "postgresql: " + std::string(severity ? severity : "ERROR") + ": " + primary;
  if (const char* at = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION))
    out += " (at character " + std::string(at) + ")";
  return one_line(out);
}

}  // namespace

Result<std::string> pg_status_json(PgConnection& db, const Config* config,
                                   const std::string& journal_display) {
  ReadSnapshot snapshot(db);
  if (Status s = snapshot.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !s) return s;
  try {
    return status_document(db, config, journal_display);
  } catch (const JournalError& e) {
    return e.status();
  } catch (const std::exception& e) {
    // A value that does not parse (a count, a seq): the journal holds what it should not.
    return Status::corruption(std::string("postgresql: unexpected value: ") + e.what());
  }
}

Status pg_read_only_query(PgConnection& db, const std::string& sql, Millis timeout,
                          Millis lock_wait,
                          const std::function<void(const std::vector<PgColumn>&)>& on_columns,
                          const std::function<void(const PgRow&)>& on_row, std::string* sqlstate) {
  ReadSnapshot tx(db);
  if (Status s = tx.begin("BEGIN TRANSACTION READ ONLY"); !s) return s;
  // The SELECT takes the transaction's first snapshot: from then on SET TRANSACTION READ WRITE
  // (or set_config of transaction_read_only) is refused, so the statement cannot lift the
  // read-only mode for itself.
  if (Status s = db.exec("SET LOCAL statement_timeout = " + std::to_string(timeout) +
                         "; SET LOCAL lock_timeout = " + std::to_string(lock_wait) +
                         "; SET LOCAL TIME ZONE 'UTC'; SELECT 1");
      !s)
    return s;
  PGconn* conn = db.handle();
  // The extended protocol (no parameters): the server refuses more than one statement.
  if (PQsendQueryParams(conn, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1)
    return Status::unavailable("postgresql: " + one_line(PQerrorMessage(conn)));
  // Rows one by one, not a whole table in memory; when refused, they come at the end.
  (void)PQsetSingleRowMode(conn);
  Status out;
  bool described = false;
  while (PGresult* raw = PQgetResult(conn)) {
    ResultPtr r(raw);
    switch (PQresultStatus(raw)) {
      case PGRES_SINGLE_TUPLE:
      case PGRES_TUPLES_OK: {
        const int columns = PQnfields(raw);
        if (!described) {
          std::vector<PgColumn> names;
          for (int c = 0; c < columns; ++c)
            names.push_back({PQfname(raw, c), static_cast<unsigned>(PQftype(raw, c))});
          on_columns(names);
          described = true;
        }
        for (int i = 0; i < PQntuples(raw); ++i) {
          PgRow row;
          row.reserve(static_cast<std::size_t>(columns));
          for (int c = 0; c < columns; ++c)
            if (PQgetisnull(raw, i, c))
              row.emplace_back(std::nullopt);
            else
              row.emplace_back(std::string(PQgetvalue(raw, i, c),
                                           static_cast<std::size_t>(PQgetlength(raw, i, c))));
          on_row(row);
        }
        break;
      }
      case PGRES_COMMAND_OK:
        if (!described) on_columns({});
        described = true;
        break;
      case PGRES_EMPTY_QUERY:
        out = Status::invalid_argument("empty query");
        break;
      default:
        // The first error is the one to tell (the results after it only end the statement).
        if (out) {
          const char* state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
          if (sqlstate) *sqlstate = state ? state : "";
          out = PQstatus(conn) == CONNECTION_OK ? Status::io_error(error_text(conn, raw))
                                                : Status::unavailable(error_text(conn, raw));
        }
        break;
    }
  }
  return out;
}

Result<bool> pg_agent_known(PgConnection& db, const std::string& id) {
  auto rows = db.query(
      "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1) OR EXISTS (SELECT 1 FROM webhooks "
      "WHERE assigned_agent = $1)",
      {id});
  if (!rows) return rows.status();
  return (*rows)[0][0] == "t";
}

Result<std::vector<std::string>> pg_resolve_webhook_refs(PgConnection& db,
                                                         const std::vector<std::string>& refs) {
  constexpr std::size_t kCandidatesShown = 5;
  // Ids beginning with `prefix`, in byte order, at most kCandidatesShown + 1. starts_with
  // compares bytes whatever the collation (a range of the id index would not).
  auto with_prefix = [&](const std::string& prefix) {
    return db.query(
        "SELECT id FROM webhooks WHERE starts_with(id, $1) ORDER BY id COLLATE \"C\" LIMIT $2",
        {prefix, std::to_string(kCandidatesShown + 1)});
  };
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& ref : refs) {
    if (ref.empty()) return Status::invalid_argument("an empty webhook id was given");
    std::optional<std::string> id;
    auto exact = db.query("SELECT id FROM webhooks WHERE id = $1", {ref});
    if (!exact) return exact.status();
    if (!exact->empty()) id = *(*exact)[0][0];
    const bool digits =
        ref.size() <= 18 && ref.find_first_not_of("0123456789") == std::string::npos;
    if (!id && digits) {
      auto by_seq = db.query("SELECT id FROM webhooks WHERE seq = $1", {ref});
      if (!by_seq) return by_seq.status();
      if (!by_seq->empty()) id = *(*by_seq)[0][0];
    }
    if (!id) {
      auto matches = with_prefix(ref);
      if (!matches) return matches.status();
      if (matches->empty()) {
        std::string upper = ref;
        for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (upper != ref) {
          matches = with_prefix(upper);
          if (!matches) return matches.status();
        }
      }
      if (matches->empty())
        return Status::not_found("no webhook has the id, id prefix or seq '" + ref + "'" +
                                 " (iarelay list shows ids and seqs)");
      if (matches->size() > 1) {
        std::string msg = "'" + ref + "' is the beginning of more than one webhook id (";
        for (std::size_t i = 0; i < matches->size() && i < kCandidatesShown; ++i)
          msg += (i ? ", " : "") + *(*matches)[i][0];
        if (matches->size() > kCandidatesShown) msg += ", ...";
        return Status::invalid_argument(msg + "); give more of the id, or the seq");
      }
      id = *(*matches)[0][0];
    }
    if (seen.insert(*id).second) out.push_back(*id);
  }
  return out;
}

Status pg_for_each_webhook(PgConnection& db, const WebhookFilter& f,
                           const std::function<bool(const WebhookRow&)>& fn) {
  // Pages of this many rows by seq (keyset): a large journal is never all in memory, and each
  // page costs its own size. One snapshot for all of them, as SQLite's one statement sees one.
  constexpr std::int64_t kPage = 500;
  Where base;
  if (!f.states.empty()) {
    std::vector<std::string> names;
    for (auto s : f.states) names.emplace_back(to_string(s));
    base.sql += " AND state = ANY(" + base.param(text_array(names)) + "::text[])";
  }
  add_filters(base, f);
  if (!f.ids.empty()) base.sql += " AND id = ANY(" + base.param(text_array(f.ids)) + "::text[])";
  ReadSnapshot snapshot(db);
  if (Status s = snapshot.begin(); !s) return s;
  std::optional<std::int64_t> cursor;  // the last seq returned
  std::int64_t left = f.limit.value_or(-1);
  while (left != 0) {
    Where w = base;
    if (cursor)
      w.sql += (f.oldest_first ? " AND seq > " : " AND seq < ") + w.param(std::to_string(*cursor)) +
               "::bigint";
    const std::int64_t page = left < 0 ? kPage : std::min(left, kPage);
    auto rows = db.query(std::string("SELECT ") + kWebhookColumns + " FROM webhooks WHERE true" +
                             w.sql + (f.oldest_first ? " ORDER BY seq" : " ORDER BY seq DESC") +
                             " LIMIT " + std::to_string(page),
                         w.params);
    if (!rows) return rows.status();
    for (const PgRow& r : *rows) {
      WebhookRow row = webhook_row(r);
      cursor = row.seq;
      if (!fn(row)) return Status::ok();
    }
    if (left > 0) left -= static_cast<std::int64_t>(rows->size());
    if (static_cast<std::int64_t>(rows->size()) < page) break;
  }
  return Status::ok();
}

Result<std::vector<WebhookRow>> pg_select_webhooks(PgConnection& db, const WebhookFilter& f) {
  std::vector<WebhookRow> out;
  Status s = pg_for_each_webhook(db, f, [&](const WebhookRow& r) {
    out.push_back(r);
    return true;
  });
  if (!s) return s;
  return out;
}

Result<std::optional<WebhookDetail>> pg_webhook_detail(PgConnection& db, const std::string& id,
                                                       const Config* config) {
  std::optional<WebhookDetail> out;
  Status s = pg_backend(db)->read([&](JournalTx& tx) {
    auto rows = must(
        db.query(std::string("SELECT ") + kWebhookColumns + " FROM webhooks WHERE id = $1", {id}));
    if (rows.empty()) return;
    WebhookDetail d;
    d.row = webhook_row(rows[0]);
    // The payload's bytes (a BYTEA), as SQLite's TEXT column holds them.
    d.row.payload = tx.load_payload(id);
    const WebhookRow& r = d.row;
    for (const PgRow& a : must(db.query(
             "SELECT a.at, a.actor, a.action, coalesce(a.filter, '') FROM audit_webhooks l JOIN "
             "audit a ON a.id = l.audit_id WHERE l.webhook_id = $1 ORDER BY a.id",
             {id})))
      d.operator_actions.push_back({*a[0], *a[1], *a[2], *a[3]});
    for (const PgRow& a : must(db.query(
             "SELECT attempt, agent, started_at, duration_ms, http_status, error, outcome FROM "
             "attempts WHERE webhook_id = $1 ORDER BY id",
             {id}))) {
      WebhookAttempt at;
      at.attempt = integer(a[0]);
      at.agent = *a[1];
      at.started_at = *a[2];
      if (a[3]) at.duration_ms = integer(a[3]);
      if (a[4]) at.http_status = integer(a[4]);
      at.error = a[5];
      at.outcome = *a[6];
      d.attempts.push_back(std::move(at));
    }
    if (r.assigned_agent) d.agent = tx.load_agent(*r.assigned_agent);
    // What it waits behind (only a queued or held webhook waits): as `iarelay show` on SQLite,
    // the newest earlier webhook still to be delivered by its agent (or by any) of its alert,
    // or of its agent with ordering = fifo, or of its alert held on any agent of its service.
    const AgentConfig* configured =
        config && r.assigned_agent ? config->find_agent(*r.assigned_agent) : nullptr;
    const Ordering ordering = configured ? configured->ordering : Ordering::kEvent;
    if ((r.state == "queued" || r.state == "held") && ordering != Ordering::kNone &&
        (r.event_id || ordering == Ordering::kFifo)) {
      Where w;
      const std::string seq = w.param(std::to_string(r.seq));
      const std::string agent = w.param(r.assigned_agent);
      std::string sql = "SELECT id, seq, state FROM webhooks WHERE seq < " + seq +
                        "::bigint AND ((state IN "
                        "('queued', 'inflight', 'held') AND (assigned_agent IS NOT DISTINCT FROM " +
                        agent + " OR assigned_agent IS NULL))";
      if (ordering == Ordering::kFifo)
        sql += ")";
      else
        sql += " OR (state = 'held' AND service = " + w.param(r.service) +
               ")) AND event_id = " + w.param(*r.event_id);
      auto ahead = must(db.query(sql + " ORDER BY seq DESC LIMIT 1", w.params));
      if (!ahead.empty())
        d.ahead = EarlierWebhook{*ahead[0][0], integer(ahead[0][1]), *ahead[0][2]};
    }
    out = std::move(d);
  });
  if (!s) return s;
  return out;
}

}  // namespace iarelay
