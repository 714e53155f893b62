// `iarelay` commands that change the journal: resend (ids, filters, dry run, audit), purge
// (never queued or inflight), agent pause/resume, migrate and check; progress on long runs.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

struct AuditEntry {
  std::string actor, action, filter, detail;
  std::int64_t affected = -1;
};

class WriteTest : public CliTest {
 protected:
  std::vector<AuditEntry> audit() {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    SQLite::Statement q(db,
                        "SELECT actor, action, filter, affected, coalesce(detail,'') "
                        "FROM audit ORDER BY id");
    std::vector<AuditEntry> out;
    while (q.executeStep())
      out.push_back({q.getColumn(0).getString(), q.getColumn(1).getString(),
                     q.getColumn(2).getString(), q.getColumn(4).getString(),
                     q.getColumn(3).getInt64()});
    return out;
  }
  std::string host() {
    char h[256] = {};
    ::gethostname(h, sizeof h - 1);
    return h;
  }
};

TEST_F(WriteTest, ResendByIdsQueuesWithFreshBudgetAndAudits) {
  auto r = iarelay({"resend", "f1", "x1"}, {{"USER", "alice"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("resent 2 webhooks"), std::string::npos) << r.out;
  for (const char* id : {"f1", "x1"}) {
    EXPECT_EQ(field(id, "state"), "queued") << id;
    EXPECT_EQ(field(id, "attempts"), "0") << id;
    EXPECT_EQ(field(id, "next_attempt_at"), "NULL") << id;
  }
  EXPECT_EQ(field("f1", "assigned_agent"), kAgentA);  // a failed webhook keeps its agent
  EXPECT_EQ(field("x1", "assigned_agent"), "NULL");   // a discarded one waits for any agent
  EXPECT_EQ(field("f2", "state"), "failed");          // not named, not touched
  auto log = audit();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].actor, "alice@" + host());
  EXPECT_EQ(log[0].action, "resend");
  EXPECT_EQ(log[0].filter, "resend f1 x1");
  EXPECT_EQ(log[0].affected, 2);
}

