// Tests of journal/journal.h: connections (WAL, synchronous, 0600), the migration runner and its
// refusals, the documented schema matching the migrations, and the daemon lock.
#include "journal/journal.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <regex>

#include "common/crypto.h"
#include "journal/writer.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

DatabasePtr open_write(const std::string& path, SyncLevel sync = SyncLevel::kNormal) {
  auto db = open_journal_for_write(path, sync);
  EXPECT_TRUE(db.is_ok()) << db.status().message();
  return db.is_ok() ? std::move(*db) : nullptr;
}

DatabasePtr open_migrated(const std::string& path) {
  auto db = open_write(path);
  if (db) {
    Status s = migrate(*db);
    EXPECT_TRUE(s.is_ok()) << s.message();
  }
  return db;
}

mode_t file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Journal, FileIsCreated0600WithItsDirectoryEvenUnderAPermissiveUmask) {
  testing::TempDir dir;
  std::string path = dir.file("var/sub/journal.db");
  mode_t old = ::umask(0);
  auto db = open_migrated(path);
  ::umask(old);
  ASSERT_TRUE(db);
  db->exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t','me','x',1)");
  EXPECT_EQ(file_mode(path), 0600);
  // SQLite gives the WAL and shared-memory files the database file's permissions.
  EXPECT_EQ(file_mode(path + "-wal"), 0600);
}

TEST(Journal, WriteConnectionUsesWalAndABusyTimeout) {
  testing::TempDir dir;
  auto db = open_migrated(dir.file("j.db"));
  ASSERT_TRUE(db);
  EXPECT_EQ(db->execAndGet("PRAGMA journal_mode").getString(), "wal");
  EXPECT_GT(db->execAndGet("PRAGMA busy_timeout").getInt(), 0);
  // WAL is persistent: a fresh reader sees it too.
  auto r = open_journal_for_read(dir.file("j.db"));
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ((*r)->execAndGet("PRAGMA journal_mode").getString(), "wal");
}

TEST(Journal, SynchronousFollowsTheSyncLevel) {
  testing::TempDir dir;
  auto full = open_write(dir.file("full.db"), SyncLevel::kFull);
  auto normal = open_write(dir.file("normal.db"), SyncLevel::kNormal);
  ASSERT_TRUE(full && normal);
  EXPECT_EQ(full->execAndGet("PRAGMA synchronous").getInt(), 2);    // FULL
  EXPECT_EQ(normal->execAndGet("PRAGMA synchronous").getInt(), 1);  // NORMAL
}

// At sync=full the writer's connection commits with synchronous=OFF and its syncer thread
// fdatasync()s the WAL before anyone is told (tests in writer_test.cpp); at normal it is NORMAL.
// NORMAL at both levels: at sync=full the writer's syncer fdatasync()s the WAL after each
// commit, but the connection must not run at OFF, which also skips syncing the WAL's new
// header when the WAL restarts (see writer.h).
TEST(Journal, WriterConnectionHasTheSyncLevel) {
  for (auto [sync, expected] : {std::pair{SyncLevel::kFull, 1}, std::pair{SyncLevel::kNormal, 1}}) {
    testing::TempDir dir;
    auto w = Writer::open(dir.file("j.db"), sync);
    ASSERT_TRUE(w.is_ok()) << w.status().message();
    int seen = -1;
    std::string mode;
    Status s = (*w)->run(
        [&](SQLite::Database& db) { seen = db.execAndGet("PRAGMA synchronous").getInt(); });
    ASSERT_TRUE(s.is_ok()) << s.message();
    EXPECT_EQ(seen, expected);
  }
}

// The sqlite3 command-line shell, as an operator runs it (found on PATH).
std::string sqlite3_shell() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/sqlite3";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  ADD_FAILURE() << "the sqlite3 shell is not on PATH";
  return "sqlite3";
}

// Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
// included. Opening the journal for writing beside a live connection (the daemon's janitor
// beside its writer) must leave that connection's locks alone: otherwise the next process to
// close a connection (an operator's sqlite3 read) believes it is the last, checkpoints and
// deletes the live WAL, and the live connection goes on committing into a deleted file.
TEST(Journal, OpeningForWriteBesideALiveConnectionKeepsItsLocks) {
  testing::TempDir dir;
  const std::string path = dir.file("j.db");
  auto live = open_migrated(path);
  ASSERT_TRUE(live);
  live->exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t', 'before', 'x', 0)");
  for (int i = 0; i < 3; ++i) {
    auto beside = open_write(path);
    ASSERT_TRUE(beside);
    EXPECT_EQ(beside->execAndGet("SELECT count(*) FROM audit").getInt(), 1);
  }
  testing::CommandResult read = testing::run({sqlite3_shell(), path, "SELECT count(*) FROM audit"});
  ASSERT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read.out, "1\n");
  EXPECT_TRUE(std::filesystem::exists(path + "-wal")) << "the live connection's WAL was deleted";
  live->exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t', 'after', 'x', 0)");
  // Another process sees the live connection's later commit: it went into the real WAL.
  read = testing::run({sqlite3_shell(), path, "SELECT group_concat(actor) FROM audit"});
  ASSERT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read.out, "before,after\n");
}

TEST(Journal, ReadConnectionIsReadOnly) {
  testing::TempDir dir;
  ASSERT_TRUE(open_migrated(dir.file("j.db")));
  auto r = open_journal_for_read(dir.file("j.db"));
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_THROW((*r)->exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t','x','y',1)"),
               SQLite::Exception);
  EXPECT_EQ((*r)->execAndGet("SELECT count(*) FROM audit").getInt(), 0);
}

TEST(Journal, ReadRefusesWhatIsNotAJournal) {
  testing::TempDir dir;
  auto missing = open_journal_for_read(dir.file("absent.db"));
  EXPECT_EQ(missing.status().kind(), StatusKind::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir.file("absent.db")));  // and did not create it

  testing::write_file(dir.file("garbage.db"), std::string(8192, 'x'));
  auto garbage = open_journal_for_read(dir.file("garbage.db"));
  EXPECT_EQ(garbage.status().kind(), StatusKind::kCorruption) << garbage.status().message();

  {
    SQLite::Database other(dir.file("other.db"), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    other.exec("CREATE TABLE t (x)");
  }
  auto other = open_journal_for_read(dir.file("other.db"));
  EXPECT_EQ(other.status().kind(), StatusKind::kCorruption);
  EXPECT_TRUE(contains(other.status().message(), "not an iarelay journal"))
      << other.status().message();
}

TEST(Journal, WriteRefusesAFileThatIsNotSqlite) {
  testing::TempDir dir;
  testing::write_file(dir.file("garbage.db"), std::string(8192, 'x'));
  auto db = open_journal_for_write(dir.file("garbage.db"), SyncLevel::kFull);
  EXPECT_FALSE(db.is_ok());
  EXPECT_EQ(testing::read_file(dir.file("garbage.db")), std::string(8192, 'x'));
}

// --- migrations -----------------------------------------------------------------------------

TEST(Migrations, EmbeddedAreNumberedFromOne) {
  const auto& all = embedded_migrations();
  ASSERT_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].version, static_cast<int>(i) + 1);
    EXPECT_TRUE(std::regex_match(all[i].name, std::regex("[0-9]{4}_[a-z0-9_]+"))) << all[i].name;
    EXPECT_FALSE(all[i].sql.empty());
  }
  EXPECT_EQ(all[0].name, "0001_initial");
}

TEST(Migrations, FreshApplyRecordsEveryMigrationWithItsChecksum) {
  testing::TempDir dir;
  auto db = open_write(dir.file("j.db"));
  ASSERT_TRUE(db);
  std::vector<std::string> applied;
  Status s = migrate(*db, &applied);
  ASSERT_TRUE(s.is_ok()) << s.message();
  const auto& all = embedded_migrations();
  ASSERT_EQ(applied.size(), all.size());
  SQLite::Statement q(*db,
                      "SELECT version, name, checksum, applied_at FROM schema_migrations "
                      "ORDER BY version");
  for (const auto& m : all) {
    ASSERT_TRUE(q.executeStep());
    EXPECT_EQ(q.getColumn(0).getInt(), m.version);
    EXPECT_EQ(q.getColumn(1).getString(), m.name);
    EXPECT_EQ(q.getColumn(2).getString(), sha256_hex(m.sql));
    EXPECT_EQ(q.getColumn(3).getString().size(), 24u);
    EXPECT_EQ(applied[static_cast<size_t>(m.version - 1)], m.name);
  }
  EXPECT_FALSE(q.executeStep());
  std::vector<std::string> pending;
  EXPECT_TRUE(verify_migrations(*db, &pending).is_ok());
  EXPECT_TRUE(pending.empty());
}

