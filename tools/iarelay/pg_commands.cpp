// `iarelay` on a PostgreSQL journal: connecting (migrations checked), status's document, sql in
// a read-only transaction, agent pause/resume and resend with their audit rows; list, show,
// the queue commands, move and purge open their connection here (pg_connect) and call
// journal/pg/pg_admin.h. A running relay's dispatcher reads the agents table and its queues
// again every 250 ms, so it applies what these write without being told.
#include "pg_commands.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "args.h"
#include "common/config.h"
#include "journal/backend.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_admin.h"
#include "journal/pg/pg_journal.h"

namespace iarelay::cli {
namespace {

// How long `iarelay sql` lets one statement run (statement_timeout): a query an operator starts
// by mistake on a large journal does not hold a snapshot (and the vacuum it delays) for long.
constexpr Millis kSqlTimeout = 60'000;
// How long it waits for a lock (lock_timeout). A SELECT's lock waits only behind a migration;
// a LOCK TABLE (which a read-only transaction allows) queues every relay behind it meanwhile.
constexpr Millis kSqlLockWait = 1'000;

// Type OIDs of pg_type (fixed by PostgreSQL, the same in every version).
constexpr unsigned kBoolOid = 16, kByteaOid = 17, kInt8Oid = 20, kInt2Oid = 21, kInt4Oid = 23,
                   kOidOid = 26, kFloat4Oid = 700, kFloat8Oid = 701, kNumericOid = 1700;

std::string shown(const Context& ctx) {
  return journal_for_display(ctx.journal);
}

// A connection to the journal. With `migrated`, every migration this build knows must be
// applied (a relay applies them when it starts) and none it does not know.
Result<std::unique_ptr<PgConnection>> connect(const Context& ctx, bool migrated) {
  auto db = PgConnection::connect(ctx.journal);
  if (!db) return Status::unavailable("journal " + shown(ctx) + ": " + db.status().message());
  if (!migrated) return db;
  std::vector<std::string> pending;
  if (Status s = pg_verify_migrations(**db, &pending); !s)
    return Status::corruption("journal " + shown(ctx) + ": " + s.message());
  if (!pending.empty())
    return Status::conflict("journal " + shown(ctx) + " needs migration " + pending.front() +
                            " (iarelayd applies the migrations when it starts on it)");
  return db;
}

// An agent named by identifier or handle, as resolve_agent (cli.h) on SQLite.
Result<std::string> resolve_agent(const Context& ctx, PgConnection& db, const std::string& name) {
  if (ctx.config)
    if (const AgentConfig* a = ctx.config->find_agent(name)) return a->id;
  auto known = pg_agent_known(db, name);
  if (!known) return known.status();
  if (*known) return name;
  return unknown_agent(ctx, name);
}

// A column's text as the SQLite sql command shows its values: integers and reals as numbers,
// bytes as an SQL hex literal (x'0a1b'), booleans as JSON booleans, the rest as text.
Json cell(const std::optional<std::string>& text, unsigned type) {
  if (!text) return nullptr;
  const std::string& t = *text;
  switch (type) {
    case kInt2Oid:
    case kInt4Oid:
    case kInt8Oid:
    case kOidOid:
      return static_cast<std::int64_t>(std::strtoll(t.c_str(), nullptr, 10));
    case kNumericOid:
    case kFloat4Oid:
    case kFloat8Oid: {
      // Whole numbers that fit stay exact; NaN and Infinity stay text (JSON has neither).
      char* end = nullptr;
      if (t.find_first_of(".eE") == std::string::npos) {
        errno = 0;
        const long long n = std::strtoll(t.c_str(), &end, 10);
        if (errno == 0 && end && *end == '\0') return static_cast<std::int64_t>(n);
      }
      const double d = std::strtod(t.c_str(), &end);
      if (end && *end == '\0' && std::isfinite(d)) return d;
      return t;
    }
    case kBoolOid:
      return t == "t";
    case kByteaOid:
      // PostgreSQL's hex output, \x0a1b...
      return "x'" + (t.rfind("\\x", 0) == 0 ? t.substr(2) : t) + "'";
    default:
      return t;
  }
}

// The refusal or failure of a statement, worded as the SQLite sql command words its own.
std::string sql_failure(const Status& s, const std::string& sqlstate) {
  if (sqlstate == "25006")
    return "refused: the statement would change the journal (sql runs in a read-only "
           "transaction; use resend or agent to change it): " +
           s.message();
  if (sqlstate == "42501") return "refused: " + s.message();
  if (sqlstate == "57014")
    return "query failed: " + s.message() + " (sql stops a statement after " +
           format_duration(kSqlTimeout) + ")";
  if (sqlstate == "55P03")
    return "query failed: " + s.message() + " (sql waits at most " + format_duration(kSqlLockWait) +
           " for a lock; another session holds it)";
  // The extended protocol's refusal of a second statement (the server's words, in English).
  if (sqlstate == "42601" && s.message().find("multiple commands") != std::string::npos)
    return "refused: more than one statement (sql runs exactly one): " + s.message();
  if (sqlstate.rfind("42", 0) == 0) return "bad query: " + s.message();
  return "query failed: " + s.message();
}

}  // namespace

int pg_migrate_command(const Context& ctx) {
  auto db = connect(ctx, false);
  if (!db) return fail(ctx, db.status().message());
  // Under the advisory lock the relays take when they start: migrated once, whoever runs.
  std::vector<std::string> applied;
  if (Status s = pg_migrate(**db, &applied); !s)
    return fail(ctx, "journal " + shown(ctx) + ": " + s.message());
  for (const auto& m : applied) std::cout << "applied " << m << "\n";
  std::cout << "journal " << shown(ctx) << " is up to date (" << pg_migrations().size()
            << " migrations, " << applied.size() << " applied now)\n";
  return kExitOk;
}

void pg_check(const Context& ctx, const std::function<void(const std::string&)>& problem) {
  auto db = connect(ctx, false);
  if (!db) return problem(db.status().message());
  std::vector<std::string> pending;
  if (Status s = pg_verify_migrations(**db, &pending); !s)
    return problem("journal " + shown(ctx) + ": " + s.message());
  if (!pending.empty())
    return problem("journal " + shown(ctx) + " needs migration " + pending.front() +
                   " (run iarelay migrate, or start a relay: it applies them)");
  auto counts = (*db)->query(
      "SELECT (SELECT count(*) FROM webhooks), (SELECT count(*) FROM agent_leases WHERE epoch > 0 "
      "AND expires_at > now()), (SELECT count(DISTINCT owner) FROM agent_leases WHERE epoch > 0 "
      "AND expires_at > now())");
  if (!counts) return problem("journal " + shown(ctx) + ": " + counts.status().message());
  const PgRow& row = counts->front();
  // PostgreSQL checks its own pages (data checksums, when the cluster has them); amcheck
  // checks tables and indexes, with the privileges it asks for.
  std::cout << "journal " << shown(ctx) << ": ok (" << pg_migrations().size()
            << " migrations applied, " << *row[0] << " webhooks, " << *row[1]
            << " agents leased by " << *row[2]
            << " live relays; tables and indexes: check with pg_amcheck)\n";
}

Result<std::unique_ptr<PgConnection>> pg_connect(const Context& ctx) {
  return connect(ctx, true);
}

Result<CommandJournal> open_command_journal(const Context& ctx) {
  CommandJournal out;
  if (is_postgresql_journal(ctx.journal)) {
    auto c = pg_connect(ctx);
    if (!c) return c.status();
    out.pg = std::move(*c);
  } else {
    auto c = open_for_read(ctx);
    if (!c) return c.status();
    out.sqlite = std::move(*c);
  }
  return out;
}

Result<std::string> pg_resolve_agent(const Context& ctx, PgConnection& db,
                                     const std::string& name) {
  return resolve_agent(ctx, db, name);
}

std::string pg_failure(const Context& ctx, const Status& status) {
  if (status.kind() == StatusKind::kInvalidArgument || status.kind() == StatusKind::kNotFound)
    return status.message();
  return "journal " + shown(ctx) + ": " + status.message();
}

Result<std::string> pg_status_document(const Context& ctx) {
  auto db = connect(ctx, true);
  if (!db) return db.status();
  auto doc = pg_status_json(**db, ctx.config ? &*ctx.config : nullptr, shown(ctx));
  if (!doc) return Status::io_error("journal " + shown(ctx) + ": " + doc.status().message());
  return doc;
}

int pg_sql(const Context& ctx, const std::string& query, Format format) {
  // Not checked for migrations: any database can be read.
  auto db = connect(ctx, false);
  if (!db) return fail(ctx, db.status().message());
  std::optional<RowWriter> out;
  std::vector<unsigned> types;
  std::vector<Json> values;
  std::string sqlstate;
  Status s = pg_read_only_query(
      **db, query, kSqlTimeout, kSqlLockWait,
      [&](const std::vector<PgColumn>& columns) {
        std::vector<std::string> names;
        for (const auto& c : columns) {
          names.push_back(c.name);
          types.push_back(c.type_oid);
        }
        out.emplace(std::cout, format, names, true);
      },
      [&](const PgRow& row) {
        values.clear();
        for (std::size_t i = 0; i < row.size(); ++i) values.push_back(cell(row[i], types[i]));
        out->row(values);
      },
      &sqlstate);
  if (out) out->finish();
  if (s.kind() == StatusKind::kInvalidArgument) return usage_error(ctx, s.message());
  if (!s) return fail(ctx, sql_failure(s, sqlstate));
  return kExitOk;
}

int pg_agent_change(const Context& ctx, const std::string& name, bool pause,
                    std::optional<Millis> until, std::optional<std::string> reason) {
  auto db = connect(ctx, true);
  if (!db) return fail(ctx, db.status().message());
  auto resolved = resolve_agent(ctx, **db, name);
  if (!resolved) return fail(ctx, resolved.status().message());
  const std::string id = *resolved;
  auto journal = pg_backend(**db);
  std::optional<AgentRow> before;
  if (Status s = journal->read([&](JournalTx& tx) { before = tx.load_agent(id); }); !s)
    return fail(ctx, "journal " + shown(ctx) + ": " + s.message());
  if (!pause && (!before || before->state != "paused")) {
    std::cout << "agent " << id << " is not paused (state " << (before ? before->state : "up")
              << "); nothing to do\n";
    return kExitOk;
  }
  // The state and its audit row in one transaction, as on SQLite.
  Status s = journal->transact([&](JournalTx& tx) {
    const bool changed = pause ? tx.set_agent_state(id, "paused", reason, until, false)
                               : tx.set_agent_state(id, "up", std::nullopt, std::nullopt, false);
    tx.add_audit(actor(), pause ? "pause" : "resume", audit_filter(ctx), changed ? 1 : 0,
                 "agent=" + id);
  });
  if (!s) return fail(ctx, "journal " + shown(ctx) + ": " + s.message());
  if (pause)
    std::cout << "paused agent " << id << (until ? " until " + format_time(*until) : "")
              << (reason ? " (" + *reason + ")" : "") << "\n";
  else
    std::cout << "resumed agent " << id << "\n";
  return kExitOk;
}

int pg_resend(const Context& ctx, PgResend request) {
  constexpr std::int64_t kListedRows = 50;  // as the SQLite resend lists a replay
  auto db = connect(ctx, true);
  if (!db) return fail(ctx, db.status().message());
  WebhookFilter& filter = request.filter;
  if (!request.refs.empty()) {
    auto ids = pg_resolve_webhook_refs(**db, request.refs);
    if (!ids) return fail(ctx, ids.status().message());
    filter.ids = std::move(*ids);
  }
  std::optional<std::string> to_agent;
  if (request.to_agent) {
    auto agent = resolve_agent(ctx, **db, *request.to_agent);
    if (!agent) return fail(ctx, "--to-agent: " + agent.status().message());
    to_agent = *agent;
  }
  // Everything that can be refused is checked before anything changes (a dry run is exactly
  // that), as on SQLite.
  if (request.dry_run || !filter.ids.empty()) {
    MaintenanceOptions check;
    check.dry_run = true;
    if (request.dry_run) check.progress = progress_printer("resend --dry-run");
    if (request.list_replay) {
      WebhookFilter delivered = filter;
      delivered.states = {WebhookState::kDelivered};
      delivered.oldest_first = true;
      delivered.limit = kListedRows;
      auto rows = pg_select_webhooks(**db, delivered);
      if (!rows) return fail(ctx, rows.status().message());
      RowWriter out(std::cout, Format::kTable,
                    {"seq", "id", "state", "agent", "event_id", "received_at", "delivered_at"});
      for (const WebhookRow& r : *rows)
        out.row({r.seq, r.id, r.state, r.assigned_agent ? Json(*r.assigned_agent) : Json(nullptr),
                 r.event_id ? Json(*r.event_id) : Json(nullptr), r.received_at,
                 r.delivered_at ? Json(*r.delivered_at) : Json(nullptr)});
      out.finish();
    }
    auto would = iarelay::pg_resend(**db, filter, to_agent, check);
    if (!would) return fail(ctx, would.status().message());
    if (request.list_replay) {
      WebhookFilter delivered = filter;
      delivered.states = {WebhookState::kDelivered};
      auto replays = iarelay::pg_resend(**db, delivered, to_agent, check);
      if (!replays) return fail(ctx, replays.status().message());
      if (*replays > kListedRows) std::cout << "... and " << (*replays - kListedRows) << " more\n";
      std::cout << "would resend " << rows_text(*would) << ", " << *replays
                << " of them delivered already (a replay: the agent gets them again); nothing "
                   "changed: add --force to resend them\n";
      return kExitOk;
    }
    if (request.dry_run) {
      std::cout << "would resend " << rows_text(*would) << " (dry run: nothing changed)\n";
      return kExitOk;
    }
  }
  MaintenanceOptions run;
  run.progress = progress_printer("resend");
  run.audit = {actor(), audit_filter(ctx), resend_detail(filter, to_agent)};
  auto done = iarelay::pg_resend(**db, filter, to_agent, run);
  if (!done) return fail(ctx, done.status().message());
  std::cout << "resent " << rows_text(*done) << (to_agent ? " to " + *to_agent : "") << "\n";
  return kExitOk;
}

}  // namespace iarelay::cli
