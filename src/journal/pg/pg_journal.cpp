// libpq connections and the PostgreSQL journal's migrations.
#include "journal/pg/pg_journal.h"

#include <libpq-fe.h>

#include <cstdlib>

#include "common/crypto.h"
#include "common/time.h"

namespace iarelay {

// Defined in the generated pg_migrations_embedded.cpp (from migrations/postgresql/*.sql).
extern const std::vector<Migration>& pg_migrations_table();

namespace {

// Serializes migrations of relays starting together on one database (any constant of ours).
const std::string kMigrationLock =
    "SELECT pg_advisory_xact_lock(" + std::to_string(kMigrationLockKey) + ")";

std::string one_line(const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  for (char& c : m)
    if (c == '\n') c = ' ';
  return m;
}

}  // namespace

namespace {

// libpq's message about a connection, with the password of `conninfo` never in it: a string
// libpq cannot parse comes back whole in its message (a '%' not percent-encoded, an IPv6
// address missing its ']'), so then only that it could not be read is said.
std::string connection_error(const std::string& conninfo, const char* message) {
  char* parse_error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (!options) {
    PQfreemem(parse_error);
    return "the connection string cannot be read (check its form: a '%' in a password is "
           "written %25; the string is not shown, it may hold a password)";
  }
  std::string out = one_line(message);
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    if (std::string_view(o->keyword) != "password" || !o->val || !*o->val) continue;
    const std::string password = o->val;
    for (std::size_t at; (at = out.find(password)) != std::string::npos;)
      out.replace(at, password.size(), "***");
  }
  PQconninfoFree(options);
  return out;
}

}  // namespace

