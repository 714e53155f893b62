// Journal connections, migrations and the daemon lock.
#include "journal/journal.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/crypto.h"
#include "common/time.h"

namespace iarelay {

// Defined in the generated migrations_embedded.cpp (from migrations/*.sql).
extern const std::vector<Migration>& embedded_migrations_table();

namespace {

constexpr int kBusyTimeoutMs = 5000;

Status create_parent_dir(const std::string& path) {
  std::filesystem::path p(path);
  if (!p.has_parent_path()) return Status::ok();
  std::error_code ec;
  std::filesystem::create_directories(p.parent_path(), ec);
  if (ec)
    return Status::io_error(p.parent_path().string() +
                            ": cannot create directory: " + ec.message());
  return Status::ok();
}

// Creates the journal file 0600 (SQLite would use the umask; it gives -wal and -shm the
// database file's mode) if, and only if, it does not exist. An existing journal is never
// opened here: closing any descriptor of a file drops every POSIX lock this process holds on
// it, including the locks of SQLite connections already open on it (a janitor or CLI
// connection beside the daemon's writer). Without those locks the next process to close a
// connection believes it is the last one, checkpoints and deletes the live -wal and -shm, and
// later commits go into a deleted file. With O_EXCL an existing file fails the open without a
// descriptor; a file it creates is a new inode on which no connection can hold a lock yet.
Status create_journal_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
    return Status::ok();
  }
  if (errno == EEXIST) return Status::ok();
  return Status::io_error(path + ": cannot create journal: " + std::strerror(errno));
}

bool has_table(SQLite::Database& db, const char* name) {
  SQLite::Statement q(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?");
  q.bind(1, name);
  return q.executeStep();
}

}  // namespace

const std::vector<Migration>& embedded_migrations() {
  return embedded_migrations_table();
}

Result<DatabasePtr> open_journal_for_write(const std::string& path, SyncLevel sync) {
  if (Status s = create_parent_dir(path); !s) return s;
  if (Status s = create_journal_file(path); !s) return s;
  try {
    auto db = std::make_unique<SQLite::Database>(
        path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_FULLMUTEX);
    db->setBusyTimeout(kBusyTimeoutMs);
    // journal_mode=WAL is persistent; the query also proves the file is a database.
    std::string mode = db->execAndGet("PRAGMA journal_mode=WAL").getString();
    if (mode != "wal") return Status::io_error(path + ": cannot switch journal to WAL mode");
    db->exec(sync == SyncLevel::kFull ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    db->exec("PRAGMA foreign_keys=OFF");
    return db;
  } catch (const SQLite::Exception& e) {
    if (e.getErrorCode() == SQLITE_NOTADB)
      return Status::corruption(path + ": not a SQLite database");
    return Status::io_error(path + ": " + e.what());
  }
}

Result<DatabasePtr> open_journal_for_read(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Status::not_found(path + ": no journal here");
  try {
    auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY);
    db->setBusyTimeout(kBusyTimeoutMs);
    db->exec("PRAGMA query_only=ON");
    if (!has_table(*db, "schema_migrations") || !has_table(*db, "webhooks"))
      return Status::corruption(path + ": not an iarelay journal (no webhooks table)");
    return db;
  } catch (const SQLite::Exception& e) {
    if (e.getErrorCode() == SQLITE_NOTADB || e.getErrorCode() == SQLITE_CORRUPT)
      return Status::corruption(path + ": not a SQLite database (" + e.getErrorStr() + ")");
    return Status::io_error(path + ": " + e.what());
  }
}

