// `iarelay sql`: one read-only query. Four fences keep the journal unchanged: the connection is
// opened read-only with query_only, an authorizer refuses ATTACH/DETACH, pragma assignments and
// side-effect pragmas, sqlite3_stmt_readonly() is checked before the first step, and only one
// statement is accepted.
#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "args.h"
#include "commands.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {

constexpr CommandHelp kHelp = {
    "sql \"QUERY\" [--format table|csv|json]",
    "Runs one read-only SQL statement on the journal (opened read-only; statements that would\n"
    "write, ATTACH, and pragma assignments are refused). Tables: webhooks, attempts, agents,\n"
    "cursors, consumers, audit (see docs/journal.md). Example:\n"
    "  iarelay sql \"SELECT state, count(*) FROM webhooks GROUP BY state\""};

// Pragmas that take an argument yet only read.
const std::set<std::string> kReadingPragmasWithArgument = {
    "table_info",       "table_xinfo",       "index_info",      "index_xinfo", "index_list",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check", "table_list"};
// Pragmas that act even without an argument.
const std::set<std::string> kActingPragmas = {"wal_checkpoint", "optimize", "incremental_vacuum",
                                              "shrink_memory"};

struct Guard {
  std::string refused;  // what the authorizer refused, for the message
};

int authorize(void* user, int action, const char* arg1, const char* arg2, const char*,
              const char*) {
  auto* guard = static_cast<Guard*>(user);
  switch (action) {
    case SQLITE_ATTACH:
      guard->refused = "ATTACH";
      return SQLITE_DENY;
    case SQLITE_DETACH:
      guard->refused = "DETACH";
      return SQLITE_DENY;
    case SQLITE_PRAGMA: {
      std::string name = arg1 ? arg1 : "";
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      if ((arg2 && !kReadingPragmasWithArgument.count(name)) || kActingPragmas.count(name)) {
        guard->refused = "PRAGMA " + name + (arg2 ? " with a value" : "");
        return SQLITE_DENY;
      }
      return SQLITE_OK;
    }
    case SQLITE_FUNCTION:
      if (arg2 && std::string(arg2) == "load_extension") {
        guard->refused = "load_extension()";
        return SQLITE_DENY;
      }
      return SQLITE_OK;
    default:
      return SQLITE_OK;
  }
}

Json column_value(sqlite3_stmt* stmt, int i) {
  switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
      return static_cast<std::int64_t>(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
      return sqlite3_column_double(stmt, i);
    case SQLITE_NULL:
      return nullptr;
    case SQLITE_BLOB: {
      // Blobs print as SQL hex literals: x'0a1b...'.
      const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(stmt, i));
      int n = sqlite3_column_bytes(stmt, i);
      static const char* hex = "0123456789abcdef";
      std::string out = "x'";
      for (int k = 0; k < n; ++k) {
        out += hex[p[k] >> 4];
        out += hex[p[k] & 15];
      }
      return out + "'";
    }
    default: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
      return std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(stmt, i)));
    }
  }
}

// Owns a prepared statement.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  ~Statement() { sqlite3_finalize(stmt); }
};

}  // namespace

int cmd_sql(Context& ctx) {
  po::options_description options;
  options.add_options()("query", po::value<std::string>()->required(), "");
  add_format_option(options, "table", "table|csv|json");
  po::positional_options_description positional;
  positional.add("query", 1);
  po::variables_map vm;
  if (auto code = parse_args(ctx, kHelp, options, positional, vm)) return *code;
  auto format = format_from(vm, "table|csv|json");
  if (!format) return usage_error(ctx, format.status().message());
  const std::string query = vm["query"].as<std::string>();
  if (is_postgresql_journal(ctx.journal)) return pg_sql(ctx, query, *format);

  auto db = open_for_read(ctx);
  if (!db) return fail(ctx, db.status().message());
  sqlite3* handle = (*db)->getHandle();
  Guard guard;
  sqlite3_set_authorizer(handle, authorize, &guard);

  Statement st;
  const char* tail = nullptr;
  int rc =
      sqlite3_prepare_v2(handle, query.c_str(), static_cast<int>(query.size()), &st.stmt, &tail);
  if (rc != SQLITE_OK) {
    if (!guard.refused.empty())
      return fail(ctx, "refused: " + guard.refused +
                           " is not allowed (the journal is opened read-only for sql)");
    return fail(ctx, std::string("bad query: ") + sqlite3_errmsg(handle));
  }
  if (!st.stmt) return usage_error(ctx, "empty query");
  if (tail && *tail) {
    Statement next;
    const char* rest = nullptr;
    int rc2 = sqlite3_prepare_v2(handle, tail, -1, &next.stmt, &rest);
    if (rc2 != SQLITE_OK || next.stmt)
      return fail(ctx, "refused: more than one statement (sql runs exactly one)");
  }
  if (!sqlite3_stmt_readonly(st.stmt))
    return fail(ctx,
                "refused: the statement would change the journal (sql is read-only; use "
                "resend, purge or agent to change it)");

  const int columns = sqlite3_column_count(st.stmt);
  std::vector<std::string> names;
  for (int i = 0; i < columns; ++i) {
    const char* n = sqlite3_column_name(st.stmt, i);
    names.emplace_back(n ? n : "");
  }
  RowWriter out(std::cout, *format, names, true);
  std::vector<Json> values;
  while ((rc = sqlite3_step(st.stmt)) == SQLITE_ROW) {
    values.clear();
    for (int i = 0; i < columns; ++i) values.push_back(column_value(st.stmt, i));
    out.row(values);
  }
  if (rc != SQLITE_DONE) {
    out.finish();
    return fail(ctx, std::string("query failed: ") + sqlite3_errmsg(handle));
  }
  out.finish();
  return kExitOk;
}

}  // namespace iarelay::cli
