// Journal operations the dispatcher's writer runs for a loop turn (src/dispatch/chain_step.h),
// on a real journal: the chain steps of a turn's outcomes, taken together in one pipeline under
// one savepoint on PostgreSQL (one that fails fails them all; each then runs again on its own,
// and only the one that fails alone claims nothing; the outcomes commit either way), and a
// sweep's moves, which keep an alert together.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/chain_step.h"
#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/pg/pg_journal.h"
#include "support/pg_cluster.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using dispatch_internal::Chain;
using dispatch_internal::OutcomeBatch;
using dispatch_internal::QueuedMove;

NewWebhook webhook(const std::string& id, const std::string& event) {
  NewWebhook w;
  w.id = id;
  w.received_at = 1'800'000'000'000;
  w.service = "svc";
  w.type = "status";
  w.event_id = event;
  w.assigned_agent = "a1";
  w.payload = "{}";
  return w;
}

// A PostgreSQL journal (a throwaway cluster) and a SQLite one, each migrated.
struct BothJournals {
  PgCluster cluster;
  TempDir dir;
  std::unique_ptr<PgConnection> pg;
  DatabasePtr lite;
  std::vector<std::unique_ptr<JournalBackend>> journals;
  void open() {
    ASSERT_EQ(cluster.error(), "");
    ASSERT_EQ(cluster.create_database("journal"), "");
    auto c = PgConnection::connect(cluster.uri("journal"));
    ASSERT_TRUE(c) << c.status().message();
    pg = std::move(*c);
    ASSERT_TRUE(pg_migrate(*pg));
    auto l = open_journal_for_write(dir.file("journal.db"), SyncLevel::kNormal);
    ASSERT_TRUE(l) << l.status().message();
    lite = std::move(*l);
    ASSERT_TRUE(migrate(*lite));
    journals.push_back(pg_backend(*pg));
    journals.push_back(sqlite_backend(*lite));
  }
};

// Review (fifteenth session): a row of one alert locked by another session past lock_timeout
// (an operator's move holding its batch, another relay) cost the other alerts of the turn their
// chain step too.
TEST(PgChainSteps, AStepThatFailsAloneLeavesTheOtherStepsOfItsTurnTheirClaims) {
  PgCluster cluster;
  ASSERT_EQ(cluster.error(), "");
  ASSERT_EQ(cluster.create_database("journal"), "");
  // The writer's connection waits 200 ms for a lock.
  auto db = PgConnection::connect(cluster.uri("journal") + "?options=-c%20lock_timeout%3D200");
  ASSERT_TRUE(db) << db.status().message();
  ASSERT_TRUE(pg_migrate(**db));
  auto journal = pg_backend(**db);
  std::vector<std::int64_t> seq;
  ASSERT_TRUE(journal->transact([&](JournalTx& tx) {
    for (const auto& [id, event] : std::vector<std::pair<std::string, std::string>>{
             {"A1", "ev-A"}, {"B1", "ev-B"}, {"A2", "ev-A"}, {"B2", "ev-B"}}) {
      seq.push_back(tx.insert_webhook(webhook(id, event)).seq);
    }
    EXPECT_TRUE(tx.transition("A1", WebhookState::kQueued, WebhookState::kInflight));
    EXPECT_TRUE(tx.transition("B1", WebhookState::kQueued, WebhookState::kInflight));
  }));
  // Another session holds B2's row.
  auto other = PgConnection::connect(cluster.uri("journal"));
  ASSERT_TRUE(other) << other.status().message();
  ASSERT_TRUE((*other)->exec("BEGIN"));
  ASSERT_TRUE((*other)->query("SELECT 1 FROM webhooks WHERE id = 'B2' FOR UPDATE"));

  auto chain = [&](const std::string& event, std::int64_t after) {
    auto c = std::make_shared<Chain>();
    c->agent_id = "a1";
    c->key = event;
    c->event_id = event;
    c->after_seq = after;
    c->now = 1'900'000'000'000;
    c->all_kinds = true;
    return c;
  };
  auto a = chain("ev-A", seq[0]), b = chain("ev-B", seq[1]);
  Status s = journal->transact([&](JournalTx& tx) {
    OutcomeBatch batch;
    for (const char* id : {"A1", "B1"}) {
      OutcomeWrite w;
      w.id = id;
      w.fields.delivered_at = std::optional<Millis>(1'800'000'001'000);
      batch.stage(std::move(w), id[0] == 'A' ? a : b);
    }
    batch.write(tx);
  });
  ASSERT_TRUE(s) << s.message();
  EXPECT_TRUE(a->claimed) << "alert A's step was skipped because alert B's failed";
  EXPECT_EQ(a->next.id, "A2");
  EXPECT_FALSE(b->claimed);
  ASSERT_TRUE((*other)->exec("ROLLBACK"));
  auto states =
      (*db)->query("SELECT string_agg(id || ' ' || state, ', ' ORDER BY seq) FROM webhooks");
  ASSERT_TRUE(states) << states.status().message();
  EXPECT_EQ(*(*states)[0][0], "A1 delivered, B1 delivered, A2 inflight, B2 queued");
}

