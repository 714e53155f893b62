// Tests of journal/maintenance.h that guard an edge's feed: stored rows are purged only once
// every consumer has acknowledged them, and feed sequence numbers never go back.
#include "journal/maintenance.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/time.h"
#include "journal/journal.h"
#include "journal/store.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

constexpr Millis kHour = 3'600'000;

class FeedJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = open_journal_for_write(dir_.file("j.db"), SyncLevel::kNormal);
    ASSERT_TRUE(db.is_ok()) << db.status().message();
    db_ = std::move(*db);
    ASSERT_TRUE(migrate(*db_).is_ok());
    now_ = now_millis();
  }

  // Inserts a webhook received `age` ago; returns its seq.
  std::int64_t add(const std::string& id, WebhookState state, Millis age) {
    NewWebhook w;
    w.id = id;
    w.received_at = now_ - age;
    w.service = "hpnnmi";
    w.type = "status";
    w.state = state;
    w.payload = "{}";
    return insert_webhook(*db_, w).seq;
  }
  void add_from(SQLite::Database& db, const std::string& id) {
    NewWebhook w;
    w.id = id;
    w.received_at = now_;
    w.service = "hpnnmi";
    w.type = "status";
    w.payload = "{}";
    insert_webhook(db, w);
  }
  std::string ids() {
    return db_
        ->execAndGet(
            "SELECT coalesce(group_concat(id, ','), '') FROM "
            "(SELECT id FROM webhooks ORDER BY seq)")
        .getString();
  }

  testing::TempDir dir_;
  DatabasePtr db_;
  Millis now_ = 0;
};

TEST_F(FeedJournalTest, PurgeKeepsStoredRowsUntilEveryConsumerHasAcknowledgedThem) {
  add("s1", WebhookState::kStored, 4 * kHour);
  std::int64_t s2 = add("s2", WebhookState::kStored, 3 * kHour);
  std::int64_t s3 = add("s3", WebhookState::kStored, 2 * kHour);
  add("s4", WebhookState::kStored, 2 * kHour);
  add("d1", WebhookState::kDelivered, 2 * kHour);
  add("new", WebhookState::kStored, 0);
  const Millis before = now_ - kHour;

  // No consumer has ever acknowledged anything: every stored row is kept.
  std::int64_t total = -1;
  auto lagging = unacknowledged_stored(*db_, before, &total);
  ASSERT_TRUE(lagging.is_ok());
  EXPECT_EQ(total, 4);
  ASSERT_EQ(lagging->size(), 1u);
  EXPECT_EQ((*lagging)[0].consumer, "");
  MaintenanceOptions count;
  count.dry_run = true;
  EXPECT_EQ(*purge_webhooks(*db_, before, {WebhookState::kStored}, count), 0);
  auto purged = purge_webhooks(*db_, before, {WebhookState::kStored, WebhookState::kDelivered});
  ASSERT_TRUE(purged.is_ok()) << purged.status().message();
  EXPECT_EQ(*purged, 1);  // d1
  EXPECT_EQ(ids(), "s1,s2,s3,s4,new");

  // Two consumers: only what the slower one acknowledged goes.
  ack_consumer(*db_, "inner-1", s3);
  ack_consumer(*db_, "inner-2", s2);
  lagging = unacknowledged_stored(*db_, before, &total);
  ASSERT_TRUE(lagging.is_ok());
  EXPECT_EQ(total, 2);  // s3, s4 not acknowledged by inner-2
  ASSERT_EQ(lagging->size(), 2u);
  EXPECT_EQ((*lagging)[0].consumer, "inner-1");
  EXPECT_EQ((*lagging)[0].acked_seq, s3);
  EXPECT_EQ((*lagging)[0].rows, 1);
  EXPECT_EQ((*lagging)[1].consumer, "inner-2");
  EXPECT_EQ((*lagging)[1].rows, 2);
  MaintenanceOptions small;
  small.batch_size = 1;
  purged = purge_webhooks(*db_, before, {WebhookState::kStored}, small);
  ASSERT_TRUE(purged.is_ok());
  EXPECT_EQ(*purged, 2);  // s1, s2
  EXPECT_EQ(ids(), "s3,s4,new");

  // Forced: every stored row before the time, acknowledged or not; never the newer one.
  MaintenanceOptions force;
  force.force = true;
  purged = purge_webhooks(*db_, before, {WebhookState::kStored}, force);
  ASSERT_TRUE(purged.is_ok());
  EXPECT_EQ(*purged, 2);
  EXPECT_EQ(ids(), "new");
}

// A lost commit (power loss at sync=normal) or a restored backup takes sqlite_sequence back;
// seqs a consumer already acknowledged would then be handed out again and skipped by it.
TEST_F(FeedJournalTest, SeqFloorPutsTheNextSeqPastEveryOneIssuedBefore) {
  add("a", WebhookState::kStored, 0);
  add("b", WebhookState::kStored, 0);
  std::int64_t served = add("c", WebhookState::kStored, 0);
  // The last two commits are lost, sqlite_sequence with them.
  db_->exec("DELETE FROM webhooks WHERE id IN ('b','c')");
  db_->exec("UPDATE sqlite_sequence SET seq=1 WHERE name='webhooks'");
  EXPECT_EQ(add("reused", WebhookState::kStored, 0), 2);  // what happens without the floor
  db_->exec("DELETE FROM webhooks WHERE id='reused'");
  db_->exec("UPDATE sqlite_sequence SET seq=1 WHERE name='webhooks'");

  const Millis start = now_millis();
  std::int64_t floor = raise_seq_floor(*db_, start);
  EXPECT_EQ(floor, start * 1000);
  std::int64_t next = add("d", WebhookState::kStored, 0);
  EXPECT_GT(next, served);
  EXPECT_EQ(next, start * 1000 + 1);
  // Never lowered: an earlier clock leaves it alone.
  EXPECT_EQ(raise_seq_floor(*db_, start - kHour), next);
  EXPECT_EQ(add("e", WebhookState::kStored, 0), next + 1);
  EXPECT_LT(next, std::int64_t{1} << 53);  // exact in JSON numbers read as doubles
}

