// Opening the journal file: the write connection (WAL, synchronous per `sync`, file 0600 in a
// created directory), read-only connections, the embedded migrations, and the daemon's lock.
// Connections are not thread-safe: each thread owns its own. Errors are Status, never throws.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace SQLite {
class Database;
}

namespace iarelay {

using DatabasePtr = std::unique_ptr<SQLite::Database>;

// Opens (creating if needed, 0600) the journal for writing; does not migrate. Safe beside other
// connections of this process on the same journal: an existing file is touched only through
// SQLite (no descriptor of our own is opened and closed, which would drop SQLite's locks).
Result<DatabasePtr> open_journal_for_write(const std::string& path, SyncLevel sync);
// Opens an existing journal read-only (query_only, busy timeout). NotFound if absent,
// Corruption if it is not a SQLite database or not an iarelay journal.
Result<DatabasePtr> open_journal_for_read(const std::string& path);

struct Migration {
  int version;
  std::string name;  // "0001_initial"
  std::string sql;
};
const std::vector<Migration>& embedded_migrations();

// Applies pending migrations in order, each in its own transaction, recording its checksum.
// Fails (Corruption) when an applied migration's checksum differs from the embedded one or when
// the journal records a migration this build does not know. `applied` lists what ran.
Status migrate(SQLite::Database& db, std::vector<std::string>* applied = nullptr);
// Verifies applied migrations without changing anything; `pending` lists what is missing.
Status verify_migrations(SQLite::Database& db, std::vector<std::string>* pending = nullptr);

// Exclusive lock held by a running iarelayd on "<journal>.lock" (flock), holding its pid.
class DaemonLock {
 public:
  // Fails (Unavailable) naming the holder's pid when another process holds it.
  static Result<std::unique_ptr<DaemonLock>> acquire(const std::string& journal_path);
  ~DaemonLock();
  DaemonLock(const DaemonLock&) = delete;
  DaemonLock& operator=(const DaemonLock&) = delete;

 private:
  explicit DaemonLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};
// The pid of the iarelayd holding the journal, if any.
std::optional<long> daemon_holding(const std::string& journal_path);

}  // namespace iarelay
