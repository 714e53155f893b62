// The journal on PostgreSQL (issue 15): migrations recorded and verified by checksum as the
// SQLite journal's are, and the same tables, columns and states as the SQLite journal, so the
// SQL recipes of docs/journal.md read both. Each test runs a throwaway cluster.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <map>
#include <set>
#include <thread>

#include "common/crypto.h"
#include "journal/journal.h"
#include "journal/pg/pg_journal.h"

#include "support/pg_cluster.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

class PgJournal : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cluster_.error(), ""); }
  std::unique_ptr<PgConnection> connect(const std::string& db = "postgres") {
    auto c = PgConnection::connect(cluster_.uri(db));
    EXPECT_TRUE(c) << c.status().message();
    return c ? std::move(*c) : nullptr;
  }
  PgCluster cluster_;
};

// run_all: statements sent together, each answered in order as query() and command() would
// answer it alone; the first failure fails them all (in one implicit transaction outside a
// BEGIN, as libpq's pipeline runs them), and the connection goes on.
TEST_F(PgJournal, StatementsRunTogetherAnswerInOrderAndStopAtTheFirstFailure) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (n int PRIMARY KEY)"));
  auto out = db->run_all({{"INSERT INTO t VALUES ($1) RETURNING n", {"1"}},
                          {"SELECT count(*) FROM t", {}},
                          {"INSERT INTO t VALUES ($1), ($2)", {"2", "3"}},
                          {"UPDATE t SET n = n WHERE n > $1", {"5"}}});
  ASSERT_TRUE(out) << out.status().message();
  ASSERT_EQ(out->size(), 4u);
  EXPECT_EQ((*out)[0].rows, (std::vector<PgRow>{{"1"}}));
  EXPECT_EQ((*out)[1].rows, (std::vector<PgRow>{{"1"}}));
  EXPECT_EQ((*out)[2].changed, 2);
  EXPECT_EQ((*out)[3].changed, 0);
  auto failed = db->run_all({{"INSERT INTO t VALUES ($1)", {"4"}},
                             {"INSERT INTO t VALUES ($1)", {"1"}},
                             {"INSERT INTO t VALUES ($1)", {"5"}}});
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.status().message().find("duplicate key"), std::string::npos)
      << failed.status().message();
  EXPECT_EQ(cluster_.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"), "1,2,3");
  // Inside a transaction, under a savepoint sent ahead of them: rolled back to it, the
  // transaction goes on and commits.
  ASSERT_TRUE(db->exec("BEGIN"));
  db->defer("SAVEPOINT s");
  EXPECT_FALSE(
      db->run_all({{"INSERT INTO t VALUES ($1)", {"6"}}, {"INSERT INTO t VALUES ($1)", {"2"}}}));
  ASSERT_TRUE(db->command("ROLLBACK TO SAVEPOINT s"));
  ASSERT_TRUE(db->run_all({{"INSERT INTO t VALUES ($1)", {"7"}}}));
  ASSERT_TRUE(db->exec("COMMIT"));
  EXPECT_EQ(cluster_.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"), "1,2,3,7");
  auto none = db->run_all({});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  // Review: many statements whose answers fill the socket's buffers before they are all sent
  // (libpq reads while it waits to send, so neither side waits on the other for ever).
  std::vector<PgStatement> many(20'000, {"SELECT repeat('x', 1000), $1::int", {"0"}});
  for (std::size_t i = 0; i < many.size(); ++i) many[i].params[0] = std::to_string(i);
  auto answered = db->run_all(many);
  ASSERT_TRUE(answered) << answered.status().message();
  ASSERT_EQ(answered->size(), many.size());
  EXPECT_EQ(*answered->back().rows[0][1], "19999");
  EXPECT_EQ(answered->back().rows[0][0]->size(), 1000u);
}

TEST_F(PgJournal, MigratesAnEmptyDatabaseOnceAndRecordsEachChecksum) {
  auto db = connect();
  ASSERT_TRUE(db);
  std::vector<std::string> applied;
  ASSERT_TRUE(pg_migrate(*db, &applied));
  ASSERT_EQ(applied.size(), pg_migrations().size());
  EXPECT_EQ(applied.front(), "0001_initial");
  // Again: nothing left to apply, and nothing pending.
  applied.clear();
  ASSERT_TRUE(pg_migrate(*db, &applied));
  EXPECT_TRUE(applied.empty());
  std::vector<std::string> pending;
  ASSERT_TRUE(pg_verify_migrations(*db, &pending));
  EXPECT_TRUE(pending.empty());
  auto rows = db->query("SELECT version, name, checksum FROM schema_migrations ORDER BY version");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), pg_migrations().size());
  for (std::size_t i = 0; i < rows->size(); ++i) {
    EXPECT_EQ((*rows)[i][1], pg_migrations()[i].name);
    EXPECT_EQ((*rows)[i][2], sha256_hex(pg_migrations()[i].sql));
  }
}