TEST(Migrations, VerifyOnAFreshFileListsEverythingPendingAndChangesNothing) {
  testing::TempDir dir;
  auto db = open_write(dir.file("j.db"));
  ASSERT_TRUE(db);
  std::vector<std::string> pending;
  ASSERT_TRUE(verify_migrations(*db, &pending).is_ok());
  EXPECT_EQ(pending.size(), embedded_migrations().size());
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM sqlite_master").getInt(), 0);
}

TEST(Migrations, RerunIsANoOp) {
  testing::TempDir dir;
  auto db = open_migrated(dir.file("j.db"));
  ASSERT_TRUE(db);
  db->exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t','me','x',1)");
  std::string applied_at = db->execAndGet("SELECT applied_at FROM schema_migrations").getString();
  std::vector<std::string> applied;
  Status s = migrate(*db, &applied);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_TRUE(applied.empty());
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM schema_migrations").getInt(),
            static_cast<int>(embedded_migrations().size()));
  EXPECT_EQ(db->execAndGet("SELECT applied_at FROM schema_migrations").getString(), applied_at);
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM audit").getInt(), 1);
}

TEST(Migrations, TamperedChecksumIsRefused) {
  testing::TempDir dir;
  auto db = open_migrated(dir.file("j.db"));
  ASSERT_TRUE(db);
  db->exec("UPDATE schema_migrations SET checksum='0000' WHERE version=1");
  Status s = migrate(*db);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_TRUE(contains(s.message(), "0001_initial")) << s.message();
  EXPECT_TRUE(contains(s.message(), "checksum")) << s.message();
  EXPECT_EQ(verify_migrations(*db).kind(), StatusKind::kCorruption);
  // The daemon's writer refuses to start on it too, and the journal is left as it was.
  db.reset();
  auto w = Writer::open(dir.file("j.db"), SyncLevel::kNormal);
  EXPECT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().kind(), StatusKind::kCorruption);
  SQLite::Database r(dir.file("j.db"));
  EXPECT_EQ(r.execAndGet("SELECT checksum FROM schema_migrations").getString(), "0000");
}

TEST(Migrations, TamperedNameIsRefused) {
  testing::TempDir dir;
  auto db = open_migrated(dir.file("j.db"));
  ASSERT_TRUE(db);
  db->exec("UPDATE schema_migrations SET name='0001_renamed' WHERE version=1");
  Status s = migrate(*db);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_TRUE(contains(s.message(), "0001_renamed")) << s.message();
  EXPECT_TRUE(contains(s.message(), "differs")) << s.message();
}

TEST(Migrations, UnknownNewerMigrationIsRefused) {
  testing::TempDir dir;
  auto db = open_migrated(dir.file("j.db"));
  ASSERT_TRUE(db);
  int next = static_cast<int>(embedded_migrations().size()) + 1;
  db->exec("INSERT INTO schema_migrations VALUES (" + std::to_string(next) +
           ", '9999_from_the_future', 'abc', '2030-01-01T00:00:00.000Z')");
  std::vector<std::string> applied;
  Status s = migrate(*db, &applied);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_TRUE(contains(s.message(), "9999_from_the_future")) << s.message();
  EXPECT_TRUE(contains(s.message(), "does not know")) << s.message();
  EXPECT_TRUE(applied.empty());
}

