// The chain steps of a loop turn's outcomes on the PostgreSQL journal (src/dispatch/chain_step.h):
// taken together in one pipeline under one savepoint, so one step that fails fails them all;
// each then runs again on its own, and only the one that fails alone claims nothing. The
// outcomes commit either way.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "dispatch/chain_step.h"
#include "journal/backend.h"
#include "journal/pg/pg_journal.h"
#include "support/pg_cluster.h"

namespace iarelay::testing {
namespace {

using dispatch_internal::Chain;
using dispatch_internal::OutcomeBatch;

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

}  // namespace
}  // namespace iarelay::testing