TEST_F(PgJournal, ADatabaseNotYetMigratedListsEveryMigrationPending) {
  auto db = connect();
  ASSERT_TRUE(db);
  std::vector<std::string> pending;
  ASSERT_TRUE(pg_verify_migrations(*db, &pending));
  EXPECT_EQ(pending.size(), pg_migrations().size());
  EXPECT_EQ(cluster_.psql("SELECT to_regclass('webhooks') IS NULL"), "t");  // nothing written
}

TEST_F(PgJournal, RefusesADatabaseWhoseAppliedMigrationChanged) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  ASSERT_EQ(cluster_.psql("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1"), "");
  Status s = pg_migrate(*db);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_NE(s.message().find("0001_initial"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s.message();
  EXPECT_EQ(pg_verify_migrations(*db).kind(), StatusKind::kCorruption);
}

TEST_F(PgJournal, RefusesAMigrationThisBuildDoesNotKnow) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  ASSERT_EQ(cluster_.psql("INSERT INTO schema_migrations VALUES (99, '0099_future', 'x', 'now')"),
            "");
  Status s = pg_migrate(*db);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_NE(s.message().find("0099_future"), std::string::npos) << s.message();
}

TEST_F(PgJournal, RefusesADatabaseWithAWebhooksTableItDidNotCreate) {
  ASSERT_EQ(cluster_.psql("CREATE TABLE webhooks (x int)"), "");
  auto db = connect();
  ASSERT_TRUE(db);
  Status s = pg_migrate(*db);
  EXPECT_EQ(s.kind(), StatusKind::kCorruption);
  EXPECT_NE(s.message().find("not an iarelay journal"), std::string::npos) << s.message();
  EXPECT_EQ(cluster_.psql("SELECT to_regclass('schema_migrations') IS NULL"), "t");
}

TEST_F(PgJournal, RelaysStartingTogetherMigrateOnce) {
  constexpr int kRelays = 6;
  std::vector<Status> results(kRelays);
  std::vector<std::thread> relays;
  for (int i = 0; i < kRelays; ++i)
    relays.emplace_back([&, i] {
      auto c = PgConnection::connect(cluster_.uri());
      results[i] = c ? pg_migrate(**c) : c.status();
    });
  for (auto& t : relays) t.join();
  for (const Status& s : results) EXPECT_TRUE(s) << s.message();
  EXPECT_EQ(cluster_.psql("SELECT count(*), count(DISTINCT version) FROM schema_migrations"),
            std::to_string(pg_migrations().size()) + "|" + std::to_string(pg_migrations().size()));
}

TEST_F(PgJournal, AConnectionErrorNamesTheServerButNeverThePassword) {
  const int nobody = free_port();  // nothing listens there
  auto c =
      PgConnection::connect("postgresql://iarelay:s3cret-pw@127.0.0.1:" + std::to_string(nobody) +
                            "/postgres?connect_timeout=5");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().kind(), StatusKind::kUnavailable);
  EXPECT_NE(c.status().message().find(std::to_string(nobody)), std::string::npos)
      << c.status().message();
  EXPECT_EQ(c.status().message().find("s3cret-pw"), std::string::npos) << c.status().message();
  EXPECT_EQ(c.status().message().find('\n'), std::string::npos) << c.status().message();
}