Status verify_migrations(SQLite::Database& db, std::vector<std::string>* pending) {
  try {
    const auto& known = embedded_migrations();
    std::vector<bool> applied(known.size(), false);
    if (has_table(db, "schema_migrations")) {
      SQLite::Statement q(db,
                          "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
      while (q.executeStep()) {
        int version = q.getColumn(0).getInt();
        std::string name = q.getColumn(1).getString();
        std::string checksum = q.getColumn(2).getString();
        if (version < 1 || version > static_cast<int>(known.size()))
          return Status::corruption("journal has migration " + name +
                                    " which this build does not know (a newer iarelay wrote it?)");
        const Migration& m = known[static_cast<size_t>(version - 1)];
        if (m.name != name || sha256_hex(m.sql) != checksum)
          return Status::corruption("migration " + name +
                                    " applied to this journal differs from this build's " + m.name +
                                    " (checksum mismatch): refusing to continue");
        applied[static_cast<size_t>(version - 1)] = true;
      }
    } else if (has_table(db, "webhooks") || [&] {
                 SQLite::Statement q(db, "SELECT count(*) FROM sqlite_master");
                 q.executeStep();
                 return q.getColumn(0).getInt() > 0;
               }()) {
      return Status::corruption("not an iarelay journal (it has tables but no schema_migrations)");
    }
    if (pending)
      for (size_t i = 0; i < known.size(); ++i)
        if (!applied[i]) pending->push_back(known[i].name);
    return Status::ok();
  } catch (const SQLite::Exception& e) {
    if (e.getErrorCode() == SQLITE_NOTADB || e.getErrorCode() == SQLITE_CORRUPT)
      return Status::corruption(std::string("not a SQLite database (") + e.getErrorStr() + ")");
    return Status::io_error(e.what());
  }
}

Status migrate(SQLite::Database& db, std::vector<std::string>* applied) {
  std::vector<std::string> pending;
  if (Status s = verify_migrations(db, &pending); !s) return s;
  try {
    for (const Migration& m : embedded_migrations()) {
      if (std::find(pending.begin(), pending.end(), m.name) == pending.end()) continue;
      SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
      db.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
          "name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)");
      // Re-check inside the transaction: another process may have migrated meanwhile.
      SQLite::Statement seen(db, "SELECT 1 FROM schema_migrations WHERE version=?");
      seen.bind(1, m.version);
      if (seen.executeStep()) continue;
      db.exec(m.sql);
      if (m.sql.find("writable_schema") != std::string::npos) {
        // The migration rewrote definitions in sqlite_schema (0004): a new schema version
        // makes every connection, this one too, read them again.
        int version = db.execAndGet("PRAGMA schema_version").getInt();
        db.exec("PRAGMA schema_version=" + std::to_string(version + 1));
      }
      SQLite::Statement rec(db, "INSERT INTO schema_migrations VALUES (?,?,?,?)");
      rec.bind(1, m.version);
      rec.bind(2, m.name);
      rec.bind(3, sha256_hex(m.sql));
      rec.bind(4, format_time(now_millis()));
      rec.exec();
      tx.commit();
      if (applied) applied->push_back(m.name);
    }
    return Status::ok();
  } catch (const SQLite::Exception& e) {
    return Status::io_error(std::string("migration failed: ") + e.what());
  }
}

Result<std::unique_ptr<DaemonLock>> DaemonLock::acquire(const std::string& journal_path) {
  if (Status s = create_parent_dir(journal_path); !s) return s;
  std::string path = journal_path + ".lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::io_error(path + ": cannot open lock file: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    auto pid = daemon_holding(journal_path);
    return Status::unavailable("journal " + journal_path + " is in use by iarelayd pid " +
                               (pid ? std::to_string(*pid) : std::string("?")) + " (lock " + path +
                               ")");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The pid is only informational; the flock is the lock.
  }
  return std::unique_ptr<DaemonLock>(new DaemonLock(fd, path));
}

DaemonLock::~DaemonLock() {
  // Truncate so a reader never reports a stale pid; the flock dies with the descriptor.
  if (::ftruncate(fd_, 0) != 0) {
  }
  ::close(fd_);
}

std::optional<long> daemon_holding(const std::string& journal_path) {
  std::string path = journal_path + ".lock";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<long> out;
  // A shared lock that cannot be taken means an exclusive holder exists.
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    out = n > 0 ? std::atol(buf) : -1;
  } else {
    ::flock(fd, LOCK_UN);
  }
  ::close(fd);
  return out;
}

}  // namespace iarelay