TEST_F(FeedJournalTest, SeqFloorOnAnEmptyJournal) {
  const Millis start = now_millis();
  EXPECT_EQ(raise_seq_floor(*db_, start), start * 1000);
  EXPECT_EQ(add("first", WebhookState::kStored, 0), start * 1000 + 1);
}

// hold/release/retry/delete by id while another connection (the daemon) writes: the id
// lookups must not leave a read transaction open, or BEGIN IMMEDIATE has to upgrade it to a
// write, which SQLite refuses at once (SQLITE_BUSY, no busy handler) instead of waiting.
TEST_F(FeedJournalTest, ChangeByIdWaitsForAnotherWriterInsteadOfFailingAtOnce) {
  add("q1", WebhookState::kQueued, 0);
  add("q2", WebhookState::kQueued, 0);
  auto other = open_journal_for_write(dir_.file("j.db"), SyncLevel::kNormal);
  ASSERT_TRUE(other.is_ok());
  (*other)->exec("BEGIN IMMEDIATE");
  add_from(**other, "daemon-row");
  std::thread committer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (*other)->exec("COMMIT");
  });
  WebhookFilter f;
  f.ids = {"q1", "q2"};
  auto held = change_webhooks(*db_, QueueOp::kHold, f, now_);
  committer.join();
  ASSERT_TRUE(held.is_ok()) << held.status().message();
  EXPECT_EQ(*held, 2);
  EXPECT_EQ(db_->execAndGet("SELECT count(*) FROM webhooks WHERE state='held'").getInt64(), 2);
  // No read transaction is left behind either: another writer gets in at once.
  EXPECT_NO_THROW((*other)->exec("BEGIN IMMEDIATE; COMMIT"));

  // resend by id, the same way.
  add("f1", WebhookState::kFailed, 0);
  (*other)->exec("BEGIN IMMEDIATE");
  add_from(**other, "daemon-row-2");
  std::thread committer2([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (*other)->exec("COMMIT");
  });
  WebhookFilter r;
  r.ids = {"f1"};
  auto resent = resend(*db_, r, std::nullopt);
  committer2.join();
  ASSERT_TRUE(resent.is_ok()) << resent.status().message();
  EXPECT_EQ(*resent, 1);
}

// delete (postsuper -d) keeps the feed's guard that purge has: stored rows not every consumer
// acknowledged are refused, by id or by filter, naming who lags, unless the caller insists.
TEST_F(FeedJournalTest, DeleteKeepsStoredRowsUntilEveryConsumerHasAcknowledgedThem) {
  std::int64_t s1 = add("s1", WebhookState::kStored, 2 * kHour);
  std::int64_t s2 = add("s2", WebhookState::kStored, kHour);
  add("s3", WebhookState::kStored, 0);
  WebhookFilter by_id;
  by_id.ids = {"s1"};
  WebhookFilter by_state;
  by_state.states = {WebhookState::kStored};

  // No consumer known: nothing is acknowledged.
  auto refused = change_webhooks(*db_, QueueOp::kDelete, by_id, now_);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("no feed consumer"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(ids(), "s1,s2,s3");

  ack_consumer(*db_, "inner-1", s2);
  ack_consumer(*db_, "inner-2", s1);
  by_id.ids = {"s2"};
  refused = change_webhooks(*db_, QueueOp::kDelete, by_id, now_);
  ASSERT_FALSE(refused.is_ok());
  const std::string msg = refused.status().message();
  EXPECT_NE(msg.find("inner-2"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("inner-1"), std::string::npos) << msg;  // it has s2
  EXPECT_NE(msg.find("purge"), std::string::npos) << msg;
  refused = change_webhooks(*db_, QueueOp::kDelete, by_state, now_);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("2 stored"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(ids(), "s1,s2,s3");

  // What every consumer acknowledged goes without more ado.
  by_id.ids = {"s1"};
  auto deleted = change_webhooks(*db_, QueueOp::kDelete, by_id, now_);
  ASSERT_TRUE(deleted.is_ok()) << deleted.status().message();
  EXPECT_EQ(*deleted, 1);
  EXPECT_EQ(ids(), "s2,s3");

  // The caller insists: deleted anyway.
  MaintenanceOptions force;
  force.force = true;
  deleted = change_webhooks(*db_, QueueOp::kDelete, by_state, now_, force);
  ASSERT_TRUE(deleted.is_ok()) << deleted.status().message();
  EXPECT_EQ(*deleted, 2);
  EXPECT_EQ(ids(), "");
}

}  // namespace
}  // namespace iarelay
