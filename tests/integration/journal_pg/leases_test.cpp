// Agent leases on the PostgreSQL journal (issue 15 item 3): one owner per agent, takeover of an
// expired lease with the next epoch, the abandoned calls queued again, and fencing: an owner
// that lost the lease writes nothing, and a takeover waits for an outcome being written.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "journal/backend.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_leases.h"

#include "support/pg_cluster.h"

namespace iarelay::testing {
namespace {

class Leases : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cluster_.error(), "");
    db_ = connect();
    ASSERT_TRUE(db_);
    ASSERT_TRUE(pg_migrate(*db_));
  }
  std::unique_ptr<PgConnection> connect() {
    auto c = PgConnection::connect(cluster_.uri());
    EXPECT_TRUE(c) << c.status().message();
    return c ? std::move(*c) : nullptr;
  }
  // A webhook of `agent`, claimed (inflight) by the relay that owns it.
  void inflight(const std::string& id, const std::string& agent) {
    auto backend = pg_backend(*db_);
    Status s = backend->transact([&](JournalTx& j) {
      NewWebhook w;
      w.id = id;
      w.received_at = 1'800'000'000'000;
      w.service = "hpnnmi";
      w.type = "status";
      w.assigned_agent = agent;
      w.payload = "{}";
      j.insert_webhook(w);
      ASSERT_TRUE(j.transition(id, WebhookState::kQueued, WebhookState::kInflight));
    });
    ASSERT_TRUE(s) << s.message();
  }
  std::string state_of(const std::string& id) {
    return cluster_.psql("SELECT state FROM webhooks WHERE id = '" + id + "'");
  }
  PgCluster cluster_;
  std::unique_ptr<PgConnection> db_;
};

