// `iarelay migrate` (create the journal or apply pending migrations) and `iarelay check`
// (integrity of the journal, its migrations, and the configuration's files).
#include <SQLiteCpp/SQLiteCpp.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "daemon/checks.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {

constexpr CommandHelp kMigrateHelp = {
    "migrate",
    "Creates the journal (0600, with its directory) if it does not exist, or applies the\n"
    "migrations this build has and the journal lacks. Prints what it applied. Refuses while\n"
    "an iarelayd holds the journal (the daemon migrates at start). On a PostgreSQL journal\n"
    "(the database must exist) it runs beside the relays, under the lock they take to\n"
    "migrate at start; a relay of an older build then refuses to start on it."};

constexpr CommandHelp kCheckHelp = {
    "check",
    "Checks the journal (PRAGMA integrity_check, applied migrations against this build's)\n"
    "and, with --config, everything a start checks, as iarelayd --check does: the\n"
    "configuration's keys, every secret and token file, the TLS certificate and key, and\n"
    "that the journal can be opened or created. Prints what is fine; exits 1 with one line\n"
    "per problem, every problem listed. On a PostgreSQL journal: its migrations against\n"
    "this build's, and how many agents live relays lease; PostgreSQL checks its own pages\n"
    "(pg_amcheck checks tables and indexes)."};

// A read-only look at an existing file before it is opened for writing, so that a foreign or
// damaged file is refused without a byte of it changing.
Status precheck_existing(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) || std::filesystem::file_size(path, ec) == 0)
    return Status::ok();
  if (std::filesystem::is_directory(path, ec))
    return Status::invalid_argument(path + " is a directory, not a journal");
  try {
    SQLite::Database db(path, SQLite::OPEN_READONLY);
    db.exec("PRAGMA query_only=ON");
    if (Status s = verify_migrations(db); !s) return Status::corruption(path + ": " + s.message());
  } catch (const SQLite::Exception& e) {
    return Status::corruption(path + ": " + e.getErrorStr());
  }
  return Status::ok();
}

// check's look at a SQLite journal: integrity, migrations; each problem told to `add`.
void check_sqlite_journal(const Context& ctx, const std::function<void(const std::string&)>& add) {
  auto db = open_for_read(ctx);
  if (!db) return add(db.status().message());
  std::vector<std::string> integrity;
  SQLite::Statement q(**db, "PRAGMA integrity_check");
  while (q.executeStep()) integrity.push_back(q.getColumn(0).getString());
  bool intact = integrity.size() == 1 && integrity[0] == "ok";
  if (!intact)
    add("journal " + ctx.journal +
        ": integrity_check: " + (integrity.empty() ? std::string("no answer") : integrity[0]) +
        (integrity.size() > 1 ? " (and " + std::to_string(integrity.size() - 1) + " more)"
                              : std::string()));
  std::vector<std::string> pending;
  Status migrations = verify_migrations(**db, &pending);
  if (!migrations)
    add("journal " + ctx.journal + ": " + migrations.message());
  else if (!pending.empty())
    add("journal " + ctx.journal + " needs migration " + pending.front() +
        " (run iarelay migrate)");
  if (intact && migrations && pending.empty()) {
    std::int64_t webhooks = (*db)->execAndGet("SELECT count(*) FROM webhooks").getInt64();
    auto pid = daemon_holding(ctx.journal);
    std::cout << "journal " << ctx.journal << ": ok (integrity ok, " << embedded_migrations().size()
              << " migrations applied, " << webhooks << " webhooks"
              << (pid ? ", held by iarelayd pid " + std::to_string(*pid) : std::string()) << ")\n";
  }
}

}  // namespace

int cmd_migrate(Context& ctx) {
  po::options_description options;
  po::variables_map vm;
  if (auto code = parse_args(ctx, kMigrateHelp, options, {}, vm)) return *code;
  if (is_postgresql_journal(ctx.journal)) return pg_migrate_command(ctx);
  if (auto pid = daemon_holding(ctx.journal))
    return fail(ctx, "iarelayd pid " + std::to_string(*pid) + " holds " + ctx.journal +
                         "; it applies migrations itself at start (stop it first)");
  if (Status s = precheck_existing(ctx.journal); !s) return fail(ctx, s.message());
  SyncLevel sync = ctx.config ? ctx.config->sync : SyncLevel::kFull;
  auto db = open_journal_for_write(ctx.journal, sync);
  if (!db) return fail(ctx, db.status().message());
  std::vector<std::string> applied;
  if (Status s = migrate(**db, &applied); !s) return fail(ctx, ctx.journal + ": " + s.message());
  for (const auto& m : applied) std::cout << "applied " << m << "\n";
  std::cout << "journal " << ctx.journal << " is up to date (" << embedded_migrations().size()
            << " migrations, " << applied.size() << " applied now)\n";
  return kExitOk;
}

int cmd_check(Context& ctx) {
  po::options_description options;
  po::variables_map vm;
  if (auto code = parse_args(ctx, kCheckHelp, options, {}, vm)) return *code;
  std::vector<std::string> problems;
  auto add = [&](const std::string& p) {
    if (std::find(problems.begin(), problems.end(), p) == problems.end()) problems.push_back(p);
  };

  if (ctx.config) {
    // The checks `iarelayd --check` and a start make (daemon/checks.h), word for word.
    const Config& c = *ctx.config;
    for (const auto& p : start_problems(c)) add(p);
    if (problems.empty())
      std::cout << "config " << c.file << ": ok (" << c.agents.size() << " agents, "
                << c.services.size() << " services"
                << (c.listen ? ", listening on " + c.listen->address : std::string())
                << (c.upstream ? ", polling " + c.upstream->url : std::string()) << ")\n";
    std::error_code ec;
    if (ctx.journal == c.journal && !is_postgresql_journal(ctx.journal) &&
        !std::filesystem::exists(ctx.journal, ec)) {
      if (problems.empty())
        std::cout << "journal " << ctx.journal
                  << " does not exist yet; iarelayd creates it at start\n";
      for (const auto& p : problems) fail(ctx, p);
      return problems.empty() ? kExitOk : kExitFailure;
    }
  }

  if (is_postgresql_journal(ctx.journal))
    pg_check(ctx, add);
  else
    check_sqlite_journal(ctx, add);
  // One line per problem, each as `iarelayd --check` says it.
  for (const auto& p : problems) fail(ctx, p);
  return problems.empty() ? kExitOk : kExitFailure;
}

}  // namespace iarelay::cli
