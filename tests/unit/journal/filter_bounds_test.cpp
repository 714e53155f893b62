// What the queue commands and resend do to webhooks that arrive (or change) while a
// command runs. A command chooses its webhooks by filter when the operator starts it; a webhook
// the daemon acknowledges after that moment is not one the operator chose.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include "common/time.h"
#include "journal/journal.h"
#include "journal/maintenance.h"
#include "journal/store.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

constexpr Millis kMinute = 60'000;

class FilterBounds : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = open_journal_for_write(dir_.file("j.db"), SyncLevel::kNormal);
    ASSERT_TRUE(db.is_ok()) << db.status().message();
    db_ = std::move(*db);
    ASSERT_TRUE(migrate(*db_).is_ok());
    auto daemon = open_journal_for_write(dir_.file("j.db"), SyncLevel::kNormal);
    ASSERT_TRUE(daemon.is_ok()) << daemon.status().message();
    daemon_ = std::move(*daemon);
    now_ = now_millis();
  }

  // A webhook stored on `db` (the operator's connection, or the daemon's) at `received_at`.
  void add(SQLite::Database& db, const std::string& id, WebhookState state, Millis received_at,
           const std::string& agent = "agent-a") {
    NewWebhook w;
    w.id = id;
    w.received_at = received_at;
    w.service = "hpnnmi";
    w.type = "status";
    w.event_id = "ev-" + id;
    w.state = state;
    w.assigned_agent = agent;
    w.payload = "{}";
    insert_webhook(db, w);
  }
  std::string ids(const char* state) {
    SQLite::Statement q(*db_,
                        "SELECT coalesce(group_concat(id, ','), '') FROM (SELECT id FROM webhooks "
                        "WHERE state=? ORDER BY seq)");
    q.bind(1, state);
    q.executeStep();
    return q.getColumn(0).getString();
  }

  testing::TempDir dir_;
  DatabasePtr db_;      // the operator's `iarelay` connection
  DatabasePtr daemon_;  // the running iarelayd's writer
  Millis now_ = 0;
};

// `iarelay delete --state queued --agent agent-a --force` at time `now_` (the operator saw three
// webhooks backing off for a broken agent and deletes them). While its batches run, intake
// acknowledges a new webhook for agent-a (received after the command began): the command's
// keyset walk reaches it and deletes it too. Nothing records its id (the audit row of a filter
// delete has only the filter; the attempts go with the row): an acknowledged webhook is gone.
TEST_F(FilterBounds, DeleteByFilterLeavesWebhooksAcceptedAfterTheCommandBegan) {
  add(*db_, "old1", WebhookState::kQueued, now_ - 3 * kMinute);
  add(*db_, "old2", WebhookState::kQueued, now_ - 2 * kMinute);
  add(*db_, "old3", WebhookState::kQueued, now_ - kMinute);
  WebhookFilter f;
  f.states = {WebhookState::kQueued};
  f.agent = "agent-a";
  MaintenanceOptions run;
  run.batch_size = 1;
  run.audit.actor = "op@host";
  bool arrived = false;
  run.progress = [&](std::int64_t) {
    if (arrived) return;
    arrived = true;
    // Intake, between two of the command's batches: stored and answered 200.
    add(*daemon_, "acked-later", WebhookState::kQueued, now_millis() + 5);
  };
  auto deleted = change_webhooks(*db_, QueueOp::kDelete, f, now_, run);
  ASSERT_TRUE(deleted.is_ok()) << deleted.status().message();
  EXPECT_EQ(ids("queued"), "acked-later")
      << "a webhook acknowledged after the delete began was deleted by it";
  EXPECT_EQ(*deleted, 3);
  // The audit keeps the ids the delete took (a filter delete recorded only its filter).
  SQLite::Statement linked(*db_,
                           "SELECT group_concat(webhook_id, ',') FROM (SELECT webhook_id FROM "
                           "audit_webhooks ORDER BY webhook_id)");
  linked.executeStep();
  EXPECT_EQ(linked.getColumn(0).getString(), "old1,old2,old3");
}

// The same for a replay: `iarelay resend --state delivered --since -1h --force` replays what
// was delivered in the last hour. A webhook received and delivered while the command runs is
// replayed as well: the agent gets it twice, though nobody asked for it.
TEST_F(FilterBounds, ReplayByFilterDoesNotReplayWebhooksDeliveredAfterTheCommandBegan) {
  for (int i = 0; i < 3; ++i)
    add(*db_, "d" + std::to_string(i), WebhookState::kDelivered, now_ - (3 - i) * kMinute);
  WebhookFilter f;
  f.states = {WebhookState::kDelivered};
  f.since = now_ - 60 * kMinute;
  MaintenanceOptions run;
  run.batch_size = 1;
  bool arrived = false;
  run.progress = [&](std::int64_t) {
    if (arrived) return;
    arrived = true;
    // Received and delivered (once, as it should be) while the replay runs.
    add(*daemon_, "fresh", WebhookState::kDelivered, now_millis() + 5);
  };
  auto resent = resend(*db_, f, std::nullopt, run);
  ASSERT_TRUE(resent.is_ok()) << resent.status().message();
  EXPECT_EQ(ids("delivered"), "fresh")
      << "a webhook delivered after the replay began was queued to be delivered again";
  EXPECT_EQ(*resent, 3);
}

}  // namespace
}  // namespace iarelay
