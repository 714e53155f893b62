// journal/maintenance.h called directly, as the daemon will: inside a Writer operation (the
// caller's transaction) and on a connection of its own in small batches.
#include "journal/maintenance.h"

#include "journal/journal.h"
#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

using MaintenanceTest = CliTest;

TEST_F(MaintenanceTest, ResendInsideAWriterOperation) {
  Result<std::int64_t> result = Status::ok();
  op([&](SQLite::Database& db) {
    WebhookFilter f;
    f.states = {WebhookState::kFailed, WebhookState::kDiscarded};
    MaintenanceOptions o;
    o.audit = {"iarelayd", "api resend", ""};
    result = resend(db, f, std::string(kAgentB), o);
  });
  ASSERT_TRUE(result.is_ok()) << result.status().message();
  EXPECT_EQ(*result, 3);
  close_journal();
  for (const char* id : {"f1", "f2", "x1"}) {
    EXPECT_EQ(field(id, "state"), "queued");
    EXPECT_EQ(field(id, "assigned_agent"), kAgentB);
  }
  EXPECT_EQ(count("SELECT affected FROM audit WHERE actor='iarelayd' AND action='resend'"), 3);
}

TEST_F(MaintenanceTest, SmallBatchesReportProgressAndKeepTheAuditCurrent) {
  for (int i = 0; i < 5; ++i)
    add("more-" + std::to_string(i), WebhookState::kFailed, "hpnnmi", kAgentA, "status", "M",
        -kHour);  // the same received_at: the keyset cursor must tell them apart by seq
  close_journal();
  auto db = open_journal_for_write(journal_, SyncLevel::kNormal);
  ASSERT_TRUE(db.is_ok());
  WebhookFilter f;
  f.states = {WebhookState::kFailed};
  f.agent = kAgentA;
  MaintenanceOptions count_only;
  count_only.batch_size = 1;
  count_only.dry_run = true;
  auto would = resend(**db, f, std::nullopt, count_only);
  ASSERT_TRUE(would.is_ok());
  EXPECT_EQ(*would, 6);
  std::vector<std::int64_t> progress;
  MaintenanceOptions o;
  o.batch_size = 2;
  o.progress = [&](std::int64_t n) { progress.push_back(n); };
  o.audit = {"tester@host", "resend --state failed", ""};
  auto r = resend(**db, f, std::nullopt, o);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(*r, 6);  // f1 and the five more
  EXPECT_EQ(progress, (std::vector<std::int64_t>{2, 4, 6}));
  EXPECT_EQ(count("SELECT affected FROM audit"), 6);
  EXPECT_EQ(field("f2", "state"), "failed");  // agent B

  // Purge in batches too; queued and inflight are refused before anything is read.
  auto refused = purge_webhooks(**db, now_, {WebhookState::kDelivered, WebhookState::kInflight});
  EXPECT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().kind(), StatusKind::kInvalidArgument);
  o.progress = nullptr;
  o.audit = {"tester@host", "purge", ""};
  auto purged = purge_webhooks(**db, now_, {}, o);
  ASSERT_TRUE(purged.is_ok()) << purged.status().message();
  EXPECT_EQ(*purged, 2);  // d1, d2
  EXPECT_EQ(count("SELECT count(*) FROM webhooks WHERE state='delivered'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM attempts WHERE webhook_id IN ('d1','d2')"), 0);
}

// s1 is stored (for the feed) and consumer inner-1 has acknowledged up to seq 3, before s1.
TEST_F(MaintenanceTest, PurgeRefusesStoredWebhooksAConsumerHasNotAcknowledged) {
  auto dry = iarelay({"purge", "--before", "-1m", "--state", "stored", "--dry-run"});
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("would purge 0 webhooks"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("would refuse: 1 webhook"), std::string::npos) << dry.out;

  auto refused = iarelay({"purge", "--before", "-1m", "--state", "stored", "--state", "delivered"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("refusing to purge 1 webhook stored for the feed and not "
                             "acknowledged by every consumer: consumer 'inner-1' has "
                             "acknowledged up to seq 3 (1 not yet)"),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_EQ(lines(refused.err), 1) << refused.err;
  // Nothing changed, not even the delivered rows it could have purged.
  EXPECT_EQ(field("s1", "state"), "stored");
  EXPECT_EQ(field("d1", "state"), "delivered");
  EXPECT_EQ(count("SELECT count(*) FROM audit"), 0);

  auto forced =
      iarelay({"purge", "--before", "-1m", "--state", "stored", "--force"}, {{"USER", "carol"}});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(forced.out.find("purged 1 webhook"), std::string::npos) << forced.out;
  EXPECT_EQ(field("s1", "state"), "<missing>");
  SQLite::Database db(journal_, SQLite::OPEN_READONLY);
  SQLite::Statement audit(db, "SELECT actor, action, affected, detail FROM audit");
  ASSERT_TRUE(audit.executeStep());
  EXPECT_EQ(audit.getColumn(0).getString().rfind("carol@", 0), 0u);
  EXPECT_EQ(audit.getColumn(1).getString(), "purge");
  EXPECT_EQ(audit.getColumn(2).getInt(), 1);
  EXPECT_NE(audit.getColumn(3).getString().find("force: 1 unacknowledged stored"),
            std::string::npos)
      << audit.getColumn(3).getString();
}

TEST_F(MaintenanceTest, PurgeOfStoredWebhooksEveryConsumerAcknowledgedNeedsNoForce) {
  op([](SQLite::Database& db) {
    ack_consumer(db, "inner-1", db.execAndGet("SELECT seq FROM webhooks WHERE id='s1'").getInt64());
  });
  auto r = iarelay({"purge", "--before", "-1m", "--state", "stored"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("purged 1 webhook"), std::string::npos) << r.out;
  EXPECT_EQ(field("s1", "state"), "<missing>");
}

TEST_F(MaintenanceTest, PurgeOfStoredWebhooksWithNoConsumerKnownIsRefused) {
  op([](SQLite::Database& db) { db.exec("DELETE FROM consumers"); });
  auto r = iarelay({"purge", "--before", "-1m", "--state", "stored"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no feed consumer has acknowledged any"), std::string::npos) << r.err;
  EXPECT_EQ(field("s1", "state"), "stored");
}

}  // namespace
}  // namespace iarelay::clitest