// Review: a connection string libpq cannot parse (a password with a '%' not percent-encoded, an
// IPv6 address missing its ']') comes back in libpq's message, password included, and connect()
// passes that message on unchanged (to the start-up error and the log).
TEST_F(PgJournal, AMistypedConnectionStringNeverShowsThePassword) {
  const std::string port = std::to_string(cluster_.port());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"postgresql://iarelay:50%off-pw@127.0.0.1:" + port + "/postgres", "50%off-pw"},
      {"postgresql://iarelay:s3cret-pw@[::1/postgres", "s3cret-pw"},
  };
  for (const auto& [uri, password] : cases) {
    auto c = PgConnection::connect(uri);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.status().message().find(password), std::string::npos) << c.status().message();
  }
}

// --- the same journal in both backends --------------------------------------------------------

struct Column {
  std::string name;
  bool not_null;
  bool operator==(const Column& o) const { return name == o.name && not_null == o.not_null; }
};
std::ostream& operator<<(std::ostream& os, const Column& c) {
  return os << c.name << (c.not_null ? " NOT NULL" : "");
}

// Table -> columns in declaration order, of a migrated SQLite journal.
std::map<std::string, std::vector<Column>> sqlite_tables(SQLite::Database& db) {
  std::map<std::string, std::vector<Column>> out;
  SQLite::Statement tables(db,
                           "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT "
                           "LIKE 'sqlite_%' ORDER BY name");
  while (tables.executeStep()) {
    std::string table = tables.getColumn(0).getString();
    SQLite::Statement cols(db, "SELECT name, \"notnull\", pk FROM pragma_table_info(?)");
    cols.bind(1, table);
    while (cols.executeStep())
      out[table].push_back({cols.getColumn(0).getString(),
                            // A primary key never holds NULL in either backend (an INTEGER
                            // PRIMARY KEY is the rowid; PostgreSQL's keys are NOT NULL).
                            cols.getColumn(1).getInt() != 0 || cols.getColumn(2).getInt() != 0});
  }
  return out;
}

std::map<std::string, std::vector<Column>> pg_tables(PgConnection& db) {
  std::map<std::string, std::vector<Column>> out;
  auto rows = db.query(
      "SELECT table_name, column_name, is_nullable FROM information_schema.columns WHERE "
      "table_schema = current_schema() ORDER BY table_name, ordinal_position");
  EXPECT_TRUE(rows) << rows.status().message();
  if (!rows) return out;
  for (const PgRow& r : *rows) out[*r[0]].push_back({*r[1], r[2] == "NO"});
  return out;
}

TEST_F(PgJournal, HasTheTablesColumnsAndStatesOfTheSqliteJournal) {
  TempDir dir;
  auto lite = open_journal_for_write(dir.file("journal.db"), SyncLevel::kNormal);
  ASSERT_TRUE(lite) << lite.status().message();
  ASSERT_TRUE(migrate(**lite));
  auto pg = connect();
  ASSERT_TRUE(pg);
  ASSERT_TRUE(pg_migrate(*pg));
  auto in_sqlite = sqlite_tables(**lite), in_pg = pg_tables(*pg);
  ASSERT_FALSE(in_sqlite.empty());
  std::set<std::string> lite_names, pg_names;
  for (const auto& [t, c] : in_sqlite) lite_names.insert(t);
  // Tables only several relays need (a SQLite journal has one relay: its daemon lock).
  const std::set<std::string> pg_only = {"agent_leases"};
  for (const auto& [t, c] : in_pg)
    if (!pg_only.count(t)) pg_names.insert(t);
  EXPECT_EQ(lite_names, pg_names);
  for (const auto& [table, columns] : in_sqlite) EXPECT_EQ(columns, in_pg[table]) << table;

  // The states each table accepts: the same words in both.
  const std::vector<std::string> words = {"stored",    "queued", "inflight", "delivered", "failed",
                                          "discarded", "held",   "retry",    "up",        "down",
                                          "paused",    "Queued", "bogus",    ""};
  struct Probe {
    std::string table, insert;  // ? is the word
  };
  const std::vector<Probe> probes = {
      {"webhooks",
       "INSERT INTO webhooks (id, source, received_at, service, type, state, payload) VALUES "
       "('w-' || ?1, 'direct', 't', 's', 'status', ?1, '{}')"},
      {"attempts",
       "INSERT INTO attempts (webhook_id, attempt, agent, started_at, outcome) VALUES "
       "('w', 1, 'a', 't', ?1)"},
      {"agents", "INSERT INTO agents (id, state, state_since) VALUES ('a-' || ?1, ?1, 't')"},
  };
  for (const Probe& p : probes) {
    std::set<std::string> lite_accepts, pg_accepts;
    for (const std::string& w : words) {
      try {
        SQLite::Statement ins(**lite, p.insert);
        ins.bind(1, w);
        ins.exec();
        lite_accepts.insert(w);
      } catch (const std::exception&) {
      }
      std::string sql = p.insert;
      for (std::size_t at; (at = sql.find("?1")) != std::string::npos;) sql.replace(at, 2, "$1");
      // bytea takes '{}' as its text form too.
      if (pg->query(sql, {w})) pg_accepts.insert(w);
    }
    EXPECT_FALSE(lite_accepts.empty()) << p.table;
    EXPECT_EQ(lite_accepts, pg_accepts) << p.table;
  }
}

