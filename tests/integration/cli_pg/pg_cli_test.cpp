// `iarelay` on a PostgreSQL journal (docs/high-availability.md, "iarelay on PostgreSQL"): the
// built tool run as a child process on a throwaway cluster, its journal written with the
// journal library (and in the last test by a running iarelayd). Every connection string holds a
// password (the cluster trusts loopback, so it is never checked) that no output may show.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include <SQLiteCpp/SQLiteCpp.h>

#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_admin.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_leases.h"
#include "support/pg_cluster.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kPassword = "S3cret-Pw-of-the-journal";
constexpr const char* kOwner = "relay-east/4242/x1";
constexpr Millis kMinute = 60'000;
constexpr Millis kHour = 60 * kMinute;

class PgCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cluster_.error(), "");
    ASSERT_EQ(cluster_.create_database("journal"), "");
    auto c = PgConnection::connect(cluster_.uri("journal"));
    ASSERT_TRUE(c) << c.status().message();
    db_ = std::move(*c);
    ASSERT_TRUE(pg_migrate(*db_));
    // postgresql://iarelay@127.0.0.1:PORT/journal with a password after the user.
    uri_ = cluster_.uri("journal");
    uri_.insert(uri_.find('@'), std::string(":") + kPassword);
    // The same rows go to a SQLite journal too, so that a test can compare the tool's output on
    // both backends.
    sqlite_path_ = dir_.file("journal.db");
    auto s = open_journal_for_write(sqlite_path_, SyncLevel::kNormal);
    ASSERT_TRUE(s) << s.status().message();
    sqlite_ = std::move(*s);
    ASSERT_TRUE(migrate(*sqlite_));
  }

  // Runs `op` in a transaction on the PostgreSQL journal and on the SQLite one.
  void both(const std::function<void(JournalTx&)>& op) {
    Status p = pg_backend(*db_)->transact(op);
    ASSERT_TRUE(p) << p.message();
    Status s = sqlite_backend(*sqlite_)->transact(op);
    ASSERT_TRUE(s) << s.message();
  }

  // A webhook as the relay would have stored it, received `age` ago (on both journals).
  void add_webhook(const std::string& id, WebhookState state, std::optional<std::string> agent,
                   Millis age, const std::string& event, const std::string& service = "svc",
                   const std::string& type = "status", int attempts = 0,
                   std::optional<Millis> next_attempt_at = std::nullopt) {
    NewWebhook w;
    w.id = id;
    w.received_at = now_millis() - age;
    w.service = service;
    w.type = type;
    w.event_id = event;
    w.state = state;
    w.assigned_agent = agent;
    w.payload = R"({"eventIdentifier":")" + event + R"(","status":"ACTIVE"})";
    both([&](JournalTx& tx) {
      tx.insert_webhook(w);
      if (attempts > 0 || next_attempt_at) {
        TransitionFields f;
        f.attempts = attempts;
        f.last_status = std::optional<int>(503);
        f.last_error = std::optional<std::string>("busy");
        if (next_attempt_at) f.next_attempt_at = std::optional<Millis>(*next_attempt_at);
        tx.transition(id, state, state, f);
      }
    });
  }
  // A webhook of service svc and alert E-<id>.
  void add(const std::string& id, WebhookState state, std::optional<std::string> agent, Millis age,
           int attempts = 0) {
    add_webhook(id, state, agent, age, "E-" + id, "svc", "status", attempts);
  }
  void add_attempt(const std::string& id, int attempt, const std::string& agent, Millis started_at,
                   std::optional<int> status, const std::string& outcome) {
    both([&](JournalTx& tx) {
      tx.record_attempt(
          {id, attempt, agent, started_at, 40, status,
           status && *status < 300 ? std::nullopt : std::optional<std::string>("busy"), outcome});
    });
  }

  // The sample: a1 has one queued and one failed webhook and a live lease of kOwner; a2 a
  // delivered one and a lease that has expired; one discarded webhook waits for nobody.
  void add_sample() {
    add("q1", WebhookState::kQueued, "a1", 30 * kMinute);
    add("f1", WebhookState::kFailed, "a1", 20 * kMinute, 25);
    add("d1", WebhookState::kDelivered, "a2", 10 * kMinute);
    add("x1", WebhookState::kDiscarded, std::nullopt, 5 * kMinute);
    auto live = take_lease(*db_, "a1", kOwner, 600'000);
    ASSERT_TRUE(live) << live.status().message();
    auto lapsed = take_lease(*db_, "a2", "relay-west/7/y2", 600'000);
    ASSERT_TRUE(lapsed) << lapsed.status().message();
    ASSERT_EQ(psql("UPDATE agent_leases SET expires_at = now() - interval '90 seconds' WHERE "
                   "agent = 'a2'"),
              "");
  }

  // Runs `iarelay --journal URI-with-password ARGS...`; no output may show the password.
  CommandResult iarelay(std::vector<std::string> args, const std::string& journal = "") {
    args.insert(args.begin(), {bin("iarelay"), "--journal", journal.empty() ? uri_ : journal});
    CommandResult r = run(args);
    EXPECT_EQ(r.out.find(kPassword), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find(kPassword), std::string::npos) << r.err;
    return r;
  }

  // The same command on the SQLite journal holding the same rows.
  CommandResult on_sqlite(std::vector<std::string> args) {
    args.insert(args.begin(), {bin("iarelay"), "--journal", sqlite_path_});
    return run(args);
  }
  // Runs `args` on both journals and expects the same exit code, output and errors.
  CommandResult same_on_both(const std::vector<std::string>& args) {
    CommandResult pg = iarelay(args);
    CommandResult lite = on_sqlite(args);
    std::string shown;
    for (const auto& a : args) shown += a + " ";
    EXPECT_EQ(pg.exit_code, lite.exit_code) << shown << "\n" << pg.err << "\n" << lite.err;
    EXPECT_EQ(pg.out, lite.out) << shown;
    EXPECT_EQ(pg.err, lite.err) << shown;
    return pg;
  }

  std::string psql(const std::string& sql) { return cluster_.psql(sql, "journal"); }
  // A query's rows on the SQLite journal as psql prints them: columns joined by |, one row a
  // line, NULL empty.
  std::string sqlite_rows(const std::string& sql) {
    SQLite::Statement q(*sqlite_, sql);
    std::string out;
    while (q.executeStep()) {
      if (!out.empty()) out += "\n";
      for (int i = 0; i < q.getColumnCount(); ++i)
        out += (i ? "|" : "") + (q.getColumn(i).isNull() ? "" : q.getColumn(i).getString());
    }
    return out;
  }
  // The same query's rows on both journals (SQL both understand), expected equal.
  std::string same_rows(const std::string& sql) {
    const std::string pg = psql(sql);
    EXPECT_EQ(pg, sqlite_rows(sql)) << sql;
    return pg;
  }
  // What the commands leave behind, compared: every webhook's state and fields, the attempts,
  // the audit rows (but their time; `audit_details` false: nor their details, which hold the
  // times each run resolved) and which webhooks each is linked to.
  void expect_same_journals(bool audit_details = true) {
    same_rows(
        "SELECT seq, id, state, assigned_agent, attempts, next_attempt_at, delivered_at FROM "
        "webhooks ORDER BY seq");
    same_rows("SELECT webhook_id, attempt, outcome FROM attempts ORDER BY id");
    same_rows(audit_details ? "SELECT action, filter, affected, detail FROM audit ORDER BY id"
                            : "SELECT action, filter, affected FROM audit ORDER BY id");
    same_rows(
        "SELECT a.action, l.webhook_id FROM audit_webhooks l JOIN audit a ON a.id = l.audit_id "
        "ORDER BY a.id, l.webhook_id");
  }

  PgCluster cluster_;
  TempDir dir_;
  std::unique_ptr<PgConnection> db_;
  std::string uri_;
  std::string sqlite_path_;
  DatabasePtr sqlite_;
};

TEST_F(PgCli, StatusShowsQueuesAgentsAndWhichRelayOwnsEachAgent) {
  add_sample();
  auto r = iarelay({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The journal shown without its password; the relay holding a live lease; every lease with
  // its owner, epoch and expiry.
  EXPECT_NE(r.out.find("iarelay:***@127.0.0.1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("relays    relay-east/4242/x1 (1 agent)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("queued 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("failed 1"), std::string::npos) << r.out;
  bool a1_line = false, a2_line = false;
  for (const auto& line : lines_of(r.out)) {
    if (line.rfind("a1 ", 0) == 0 && line.find(kOwner) != std::string::npos) {
      a1_line = true;
      EXPECT_NE(line.find("expires in 9m"), std::string::npos) << line;
    }
    if (line.rfind("a2 ", 0) == 0 && line.find("relay-west/7/y2") != std::string::npos) {
      a2_line = true;
      EXPECT_NE(line.find("expired 1m"), std::string::npos) << line;
    }
  }
  EXPECT_TRUE(a1_line) << r.out;
  EXPECT_TRUE(a2_line) << r.out;

  auto j = iarelay({"status", "--format", "json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  Json doc = Json::parse(j.out);
  EXPECT_EQ(doc["totals"]["queued"], 1);
  EXPECT_EQ(doc["totals"]["failed"], 1);
  EXPECT_EQ(doc["totals"]["discarded"], 1);
  EXPECT_TRUE(doc["daemon"]["running"].is_null());
  ASSERT_EQ(doc["leases"].size(), 2u) << doc.dump();
  EXPECT_EQ(doc["leases"][0]["agent"], "a1");
  EXPECT_EQ(doc["leases"][0]["owner"], kOwner);
  EXPECT_EQ(doc["leases"][0]["epoch"], 1);
  EXPECT_EQ(doc["leases"][0]["live"], true);
  EXPECT_GT(doc["leases"][0]["expires_in_ms"].get<std::int64_t>(), 500'000);
  EXPECT_EQ(doc["leases"][1]["live"], false);
  EXPECT_LT(doc["leases"][1]["expires_in_ms"].get<std::int64_t>(), -80'000);
  Json a1;
  for (const auto& a : doc["agents"])
    if (a["id"] == "a1") a1 = a;
  ASSERT_FALSE(a1.is_null()) << doc.dump();
  EXPECT_EQ(a1["queued"], 1);
  EXPECT_GE(a1["oldest_queued_age_ms"].get<std::int64_t>(), 30 * kMinute - 5000);
}

TEST_F(PgCli, SqlReturnsTheRowsOfASelectAndRefusesAWrite) {
  add_sample();
  auto csv =
      iarelay({"sql", "SELECT id, state, attempts FROM webhooks ORDER BY seq", "--format", "csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  EXPECT_EQ(csv.out,
            "id,state,attempts\r\nq1,queued,0\r\nf1,failed,25\r\nd1,delivered,0\r\n"
            "x1,discarded,0\r\n");
  // Numbers as numbers, as on SQLite; bytes as a hex literal.
  auto json = iarelay({"sql",
                       "SELECT attempts AS n, substring(payload from 1 for 2) AS head, "
                       "attempts / 10.0 AS r, true AS t FROM webhooks WHERE id = 'f1'",
                       "--format", "json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(Json::parse(json.out),
            Json::parse(R"([{"n": 25, "head": "x'7b22'", "r": 2.5, "t": true}])"));

  auto insert = iarelay(
      {"sql", "INSERT INTO agents VALUES ('intruder', 'up', '2026-01-01T00:00:00Z', NULL, NULL)"});
  EXPECT_EQ(insert.exit_code, 1);
  EXPECT_NE(insert.err.find("iarelay sql: refused"), std::string::npos) << insert.err;
  EXPECT_NE(insert.err.find("read-only transaction"), std::string::npos) << insert.err;
  EXPECT_EQ(psql("SELECT count(*) FROM agents WHERE id = 'intruder'"), "0");
  // A second statement after a harmless first one is refused, not run.
  auto two = iarelay({"sql", "SELECT 1; DELETE FROM webhooks"});
  EXPECT_EQ(two.exit_code, 1);
  EXPECT_NE(two.err.find("refused: more than one statement"), std::string::npos) << two.err;
  EXPECT_EQ(psql("SELECT count(*) FROM webhooks"), "4");
  // A row lock is a write too, and so is taking a sequence's next value.
  for (const char* writing : {"SELECT id FROM webhooks FOR UPDATE",
                              "SELECT nextval(pg_get_serial_sequence('audit', 'id'))"}) {
    auto r = iarelay({"sql", writing});
    EXPECT_EQ(r.exit_code, 1) << writing;
    EXPECT_NE(r.err.find("refused"), std::string::npos) << r.err;
  }
  // A table lock is not (PostgreSQL runs LOCK TABLE in a read-only transaction): while one
  // waits, the relays queue behind it, so it waits a second at most, not the statement timeout.
  ASSERT_TRUE(db_->exec("BEGIN; LOCK TABLE agents IN ROW EXCLUSIVE MODE"));
  const auto start = std::chrono::steady_clock::now();
  auto table = iarelay({"sql", "LOCK TABLE agents IN ACCESS EXCLUSIVE MODE"});
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(db_->exec("ROLLBACK"));
  EXPECT_EQ(table.exit_code, 1);
  EXPECT_NE(table.err.find("lock timeout"), std::string::npos) << table.err;
  EXPECT_LT(waited, 4s);  // 1 s of lock_timeout; without it, the 5 s after which the server ends
                          // the idle transaction holding the lock
  // The statement cannot lift the read-only mode for itself: a snapshot was taken before it.
  auto lift = iarelay({"sql", "SET TRANSACTION READ WRITE"});
  EXPECT_EQ(lift.exit_code, 1) << lift.out;
  EXPECT_NE(lift.err.find("before any query"), std::string::npos) << lift.err;
  auto empty = iarelay({"sql", " "});
  EXPECT_EQ(empty.exit_code, 2) << empty.err;
}

// The role docs/high-availability.md tells operators to make for `iarelay sql`, made with the
// SQL as the document gives it (for the database "journal"): it reads, and writes nothing,
// not even the table lock a read-only transaction allows.
TEST_F(PgCli, ASelectOnlyRoleMadeAsDocumentedOnlyReads) {
  add_sample();
  const std::string doc = read_file(std::string(IARELAY_SOURCE_DIR) + "/docs/high-availability.md");
  const std::size_t begin = doc.find("CREATE ROLE iarelay_reader");
  ASSERT_NE(begin, std::string::npos);
  std::string sql = doc.substr(begin, doc.find("```", begin) - begin);
  for (std::size_t at; (at = sql.find("DATABASE iarelay ")) != std::string::npos;)
    sql.replace(at, 17, "DATABASE journal ");
  ASSERT_EQ(psql(sql), "") << sql;
  // Made after the grant: the default privileges cover it.
  ASSERT_EQ(psql("CREATE TABLE later_table (x int)"), "");
  const std::string reader = "postgresql://iarelay_reader:" + std::string(kPassword) +
                             "@127.0.0.1:" + std::to_string(cluster_.port()) + "/journal";
  auto select = iarelay({"sql", "SELECT count(*) AS n FROM webhooks", "--format", "csv"}, reader);
  EXPECT_EQ(select.exit_code, 0) << select.err;
  EXPECT_EQ(select.out, "n\r\n4\r\n");
  EXPECT_EQ(iarelay({"sql", "SELECT * FROM later_table"}, reader).exit_code, 0);
  auto status = iarelay({"status"}, reader);
  EXPECT_EQ(status.exit_code, 0) << status.err;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"list"}, {"show", "f1"}, {"hold", "q1", "--dry-run"}}) {
    auto r = iarelay(args, reader);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
  }
  auto hold = iarelay({"hold", "q1"}, reader);
  EXPECT_EQ(hold.exit_code, 1);
  EXPECT_NE(hold.err.find("permission denied"), std::string::npos) << hold.err;
  auto lock = iarelay({"sql", "LOCK TABLE webhooks IN ACCESS EXCLUSIVE MODE"}, reader);
  EXPECT_EQ(lock.exit_code, 1);
  EXPECT_NE(lock.err.find("refused: postgresql: ERROR: permission denied"), std::string::npos)
      << lock.err;
  auto pause = iarelay({"agent", "pause", "a1"}, reader);
  EXPECT_EQ(pause.exit_code, 1);
  EXPECT_NE(pause.err.find("permission denied"), std::string::npos) << pause.err;
  EXPECT_EQ(psql("SELECT count(*) FROM agents"), "0");
}

TEST_F(PgCli, PauseWritesTheAgentStateAndAnAuditRowAndResumeEndsIt) {
  add_sample();
  auto p = iarelay({"agent", "pause", "a1", "--reason", "maintenance"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(p.out, "paused agent a1 (maintenance)\n");
  EXPECT_EQ(psql("SELECT state, reason, paused_until IS NULL FROM agents WHERE id = 'a1'"),
            "paused|maintenance|t");
  EXPECT_EQ(psql("SELECT action, filter, affected, detail FROM audit ORDER BY id"),
            "pause|agent pause a1 --reason maintenance|1|agent=a1");
  auto s = iarelay({"status", "--format", "json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const Json status = Json::parse(s.out);
  int paused = 0;
  for (const auto& a : status["agents"]) paused += a["id"] == "a1" && a["state"] == "paused";
  EXPECT_EQ(paused, 1) << s.out;

  auto r = iarelay({"agent", "resume", "a1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "resumed agent a1\n");
  EXPECT_EQ(psql("SELECT state FROM agents WHERE id = 'a1'"), "up");
  EXPECT_EQ(psql("SELECT action, affected, detail FROM audit ORDER BY id DESC LIMIT 1"),
            "resume|1|agent=a1");
  auto again = iarelay({"agent", "resume", "a1"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("is not paused"), std::string::npos) << again.out;
  EXPECT_EQ(psql("SELECT count(*) FROM audit"), "2");  // nothing to do: no audit row

  auto unknown = iarelay({"agent", "pause", "nobody"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown agent 'nobody'"), std::string::npos) << unknown.err;
}

TEST_F(PgCli, ResendMovesAFailedWebhookBackToQueuedWithAnAuditRow) {
  add_sample();
  auto dry = iarelay({"resend", "--state", "failed,discarded", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_EQ(dry.out, "would resend 2 webhooks (dry run: nothing changed)\n");
  EXPECT_EQ(psql("SELECT state FROM webhooks WHERE id = 'f1'"), "failed");

  auto r = iarelay({"resend", "f1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "resent 1 webhook\n");
  EXPECT_EQ(psql("SELECT state, attempts, next_attempt_at IS NULL, assigned_agent FROM webhooks "
                 "WHERE id = 'f1'"),
            "queued|0|t|a1");
  EXPECT_EQ(psql("SELECT action, filter, affected, detail FROM audit"),
            "resend|resend f1|1|ids=f1");
  EXPECT_EQ(psql("SELECT w.webhook_id FROM audit_webhooks w JOIN audit a ON a.id = w.audit_id "
                 "WHERE a.action = 'resend'"),
            "f1");
  // Queued already: refused, nothing changes.
  auto twice = iarelay({"resend", "f1"});
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find("f1 is queued"), std::string::npos) << twice.err;

  // By filter, to another agent.
  auto to = iarelay({"resend", "--state", "discarded", "--to-agent", "a2"});
  ASSERT_EQ(to.exit_code, 0) << to.err;
  EXPECT_EQ(to.out, "resent 1 webhook to a2\n");
  EXPECT_EQ(psql("SELECT state, assigned_agent FROM webhooks WHERE id = 'x1'"), "queued|a2");
  EXPECT_EQ(psql("SELECT affected, detail FROM audit ORDER BY id DESC LIMIT 1"),
            "1|states=discarded to_agent=a2");
  // A replay of delivered webhooks by filter is listed, not made, without --force.
  auto replay = iarelay({"resend", "--state", "delivered"});
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_NE(replay.out.find("d1"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("add --force"), std::string::npos) << replay.out;
  EXPECT_EQ(psql("SELECT state FROM webhooks WHERE id = 'd1'"), "delivered");
}

// --- list and show -------------------------------------------------------------------------------

TEST_F(PgCli, ListPrintsWhatItPrintsOnSqliteInEveryFormatAndFilter) {
  add("q1", WebhookState::kQueued, "a1", 30 * kMinute);
  add("f1", WebhookState::kFailed, "a1", 20 * kMinute, 25);
  add("d1", WebhookState::kDelivered, "a2", 10 * kMinute);
  add("x1", WebhookState::kDiscarded, std::nullopt, 5 * kMinute);
  add_webhook("r1", WebhookState::kQueued, std::nullopt, 3 * kMinute, "E-q1", "remedy", "response");
  add_webhook("i1", WebhookState::kInflight, "a2", 2 * kMinute, "E-i1", "svc", "deliveryStatus");
  // A last_error with a comma and a quote (CSV quoting), and a next attempt.
  add_webhook("b1", WebhookState::kQueued, "a1", 90 * kMinute, "E-b1", "svc", "status", 3,
              now_millis() + kMinute);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"list"},
           {"list", "--format", "json"},
           {"list", "--format", "csv"},
           {"list", "--state", "failed,discarded"},
           {"list", "--state", "queued", "--state", "inflight", "--format", "json"},
           {"list", "--agent", "a1", "--format", "csv"},
           {"list", "--service", "remedy"},
           {"list", "--type", "deliveryStatus", "--format", "json"},
           {"list", "--event", "E-q1"},
           {"list", "--since", "-15m", "--format", "json"},
           {"list", "--since", "-25m", "--until", "-4m"},
           {"list", "--limit", "2", "--format", "json"},
           {"list", "--state", "held"},   // none: "no webhooks match" on stderr
           {"list", "--state", "bogus"},  // a usage error, as on SQLite
           {"list", "--limit", "-3"}}) {
    CommandResult r = same_on_both(args);
    if (args.size() == 1) {
      EXPECT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(lines_of(r.out).size(), 8u) << r.out;  // header and 7 rows
    }
  }
  // The JSON keys, spelled out: every field but the payload.
  auto json = iarelay({"list", "--format", "json", "--state", "failed"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const Json rows = Json::parse(json.out);
  ASSERT_EQ(rows.size(), 1u);
  std::vector<std::string> keys;
  for (const auto& [key, value] : rows[0].items()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"agent", "assigned_agent", "attempts", "delivered_at",
                                            "event_id", "id", "last_error", "last_status",
                                            "next_attempt_at", "received_at", "seq", "service",
                                            "source", "source_id", "state", "type"}));
  EXPECT_EQ(rows[0]["attempts"], 25);
  EXPECT_EQ(rows[0]["last_status"], 503);
}

// More rows than one page of the PostgreSQL reads (500): every one is listed, newest first, and
// the table stops at 50 with the note on stderr, as on SQLite.
TEST_F(PgCli, ListPagesThroughALargeJournalAsSqliteListsIt) {
  std::vector<NewWebhook> batch;
  const Millis now = now_millis();
  for (int i = 0; i < 1'203; ++i) {
    NewWebhook w;
    w.id = "bulk" + std::to_string(10'000 + i);
    w.received_at = now - 2 * kMinute + i;
    w.service = "svc";
    w.type = "status";
    w.event_id = "E-" + std::to_string(i % 7);
    w.state = i % 3 == 0 ? WebhookState::kDelivered : WebhookState::kQueued;
    w.assigned_agent = "a1";
    w.payload = "{}";
    batch.push_back(std::move(w));
  }
  both([&](JournalTx& tx) { tx.insert_webhooks(batch); });
  CommandResult table = same_on_both({"list"});
  EXPECT_EQ(lines_of(table.out).size(), 51u);
  EXPECT_NE(table.err.find("--limit N or --limit 0"), std::string::npos) << table.err;
  CommandResult all = same_on_both({"list", "--limit", "0", "--format", "csv"});
  EXPECT_EQ(lines_of(all.out).size(), 1'204u);
  same_on_both({"list", "--limit", "777", "--state", "queued", "--format", "csv"});
  same_on_both({"list", "--limit", "501", "--event", "E-3", "--format", "json"});
}

TEST_F(PgCli, ShowPrintsFieldsAttemptsAndWhoResentItAsOnSqlite) {
  const Millis now = now_millis();
  add("f1", WebhookState::kFailed, "a1", 20 * kMinute, 25);
  add_attempt("f1", 24, "a1", now - 19 * kMinute, 503, "retry");
  add_attempt("f1", 25, "a1", now - 18 * kMinute, 503, "failed");
  same_on_both({"show", "f1"});
  same_on_both({"show", "f1", "--format", "json"});
  // Resent on both by the tool, then delivered: a second series of attempts, marked with who
  // resent it and when (the audit row's time is each journal's own).
  ASSERT_EQ(iarelay({"resend", "f1"}).exit_code, 0);
  ASSERT_EQ(on_sqlite({"resend", "f1"}).exit_code, 0);
  add_attempt("f1", 1, "a1", now + kMinute, 204, "delivered");
  auto pg = iarelay({"show", "f1", "--format", "json"});
  auto lite = on_sqlite({"show", "f1", "--format", "json"});
  ASSERT_EQ(pg.exit_code, 0) << pg.err;
  ASSERT_EQ(lite.exit_code, 0) << lite.err;
  Json pg_doc = Json::parse(pg.out);
  Json lite_doc = Json::parse(lite.out);
  ASSERT_EQ(pg_doc["operator_actions"].size(), 1u) << pg.out;
  EXPECT_EQ(pg_doc["operator_actions"][0]["action"], "resend");
  EXPECT_EQ(pg_doc["operator_actions"][0]["command"], "resend f1");
  EXPECT_EQ(pg_doc["operator_actions"][0]["starts_series"], 2);
  ASSERT_EQ(pg_doc["delivery_attempts"].size(), 3u);
  EXPECT_EQ(pg_doc["delivery_attempts"][2]["series"], 2);
  EXPECT_EQ(pg_doc["delivery_attempts"][2]["http_status"], 204);
  const std::string pg_at = pg_doc["operator_actions"][0]["at"];
  const std::string lite_at = lite_doc["operator_actions"][0]["at"];
  pg_doc["operator_actions"][0]["at"] = lite_at;
  EXPECT_EQ(pg_doc, lite_doc);
  auto pg_table = iarelay({"show", "f1"});
  auto lite_table = on_sqlite({"show", "f1"});
  ASSERT_EQ(pg_table.exit_code, 0) << pg_table.err;
  for (std::size_t at; (at = pg_table.out.find(pg_at)) != std::string::npos;)
    pg_table.out.replace(at, pg_at.size(), lite_at);
  EXPECT_EQ(pg_table.out, lite_table.out);
  EXPECT_NE(pg_table.out.find("series 2: resent at " + lite_at), std::string::npos) << pg_table.out;

  // Why a queued webhook waits: behind an earlier webhook of its alert, its agent down.
  add_webhook("e1", WebhookState::kQueued, "a1", 9 * kMinute, "E-shared");
  add_webhook("e2", WebhookState::kQueued, "a1", 8 * kMinute, "E-shared");
  add_webhook("h1", WebhookState::kHeld, "a2", 7 * kMinute, "E-held");
  add_webhook("h2", WebhookState::kQueued, "a1", 6 * kMinute, "E-held");
  same_on_both({"show", "e2", "--format", "json"});
  same_on_both({"show", "h2"});
  // With a configuration whose agent a1 delivers in one sequence (fifo).
  const std::string conf = dir_.file("fifo.conf");
  write_file(conf,
             "[agent.east]\nid = a1\ncallback = http://127.0.0.1:9/cb\nservices = "
             "svc\nordering = fifo\n");
  CommandResult fifo = same_on_both({"--config", conf, "show", "h2", "--format", "json"});
  EXPECT_NE(fifo.out.find("behind webhook e2"), std::string::npos) << fifo.out;
  EXPECT_NE(fifo.out.find("ordering = fifo"), std::string::npos) << fifo.out;
  CommandResult shown = iarelay({"show", "e2", "--format", "json"});
  EXPECT_NE(shown.out.find("behind webhook e1"), std::string::npos) << shown.out;
  // By seq and by prefix; unknown and ambiguous names, as on SQLite.
  CommandResult by_seq =
      same_on_both({"show", psql("SELECT seq FROM webhooks WHERE id = 'e2'"), "--format", "json"});
  EXPECT_EQ(Json::parse(by_seq.out)["id"], "e2");
  same_on_both({"show", "h"});
  CommandResult unknown = same_on_both({"show", "nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no webhook has the id, id prefix or seq 'nope'"), std::string::npos)
      << unknown.err;
}

// --- retry, hold, release, delete ----------------------------------------------------------------

TEST_F(PgCli, HoldReleaseAndRetryChangeWhatTheyDoOnSqliteWithTheSameAuditRows) {
  add("q1", WebhookState::kQueued, "a1", 30 * kMinute);
  add_webhook("b1", WebhookState::kQueued, "a1", 25 * kMinute, "E-b1", "svc", "status", 3,
              now_millis() + kHour);
  add_webhook("b2", WebhookState::kQueued, "a2", 24 * kMinute, "E-b2", "svc", "status", 2,
              now_millis() + kHour);
  add("f1", WebhookState::kFailed, "a1", 20 * kMinute, 25);
  add("i1", WebhookState::kInflight, "a1", 15 * kMinute);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"retry", "b1", "--dry-run"},
           {"retry", "b1"},
           {"retry", "q1", "i1", "f1"},  // refused: none of them waits; nothing changes
           {"retry", "--all", "--dry-run"},
           {"retry", "--agent", "a2"},
           {"hold", "q1", "--dry-run"},
           {"hold", "q1"},
           {"hold", "q1"},  // held already
           {"hold", "i1"},  // a call is under way
           {"release", "f1"},
           {"release", "--all"},
           {"hold", "--agent", "a1"},
           {"hold", "nope"},
           {"release", "q1", "b1"},
           {"hold", "--state", "failed"}}) {
    same_on_both(args);
  }
  expect_same_journals();
  EXPECT_EQ(psql("SELECT action, filter, affected, detail FROM audit ORDER BY id"),
            "retry|retry b1|1|ids=b1\nretry|retry --agent a2|1|agent=a2\nhold|hold q1|1|ids=q1\n"
            "release|release --all|1|\nhold|hold --agent a1|2|agent=a1\nrelease|release q1 "
            "b1|2|ids=q1,b1");
  EXPECT_EQ(psql("SELECT state, next_attempt_at IS NULL FROM webhooks WHERE id IN ('q1', 'b1', "
                 "'b2') ORDER BY seq"),
            "queued|t\nqueued|t\nqueued|t");
  // Every row changed is linked to its audit row (show's "changed by hand").
  EXPECT_EQ(psql("SELECT count(*) FROM audit_webhooks WHERE webhook_id = 'q1'"), "4");
  auto shown = iarelay({"show", "q1", "--format", "json"});
  EXPECT_EQ(Json::parse(shown.out)["operator_actions"].size(), 4u) << shown.out;
}

TEST_F(PgCli, DeleteTakesAttemptsAlongAndRefusesWhatSqliteRefuses) {
  const Millis now = now_millis();
  add("q1", WebhookState::kQueued, "a1", 30 * kMinute);
  add("f1", WebhookState::kFailed, "a1", 20 * kMinute, 25);
  add_attempt("f1", 25, "a1", now - 19 * kMinute, 503, "failed");
  add("f2", WebhookState::kFailed, "a2", 19 * kMinute, 25);
  add_attempt("f2", 25, "a2", now - 18 * kMinute, 503, "failed");
  add("i1", WebhookState::kInflight, "a1", 15 * kMinute);
  add("s1", WebhookState::kStored, std::nullopt, 12 * kMinute);
  add("s2", WebhookState::kStored, std::nullopt, 11 * kMinute);
  ASSERT_EQ(iarelay({"resend", "f2"}).exit_code, 0);  // an audit link that goes with f2
  ASSERT_EQ(on_sqlite({"resend", "f2"}).exit_code, 0);
  both([&](JournalTx& tx) {
    TransitionFields f;
    tx.transition("f2", WebhookState::kQueued, WebhookState::kFailed, f);
  });
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"delete", "q1"},             // lists, deletes nothing without --force
           {"delete", "i1", "--force"},  // a call is under way
           {"delete", "s1", "--force"},  // stored: no feed consumer acknowledged it
           {"delete", "--state", "stored", "--force"},
           {"delete", "--state", "failed", "--force", "--dry-run"},
           {"delete", "nope", "--force"},
           {"delete", "q1", "--force"},
           {"delete", "--state", "failed", "--agent", "a2", "--force"},
           {"delete", "--agent", "a1"},  // by filter without --state: a usage error
           {"delete", "f1", "--force"}}) {
    same_on_both(args);
  }
  expect_same_journals();
  EXPECT_EQ(psql("SELECT id FROM webhooks ORDER BY seq"), "i1\ns1\ns2");
  EXPECT_EQ(psql("SELECT count(*) FROM attempts"), "0");
  // The audit keeps the ids a delete took; f2's link to its resend went with it.
  EXPECT_EQ(psql("SELECT a.action, a.affected, l.webhook_id FROM audit a JOIN audit_webhooks l ON "
                 "l.audit_id = a.id WHERE a.action = 'delete' ORDER BY a.id"),
            "delete|1|q1\ndelete|1|f2\ndelete|1|f1");
  EXPECT_EQ(psql("SELECT count(*) FROM audit_webhooks l JOIN audit a ON a.id = l.audit_id WHERE "
                 "a.action = 'resend'"),
            "0");
  // Once a consumer has acknowledged s1 (not s2), s1 goes and s2 is refused.
  both([&](JournalTx& tx) {
    tx.ack_consumer("inner-1", std::stoll(psql("SELECT seq FROM webhooks WHERE id = 's1'")));
  });
  CommandResult lacking = same_on_both({"delete", "s2", "--force"});
  EXPECT_EQ(lacking.exit_code, 1);
  EXPECT_NE(lacking.err.find("consumer 'inner-1' has acknowledged up to seq"), std::string::npos)
      << lacking.err;
  same_on_both({"delete", "--state", "stored", "--force"});
  same_on_both({"delete", "s1", "--force"});
  same_on_both({"delete", "s2", "--force", "--force-unacknowledged"});
  expect_same_journals();
  EXPECT_EQ(psql("SELECT id FROM webhooks"), "i1");
}

// --- purge ---------------------------------------------------------------------------------------

TEST_F(PgCli, PurgeDeletesOldFinishedWebhooksWithTheirAttemptsAsOnSqlite) {
  const Millis now = now_millis();
  add("d1", WebhookState::kDelivered, "a1", 3 * kHour);
  add_attempt("d1", 1, "a1", now - 3 * kHour, 204, "delivered");
  add("d2", WebhookState::kDelivered, "a1", 2 * kHour);
  add_attempt("d2", 1, "a1", now - 2 * kHour, 204, "delivered");
  add("d3", WebhookState::kDelivered, "a1", 10 * kMinute);
  add("f1", WebhookState::kFailed, "a1", 2 * kHour, 25);
  add("q1", WebhookState::kQueued, "a1", 5 * kHour);
  add("s1", WebhookState::kStored, std::nullopt, 4 * kHour);
  // A replay of d2 and its delivery again: an audit link that goes with it.
  ASSERT_EQ(iarelay({"resend", "d2"}).exit_code, 0);
  ASSERT_EQ(on_sqlite({"resend", "d2"}).exit_code, 0);
  both([&](JournalTx& tx) {
    tx.transition("d2", WebhookState::kQueued, WebhookState::kDelivered, {});
  });
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"purge", "--before", "-1h", "--dry-run"},
           {"purge", "--before", "-1h", "--state", "stored", "--dry-run"},
           {"purge", "--before", "-1h", "--state", "stored"},  // no consumer has it: refused
           {"purge", "--before", "-1h", "--state", "queued"},  // never: a usage error
           {"purge", "--before", "yesterday"},
           {"purge", "--before", "-1h"},
           {"purge", "--before", "-1h", "--state", "failed,delivered"},
           {"purge", "--before", "-1h", "--state", "stored", "--force"}}) {
    CommandResult pg = iarelay(args);
    CommandResult lite = on_sqlite(args);
    // The times printed are each run's own "-1h": compare without them.
    auto timeless = [](std::string text) {
      for (std::size_t at; (at = text.find("before 20")) != std::string::npos;)
        text.replace(at, 31, "before T");
      return text;
    };
    EXPECT_EQ(pg.exit_code, lite.exit_code) << args.back() << pg.err << lite.err;
    EXPECT_EQ(timeless(pg.out), timeless(lite.out)) << args.back();
    EXPECT_EQ(pg.err, lite.err) << args.back();
  }
  EXPECT_EQ(psql("SELECT id FROM webhooks ORDER BY seq"), "d3\nq1");
  EXPECT_EQ(psql("SELECT count(*) FROM attempts"), "0");
  EXPECT_EQ(psql("SELECT count(*) FROM audit_webhooks"), "0");
  expect_same_journals(false);
  const std::string audit = psql(
      "SELECT action, affected, filter FROM audit WHERE action = "
      "'purge' ORDER BY id");
  EXPECT_EQ(audit,
            "purge|2|purge --before -1h\npurge|1|purge --before -1h --state failed,delivered\n"
            "purge|1|purge --before -1h --state stored --force")
      << audit;
}

// pg_purge_webhooks is what the relays' retention calls: purge_webhooks's contract, in batches.
TEST_F(PgCli, PgPurgeWebhooksKeepsPurgeWebhooksContractBatchByBatch) {
  for (int i = 0; i < 7; ++i) add("old" + std::to_string(i), WebhookState::kDelivered, "a1", kHour);
  add("new", WebhookState::kDelivered, "a1", kMinute);
  add("s1", WebhookState::kStored, std::nullopt, kHour);
  add("s2", WebhookState::kStored, std::nullopt, kHour);
  add("q1", WebhookState::kQueued, "a1", kHour);
  both([&](JournalTx& tx) {
    tx.ack_consumer("inner-1", std::stoll(psql("SELECT seq FROM webhooks WHERE id = 's1'")));
  });
  const Millis before = now_millis() - 30 * kMinute;
  MaintenanceOptions options;
  options.batch_size = 3;
  // Refused before anything is read.
  for (auto state : {WebhookState::kQueued, WebhookState::kInflight, WebhookState::kHeld}) {
    auto refused = pg_purge_webhooks(*db_, before, {WebhookState::kDelivered, state}, options);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.status().kind(), StatusKind::kInvalidArgument);
    EXPECT_EQ(refused.status().message(),
              purge_webhooks(*sqlite_, before, {state}, options).status().message());
  }
  options.dry_run = true;
  auto would = pg_purge_webhooks(*db_, before, {}, options);
  ASSERT_TRUE(would) << would.status().message();
  EXPECT_EQ(*would, 7);
  auto would_stored = pg_purge_webhooks(*db_, before, {WebhookState::kStored}, options);
  ASSERT_TRUE(would_stored);
  EXPECT_EQ(*would_stored, 1);  // s1 only: s2 is not acknowledged
  options.dry_run = false;
  std::vector<std::int64_t> progress;
  options.progress = [&](std::int64_t done) { progress.push_back(done); };
  options.audit = {"iarelayd", "retain_delivered", "before=T"};
  auto done =
      pg_purge_webhooks(*db_, before, {WebhookState::kDelivered, WebhookState::kStored}, options);
  ASSERT_TRUE(done) << done.status().message();
  EXPECT_EQ(*done, 8);
  EXPECT_EQ(progress, (std::vector<std::int64_t>{1, 4, 7, 8}));  // stored first, as on SQLite
  // One audit row, kept current batch by batch.
  EXPECT_EQ(psql("SELECT actor, action, filter, affected, detail FROM audit"),
            "iarelayd|purge|retain_delivered|8|before=T");
  options.progress = {};
  auto sqlite_done =
      purge_webhooks(*sqlite_, before, {WebhookState::kDelivered, WebhookState::kStored}, options);
  ASSERT_TRUE(sqlite_done);
  EXPECT_EQ(*sqlite_done, *done);
  expect_same_journals();
  // Without an actor no audit row; nothing left to purge.
  options.audit = {};
  auto again = pg_purge_webhooks(*db_, before, {}, options);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0);
  EXPECT_EQ(psql("SELECT count(*) FROM audit"), "1");
  // unacknowledged_stored's figures.
  std::int64_t pg_total = -1, lite_total = -2;
  auto pg_lacking = pg_unacknowledged_stored(*db_, before, &pg_total);
  auto lite_lacking = unacknowledged_stored(*sqlite_, before, &lite_total);
  ASSERT_TRUE(pg_lacking);
  ASSERT_TRUE(lite_lacking);
  EXPECT_EQ(pg_total, 1);
  EXPECT_EQ(pg_total, lite_total);
  ASSERT_EQ(pg_lacking->size(), 1u);
  EXPECT_EQ((*pg_lacking)[0].consumer, "inner-1");
  EXPECT_EQ((*pg_lacking)[0].rows, 1);
  EXPECT_EQ((*pg_lacking)[0].acked_seq, (*lite_lacking)[0].acked_seq);
}

// --- move ----------------------------------------------------------------------------------------

TEST_F(PgCli, MoveTakesAQueueToAnotherAgentAsOnSqliteAndWaitsForAnInflightOne) {
  add_webhook("q1", WebhookState::kQueued, "a1", 30 * kMinute, "E-1");
  add_webhook("i1", WebhookState::kInflight, "a1", 29 * kMinute, "E-2");
  add_webhook("q2", WebhookState::kQueued, "a1", 28 * kMinute, "E-1");
  add_webhook("q3", WebhookState::kQueued, "a1", 27 * kMinute, "E-2", "svc", "status", 4,
              now_millis() + kHour);
  add_webhook("o1", WebhookState::kQueued, "a3", 26 * kMinute, "E-3");
  add_webhook("h1", WebhookState::kQueued, std::nullopt, 25 * kMinute, "E-4");
  add_webhook("s1", WebhookState::kStored, std::nullopt, 24 * kMinute, "E-5");
  add_webhook("s2", WebhookState::kStored, std::nullopt, 23 * kMinute, "E-6");
  add_webhook("d1", WebhookState::kDelivered, "a2", 22 * kMinute, "E-7");
  both([&](JournalTx& tx) {
    tx.ack_consumer("inner-1", std::stoll(psql("SELECT seq FROM webhooks WHERE id = 's1'")));
  });
  // i1 of alert E-2 is inflight on a1: q3 would overtake it on a2.
  CommandResult refused = same_on_both({"move", "--from", "a1", "--to", "a2"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("1 of these webhooks belong to alerts with a webhook inflight on a1"),
            std::string::npos)
      << refused.err;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"move", "--from", "a1", "--to", "a2", "--event", "E-1", "--dry-run"},
           {"move", "--from", "a1", "--to", "a2", "--event", "E-1"},
           {"move", "--from", "a1", "--to", "a1"},
           {"move", "--from", "a3", "--to", "nobody"},
           {"move", "--from", "a3"},
           {"move", "--held", "--to", "a2"},
           {"move", "--stored", "--to", "a2", "--dry-run"},
           {"move", "--stored", "--to", "a2"},  // s2: s1 went downstream already
           {"move", "--stored", "--to", "a3", "--force"}}) {
    same_on_both(args);
  }
  expect_same_journals();
  EXPECT_EQ(psql("SELECT id, assigned_agent, state, attempts FROM webhooks WHERE assigned_agent "
                 "= 'a2' ORDER BY seq"),
            "q1|a2|queued|0\nq2|a2|queued|0\nh1|a2|queued|0\ns2|a2|queued|0\nd1|a2|delivered|0");
  EXPECT_EQ(psql("SELECT action, filter, affected, detail FROM audit ORDER BY id"),
            "move|move --from a1 --to a2 --event E-1|2|from=a1 to=a2 event=E-1\n"
            "move|move --held --to a2|1|from=held to=a2\nmove|move --stored --to a2|1|from=stored "
            "to=a2\nmove|move --stored --to a3 --force|1|from=stored to=a3 force");
  // Once i1's outcome is in, the rest of a1's queue moves.
  both([&](JournalTx& tx) {
    tx.transition("i1", WebhookState::kInflight, WebhookState::kDelivered, {});
  });
  CommandResult rest = same_on_both({"move", "--from", "a1", "--to", "a2"});
  EXPECT_EQ(rest.out, "moved 1 webhook to a2\n");
  EXPECT_EQ(psql("SELECT assigned_agent, next_attempt_at IS NULL, attempts FROM webhooks WHERE "
                 "id = 'q3'"),
            "a2|t|4");
  expect_same_journals();
}

// --- migrate and check ---------------------------------------------------------------------------

// `migrate` on a new database applies every migration (as a relay does at start), then none;
// `check` says the journal is fine, and names what is wrong when it is not. Each names the
// journal without its password, and makes nothing of the connection string as a path.
TEST_F(PgCli, MigrateAppliesWhatTheDatabaseLacksAndCheckSaysWhatIsWrong) {
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_.path());
  ASSERT_EQ(cluster_.create_database("fresh"), "");
  std::string fresh = cluster_.uri("fresh");
  fresh.insert(fresh.find('@'), std::string(":") + kPassword);
  const std::string n = std::to_string(pg_migrations().size());
  auto first = iarelay({"migrate"}, fresh);
  EXPECT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(std::count(first.out.begin(), first.out.end(), '\n'), pg_migrations().size() + 1)
      << first.out;
  EXPECT_NE(first.out.find("applied " + pg_migrations().front().name + "\n"), std::string::npos)
      << first.out;
  EXPECT_NE(first.out.find("/fresh is up to date (" + n + " migrations, " + n + " applied now)"),
            std::string::npos)
      << first.out;
  EXPECT_NE(first.out.find("iarelay:***@"), std::string::npos) << first.out;
  EXPECT_EQ(cluster_.psql("SELECT count(*) FROM schema_migrations", "fresh"), n);
  auto again = iarelay({"migrate"}, fresh);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("is up to date (" + n + " migrations, 0 applied now)"),
            std::string::npos)
      << again.out;

  add_sample();
  auto fine = iarelay({"check"});
  EXPECT_EQ(fine.exit_code, 0) << fine.err;
  EXPECT_NE(fine.out.find("/journal: ok (" + n +
                          " migrations applied, 4 webhooks, 1 agents leased by 1 live relays"),
            std::string::npos)
      << fine.out;
  // A migration the journal lacks: named, with what to do.
  ASSERT_EQ(cluster_.psql("DELETE FROM schema_migrations WHERE version = (SELECT max(version) "
                          "FROM schema_migrations)",
                          "fresh"),
            "");
  auto behind = iarelay({"check"}, fresh);
  EXPECT_EQ(behind.exit_code, 1) << behind.out;
  EXPECT_NE(
      behind.err.find("needs migration " + pg_migrations().back().name + " (run iarelay migrate"),
      std::string::npos)
      << behind.err;
  // A migration whose text changed since it was applied: refused by both.
  ASSERT_EQ(psql("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1"), "");
  auto changed = iarelay({"check"});
  EXPECT_EQ(changed.exit_code, 1) << changed.out;
  EXPECT_NE(changed.err.find("checksum"), std::string::npos) << changed.err;
  auto refused = iarelay({"migrate"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.err.find("checksum"), std::string::npos) << refused.err;
  // No server there.
  std::string gone = uri_;
  gone.replace(gone.find(std::to_string(cluster_.port())), std::to_string(cluster_.port()).size(),
               "1");
  auto unreachable = iarelay({"check"}, gone);
  EXPECT_EQ(unreachable.exit_code, 1) << unreachable.out;
  EXPECT_NE(unreachable.err.find("journal postgresql://iarelay:***@127.0.0.1:1/journal"),
            std::string::npos)
      << unreachable.err;
  for (const auto* r : {&behind, &changed, &refused, &unreachable})
    EXPECT_EQ(std::count(r->err.begin(), r->err.end(), '\n'), 1) << r->err;
  EXPECT_EQ(iarelay({"migrate", "--help"}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/postgresql:"));
  std::filesystem::current_path(cwd);
}

TEST_F(PgCli, APasswordInTheConnectionStringIsNeverPrinted) {
  add_sample();
  // A configuration whose journal is the PostgreSQL one, with a handle for a1.
  const std::string conf = dir_.file("iarelay.conf");
  write_file(conf, "journal = " + uri_ +
                       "\n[agent.east]\nid = a1\ncallback = http://127.0.0.1:9/cb\nservices = "
                       "svc\n");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--config", conf, "status"},
           {"--config", conf, "status", "--format", "json"},
           {"--config", conf, "agent", "list", "--format", "json"},
           {"--config", conf, "agent", "pause", "east"},
           {"--config", conf, "list"},
           {"--config", conf, "sql", "SELECT current_user, 1/0"},
           {"--config", conf, "sql", "SELEC"},
           {"--config", conf, "resend", "nothing-like-it"}}) {
    std::vector<std::string> argv = {bin("iarelay")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    EXPECT_EQ(r.out.find(kPassword), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find(kPassword), std::string::npos) << r.err;
    EXPECT_FALSE(r.out.empty() && r.err.empty()) << args.back();
  }
  EXPECT_EQ(psql("SELECT state FROM agents WHERE id = 'a1'"), "paused");  // the handle resolved
  // A server that does not answer, and a database that does not exist: the error names them.
  std::string down = uri_;
  down.replace(down.rfind(':') + 1, std::to_string(cluster_.port()).size(), "1");
  auto refused = iarelay({"status"}, down);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("iarelay status: journal postgresql://iarelay:***@"),
            std::string::npos)
      << refused.err;
  std::string other = uri_.substr(0, uri_.rfind('/')) + "/no_such_db";
  auto missing = iarelay({"agent", "pause", "a1"}, other);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no_such_db"), std::string::npos) << missing.err;
  // The password given as a parameter instead.
  std::string param = cluster_.uri("journal") + "?password=" + kPassword;
  auto p = iarelay({"status"}, param);
  EXPECT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.out.find("password=***"), std::string::npos) << p.out;
}

// A running relay on the journal applies what the tool writes: a pause stops its deliveries to
// the agent, resume lets the queue drain, and a resent webhook is delivered again.
TEST_F(PgCli, ARunningRelayAppliesPauseResumeAndResend) {
  const int sink_port = free_port();
  const std::string record = dir_.file("sink.jsonl");
  Process sink({bin("iarelay-sink"), "--listen=127.0.0.1:" + std::to_string(sink_port),
                "--record=" + record},
               dir_.file("sink.out"), dir_.file("sink.err"));
  ASSERT_TRUE(wait_for_port(sink_port));
  const int port = free_port();
  const std::string conf = dir_.file("relay.conf");
  write_file(conf, "journal = " + uri_ +
                       "\nlease = 2s\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                       "\n[agent.a1]\ncallback = http://127.0.0.1:" + std::to_string(sink_port) +
                       "/cb\nservices = svc\nformat = raw\nbackoff_initial = 100ms\n");
  Process relay({bin("iarelayd"), "--config", conf}, dir_.file("relay.out"),
                dir_.file("relay.err"));
  ASSERT_TRUE(wait_for_port(port, 15s)) << read_file(dir_.file("relay.err"));
  // The tool's status names the relay once it holds a1's lease.
  std::string last_status;
  ASSERT_TRUE(wait_until(
      [&] {
        auto s = iarelay({"status", "--format", "json"});
        last_status = s.out + s.err;
        if (s.exit_code != 0) return false;
        const Json doc = Json::parse(s.out);
        for (const auto& l : doc["leases"])
          if (l["agent"] == "a1" && l["live"] == true) return true;
        return false;
      },
      15s))
      << last_status << read_file(dir_.file("relay.err"));
  auto delivered = [&](const std::string& id) {
    std::ifstream in(record);
    int n = 0;
    for (std::string line; std::getline(in, line);)
      if (line.find("\"webhook_id\":\"" + id + "\"") != std::string::npos) ++n;
    return n;
  };

  ASSERT_EQ(iarelay({"agent", "pause", "a1"}).exit_code, 0);
  std::this_thread::sleep_for(1s);  // the dispatcher reads the agents table every 250 ms
  add("p1", WebhookState::kQueued, "a1", 0);
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(delivered("p1"), 0) << "delivered to a paused agent";
  EXPECT_EQ(psql("SELECT state FROM webhooks WHERE id = 'p1'"), "queued");
  ASSERT_EQ(iarelay({"agent", "resume", "a1"}).exit_code, 0);
  EXPECT_TRUE(wait_until([&] { return delivered("p1") == 1; }, 10s)) << "not delivered on resume";

  add("f9", WebhookState::kFailed, "a1", kMinute, 25);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(delivered("f9"), 0);
  ASSERT_EQ(iarelay({"resend", "f9"}).exit_code, 0);
  EXPECT_TRUE(wait_until([&] { return delivered("f9") == 1; }, 10s)) << "resent, not delivered";
  EXPECT_TRUE(wait_until(
      [&] { return psql("SELECT state FROM webhooks WHERE id = 'f9'") == "delivered"; }, 10s));
  relay.signal(SIGTERM);
  relay.wait();
}

}  // namespace
}  // namespace iarelay::testing
