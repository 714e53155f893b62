// The journal on PostgreSQL (issue 15, docs/high-availability.md): a libpq connection and the
// migrations of migrations/postgresql, recorded with checksums as the SQLite journal's are.
// It is reached by a libpq connection URI (several hosts with target_session_attrs=read-write
// allowed); the programs do not accept one as `journal` yet. The password comes from a password
// file or the environment (PGPASSFILE, PGPASSWORD), never from the configuration: nothing here
// prints the connection string. Connections are not thread-safe: each thread owns its own.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "journal/backend.h"
#include "journal/journal.h"

struct pg_conn;
struct pg_result;

namespace iarelay {

// One row of a result, each column as text (nullopt: NULL), or as its bytes when asked for
// binary results.
using PgRow = std::vector<std::optional<std::string>>;
// A statement's parameter: text (nullopt: NULL), or bytes (a BYTEA, sent as they are).
struct PgValue {
  std::optional<std::string> value;
  bool binary = false;
  PgValue(std::nullopt_t) {}
  PgValue(std::string v) : value(std::move(v)) {}
  PgValue(const char* v) : value(v) {}
  PgValue(std::optional<std::string> v) : value(std::move(v)) {}
  static PgValue bytes(std::string v) {
    PgValue p(std::move(v));
    p.binary = true;
    return p;
  }
};
using PgParams = std::vector<PgValue>;

// One statement of PgConnection::run_all, and what it returned.
struct PgStatement {
  std::string sql;
  PgParams params;
};
struct PgOutput {
  std::vector<PgRow> rows;
  long changed = 0;  // rows an INSERT, UPDATE or DELETE changed
};

// The limits of every statement and lock wait on a connection (statement_timeout,
// lock_timeout), unless its connection string's `options` or PGOPTIONS set their own; a
// migration runs without them.
inline constexpr Millis kStatementTimeout = 60'000;
inline constexpr Millis kLockTimeout = 10'000;

// The journal's advisory locks, one key each (a session lock and a transaction lock of one key
// are one lock to PostgreSQL): migrations (pg_migrate), the turn to take seqs
// (JournalTx::lock_seq_order: every inserting transaction), retention (one relay at a time).
inline constexpr long long kMigrationLockKey = 7304201515;
inline constexpr long long kSeqOrderLockKey = 7304201516;
inline constexpr long long kRetentionLockKey = 7304201517;

class PgConnection {
 public:
  // Fails (Unavailable) with libpq's message, which names the host but not the password.
  static Result<std::unique_ptr<PgConnection>> connect(const std::string& conninfo);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  pg_conn* handle() { return conn_; }
  // The value of a connection option in effect (libpq's keyword: "keepalives_idle"), "" when
  // unset.
  std::string option(const std::string& keyword) const;
  // Runs one or more statements without parameters.
  Status exec(const std::string& sql);
  // Runs one statement with parameters ($1, $2, ...) and returns its rows: as text, or with
  // `binary_results` each column's bytes (for BYTEA columns).
  Result<std::vector<PgRow>> query(const std::string& sql, const PgParams& params = {},
                                   bool binary_results = false);
  // Runs one statement with parameters and returns how many rows it changed.
  Result<long> command(const std::string& sql, const PgParams& params = {});
  // Runs a statement without parameters and returns its command tag ("COMMIT", "ROLLBACK").
  Result<std::string> command_tag(const std::string& sql);
  // Whether the open transaction had a statement fail (the server then refuses all but
  // ROLLBACK, and answers COMMIT with ROLLBACK). Not yet known of deferred commands: flush()
  // first.
  bool in_failed_transaction() const;
  // A command without parameters or rows (SAVEPOINT, RELEASE SAVEPOINT) sent ahead of the
  // next statement, in one round trip with it (libpq's pipeline mode); its failure is that
  // statement's. exec("ROLLBACK") drops what is deferred; exec, command_tag and flush send it.
  void defer(std::string sql);
  // Sends the deferred commands now; the first failure among them.
  Status flush();
  // Runs the statements in order in one round trip (after the deferred commands: libpq's
  // pipeline mode), each on its own as query() and command() would: their outputs, or the
  // first failure (the statements after it are not run). For statements that do not depend on
  // each other's results: a batch's outcomes.
  Result<std::vector<PgOutput>> run_all(const std::vector<PgStatement>& statements);

 private:
  explicit PgConnection(pg_conn* conn) : conn_(conn) {}
  struct Executed;
  struct ResultDeleter {
    void operator()(pg_result* r) const;
  };
  using ResultPtr = std::unique_ptr<pg_result, ResultDeleter>;
  // The deferred commands, then `mains` statements that `send_mains` sends, in one round trip:
  // the results of those statements.
  Result<std::vector<ResultPtr>> pipeline(const std::function<bool()>& send_mains,
                                          std::size_t mains);
  // Sends one statement with its parameters (prepared: `name` not empty) without waiting.
  bool send(const std::string& sql, const std::string& name, const PgParams& params,
            bool binary_results);
  std::vector<std::string> deferred_;
  // The Status of a failed statement: Unavailable when the connection is gone or the server
  // takes no writes (read-only, out of disk), Conflict for a deadlock or
  // serialization failure (may run again), IoError otherwise.
  Status failure(const pg_result* r);
  Result<Executed> execute(const std::string& sql, const PgParams& params, bool binary_results);
  // The name of `sql` prepared on this connection, preparing it at its first use; empty when
  // the cache is full (the statement then runs unprepared).
  Result<std::string> prepared(const std::string& sql, int n_params);
  pg_conn* conn_;
  // The journal's statements are a fixed set of texts: each is parsed and planned once per
  // connection instead of at every call (parse and plan were most of the writer's server time
  // in a drain, docs/benchmarks.md).
  std::unordered_map<std::string, std::string> statements_;
};

// migrations/postgresql/NNNN_*.sql, embedded at build time.
const std::vector<Migration>& pg_migrations();

// Applies pending migrations in order, each in its own transaction, under an advisory lock
// (relays starting together on one database migrate it once), recording each checksum. Fails
// (Corruption) when an applied migration's checksum differs from the embedded one, when the
// database records a migration this build does not know, or when it has a webhooks table but
// no record of migrations (not an iarelay journal).
Status pg_migrate(PgConnection& db, std::vector<std::string>* applied = nullptr);
// Verifies applied migrations without changing anything; `pending` lists what is missing.
Status pg_verify_migrations(PgConnection& db, std::vector<std::string>* pending = nullptr);

// The PostgreSQL journal on an open, migrated connection (not owned; one thread at a time).
// Its transactions run at READ COMMITTED; a webhook inserted by two relays at once (the same
// Idempotency-Key, or feed message) is stored once: the second waits for the first's commit
// and gets it as a duplicate.
std::unique_ptr<JournalBackend> pg_backend(PgConnection& db);
// A text[] literal for a parameter `$n::text[]`: every element quoted, quotes and backslashes
// escaped.
std::string pg_text_array(const std::vector<std::string>& items);
// A connection of its own to the PostgreSQL journal, for reads only (read(); a write fails),
// one thread at a time: the dispatcher's reader, the feed's.
Result<std::unique_ptr<JournalBackend>> open_pg_reader(const std::string& conninfo);

}  // namespace iarelay