// A backlog analyzed while every row of it was queued, then mostly delivered: statistics that
// say every row is queued made the planner walk the primary key from the head of the table for
// the chain step's count of queued webhooks ahead (5.5 ms a call against 0.16 ms, and growing
// with every webhook delivered; docs/benchmarks.md). Migration 0003 keeps those reads on the
// partial queue index whatever the statistics say.
TEST_F(PgJournal, QueueReadsTakeTheQueueIndexWhateverTheStatisticsSay) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  ASSERT_EQ(cluster_.psql("INSERT INTO webhooks (id, source, received_at, service, type, state, "
                          "assigned_agent, event_id, payload) SELECT 'w' || i, 'direct', 't', "
                          "'s', 'status', 'queued', 'a1', 'e' || (i / 4), '{}' FROM "
                          "generate_series(1, 50000) i; ANALYZE webhooks; UPDATE webhooks SET "
                          "state = 'delivered' WHERE seq <= 10000"),
            "");
  // The dispatcher's queue reads of src/journal/pg/pg_store.cpp, with their parameters.
  for (const std::string& read :
       {std::string("SELECT count(*) FROM (SELECT 1 FROM webhooks WHERE assigned_agent = 'a1' "
                    "AND state = 'queued' AND seq < 10100 LIMIT 256) ahead"),
        std::string("SELECT seq, id FROM webhooks WHERE assigned_agent = 'a1' AND state = "
                    "'queued' AND seq > 0 ORDER BY seq LIMIT 64")}) {
    const std::string plan = cluster_.psql("EXPLAIN " + read);
    EXPECT_NE(plan.find("webhooks_queue"), std::string::npos) << read << "\n" << plan;
    EXPECT_EQ(plan.find("webhooks_pkey"), std::string::npos) << read << "\n" << plan;
  }
}

// A server whose host vanished never closes its connections: TCP keepalives and a user
// timeout fail the relay's waiting statement within about 30 s, so that it connects again.
// The connection string's own values win.
TEST_F(PgJournal, ConnectionsUseTcpKeepalivesUnlessTheConnectionStringSaysOtherwise) {
  auto db = connect();
  ASSERT_TRUE(db);
  EXPECT_EQ(db->option("keepalives"), "1");
  EXPECT_EQ(db->option("keepalives_idle"), "10");
  EXPECT_EQ(db->option("keepalives_interval"), "5");
  EXPECT_EQ(db->option("keepalives_count"), "3");
  EXPECT_EQ(db->option("tcp_user_timeout"), "30000");
  EXPECT_EQ(db->option("connect_timeout"), "10");
  auto own = PgConnection::connect(cluster_.uri() + "?keepalives_idle=42&tcp_user_timeout=0");
  ASSERT_TRUE(own) << own.status().message();
  EXPECT_EQ((*own)->option("keepalives_idle"), "42");
  EXPECT_EQ((*own)->option("tcp_user_timeout"), "0");
  EXPECT_EQ((*own)->option("keepalives_count"), "3");
  EXPECT_EQ((*own)->option("port"), std::to_string(cluster_.port()));
}

