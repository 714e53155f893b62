// What every `iarelay` command shares: the context built from the global options (journal
// path, optional configuration), exit codes, one-line errors, and opening the journal safely
// (reads on a read-only connection; writes only on an existing, migrated journal).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "journal/journal.h"

namespace iarelay::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Context {
  std::string journal;            // the journal path (from --journal, the config, or default)
  std::optional<Config> config;   // set when --config was given
  std::string command;            // "list", "agent pause", ... for messages
  std::vector<std::string> args;  // the command's arguments as given (for audit rows)
};

// Prints "iarelay COMMAND: MESSAGE" on one line to stderr; returns the exit code.
int fail(const Context& ctx, const std::string& message);
int usage_error(const Context& ctx, const std::string& message);
// The message on one line: newlines and tabs become spaces.
std::string one_line(std::string message);

// Opens the journal read-only; NotFound as "no journal at PATH", not-a-journal as Corruption.
Result<DatabasePtr> open_for_read(const Context& ctx);
// For commands that change the journal: it must exist (never created here), be a journal
// (checked on a read-only connection first, so a foreign or corrupt file is never written),
// and have exactly this build's migrations. Opened with open_journal_for_write.
Result<DatabasePtr> open_for_write(const Context& ctx);

// Run as root on a journal (or, not created yet, its directory) that belongs to another user
// (the service account): become that user (groups, gid, uid) before anything opens it, so the
// -wal and -shm files SQLite creates stay the service's. Gives back a -wal/-shm root left
// there. Fails, naming the `runuser -u USER -- ...` command to use, when the switch is refused.
// command_line: the command as typed ("iarelay", then its arguments), for that message.
Status run_as_journal_owner(const Context& ctx, const std::vector<std::string>& command_line);

// "$USER@hostname" for audit rows: who ran the command, also after run_as_journal_owner.
std::string actor();
// The command line as given, for audit rows: "resend --state failed --agent x".
std::string audit_filter(const Context& ctx);

// An agent named by identifier or configuration handle: the identifier, if the configuration
// has it or the journal knows it (agents table or assigned webhooks). NotFound otherwise.
Result<std::string> resolve_agent(const Context& ctx, SQLite::Database& reader,
                                  const std::string& name);
// The NotFound of an agent name that neither the configuration nor the journal knows.
Status unknown_agent(const Context& ctx, const std::string& name);

// The status document (journal/status_report.h) of the journal, SQLite or PostgreSQL.
Result<std::string> status_document(const Context& ctx);

}  // namespace iarelay::cli
