// The commands of `iarelay` on a PostgreSQL journal (`--journal postgresql://...`, or a
// configuration whose journal is one; docs/high-availability.md): every command. Each SQLite
// command parses and checks its arguments as always, then opens the
// journal here (pg_connect) where it would open the journal file, or hands the whole command
// over (status, sql, agent, resend); the output is the SQLite command's. The journal is shown
// only as journal_for_display shows it: never a password.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "journal/pg/pg_journal.h"
#include "journal/store.h"
#include "output.h"

namespace iarelay::cli {

// `migrate`: applies the migrations this build has and the journal lacks (as a relay does when
// it starts, under the same lock), printing what it applied.
int pg_migrate_command(const Context& ctx);
// `check`'s look at the journal: its migrations against this build's; each problem is told to
// `problem` (one line), and what is fine printed.
void pg_check(const Context& ctx, const std::function<void(const std::string&)>& problem);

// A connection to the journal with exactly this build's migrations applied (a relay applies
// them when it starts); otherwise the error, naming the journal.
Result<std::unique_ptr<PgConnection>> pg_connect(const Context& ctx);
// The journal a command reads first and then, perhaps, changes: on PostgreSQL one connection
// (pg_connect) for both; on SQLite a read-only connection (open_for_read), the command opening
// one for writing after its checks. Exactly one of the two is set.
struct CommandJournal {
  std::unique_ptr<PgConnection> pg;
  DatabasePtr sqlite;
};
Result<CommandJournal> open_command_journal(const Context& ctx);
// A journal function's failure as the command reports it: a refusal (InvalidArgument,
// NotFound: a webhook id, a state) as it is, as on SQLite; anything else (the server's error)
// after "journal URL-without-password: ".
std::string pg_failure(const Context& ctx, const Status& status);
// An agent named by identifier or configuration handle, as resolve_agent (cli.h) on SQLite.
Result<std::string> pg_resolve_agent(const Context& ctx, PgConnection& db, const std::string& name);

// The status document (status_report.h's keys, plus "leases": which relay owns which agent).
Result<std::string> pg_status_document(const Context& ctx);

// `sql`: the one statement in a read-only transaction with a statement timeout.
int pg_sql(const Context& ctx, const std::string& query, Format format);

// `agent pause` / `agent resume` of the agent named `name` (identifier or handle).
int pg_agent_change(const Context& ctx, const std::string& name, bool pause,
                    std::optional<Millis> until, std::optional<std::string> reason);

// `resend`: `filter` as parsed (ids not yet resolved: `refs`), `to_agent` as given.
struct PgResend {
  WebhookFilter filter;
  std::vector<std::string> refs;
  std::optional<std::string> to_agent;
  bool list_replay = false;  // delivered by filter without --force: list, change nothing
  bool dry_run = false;
};
int pg_resend(const Context& ctx, PgResend request);

}  // namespace iarelay::cli