// A statement stuck behind a lock, or running away, fails instead of stopping its relay without
// a word: every connection has a statement and a lock limit, unless its string sets `options`.
TEST_F(PgJournal, StatementsAndLockWaitsAreLimitedUnlessTheConnectionStringSaysOtherwise) {
  auto db = connect();
  ASSERT_TRUE(db);
  auto show = [](PgConnection& c, const std::string& setting) {
    auto rows = c.query("SHOW " + setting);
    return rows && rows->size() == 1 ? rows->front()[0].value_or("") : "error";
  };
  EXPECT_EQ(show(*db, "statement_timeout"), "1min");
  EXPECT_EQ(show(*db, "lock_timeout"), "10s");
  auto own = PgConnection::connect(cluster_.uri() + "?options=-c%20statement_timeout%3D5s");
  ASSERT_TRUE(own) << own.status().message();
  EXPECT_EQ(show(**own, "statement_timeout"), "5s");
  EXPECT_EQ(show(**own, "lock_timeout"), "0") << "the string's options replace ours whole";
}

// A relay starting while another migrates waits for it however long that takes: no lock limit
// in a migration's transaction.
TEST_F(PgJournal, AMigrationWaitsForAnotherRelaysMigrationPastTheLockLimit) {
  auto other = connect();
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->exec("BEGIN; SELECT pg_advisory_xact_lock(" +
                          std::to_string(kMigrationLockKey) + ")"));
  auto db = PgConnection::connect(cluster_.uri() + "?options=-c%20lock_timeout%3D100");
  ASSERT_TRUE(db) << db.status().message();
  std::thread commit([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    EXPECT_TRUE(other->exec("COMMIT"));
  });
  Status s = pg_migrate(**db);
  commit.join();
  EXPECT_TRUE(s) << s.message();
}

