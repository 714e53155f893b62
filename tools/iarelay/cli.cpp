// Shared command plumbing: errors, opening the journal, actor, agent names.
#include "cli.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "journal/status_report.h"
#include "journal/store.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {
// Journals up to this size get a full quick_check before any change (see open_for_write).
constexpr std::uintmax_t kFullCheckBytes = 256ull << 20;
}  // namespace

std::string one_line(std::string message) {
  for (char& c : message)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return message;
}

int fail(const Context& ctx, const std::string& message) {
  std::cerr << "iarelay" << (ctx.command.empty() ? "" : " " + ctx.command) << ": "
            << one_line(message) << std::endl;
  return kExitFailure;
}

int usage_error(const Context& ctx, const std::string& message) {
  fail(ctx, message);
  return kExitUsage;
}

Result<DatabasePtr> open_for_read(const Context& ctx) {
  std::error_code ec;
  if (!std::filesystem::exists(ctx.journal, ec))
    return Status::not_found("no journal at " + ctx.journal +
                             " (give --journal PATH or --config FILE)");
  if (std::filesystem::is_directory(ctx.journal, ec))
    return Status::invalid_argument(ctx.journal + " is a directory, not a journal");
  return open_journal_for_read(ctx.journal);
}

Result<DatabasePtr> open_for_write(const Context& ctx) {
  // Everything is checked on a read-only connection first: opening for write switches the file
  // to WAL mode, which would change a foreign or damaged file.
  {
    auto reader = open_for_read(ctx);
    if (!reader) return reader.status();
    std::vector<std::string> pending;
    if (Status s = verify_migrations(**reader, &pending); !s)
      return Status::corruption(ctx.journal + ": " + s.message());
    if (!pending.empty())
      return Status::conflict(ctx.journal + " needs migration " + pending.front() +
                              " (run iarelay migrate)");
    // A damaged journal is never written to: a write could spread the damage. quick_check
    // reads every page once: a fair price up to kFullCheckBytes (well under a second), but
    // minutes on a journal of many gigabytes, too long for `agent pause` in an incident. Past
    // it the guard is SQLite's own checking of every page the command reads, made stricter
    // (cell_size_check, below) plus the schema check above; the whole file is iarelay check's.
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(ctx.journal, ec);
    if (!ec && bytes <= kFullCheckBytes) {
      std::string verdict;
      try {
        SQLite::Statement check(**reader, "PRAGMA quick_check(1)");
        verdict = check.executeStep() ? check.getColumn(0).getString() : "no answer";
      } catch (const SQLite::Exception& e) {
        verdict = e.getErrorStr();
      }
      if (verdict != "ok")
        return Status::corruption(ctx.journal + " is damaged (quick_check: " + verdict +
                                  "); refusing to change it (see iarelay check)");
    }
  }
  SyncLevel sync = ctx.config ? ctx.config->sync : SyncLevel::kFull;
  auto db = open_journal_for_write(ctx.journal, sync);
  if (!db) return db.status();
  try {
    // Damage met on a page the command reads fails the statement (SQLITE_CORRUPT, the
    // transaction rolls back) instead of being built upon.
    (*db)->exec("PRAGMA cell_size_check=ON");
  } catch (const SQLite::Exception& e) {
    return Status::io_error(ctx.journal + ": " + e.getErrorStr());
  }
  try {
    // Batched changes touch index pages all over the file; a bigger page cache than SQLite's
    // 2 MiB default saves most of the re-reads.
    (*db)->exec("PRAGMA cache_size=-65536");
  } catch (const SQLite::Exception&) {
    // Only a speed-up; the default cache works too.
  }
  std::vector<std::string> pending;
  if (Status s = verify_migrations(**db, &pending); !s)
    return Status::corruption(ctx.journal + ": " + s.message());
  if (!pending.empty())
    return Status::conflict(ctx.journal + " needs migration " + pending.front() +
                            " (run iarelay migrate)");
  return db;
}

std::string actor() {
  // Worked out once: after run_as_journal_owner the uid is the journal's owner, but the audit
  // row names who ran the command.
  static const std::string who = [] {
    std::string user;
    if (const char* u = std::getenv("USER"); u && *u) user = u;
    if (user.empty()) {
      if (const passwd* pw = ::getpwuid(::getuid())) user = pw->pw_name;
    }
    if (user.empty()) user = "uid" + std::to_string(::getuid());
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || !*host)
      std::snprintf(host, sizeof host, "%s", "localhost");
    return user + "@" + host;
  }();
  return who;
}

