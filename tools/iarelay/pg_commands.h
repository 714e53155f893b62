// The commands of `iarelay` on a PostgreSQL journal (`--journal postgresql://...`, or a
// configuration whose journal is one; docs/high-availability.md): status, sql, agent
// list|pause|resume and resend. Each SQLite command parses and checks its arguments as always,
// then hands over here where it would open the journal file; the output is the SQLite
// command's. The journal is shown only as journal_for_display shows it: never a password.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "journal/store.h"
#include "output.h"

namespace iarelay::cli {

// Whether `command` (a name of main's table) runs on a PostgreSQL journal.
bool runs_on_postgresql(const std::string& command);
// The usage error for one that does not: names it and the commands that do.
std::string not_on_postgresql(const Context& ctx);

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