TEST_F(Leases, AFreeAgentIsTakenWithEpochOneAndHeldAgainstOtherRelays) {
  auto first = take_lease(*db_, "a1", "relay-1", 30'000);
  ASSERT_TRUE(first) << first.status().message();
  EXPECT_EQ(first->owner, "relay-1");
  EXPECT_EQ(first->epoch, 1);
  auto other = take_lease(*db_, "a1", "relay-2", 30'000);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->owner, "relay-1");  // not taken: live
  EXPECT_EQ(other->epoch, 1);
  auto again = take_lease(*db_, "a1", "relay-1", 30'000);  // its owner: renewed, same epoch
  ASSERT_TRUE(again);
  EXPECT_EQ(again->epoch, 1);
  auto renewed = renew_lease(*db_, *first, 30'000);
  ASSERT_TRUE(renewed);
  EXPECT_TRUE(*renewed);
  auto all = all_leases(*db_);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].owner, "relay-1");
}

TEST_F(Leases, AnExpiredLeaseIsTakenWithTheNextEpochAndTheAbandonedCallsQueuedAgain) {
  auto first = take_lease(*db_, "a1", "relay-1", 200);
  ASSERT_TRUE(first);
  inflight("01W1", "a1");
  inflight("01W2", "a2");  // another agent's call: not touched
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  int requeued = 0;
  auto taken = take_lease(*db_, "a1", "relay-2", 30'000, &requeued);
  ASSERT_TRUE(taken) << taken.status().message();
  EXPECT_EQ(taken->owner, "relay-2");
  EXPECT_EQ(taken->epoch, 2);
  EXPECT_EQ(requeued, 1);
  EXPECT_EQ(state_of("01W1"), "queued");
  EXPECT_EQ(state_of("01W2"), "inflight");
  // The old owner wakes up: its lease is gone, renewing and fencing say so.
  auto renewed = renew_lease(*db_, *first, 30'000);
  ASSERT_TRUE(renewed);
  EXPECT_FALSE(*renewed);
  ASSERT_TRUE(db_->exec("BEGIN"));
  auto current = fence(*db_, *first);
  ASSERT_TRUE(current);
  EXPECT_FALSE(*current);
  ASSERT_TRUE(db_->exec("ROLLBACK"));
}

// A takeover never crosses an outcome the owner is writing: while the outcome's transaction
// holds the lease row (fence), a taking skips the row (SKIP LOCKED: a row held by a frozen
// relay's transaction does not hold up the taker's other leases) and takes it after the commit,
// when the outcome is stored and nothing is left to deliver again.
TEST_F(Leases, ATakeoverNeverCrossesTheOutcomeTheOwnerIsWriting) {
  auto first = take_lease(*db_, "a1", "relay-1", 200);
  ASSERT_TRUE(first);
  inflight("01W1", "a1");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // expired, not yet taken
  // The owner writes the call's outcome, fenced: the lease is still its own.
  ASSERT_TRUE(db_->exec("BEGIN"));
  auto current = fence(*db_, *first);
  ASSERT_TRUE(current);
  ASSERT_TRUE(*current);
  auto other = connect();
  ASSERT_TRUE(other);
  int requeued = 0;
  auto skipped = take_lease(*other, "a1", "relay-2", 30'000, &requeued);
  ASSERT_TRUE(skipped) << skipped.status().message();
  EXPECT_EQ(skipped->owner, "") << "the takeover did not leave the fenced row alone";
  EXPECT_EQ(requeued, 0);
  EXPECT_EQ(state_of("01W1"), "inflight");
  auto done = db_->command(
      "UPDATE webhooks SET state = 'delivered' WHERE id = '01W1' AND state = 'inflight'");
  ASSERT_TRUE(done);
  EXPECT_EQ(*done, 1);
  ASSERT_TRUE(db_->exec("COMMIT"));
  auto lease = take_lease(*other, "a1", "relay-2", 30'000, &requeued);
  ASSERT_TRUE(lease) << lease.status().message();
  EXPECT_EQ(lease->owner, "relay-2");
  EXPECT_EQ(lease->epoch, 2);
  EXPECT_EQ(requeued, 0);  // the outcome came first: nothing to deliver again
  EXPECT_EQ(state_of("01W1"), "delivered");
}

TEST_F(Leases, RelaysTakingAtOnceGiveEachAgentOneOwner) {
  std::vector<std::string> agents;
  for (int i = 0; i < 40; ++i) agents.push_back("agent-" + std::to_string(i));
  constexpr int kRelays = 4;
  std::vector<std::future<Result<std::vector<Lease>>>> relays;
  for (int r = 0; r < kRelays; ++r)
    relays.push_back(std::async(std::launch::async, [&, r]() -> Result<std::vector<Lease>> {
      auto c = PgConnection::connect(cluster_.uri());
      if (!c) return c.status();
      return take_leases(**c, agents, "relay-" + std::to_string(r), 30'000);
    }));
  std::map<std::string, std::string> owner_of;
  for (auto& f : relays) {
    auto held = f.get();
    ASSERT_TRUE(held) << held.status().message();
    for (const Lease& l : *held) {
      EXPECT_TRUE(owner_of.emplace(l.agent, l.owner).second) << l.agent << " has two owners";
      EXPECT_EQ(l.epoch, 1);
    }
  }
  // Every agent free at the start has an owner once one more round ran.
  auto last = take_leases(*db_, agents, "relay-late", 30'000);
  ASSERT_TRUE(last);
  for (const Lease& l : *last) owner_of.emplace(l.agent, l.owner);
  EXPECT_EQ(owner_of.size(), agents.size());
  auto all = all_leases(*db_);
  ASSERT_TRUE(all);
  for (const Lease& l : *all) EXPECT_EQ(owner_of[l.agent], l.owner) << l.agent;
}

TEST_F(Leases, TakeLeasesRenewsWhatTheRelayHoldsAndTakesWhatExpired) {
  ASSERT_TRUE(take_lease(*db_, "a1", "relay-1", 30'000));
  ASSERT_TRUE(take_lease(*db_, "a2", "relay-2", 200));
  ASSERT_TRUE(take_lease(*db_, "a3", "relay-2", 30'000));
  inflight("01W2", "a2");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  auto held = take_leases(*db_, {"a3", "a2", "a1", "a4"}, "relay-1", 30'000);
  ASSERT_TRUE(held) << held.status().message();
  std::vector<std::string> names;
  for (const Lease& l : *held) names.push_back(l.agent + ":" + std::to_string(l.epoch));
  // a1 renewed (epoch 1), a2 expired and taken (2), a3 live elsewhere, a4 free (1).
  EXPECT_EQ(names, (std::vector<std::string>{"a1:1", "a2:2", "a4:1"}));
  EXPECT_EQ(state_of("01W2"), "queued");
}

// Review: the daemon's start requeues every inflight webhook (relay.cpp, JournalTx's
// requeue_inflight, "On start"). On a journal shared by several relays that takes back the
// calls another relay, holding its lease, is making right now: its fenced outcome then finds
// the webhook queued, and the webhook is delivered a second time.
TEST_F(Leases, ARelayStartingUpLeavesTheCallsOfAgentsOtherRelaysOwnInflight) {
  auto lease = take_lease(*db_, "a1", "relay-1", 30'000);
  ASSERT_TRUE(lease);
  ASSERT_EQ(lease->owner, "relay-1");
  inflight("01W1", "a1");  // relay-1 is calling a1
  // relay-2 starts on the same journal.
  auto other = connect();
  ASSERT_TRUE(other);
  int requeued = 0;
  ASSERT_TRUE(pg_backend(*other)->transact([&](JournalTx& j) { requeued = j.requeue_inflight(); }));
  EXPECT_EQ(requeued, 0) << "relay-2 took back a call of an agent relay-1 owns";
  // relay-1's call succeeds; it writes the outcome, fenced.
  bool written = false;
  Status s = pg_backend(*db_)->transact([&](JournalTx& j) {
    auto current = fence(*db_, *lease);
    ASSERT_TRUE(current);
    ASSERT_TRUE(*current) << "relay-1 still holds the lease";
    written = j.transition("01W1", WebhookState::kInflight, WebhookState::kDelivered);
  });
  ASSERT_TRUE(s) << s.message();
  EXPECT_TRUE(written) << "the delivered outcome was not written";
  EXPECT_EQ(state_of("01W1"), "delivered");
}

// Review: renew_lease keeps a lapsed lease nobody took (same epoch: nobody else worked for the
// agent). take_leases, which "renews those this owner holds", instead takes it again: a new
// epoch, and every call the relay has under way for the agent queued again (delivered twice),
// although no other relay was ever involved. take_lease does the same.
TEST_F(Leases, TakeLeasesRenewsALapsedLeaseNobodyTookAsRenewLeaseDoes) {
  auto first = take_lease(*db_, "a1", "relay-1", 200);
  ASSERT_TRUE(first);
  inflight("01W1", "a1");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // a renewal came late
  auto held = take_leases(*db_, {"a1"}, "relay-1", 30'000);
  ASSERT_TRUE(held) << held.status().message();
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ((*held)[0].epoch, first->epoch) << "the relay's own lease was taken anew";
  EXPECT_EQ(state_of("01W1"), "inflight") << "the relay's own call was queued again";
}

// Review: a relay frozen (SIGSTOP, VM paused, cut off from the database) while its outcome
// transaction holds the lease row FOR SHARE. Its lease expires, but no other relay can take the
// agent: take_leases skips the locked row (SKIP LOCKED) and take_lease waits on it, for as long
// as PostgreSQL keeps that session (nothing bounds it: no idle_in_transaction_session_timeout,
// lock_timeout or keepalives). Delivery to the agent stops; its call stays inflight.
TEST_F(Leases, AnOwnerFrozenInsideAnOutcomeDoesNotKeepItsAgentFromOtherRelays) {
  auto first = take_lease(*db_, "a1", "relay-1", 200);
  ASSERT_TRUE(first);
  inflight("01W1", "a1");
  ASSERT_TRUE(db_->exec("BEGIN"));
  auto current = fence(*db_, *first);
  ASSERT_TRUE(current);
  ASSERT_TRUE(*current);
  // relay-1 freezes here, inside its transaction.
  auto other = connect();
  ASSERT_TRUE(other);
  bool taken = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!taken && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto held = take_leases(*other, {"a1"}, "relay-2", 30'000);
    ASSERT_TRUE(held) << held.status().message();
    taken = !held->empty();
  }
  EXPECT_TRUE(taken) << "10 s after relay-1's 200 ms lease expired, no relay can take a1";
  EXPECT_EQ(state_of("01W1"), "queued");
  (void)db_->exec("ROLLBACK");
}

// Review: pg_leases.h asks a transaction fencing several leases to fence them "in agent order
// (as take_leases locks them)". take_leases returns its leases (and sorts its array) in byte
// order, but locks rows ORDER BY agent, in the database's collation. Under a collation that is
// not C (an ICU or en_US database) the two orders differ ("B1" < "a1" in bytes, "a1" < "B1" in
// ICU): the relay's own renewal and its outcome transaction deadlock.
TEST_F(Leases, AnOutcomeFencingTwoAgentsInAgentOrderDoesNotDeadlockWithTheRenewal) {
  ASSERT_EQ(cluster_.psql("CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu "
                          "ICU_LOCALE 'und'"),
            "");
  auto c = PgConnection::connect(cluster_.uri("icu"));
  ASSERT_TRUE(c) << c.status().message();
  auto& db = **c;
  ASSERT_TRUE(pg_migrate(db));
  auto held = take_leases(db, {"a1", "B1"}, "relay-1", 30'000);
  ASSERT_TRUE(held) << held.status().message();
  ASSERT_EQ(held->size(), 2u);
  // The outcome transaction fences its two agents in the order take_leases gave them.
  ASSERT_TRUE(db.exec("BEGIN"));
  auto f1 = fence(db, (*held)[0]);
  ASSERT_TRUE(f1) << f1.status().message();
  ASSERT_TRUE(*f1);
  // Meanwhile the relay's lease thread renews (its own connection).
  auto renewal = std::async(std::launch::async, [&]() -> Result<std::vector<Lease>> {
    auto r = PgConnection::connect(cluster_.uri("icu"));
    if (!r) return r.status();
    return take_leases(**r, {"a1", "B1"}, "relay-1", 30'000);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto f2 = fence(db, (*held)[1]);
  EXPECT_TRUE(f2) << f2.status().message();
  (void)db.exec(f2 ? "COMMIT" : "ROLLBACK");
  auto renewed = renewal.get();
  EXPECT_TRUE(renewed) << renewed.status().message();
}

}  // namespace
}  // namespace iarelay::testing
