// The operator's reads of the PostgreSQL journal: status_report.cpp's document in PostgreSQL's
// SQL, and `iarelay sql`'s read-only transaction (the changes: pg_maintenance.cpp).
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

Result<std::vector<WebhookRow>> pg_select_webhooks(PgConnection& db, const WebhookFilter& f) {
  Where w;
  if (!f.states.empty()) {
    std::vector<std::string> names;
    for (auto s : f.states) names.emplace_back(to_string(s));
    w.sql += " AND state = ANY(" + w.param(text_array(names)) + "::text[])";
  }
  add_filters(w, f);
  if (!f.ids.empty()) w.sql += " AND id = ANY(" + w.param(text_array(f.ids)) + "::text[])";
  std::string sql =
      "SELECT seq, id, source, source_id, received_at, service, agent, type, event_id, state, "
      "assigned_agent, attempts, next_attempt_at, delivered_at, last_status, last_error FROM "
      "webhooks WHERE true" +
      w.sql + (f.oldest_first ? " ORDER BY seq" : " ORDER BY seq DESC");
  if (f.limit) sql += " LIMIT " + std::to_string(*f.limit);
  auto rows = db.query(sql, w.params);
  if (!rows) return rows.status();
  std::vector<WebhookRow> out;
  out.reserve(rows->size());
  for (const PgRow& r : *rows) {
    WebhookRow row;
    row.seq = integer(r[0]);
    row.id = *r[1];
    row.source = *r[2];
    row.source_id = r[3];
    row.received_at = *r[4];
    row.service = *r[5];
    row.agent = r[6];
    row.type = *r[7];
    row.event_id = r[8];
    row.state = *r[9];
    row.assigned_agent = r[10];
    row.attempts = static_cast<int>(integer(r[11]));
    row.next_attempt_at = r[12];
    row.delivered_at = r[13];
    if (r[14]) row.last_status = static_cast<int>(integer(r[14]));
    row.last_error = r[15];
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace iarelay