Status run_as_journal_owner(const Context& ctx, const std::vector<std::string>& command_line) {
  if (::geteuid() != 0) return Status::ok();
  // The journal, or for one not created yet (migrate) the directory it goes in.
  struct stat st {};
  if (::stat(ctx.journal.c_str(), &st) != 0) {
    std::string dir = std::filesystem::path(ctx.journal).parent_path().string();
    if (::stat(dir.empty() ? "." : dir.c_str(), &st) != 0) return Status::ok();
  }
  if (st.st_uid == 0) return Status::ok();
  (void)actor();
  const passwd* pw = ::getpwuid(st.st_uid);
  const std::string user = pw ? pw->pw_name : std::to_string(st.st_uid);
  // A -wal or -shm left behind by a root run before this check existed: the owner could not
  // open the journal any more. Root gives them back.
  for (const char* suffix : {"-wal", "-shm"}) {
    const std::string side = ctx.journal + suffix;
    struct stat side_st {};
    if (::lstat(side.c_str(), &side_st) == 0 && S_ISREG(side_st.st_mode) &&
        side_st.st_uid != st.st_uid && ::chown(side.c_str(), st.st_uid, st.st_gid) == 0)
      std::cerr << "iarelay: " << side << " belonged to uid " << side_st.st_uid
                << "; gave it back to " << user << "\n";
  }
  int rc = pw ? ::initgroups(user.c_str(), st.st_gid) : ::setgroups(1, &st.st_gid);
  const char* step = "setgroups";
  if (rc == 0) {
    step = "setgid";
    rc = ::setgid(st.st_gid);
  }
  if (rc == 0) {
    step = "setuid";
    rc = ::setuid(st.st_uid);
  }
  if (rc == 0 && ::geteuid() == st.st_uid && ::getuid() == st.st_uid) return Status::ok();
  const std::string why = rc == 0 ? "still root" : std::strerror(errno);
  std::string retry = "runuser -u " + user + " --";
  for (const auto& a : command_line) {
    bool quote = a.empty() || a.find_first_not_of(
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789-_./:=+,@%") != std::string::npos;
    retry += " ";
    if (!quote) {
      retry += a;
      continue;
    }
    retry += "'";
    for (char c : a) retry += c == '\'' ? std::string("'\\''") : std::string(1, c);
    retry += "'";
  }
  return Status::conflict(
      ctx.journal + " belongs to " + user + " and root could not become " + user + " (" + step +
      ": " + why + "); files root creates beside it would lock the service out. Run: " + retry);
}

std::string audit_filter(const Context& ctx) {
  std::string out = ctx.command;
  for (const auto& a : ctx.args) {
    bool quote = a.empty() || a.find_first_of(" \t\"'") != std::string::npos;
    out += " ";
    if (!quote) {
      out += a;
      continue;
    }
    out += "'";
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += "'";
  }
  return out;
}

Result<std::string> resolve_agent(const Context& ctx, SQLite::Database& reader,
                                  const std::string& name) {
  if (ctx.config)
    if (const AgentConfig* a = ctx.config->find_agent(name)) return a->id;
  if (load_agent(reader, name)) return name;
  SQLite::Statement q(reader, "SELECT 1 FROM webhooks WHERE assigned_agent=? LIMIT 1");
  q.bind(1, name);
  if (q.executeStep()) return name;
  return unknown_agent(ctx, name);
}

Status unknown_agent(const Context& ctx, const std::string& name) {
  return Status::not_found("unknown agent '" + name + "': not in the configuration" +
                           std::string(ctx.config ? "" : " (none given: --config FILE)") +
                           " and not known to the journal");
}

Result<std::string> status_document(const Context& ctx) {
  if (is_postgresql_journal(ctx.journal)) return pg_status_document(ctx);
  auto db = open_for_read(ctx);
  if (!db) return db.status();
  return status_json(**db, ctx.config ? &*ctx.config : nullptr, ctx.journal);
}

}  // namespace iarelay::cli