// Review (fifteenth session): an operator's hold of an alert's webhook committed between a
// failover sweep's read of the queue and its moves left the webhook on the agent and moved the
// alert's later ones: released, it would go on one agent while they went on the other. On both
// backends (the operator's tool is another process on SQLite too).
TEST(MoveQueued, AnAlertWithAWebhookHeldSinceTheSweepReadItStaysTogether) {
  BothJournals both;
  ASSERT_NO_FATAL_FAILURE(both.open());
  for (auto& journal : both.journals) {
    ASSERT_TRUE(journal->transact([](JournalTx& tx) {
      for (const auto& [id, event] : std::vector<std::pair<std::string, std::string>>{
               {"X", "ev-E"}, {"Z", "ev-F"}, {"Y", "ev-E"}})
        tx.insert_webhook(webhook(id, event));
    }));
    // What the sweep read, and planned: every webhook to a2.
    const std::vector<QueuedMove> moves = {
        {"X", "a2", "ev-E"}, {"Z", "a2", "ev-F"}, {"Y", "a2", "ev-E"}};
    // The operator's hold, committed since.
    ASSERT_TRUE(journal->transact([](JournalTx& tx) {
      ASSERT_TRUE(tx.transition("X", WebhookState::kQueued, WebhookState::kHeld));
    }));
    int moved = -1;
    ASSERT_TRUE(journal->transact(
        [&](JournalTx& tx) { moved = dispatch_internal::move_queued(tx, "a1", moves); }));
    EXPECT_EQ(moved, 1);
    std::optional<WebhookPlace> x, y, z;
    ASSERT_TRUE(journal->read([&](JournalTx& tx) {
      x = tx.locate("X");
      y = tx.locate("Y");
      z = tx.locate("Z");
    }));
    ASSERT_TRUE(x && y && z);
    EXPECT_EQ(x->state, WebhookState::kHeld);
    EXPECT_EQ(y->assigned_agent, "a1") << "Y went ahead of X, held on a1, to a2";
    EXPECT_EQ(z->assigned_agent, "a2");
  }
}

// Review (fifteenth session): an operator's move committed between a sweep's read of a webhook
// and its UPDATE (which waited for the operator's row lock) was overwritten: the UPDATE checked
// the state only, so the webhook went where the sweep meant while the alert's later one stayed
// where the operator put it. The move now checks the agent in the same statement.
TEST(MoveQueued, AnOperatorsMoveCommittedMeanwhileIsNotOverwritten) {
  PgCluster cluster;
  ASSERT_EQ(cluster.error(), "");
  ASSERT_EQ(cluster.create_database("journal"), "");
  auto db = PgConnection::connect(cluster.uri("journal"));
  ASSERT_TRUE(db) << db.status().message();
  ASSERT_TRUE(pg_migrate(**db));
  auto journal = pg_backend(**db);
  ASSERT_TRUE(journal->transact([](JournalTx& tx) {
    tx.insert_webhook(webhook("X", "ev-E"));
    tx.insert_webhook(webhook("Y", "ev-E"));
  }));
  // The operator's move of both to a3, not yet committed.
  auto other = PgConnection::connect(cluster.uri("journal"));
  ASSERT_TRUE(other) << other.status().message();
  ASSERT_TRUE((*other)->exec("BEGIN"));
  ASSERT_TRUE((*other)->command("UPDATE webhooks SET assigned_agent = 'a3'"));
  int moved = -1;
  std::thread sweep([&] {
    Status s = journal->transact([&](JournalTx& tx) {
      moved = dispatch_internal::move_queued(tx, "a1", {{"X", "a2", "ev-E"}, {"Y", "a2", "ev-E"}});
    });
    EXPECT_TRUE(s) << s.message();
  });
  // The sweep's transaction waits for the operator's row lock on X; then the operator commits.
  for (int i = 0; i < 100; ++i) {
    auto waiting = cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", "journal");
    if (waiting == "1") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE((*other)->exec("COMMIT"));
  sweep.join();
  EXPECT_EQ(moved, 0);
  auto rows = (*db)->query(
      "SELECT string_agg(id || ' ' || assigned_agent, ', ' ORDER BY seq) FROM webhooks");
  ASSERT_TRUE(rows) << rows.status().message();
  EXPECT_EQ(*(*rows)[0][0], "X a3, Y a3") << "the operator's move of X was overwritten";
}

// The held sweep's moves (from no agent: webhooks held for their service) keep an alert
// together too.
TEST(MoveQueued, WebhooksHeldForTheirServiceMoveOnlyWhileStillHeldForIt) {
  BothJournals both;
  ASSERT_NO_FATAL_FAILURE(both.open());
  for (auto& journal : both.journals) {
    ASSERT_TRUE(journal->transact([](JournalTx& tx) {
      for (const char* id : {"X", "Y", "Z", "W"}) {
        NewWebhook w = webhook(id, std::string(id) == "Z" ? "ev-F" : "ev-E");
        w.assigned_agent = std::nullopt;
        if (std::string(id) == "W") w.assigned_agent = "a1";
        tx.insert_webhook(w);
      }
    }));
    ASSERT_TRUE(journal->transact([](JournalTx& tx) {
      ASSERT_TRUE(tx.transition("X", WebhookState::kQueued, WebhookState::kHeld));
    }));
    int moved = -1;
    ASSERT_TRUE(journal->transact([&](JournalTx& tx) {
      moved = dispatch_internal::move_queued(
          tx, std::nullopt,
          {{"X", "a2", "ev-E"}, {"Z", "a2", "ev-F"}, {"Y", "a2", "ev-E"}, {"W", "a2", "ev-W"}});
    }));
    EXPECT_EQ(moved, 1) << "only Z: X is held, Y is behind it, W is a1's";
    std::optional<WebhookPlace> y, z, w;
    ASSERT_TRUE(journal->read([&](JournalTx& tx) {
      y = tx.locate("Y");
      z = tx.locate("Z");
      w = tx.locate("W");
    }));
    ASSERT_TRUE(y && z && w);
    EXPECT_FALSE(y->assigned_agent);
    EXPECT_EQ(z->assigned_agent, "a2");
    EXPECT_EQ(w->assigned_agent, "a1");
  }
}

}  // namespace
}  // namespace iarelay::testing