Result<std::unique_ptr<PgConnection>> PgConnection::connect(const std::string& conninfo) {
  // TCP keepalives and a user timeout unless the connection string sets its own (it comes
  // after them, so its values win): a server whose host vanished without closing the
  // connection (a lost host, a partition) fails the statement waiting on it within about 30 s
  // instead of the kernel's many minutes of retransmissions, and its owner connects again (to
  // the promoted standby, with a multi-host string). Not used over a Unix socket.
  //
  // A host that does not answer at all is given up after connect_timeout (10 s; per host of a
  // multi-host string), not the kernel's two minutes of SYN retries.
  //
  // Likewise a statement and a lock wait are limited (kStatementTimeout, kLockTimeout) unless
  // the string's `options` (or PGOPTIONS, which comes after ours) says otherwise: a statement
  // stuck behind an operator's lock or a runaway plan fails, and is retried, logged and
  // counted, instead of stopping the writer, the dispatcher or a lease renewal without a word.
  std::string options = std::string("-c statement_timeout=") + std::to_string(kStatementTimeout) +
                        " -c lock_timeout=" + std::to_string(kLockTimeout);
  if (const char* env = std::getenv("PGOPTIONS")) options += std::string(" ") + env;
  const char* const keywords[] = {"keepalives",       "keepalives_idle",  "keepalives_interval",
                                  "keepalives_count", "tcp_user_timeout", "connect_timeout",
                                  "options",          "dbname",           nullptr};
  const char* const values[] = {
      "1", "10", "5", "3", "30000", "10", options.c_str(), conninfo.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  if (!conn) return Status::unavailable("postgresql: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    Status s =
        Status::unavailable("postgresql: " + connection_error(conninfo, PQerrorMessage(conn)));
    PQfinish(conn);
    return s;
  }
  std::unique_ptr<PgConnection> out(new PgConnection(conn));
  // Text is UTF-8 both ways; times are compared as RFC 3339 text, not by the session's zone.
  // Notices (CREATE ... IF NOT EXISTS skipping) are not errors: not printed to stderr.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  // Whatever the database's or role's defaults:
  // - synchronous_commit = on: COMMIT returns once durable (callers are told "stored" then);
  // - read committed: a concurrent insert of one webhook waits and finds it (no serialization
  //   failure);
  // - a session idle inside a transaction for 5 s (its relay frozen, paused, cut off) is ended
  //   by the server, so its locks (a lease held FOR SHARE) never keep other relays from an
  //   agent for longer.
  if (Status s = out->exec("SET client_encoding = 'UTF8'; SET synchronous_commit = on; "
                           "SET default_transaction_isolation = 'read committed'; "
                           "SET idle_in_transaction_session_timeout = '5s'");
      !s)
    return s;
  return out;
}

void PgConnection::ResultDeleter::operator()(pg_result* r) const {
  PQclear(r);
}

PgConnection::~PgConnection() {
  PQfinish(conn_);
}

Status PgConnection::exec(const std::string& sql) {
  // A ROLLBACK undoes whatever the deferred commands would do (a BEGIN not sent yet: nothing
  // to roll back); anything else comes after them.
  if (sql == "ROLLBACK") {
    deferred_.clear();
    if (PQtransactionStatus(conn_) == PQTRANS_IDLE) return Status::ok();
  } else if (Status s = flush(); !s) {
    return s;
  }
  ResultPtr r(PQexec(conn_, sql.c_str()));
  ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Status::ok();
  return failure(r.get());
}

Status PgConnection::failure(const pg_result* r) {
  // The statement's own message: in a pipeline, the connection's is not (it may be empty).
  const char* own = r ? PQresultErrorMessage(r) : nullptr;
  std::string message = "postgresql: " + one_line(own && *own ? own : PQerrorMessage(conn_));
  if (PQstatus(conn_) != CONNECTION_OK) return Status::unavailable(message);
  // A deadlock or serialization failure: the transaction may run again (transact does).
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (state && (std::string_view(state) == "40P01" || std::string_view(state) == "40001"))
    return Status::conflict(message);
  // The server takes no writes (a standby, a database made read-only) or has no disk left:
  // every commit fails alike, whatever the operation. Unavailable, so that the writer says it is
  // not healthy and connects again (libpq with target_session_attrs=read-write finds a primary
  // that takes them).
  if (state && (std::string_view(state) == "25006" || std::string_view(state) == "53100"))
    return Status::unavailable(message);
  // A prepared statement the server no longer has (a pooler between, a DISCARD ALL): a new
  // connection prepares them again.
  if (state && std::string_view(state) == "26000") return Status::unavailable(message);
  return Status::io_error(message);
}

std::string pg_text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

namespace {

std::vector<PgRow> rows_of(const pg_result* r) {
  std::vector<PgRow> rows;
  const int n = PQntuples(r), cols = PQnfields(r);
  rows.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    PgRow row;
    row.reserve(static_cast<std::size_t>(cols));
    for (int c = 0; c < cols; ++c) {
      if (PQgetisnull(r, i, c))
        row.emplace_back(std::nullopt);
      else
        row.emplace_back(
            std::string(PQgetvalue(r, i, c), static_cast<std::size_t>(PQgetlength(r, i, c))));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// A statement's parameters as libpq takes them.
struct Args {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  explicit Args(const PgParams& params) {
    values.reserve(params.size());
    for (const auto& p : params) {
      values.push_back(p.value ? p.value->c_str() : nullptr);
      lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
      formats.push_back(p.binary ? 1 : 0);
    }
  }
};

}  // namespace

struct PgConnection::Executed {
  ResultPtr result;
};

bool PgConnection::send(const std::string& sql, const std::string& name, const PgParams& params,
                        bool binary_results) {
  const Args a(params);
  const int n = static_cast<int>(params.size()), results = binary_results ? 1 : 0;
  return (name.empty() ? PQsendQueryParams(conn_, sql.c_str(), n, nullptr, a.values.data(),
                                           a.lengths.data(), a.formats.data(), results)
                       : PQsendQueryPrepared(conn_, name.c_str(), n, a.values.data(),
                                             a.lengths.data(), a.formats.data(), results)) == 1;
}

Result<PgConnection::Executed> PgConnection::execute(const std::string& sql, const PgParams& params,
                                                     bool binary_results) {
  auto name = prepared(sql, static_cast<int>(params.size()));
  if (!name) return name.status();
  if (!deferred_.empty()) {
    auto r = pipeline([&] { return send(sql, *name, params, binary_results); }, 1);
    if (!r) return r.status();
    return Executed{std::move(r->front())};
  }
  const Args a(params);
  const int n = static_cast<int>(params.size()), results = binary_results ? 1 : 0;
  ResultPtr r(name->empty() ? PQexecParams(conn_, sql.c_str(), n, nullptr, a.values.data(),
                                           a.lengths.data(), a.formats.data(), results)
                            : PQexecPrepared(conn_, name->c_str(), n, a.values.data(),
                                             a.lengths.data(), a.formats.data(), results));
  ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return failure(r.get());
  return Executed{std::move(r)};
}

Result<std::vector<PgOutput>> PgConnection::run_all(const std::vector<PgStatement>& statements) {
  std::vector<PgOutput> out;
  if (statements.empty()) return out;
  std::vector<std::string> names;
  names.reserve(statements.size());
  for (const PgStatement& st : statements) {
    auto name = prepared(st.sql, static_cast<int>(st.params.size()));
    if (!name) return name.status();
    names.push_back(std::move(*name));
  }
  auto results = pipeline(
      [&] {
        for (std::size_t i = 0; i < statements.size(); ++i)
          if (!send(statements[i].sql, names[i], statements[i].params, false)) return false;
        return true;
      },
      statements.size());
  if (!results) return results.status();
  out.reserve(results->size());
  for (const ResultPtr& r : *results)
    out.push_back({rows_of(r.get()), std::atol(PQcmdTuples(r.get()))});
  return out;
}

void PgConnection::defer(std::string sql) {
  deferred_.push_back(std::move(sql));
}

Status PgConnection::flush() {
  if (deferred_.empty()) return Status::ok();
  auto r = pipeline(nullptr, 0);
  return r ? Status::ok() : r.status();
}

// The deferred commands, then the statement `send_main` sends (none when null), in one
// pipeline: one round trip. The first failure among them is returned (a statement after a
// failed one is not run: PGRES_PIPELINE_ABORTED). A pipeline that could not be sent or read
// whole leaves the connection in a state nothing else can use: Unavailable, so that its owner
// connects again.
Result<std::vector<PgConnection::ResultPtr>> PgConnection::pipeline(
    const std::function<bool()>& send_mains, std::size_t mains) {
  const std::vector<std::string> ahead = std::move(deferred_);
  deferred_.clear();
  auto broken = [&] {
    return Status::unavailable("postgresql: " + one_line(PQerrorMessage(conn_)) +
                               " (in a pipeline of " + std::to_string(ahead.size() + mains) +
                               " statements)");
  };
  if (PQenterPipelineMode(conn_) != 1) return broken();
  bool sent = true;
  for (const std::string& c : ahead)
    sent =
        sent && PQsendQueryParams(conn_, c.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
  if (send_mains) sent = sent && send_mains();
  if (!sent || PQpipelineSync(conn_) != 1) return broken();
  Status first_failure;
  std::vector<ResultPtr> main_results;
  main_results.reserve(mains);
  const std::size_t queries = ahead.size() + mains;
  for (std::size_t i = 0; i < queries; ++i) {
    ResultPtr r(PQgetResult(conn_));
    if (!r) return broken();
    while (PGresult* more = PQgetResult(conn_)) PQclear(more);  // up to this query's end
    const ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && first_failure)
      first_failure = st == PGRES_PIPELINE_ABORTED
                          ? Status::io_error("postgresql: not run, a statement before it failed")
                          : failure(r.get());
    if (i >= ahead.size()) main_results.push_back(std::move(r));
  }
  ResultPtr sync(PQgetResult(conn_));
  if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC || PQexitPipelineMode(conn_) != 1)
    return broken();
  if (!first_failure) return first_failure;
  return main_results;
}

Result<std::string> PgConnection::prepared(const std::string& sql, int n_params) {
  // More texts than the journal has statements: some caller builds its SQL (an operator's
  // filter); those run unprepared rather than fill the server's memory.
  constexpr std::size_t kMaxStatements = 256;
  if (auto it = statements_.find(sql); it != statements_.end()) return it->second;
  // A statement of more parameters is built for a batch (a multi-row INSERT): its text changes
  // with the batch's size, and preparing each size would fill the cache.
  constexpr int kMaxPreparedParams = 32;
  if (statements_.size() >= kMaxStatements || n_params > kMaxPreparedParams) return std::string();
  // The deferred commands (a SAVEPOINT) first: a statement that fails to prepare fails inside
  // the savepoint, which a ROLLBACK TO can then undo.
  if (Status s = flush(); !s) return s;
  std::string name = "iarelay_" + std::to_string(statements_.size());
  // Prepared outside any transaction's fate: a prepared statement outlives a rollback.
  ResultPtr r(PQprepare(conn_, name.c_str(), sql.c_str(), n_params, nullptr));
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) return failure(r.get());
  statements_.emplace(sql, name);
  return name;
}

Result<std::vector<PgRow>> PgConnection::query(const std::string& sql, const PgParams& params,
                                               bool binary_results) {
  auto done = execute(sql, params, binary_results);
  if (!done) return done.status();
  return rows_of(done->result.get());
}

std::string PgConnection::option(const std::string& keyword) const {
  std::string out;
  PQconninfoOption* options = PQconninfo(conn_);
  for (PQconninfoOption* o = options; o && o->keyword; ++o)
    if (keyword == o->keyword && o->val) out = o->val;
  PQconninfoFree(options);
  return out;
}

bool PgConnection::in_failed_transaction() const {
  return PQtransactionStatus(conn_) == PQTRANS_INERROR;
}

Result<std::string> PgConnection::command_tag(const std::string& sql) {
  if (Status s = flush(); !s) return s;
  ResultPtr r(PQexec(conn_, sql.c_str()));
  ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return failure(r.get());
  return std::string(PQcmdStatus(r.get()));
}

Result<long> PgConnection::command(const std::string& sql, const PgParams& params) {
  auto done = execute(sql, params, false);
  if (!done) return done.status();
  return std::atol(PQcmdTuples(done->result.get()));
}

const std::vector<Migration>& pg_migrations() {
  return pg_migrations_table();
}

Status pg_verify_migrations(PgConnection& db, std::vector<std::string>* pending) {
  auto tables = db.query(
      "SELECT to_regclass('schema_migrations') IS NOT NULL, to_regclass('webhooks') IS NOT NULL");
  if (!tables) return tables.status();
  const bool has_record = (*tables)[0][0] == "t", has_webhooks = (*tables)[0][1] == "t";
  if (!has_record && has_webhooks)
    return Status::corruption(
        "not an iarelay journal (it has a webhooks table but no schema_migrations)");
  std::vector<PgRow> applied;
  if (has_record) {
    auto rows = db.query("SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if (!rows) return rows.status();
    applied = std::move(*rows);
  }
  const auto& known = pg_migrations();
  for (const PgRow& row : applied) {
    const std::string name = row[1].value_or("");
    const int version = std::stoi(row[0].value_or("0"));
    if (version < 1 || static_cast<std::size_t>(version) > known.size())
      return Status::corruption("journal has migration " + name +
                                " which this build does not know: refusing to continue");
    const Migration& m = known[static_cast<std::size_t>(version - 1)];
    if (m.name != name || sha256_hex(m.sql) != row[2].value_or(""))
      return Status::corruption("migration " + name +
                                " differs from the one this build applied (checksum mismatch): "
                                "refusing to continue");
  }
  if (pending)
    for (std::size_t i = applied.size(); i < known.size(); ++i) pending->push_back(known[i].name);
  return Status::ok();
}

Status pg_migrate(PgConnection& db, std::vector<std::string>* applied) {
  for (const Migration& m : pg_migrations()) {
    if (Status s = db.exec("BEGIN"); !s) return s;
    auto fail = [&](Status s) {
      (void)db.exec("ROLLBACK");
      return s;
    };
    // A migration may rewrite a table, and waits for another relay's (kMigrationLock) for as
    // long as that takes: no statement or lock limit in its transaction.
    if (Status s = db.exec("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0"); !s)
      return fail(s);
    if (Status s = db.exec(kMigrationLock); !s) return fail(s);
    // Verified under the lock: another relay may have migrated meanwhile.
    if (Status s = pg_verify_migrations(db); !s) return fail(s);
    if (Status s = db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                           "PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
                           "applied_at TEXT NOT NULL)");
        !s)
      return fail(s);
    auto seen =
        db.query("SELECT 1 FROM schema_migrations WHERE version = $1", {std::to_string(m.version)});
    if (!seen) return fail(seen.status());
    if (!seen->empty()) {
      if (Status s = db.exec("COMMIT"); !s) return s;
      continue;
    }
    if (Status s = db.exec(m.sql); !s)
      return fail(Status::io_error("migration " + m.name + " failed: " + s.message()));
    auto rec =
        db.query("INSERT INTO schema_migrations VALUES ($1, $2, $3, $4)",
                 {std::to_string(m.version), m.name, sha256_hex(m.sql), format_time(now_millis())});
    if (!rec) return fail(rec.status());
    if (Status s = db.exec("COMMIT"); !s) return s;
    if (applied) applied->push_back(m.name);
  }
  return Status::ok();
}

}  // namespace iarelay