TEST_F(WriteTest, ResendRefusesIdsNotFailedDiscardedOrDelivered) {
  close_journal();
  const std::string before = testing::read_file(journal_);
  auto r = iarelay({"resend", "f1", "q1", "d1", "i1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("q1 is queued"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("i1 is inflight"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("d1"), std::string::npos) << r.err;  // delivered: a replay
  auto ghost = iarelay({"resend", "f1", "ghost"});
  EXPECT_EQ(ghost.exit_code, 1);
  EXPECT_NE(ghost.err.find("'ghost'"), std::string::npos) << ghost.err;
  EXPECT_TRUE(testing::read_file(journal_) == before);
  EXPECT_EQ(field("f1", "state"), "failed");  // all or nothing
}

TEST_F(WriteTest, ResendByFilterWithToAgent) {
  auto r = iarelay(
      {"resend", "--state", "failed,discarded", "--service", "remedy", "--to-agent", kAgentA});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("resent 1 webhook"), std::string::npos) << r.out;
  EXPECT_EQ(field("f2", "state"), "queued");
  EXPECT_EQ(field("f2", "assigned_agent"), kAgentA);
  EXPECT_EQ(field("f1", "state"), "failed");
  EXPECT_EQ(field("x1", "state"), "discarded");

  auto s = iarelay({"resend", "--state", "failed", "--since", "-6h", "--until", "-4h"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(field("f1", "state"), "queued");
  auto log = audit();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1].affected, 1);
  // The audit keeps the relative times resolved.
  EXPECT_NE(log[1].detail.find("since=" + format_time(now_ - 6 * kHour).substr(0, 13)),
            std::string::npos)
      << log[1].detail;

  // A handle names the configured agent.
  std::string config = config_file();
  auto h = iarelay_raw({"--config", config, "resend", "x1", "--to-agent", "nnmi1"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(field("x1", "assigned_agent"), kAgentA);
}

TEST_F(WriteTest, ResendDryRunChangesNothing) {
  close_journal();
  const std::string before = testing::read_file(journal_);
  auto r = iarelay({"resend", "--state", "failed", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("would resend 2 webhooks"), std::string::npos) << r.out;
  auto ids = iarelay({"resend", "f1", "x1", "--dry-run"});
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_NE(ids.out.find("would resend 2"), std::string::npos) << ids.out;
  EXPECT_EQ(testing::read_file(journal_), before);
  EXPECT_EQ(field("f1", "state"), "failed");
  EXPECT_EQ(count("SELECT count(*) FROM audit"), 0);
}

TEST_F(WriteTest, ResendUsageErrors) {
  close_journal();
  const std::string before = testing::read_file(journal_);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"resend"},
           {"resend", "--state", "queued"},
           {"resend", "--state", "inflight,failed"},
           {"resend", "--state", "held"},
           {"resend", "--state", "nonsense"},
           {"resend", "f1", "--state", "failed"},
           {"resend", "--state", "failed", "--since", "last week"}}) {
    auto r = iarelay(args);
    EXPECT_EQ(r.exit_code, 2) << args.size() << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
  }
  auto unknown_agent = iarelay({"resend", "f1", "--to-agent", "nobody"});
  EXPECT_EQ(unknown_agent.exit_code, 1);
  EXPECT_NE(unknown_agent.err.find("nobody"), std::string::npos);
  EXPECT_EQ(testing::read_file(journal_), before);
}

TEST_F(WriteTest, PurgeDeletesOldRowsAndTheirAttemptsNeverQueuedOrInflight) {
  // Old rows in every state.
  add("old-q", WebhookState::kQueued, "hpnnmi", kAgentA, "status", "O", -40 * 24 * kHour);
  add("old-i", WebhookState::kInflight, "hpnnmi", kAgentA, "status", "O", -40 * 24 * kHour);
  add("old-d", WebhookState::kDelivered, "hpnnmi", kAgentA, "status", "O", -40 * 24 * kHour);
  add("old-f", WebhookState::kFailed, "hpnnmi", kAgentA, "status", "O", -40 * 24 * kHour);
  add("old-x", WebhookState::kDiscarded, "hpnnmi", std::nullopt, "status", "O", -40 * 24 * kHour);
  op([&](SQLite::Database& db) {
    record_attempt(
        db, {"old-d", 1, kAgentA, now_ - 40 * 24 * kHour, 5, 200, std::nullopt, "delivered"});
    record_attempt(db, {"old-q", 1, kAgentA, now_ - 40 * 24 * kHour, 5, 503, "x", "retry"});
  });

  close_journal();
  const std::string before = testing::read_file(journal_);
  for (const char* state : {"queued", "inflight", "queued,delivered"}) {
    auto r = iarelay({"purge", "--before", "-1d", "--state", state});
    EXPECT_EQ(r.exit_code, 2) << state;
    EXPECT_NE(r.err.find("never"), std::string::npos) << r.err;
  }
  EXPECT_EQ(iarelay({"purge", "--before", "soon"}).exit_code, 2);
  EXPECT_EQ(iarelay({"purge"}).exit_code, 2);
  EXPECT_EQ(testing::read_file(journal_), before);

  auto dry = iarelay({"purge", "--before", "-1d", "--dry-run"});
  EXPECT_NE(dry.out.find("would purge 2 webhooks"), std::string::npos) << dry.out;  // old-d, d1
  EXPECT_EQ(testing::read_file(journal_), before);

  auto r = iarelay({"purge", "--before", "-1d"}, {{"USER", "bob"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("purged 2 webhooks"), std::string::npos) << r.out;
  EXPECT_EQ(field("old-d", "state"), "<missing>");
  EXPECT_EQ(field("d1", "state"), "<missing>");
  EXPECT_EQ(field("d2", "state"), "delivered");  // younger than a day
  EXPECT_EQ(count("SELECT count(*) FROM attempts WHERE webhook_id IN ('old-d','d1')"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM attempts WHERE webhook_id='old-q'"), 1);
  auto log = audit();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].action, "purge");
  EXPECT_EQ(log[0].affected, 2);
  EXPECT_EQ(log[0].actor.rfind("bob@", 0), 0u);

  auto more = iarelay({"purge", "--before", "-1d", "--state", "failed", "--state", "discarded"});
  ASSERT_EQ(more.exit_code, 0) << more.err;
  EXPECT_NE(more.out.find("purged 2 webhooks"), std::string::npos) << more.out;
  EXPECT_EQ(field("old-f", "state"), "<missing>");
  EXPECT_EQ(field("old-x", "state"), "<missing>");
  // Everything anyone still waits for is there.
  EXPECT_EQ(field("old-q", "state"), "queued");
  EXPECT_EQ(field("old-i", "state"), "inflight");
  EXPECT_EQ(count("SELECT count(*) FROM webhooks WHERE state IN ('queued','inflight')"), 5);
}

TEST_F(WriteTest, PauseAndResumeWriteAgentRowsAndAudit) {
  auto p = iarelay({"agent", "pause", kAgentA, "--until", "+2h", "--reason", "maintenance"},
                   {{"USER", "carol"}});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    auto row = load_agent(db, kAgentA);
    ASSERT_TRUE(row);
    EXPECT_EQ(row->state, "paused");
    EXPECT_EQ(row->reason, std::optional<std::string>("maintenance"));
    ASSERT_TRUE(row->paused_until);
    EXPECT_NEAR(static_cast<double>(*row->paused_until), static_cast<double>(now_ + 2 * kHour),
                60'000.0);
  }
  Json doc = json_of(iarelay({"agent", "list", "--format", "json"}));
  bool seen = false;
  for (const auto& a : doc)
    if (a["id"] == kAgentA) {
      seen = true;
      EXPECT_EQ(a["state"], "paused");
      EXPECT_EQ(a["reason"], "maintenance");
    }
  EXPECT_TRUE(seen) << doc.dump();

  auto r = iarelay({"agent", "resume", kAgentA});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    auto row = load_agent(db, kAgentA);
    ASSERT_TRUE(row);
    EXPECT_EQ(row->state, "up");
    EXPECT_FALSE(row->paused_until);
  }
  auto log = audit();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].action, "pause");
  EXPECT_EQ(log[0].actor.rfind("carol@", 0), 0u);
  EXPECT_NE(log[0].filter.find("--reason maintenance"), std::string::npos) << log[0].filter;
  EXPECT_EQ(log[1].action, "resume");
  EXPECT_EQ(log[1].affected, 1);
}