TEST(Migrations, ADatabaseWithOtherTablesIsRefusedUntouched) {
  testing::TempDir dir;
  {
    SQLite::Database other(dir.file("app.db"), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    other.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
  }
  auto db = open_write(dir.file("app.db"));
  ASSERT_TRUE(db);
  Status s = migrate(*db);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_TRUE(contains(s.message(), "not an iarelay journal")) << s.message();
  EXPECT_EQ(db->execAndGet("SELECT group_concat(name) FROM sqlite_master").getString(),
            "customers");
}

// Normalises a CREATE statement: comments dropped, whitespace collapsed, no blanks around
// punctuation; what remains are the statement's tokens.
std::string normalize_sql(const std::string& sql) {
  std::string no_comments = std::regex_replace(sql, std::regex("--[^\n]*"), "");
  std::string spaced = std::regex_replace(no_comments, std::regex("\\s+"), " ");
  std::string tight = std::regex_replace(spaced, std::regex(" ?([(),;]) ?"), "$1");
  size_t b = tight.find_first_not_of(' '), e = tight.find_last_not_of(' ');
  return b == std::string::npos ? "" : tight.substr(b, e - b + 1);
}

std::vector<std::string> schema_rows(SQLite::Database& db) {
  SQLite::Statement q(db,
                      "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name");
  std::vector<std::string> rows;
  while (q.executeStep())
    rows.push_back(q.getColumn(0).getString() + " | " + q.getColumn(1).getString() + " | " +
                   q.getColumn(2).getString() + " | " +
                   (q.getColumn(3).isNull() ? "NULL" : normalize_sql(q.getColumn(3).getString())));
  return rows;
}

TEST(Migrations, NormalizationKeepsTokens) {
  EXPECT_EQ(normalize_sql("CREATE TABLE t (\n  a INTEGER, -- the a\n  b TEXT NOT NULL\n)"),
            "CREATE TABLE t(a INTEGER,b TEXT NOT NULL)");
  EXPECT_NE(normalize_sql("CREATE TABLE t (a INTEGER)"), normalize_sql("CREATE TABLE t (a TEXT)"));
}

TEST(Migrations, AllMigrationsBuildExactlyTheDocumentedSchema) {
  testing::TempDir dir;
  auto migrated = open_migrated(dir.file("migrated.db"));
  ASSERT_TRUE(migrated);
  std::string documented =
      testing::read_file(std::string(IARELAY_SOURCE_DIR) + "/schema/journal.sql");
  ASSERT_FALSE(documented.empty());
  SQLite::Database reference(dir.file("reference.db"),
                             SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  reference.exec(documented);

  auto want = schema_rows(reference);
  auto got = schema_rows(*migrated);
  ASSERT_GT(want.size(), 5u);
  EXPECT_EQ(got, want);
  // Every table documented also has a comment for each column in schema/journal.sql: a line
  // per column ending in "-- ...". Spot-check that the file documents what it declares.
  for (const char* table :
       {"webhooks", "attempts", "agents", "cursors", "consumers", "audit", "schema_migrations"})
    EXPECT_TRUE(contains(documented, std::string("CREATE TABLE ") + table + " (")) << table;
}

// The opcodes of `sql` as this connection compiles it.
int ephemeral_tables(SQLite::Database& db, const std::string& sql) {
  SQLite::Statement q(db, "EXPLAIN " + sql);
  int n = 0;
  while (q.executeStep())
    if (q.getColumn(1).getString() == "OpenEphemeral") ++n;
  return n;
}

// 0004: SQLite evaluated the `IN (...)` CHECKs through a temporary b-tree built at every
// statement (a state change, an attempt, an agent row). A journal of 0003 with a webhook in it,
// migrated on the connection that goes on writing (as the daemon's writer does): the state
// changes compile without one, the row is intact, and the rules still refuse what they refused.
TEST(Migrations, StateChecksNeedNoTemporaryTableAfterAnUpgradeAndStillRefuseUnknownStates) {
  testing::TempDir dir;
  auto db = open_write(dir.file("j.db"));
  ASSERT_TRUE(db);
  db->exec(
      "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
      "checksum TEXT NOT NULL, applied_at TEXT NOT NULL)");
  for (const auto& m : embedded_migrations()) {
    if (m.version > 3) break;
    db->exec(m.sql);
    SQLite::Statement rec(*db, "INSERT INTO schema_migrations VALUES (?,?,?,?)");
    rec.bind(1, m.version);
    rec.bind(2, m.name);
    rec.bind(3, sha256_hex(m.sql));
    rec.bind(4, "2026-11-30T00:00:00.000Z");
    rec.exec();
  }
  db->exec(
      "INSERT INTO webhooks (id, source, received_at, service, type, state, payload) VALUES "
      "('w1', 'direct', '2026-11-30T00:00:00.000Z', 'svc', 'status', 'queued', '{}')");
  const std::string update =
      "UPDATE webhooks SET state='inflight', attempts=attempts+1 WHERE id='w1' AND "
      "state='queued'";
  const std::string attempt =
      "INSERT INTO attempts (webhook_id, attempt, agent, started_at, outcome) VALUES "
      "('w1', 1, 'a', '2026-11-30T00:00:00.000Z', 'delivered')";
  const std::string agent =
      "INSERT INTO agents (id, state, state_since) VALUES ('a', 'up', "
      "'2026-11-30T00:00:00.000Z')";
  ASSERT_GT(ephemeral_tables(*db, update), 0);  // 0003: the IN list's b-tree

  std::vector<std::string> applied;
  Status s = migrate(*db, &applied);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(applied, std::vector<std::string>{"0004_state_checks"});
  EXPECT_EQ(ephemeral_tables(*db, update), 0);
  EXPECT_EQ(ephemeral_tables(*db, attempt), 0);
  EXPECT_EQ(ephemeral_tables(*db, agent), 0);
  EXPECT_EQ(db->exec(update), 1);
  db->exec(attempt);
  db->exec(agent);
  EXPECT_EQ(db->execAndGet("SELECT state || attempts FROM webhooks WHERE id='w1'").getString(),
            "inflight1");
  EXPECT_EQ(db->execAndGet("PRAGMA integrity_check").getString(), "ok");

  for (const char* bad : {"UPDATE webhooks SET state='deliverd' WHERE id='w1'",
                          "UPDATE attempts SET outcome='ok' WHERE webhook_id='w1'",
                          "UPDATE agents SET state='gone' WHERE id='a'"})
    EXPECT_THROW(db->exec(bad), SQLite::Exception) << bad;
  // Another connection reads the new definitions too.
  SQLite::Database other(dir.file("j.db"), SQLite::OPEN_READWRITE);
  EXPECT_EQ(ephemeral_tables(other, update), 0);
  EXPECT_THROW(other.exec("UPDATE webhooks SET state='deliverd' WHERE id='w1'"), SQLite::Exception);
}

// --- the daemon lock ------------------------------------------------------------------------

TEST(DaemonLock, SecondAcquireFailsNamingTheHolderPid) {
  testing::TempDir dir;
  std::string journal = dir.file("var/journal.db");
  EXPECT_FALSE(daemon_holding(journal).has_value());
  auto first = DaemonLock::acquire(journal);
  ASSERT_TRUE(first.is_ok()) << first.status().message();
  auto holder = daemon_holding(journal);
  ASSERT_TRUE(holder.has_value());
  EXPECT_EQ(*holder, static_cast<long>(::getpid()));

  auto second = DaemonLock::acquire(journal);
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().kind(), StatusKind::kUnavailable);
  EXPECT_TRUE(contains(second.status().message(), "pid " + std::to_string(::getpid())))
      << second.status().message();

  first.value().reset();  // releases the lock
  EXPECT_FALSE(daemon_holding(journal).has_value());
  auto third = DaemonLock::acquire(journal);
  EXPECT_TRUE(third.is_ok()) << third.status().message();
}

TEST(DaemonLock, HeldByAnotherProcessIsSeenAndRefused) {
  testing::TempDir dir;
  std::string journal = dir.file("journal.db");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = DaemonLock::acquire(journal);
    char c = lock.is_ok() ? 'y' : 'n';
    if (::write(ready[1], &c, 1) != 1) ::_exit(2);
    ::pause();  // held until killed
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(c, 'y');
  auto holder = daemon_holding(journal);
  ASSERT_TRUE(holder.has_value());
  EXPECT_EQ(*holder, static_cast<long>(child));
  auto mine = DaemonLock::acquire(journal);
  EXPECT_FALSE(mine.is_ok());
  EXPECT_TRUE(contains(mine.status().message(), "pid " + std::to_string(child)))
      << mine.status().message();
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  // The kernel drops a killed holder's lock: the journal is free again.
  EXPECT_FALSE(daemon_holding(journal).has_value());
  EXPECT_TRUE(DaemonLock::acquire(journal).is_ok());
}

}  // namespace
}  // namespace iarelay