// Review: statistics an ANALYZE took before migration 0003 (a backlog all queued) stayed in
// use after SET STATISTICS 0, for good; 0003 drops them.
TEST_F(PgJournal, StatisticsTakenBeforeMigration0003AreDropped) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  ASSERT_EQ(pg_migrations().back().name, "0003_queue_plans");
  // A journal as 0002 left it, analyzed while its backlog was all queued; then 0003 again.
  ASSERT_EQ(cluster_.psql("ALTER TABLE webhooks ALTER COLUMN state SET STATISTICS -1; INSERT INTO "
                          "webhooks (id, source, received_at, service, type, state, "
                          "assigned_agent, event_id, payload) SELECT 'w' || i, 'direct', 't', "
                          "'s', 'status', 'queued', 'a1', 'e' || (i / 4), '{}' FROM "
                          "generate_series(1, 50000) i"),
            "");
  ASSERT_EQ(cluster_.psql("ANALYZE webhooks"), "");
  ASSERT_EQ(cluster_.psql(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'webhooks' AND attname = 'state'"),
            "1");
  ASSERT_TRUE(db->exec(pg_migrations().back().sql));
  ASSERT_EQ(cluster_.psql("UPDATE webhooks SET state = 'delivered' WHERE seq <= 45000"), "");
  ASSERT_EQ(cluster_.psql("ANALYZE webhooks"), "");
  EXPECT_EQ(cluster_.psql(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'webhooks' AND attname = 'state'"),
            "0");
  const std::string plan = cluster_.psql(
      "EXPLAIN SELECT count(*) FROM (SELECT 1 FROM webhooks WHERE assigned_agent = 'a1' AND state "
      "= 'queued' AND seq < 45100 LIMIT 256) ahead");
  EXPECT_NE(plan.find("webhooks_queue"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("webhooks_pkey"), std::string::npos) << plan;
}

// Review: a deferred SAVEPOINT went to the server after the PREPARE of the savepoint's first
// statement; a statement failing to prepare then aborted the whole transaction, beyond what
// ROLLBACK TO could undo.
TEST_F(PgJournal, AStatementFailingToPrepareInsideASavepointIsUndoneByRollingBackToIt) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  ASSERT_TRUE(db->exec("BEGIN"));
  ASSERT_TRUE(
      db->command("INSERT INTO agents (id, state, state_since) VALUES ($1, 'up', 't')", {"kept"}));
  db->defer("SAVEPOINT step");
  EXPECT_FALSE(db->query("SELECT nope FROM agents WHERE id = $1", {"a"}));
  auto undone = db->command("ROLLBACK TO SAVEPOINT step");
  ASSERT_TRUE(undone) << undone.status().message();
  EXPECT_FALSE(db->in_failed_transaction());
  ASSERT_TRUE(db->exec("COMMIT"));
  EXPECT_EQ(cluster_.psql("SELECT id FROM agents"), "kept");
}

// Review: every size of a batch of inserts was a text of its own, prepared and kept: 256 of
// them filled the cache, and the journal's own statements first used afterwards ran
// unprepared. A statement built for a batch (more than 32 parameters) is not prepared.
TEST_F(PgJournal, BatchesOfEverySizeLeaveTheJournalsStatementsPrepared) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  auto backend = pg_backend(*db);
  int n = 0;
  for (int size = 1; size <= 300; ++size) {
    std::vector<NewWebhook> batch;
    for (int i = 0; i < size; ++i) {
      NewWebhook w;
      w.id = "w" + std::to_string(++n);
      w.received_at = 1764547200000;
      w.service = "s";
      w.type = "status";
      w.event_id = "e";
      w.assigned_agent = "a1";
      w.payload = "{}";
      batch.push_back(std::move(w));
    }
    ASSERT_TRUE(backend->transact([&](JournalTx& tx) { tx.insert_webhooks(batch); }));
  }
  AttemptRecord a;
  a.webhook_id = "w1";
  a.attempt = 1;
  a.agent = "a1";
  a.outcome = "delivered";
  ASSERT_TRUE(backend->transact([&](JournalTx& tx) {
    EXPECT_TRUE(tx.record_outcome(&a, "w1", WebhookState::kQueued, WebhookState::kDelivered, {}));
  }));
  auto prepared = db->query(
      "SELECT count(*) FILTER (WHERE statement LIKE 'WITH attempt AS%'), count(*) FROM "
      "pg_prepared_statements");
  ASSERT_TRUE(prepared) << prepared.status().message();
  EXPECT_EQ((*prepared)[0][0], "1");
  EXPECT_LT(std::stoi(*(*prepared)[0][1]), 50);
}

// Review: a server that no longer has the connection's prepared statements (a pooler between,
// a DISCARD ALL) failed every statement as an I/O error, and nothing connected again.
TEST_F(PgJournal, APreparedStatementTheServerLostMakesTheConnectionUnavailable) {
  auto db = connect();
  ASSERT_TRUE(db);
  const std::string read = "SELECT $1::text";
  ASSERT_TRUE(db->query(read, {"x"}));
  ASSERT_TRUE(db->exec("DEALLOCATE ALL"));
  auto again = db->query(read, {"x"});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.status().kind(), StatusKind::kUnavailable) << again.status().message();
}

// The journal's statements are prepared once per connection: one prepared inside a
// transaction that rolled back is still there to run afterwards, and a failing statement
// leaves the next one of the same text runnable.
TEST_F(PgJournal, APreparedStatementOutlivesARollbackAndAFailure) {
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(pg_migrate(*db));
  const std::string insert = "INSERT INTO agents (id, state, state_since) VALUES ($1, 'up', 't')";
  ASSERT_TRUE(db->exec("BEGIN"));
  ASSERT_TRUE(db->command(insert, {"a1"}));
  ASSERT_TRUE(db->exec("ROLLBACK"));
  auto again = db->command(insert, {"a1"});
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_EQ(*again, 1);
  EXPECT_FALSE(db->command(insert, {"a1"}));  // the primary key refuses it
  again = db->command(insert, {"a2"});
  ASSERT_TRUE(again) << again.status().message();
  auto prepared =
      db->query("SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", {insert});
  ASSERT_TRUE(prepared) << prepared.status().message();
  EXPECT_EQ((*prepared)[0][0], "1");
}

}  // namespace
}  // namespace iarelay::testing