TEST_F(WriteTest, PauseByHandleAndRefusals) {
  std::string config = config_file();
  auto p = iarelay_raw({"--config", config, "agent", "pause", "idle"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    auto row = load_agent(db, "idle");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->state, "paused");
    EXPECT_FALSE(row->paused_until);
  }
  auto csv = parse_csv(iarelay_raw({"--config", config, "agent", "list", "--format=csv"}).out);
  ASSERT_GE(csv.size(), 4u);  // header, nnmi1, idle, agent-b
  EXPECT_EQ(csv[1][0], kAgentA);
  EXPECT_EQ(csv[1][1], "nnmi1");
  EXPECT_EQ(csv[2][0], "idle");
  EXPECT_EQ(csv[2][2], "paused");

  close_journal();
  const std::string before = testing::read_file(journal_);
  auto unknown = iarelay({"agent", "pause", "ghost-agent"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("ghost-agent"), std::string::npos);
  auto past = iarelay({"agent", "pause", kAgentA, "--until", "-1h"});
  EXPECT_EQ(past.exit_code, 2);
  EXPECT_NE(past.err.find("past"), std::string::npos) << past.err;
  auto bad_time = iarelay({"agent", "pause", kAgentA, "--until", "tomorrowish"});
  EXPECT_EQ(bad_time.exit_code, 2);
  auto not_paused = iarelay({"agent", "resume", kAgentB});  // down, not paused: left alone
  EXPECT_EQ(not_paused.exit_code, 0);
  EXPECT_NE(not_paused.out.find("not paused"), std::string::npos);
  EXPECT_EQ(iarelay({"agent"}).exit_code, 2);
  EXPECT_EQ(testing::read_file(journal_), before);
}

TEST_F(WriteTest, MigrateCreatesJournalAndIsIdempotent) {
  std::string fresh = dir_.file("new/dir/journal.db");
  auto r = iarelay_raw({"--journal", fresh, "migrate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("applied 0001_"), std::string::npos) << r.out;
  struct stat st {};
  ASSERT_EQ(::stat(fresh.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = iarelay_raw({"--journal", fresh, "migrate"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out.find("applied 0001_"), std::string::npos) << again.out;
  EXPECT_EQ(iarelay_raw({"--journal", fresh, "check"}).exit_code, 0);
  // A fresh journal works with every read command.
  EXPECT_EQ(iarelay_raw({"--journal", fresh, "status"}).exit_code, 0);
  EXPECT_EQ(iarelay_raw({"--journal", fresh, "list"}).exit_code, 0);
}

TEST_F(WriteTest, CheckJournalAndConfig) {
  std::string config = config_file();
  auto ok = iarelay_raw({"--config", config, "check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("integrity ok"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("2 agents"), std::string::npos) << ok.out;

  std::string bad_secret = config_file("secret_file = " + dir_.file("missing.secret") + "\n");
  auto secret = iarelay_raw({"--config", bad_secret, "check"});
  EXPECT_EQ(secret.exit_code, 1);
  EXPECT_EQ(lines(secret.err), 1);
  EXPECT_NE(secret.err.find("missing.secret"), std::string::npos) << secret.err;

  std::string bad_key = dir_.file("bad.conf");
  testing::write_file(bad_key, "journal = " + journal_ + "\nsync = sometimes\n");
  auto key = iarelay_raw({"--config", bad_key, "check"});
  EXPECT_EQ(key.exit_code, 1);
  EXPECT_NE(key.err.find("bad.conf:2"), std::string::npos) << key.err;
}

TEST_F(WriteTest, WriteCommandsRefuseAMismatchedMigration) {
  close_journal();
  {
    SQLite::Database db(journal_, SQLite::OPEN_READWRITE);
    db.exec("UPDATE schema_migrations SET checksum='tampered'");
  }
  const std::string before = testing::read_file(journal_);
  for (const auto& args : std::vector<std::vector<std::string>>{{"resend", "f1"},
                                                                {"purge", "--before", "-1h"},
                                                                {"agent", "pause", kAgentA},
                                                                {"migrate"},
                                                                {"check"}}) {
    auto r = iarelay(args);
    EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find("checksum"), std::string::npos) << args[0] << ": " << r.err;
  }
  EXPECT_EQ(testing::read_file(journal_), before);
}

TEST_F(WriteTest, LongRunsReportProgressAndBatch) {
  constexpr int kRows = 12'500;
  op([&](SQLite::Database& db) {
    for (int i = 0; i < kRows; ++i) {
      NewWebhook w;
      w.id = "bulk-" + std::to_string(i);
      w.received_at = now_ - 10 * 24 * kHour + i;
      w.service = "hpnnmi";
      w.type = "status";
      w.state = WebhookState::kFailed;
      w.assigned_agent = kAgentA;
      w.payload = "{}";
      insert_webhook(db, w);
    }
  });
  auto r = iarelay({"resend", "--state", "failed", "--agent", kAgentA});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("resent " + std::to_string(kRows + 1)), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("10000 rows so far"), std::string::npos) << r.err;
  EXPECT_EQ(count("SELECT count(*) FROM webhooks WHERE state='failed'"), 1);  // f2 (agent B)
  EXPECT_EQ(count("SELECT count(*) FROM webhooks WHERE id LIKE 'bulk-%' AND state='queued' "
                  "AND attempts=0"),
            kRows);
  auto log = audit();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].affected, kRows + 1);

  // Back to delivered, then purge them all in batches.
  {
    SQLite::Database db(journal_, SQLite::OPEN_READWRITE);
    db.exec("UPDATE webhooks SET state='delivered' WHERE id LIKE 'bulk-%'");
  }
  auto p = iarelay({"purge", "--before", "-1d"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.out.find("purged " + std::to_string(kRows + 1)), std::string::npos) << p.out;
  EXPECT_NE(p.err.find("10000 rows so far"), std::string::npos) << p.err;
  EXPECT_EQ(count("SELECT count(*) FROM webhooks WHERE id LIKE 'bulk-%'"), 0);
}

}  // namespace
}  // namespace iarelay::clitest
