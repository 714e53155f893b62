// Group commit on the PostgreSQL journal (PgWriter): many callers share commits, a failing
// operation fails alone, a caller is told only once its commit is visible to another relay,
// and a restarted server is reconnected to.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_notifier.h"
#include "journal/pg/pg_writer.h"

#include "support/pg_cluster.h"
#include "support/process.h"

namespace iarelay::testing {
namespace {

NewWebhook webhook(const std::string& id) {
  NewWebhook w;
  w.id = id;
  w.received_at = 1'800'000'000'000;
  w.service = "hpnnmi";
  w.type = "status";
  w.assigned_agent = "a1";
  w.payload = R"({"status":"active"})";
  return w;
}

class PgWriterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cluster_.error(), ""); }
  std::string count_rows() { return cluster_.psql("SELECT count(*) FROM webhooks"); }
  PgCluster cluster_;
};

TEST_F(PgWriterTest, ManyCallersShareCommitsAndEachIsToldOnceItsRowIsVisible) {
  auto writer = PgWriter::open(cluster_.uri());
  ASSERT_TRUE(writer) << writer.status().message();
  auto reader = PgConnection::connect(cluster_.uri());
  ASSERT_TRUE(reader);
  constexpr int kThreads = 8, kEach = 250;
  std::atomic<int> ok{0}, invisible{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < kThreads; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string id = "01T" + std::to_string(t) + "-" + std::to_string(i);
        Status s = (*writer)->run([&](JournalTx& j) { j.insert_webhook(webhook(id)); });
        if (s) ++ok;
      }
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(ok.load(), kThreads * kEach);
  EXPECT_EQ(count_rows(), std::to_string(kThreads * kEach));
  auto stats = (*writer)->stats();
  EXPECT_EQ(stats.ops, static_cast<std::uint64_t>(kThreads * kEach));
  EXPECT_LT(stats.commits, stats.ops) << "no commit was shared";
  // Told after COMMIT returned: another connection sees the row at once.
  std::promise<void> checked;
  (*writer)->submit([](JournalTx& j) { j.insert_webhook(webhook("01VISIBLE")); },
                    [&](const Status& s) {
                      EXPECT_TRUE(s) << s.message();
                      auto rows = (*reader)->query("SELECT 1 FROM webhooks WHERE id = '01VISIBLE'");
                      if (!rows || rows->empty()) ++invisible;
                      checked.set_value();
                    });
  checked.get_future().get();
  EXPECT_EQ(invisible.load(), 0);
}

TEST_F(PgWriterTest, AFailingOperationFailsAloneAndTheOthersOfItsBatchCommit) {
  auto writer = PgWriter::open(cluster_.uri());
  ASSERT_TRUE(writer) << writer.status().message();
  // Holds the writer so that the next ten form one batch.
  std::promise<void> release;
  auto gate = release.get_future().share();
  (*writer)->submit([gate](JournalTx&) { gate.wait(); }, nullptr);
  std::vector<std::future<Status>> results;
  for (int i = 0; i < 10; ++i) {
    auto p = std::make_shared<std::promise<Status>>();
    results.push_back(p->get_future());
    (*writer)->submit(
        [i](JournalTx& j) {
          j.insert_webhook(webhook("01B" + std::to_string(i)));
          if (i == 4) throw std::runtime_error("this one fails");
        },
        [p](const Status& s) { p->set_value(s); });
  }
  release.set_value();
  for (int i = 0; i < 10; ++i) {
    Status s = results[i].get();
    EXPECT_EQ(static_cast<bool>(s), i != 4) << i << ": " << s.message();
  }
  EXPECT_EQ(count_rows(), "9");
  EXPECT_EQ(cluster_.psql("SELECT count(*) FROM webhooks WHERE id = '01B4'"), "0");
}

TEST_F(PgWriterTest, InsertsOfOneBatchAreToldTheirOwnOutcomes) {
  auto writer = PgWriter::open(cluster_.uri());
  ASSERT_TRUE(writer) << writer.status().message();
  std::promise<void> release;
  auto gate = release.get_future().share();
  (*writer)->submit([gate](JournalTx&) { gate.wait(); }, nullptr);  // the rest: one batch
  std::vector<std::future<std::pair<Status, InsertOutcome>>> results;
  for (int i = 0; i < 6; ++i) {
    NewWebhook w = webhook("01I" + std::to_string(i));
    if (i % 2) w.idempotency_key = "k";  // 1 stored, 3 and 5 its duplicates
    auto p = std::make_shared<std::promise<std::pair<Status, InsertOutcome>>>();
    results.push_back(p->get_future());
    (*writer)->submit_insert(std::move(w), [p](const Status& s, const InsertOutcome& o) {
      p->set_value({s, o});
    });
  }
  release.set_value();
  std::vector<std::string> ids;
  for (auto& f : results) {
    auto [s, o] = f.get();
    EXPECT_TRUE(s) << s.message();
    ids.push_back(o.id + (o.duplicate ? "=dup" : ""));
  }
  EXPECT_EQ(ids,
            (std::vector<std::string>{"01I0", "01I1", "01I2", "01I1=dup", "01I4", "01I1=dup"}));
  EXPECT_EQ(count_rows(), "4");
  EXPECT_LE((*writer)->stats().commits, 2u);
}

// Review: an intake insert shares its batch with an operation that catches the error of one of
// its statements (a per-item guard) and returns. PostgreSQL aborted the batch's transaction; its
// COMMIT answers ROLLBACK with no error; the intake is told its webhook is stored (it answers
// 2xx) and the webhook is not in the journal.
TEST_F(PgWriterTest, AnInsertToldStoredIsStoredWhateverAnotherOperationOfItsBatchDid) {
  auto writer = PgWriter::open(cluster_.uri());
  ASSERT_TRUE(writer) << writer.status().message();
  std::promise<void> release;
  auto gate = release.get_future().share();
  (*writer)->submit([gate](JournalTx&) { gate.wait(); }, nullptr);  // the rest: one batch
  auto told = std::make_shared<std::promise<std::pair<Status, InsertOutcome>>>();
  auto told_future = told->get_future();
  (*writer)->submit_insert(webhook("01ACKED"), [told](const Status& s, const InsertOutcome& o) {
    told->set_value({s, o});
  });
  auto other = std::make_shared<std::promise<Status>>();
  auto other_future = other->get_future();
  (*writer)->submit(
      [](JournalTx& j) {
        try {
          AttemptRecord a;
          a.webhook_id = "01OTHER";
          a.attempt = 1;
          a.agent = "a1";
          a.outcome = "no-such-outcome";  // refused by the table's check
          j.record_attempt(a);
        } catch (const std::exception&) {
          // this item fails alone
        }
      },
      [other](const Status& s) { other->set_value(s); });
  release.set_value();
  auto [s, outcome] = told_future.get();
  EXPECT_FALSE(other_future.get());  // the operation whose statement failed fails
  ASSERT_TRUE(s) << s.message();
  EXPECT_FALSE(outcome.duplicate);
  EXPECT_EQ(cluster_.psql("SELECT count(*) FROM webhooks WHERE id = '01ACKED'"), "1")
      << "told stored (seq " << outcome.seq << "), not in the journal";
}

// Review: callers are told "durable" on the strength of synchronous_commit = on being the
// server's default; the writer's session does not ask for it. A database (or role) set to
// synchronous_commit = off, a usual tuning, acknowledges webhooks that a crash then loses.
TEST_F(PgWriterTest, AWebhookToldStoredSurvivesACrashWhateverTheDatabasesCommitSetting) {
  ASSERT_EQ(cluster_.psql("ALTER SYSTEM SET wal_writer_delay = '10s'"), "");
  ASSERT_EQ(cluster_.psql("SELECT pg_reload_conf()"), "t");
  ASSERT_EQ(cluster_.psql("ALTER DATABASE postgres SET synchronous_commit = off"), "");
  int told = 0;
  {
    auto writer = PgWriter::open(cluster_.uri());
    ASSERT_TRUE(writer) << writer.status().message();
    for (int i = 0; i < 50; ++i) {
      std::string id = "01C" + std::to_string(i);
      if ((*writer)->run([&](JournalTx& j) { j.insert_webhook(webhook(id)); })) ++told;
    }
    ASSERT_EQ(cluster_.stop("immediate"), "");  // the primary crashes
  }
  ASSERT_EQ(cluster_.start(), "");
  EXPECT_EQ(told, 50);
  EXPECT_EQ(count_rows(), std::to_string(told)) << "webhooks told stored were lost";
}

// Review: retention's lock (a relay purging holds it for the whole purge) was the key every
// inserting transaction takes in turn, so intake stopped on every relay while one purged.
TEST_F(PgWriterTest, InsertsDoNotWaitForARelayHoldingTheRetentionLock) {
  auto purging = PgConnection::connect(cluster_.uri());
  ASSERT_TRUE(purging);
  auto writer = PgWriter::open(cluster_.uri() + "?options=-c%20lock_timeout%3D500");
  ASSERT_TRUE(writer) << writer.status().message();
  auto held =
      (*purging)->query("SELECT pg_try_advisory_lock(" + std::to_string(kRetentionLockKey) + ")");
  ASSERT_TRUE(held && (*held)[0][0] == "t");
  Status s = (*writer)->run([](JournalTx& j) { j.insert_webhook(webhook("01RETAIN")); });
  EXPECT_TRUE(s) << s.message();
  EXPECT_EQ(count_rows(), "1");
}

// Review: while the server refused its connection, each announcement made the notifier try
// again at once (a core at 100%, a connection storm); it tries once a second, and sends what
// was announced meanwhile once connected.
TEST_F(PgWriterTest, TheNotifierTriesOnceASecondWhileTheServerIsDownThenAnnounces) {
  std::atomic<int> heard{0};
  auto notifier = PgNotifier::start(cluster_.uri(), [&] { ++heard; });
  ASSERT_TRUE(notifier);
  auto other = PgNotifier::start(cluster_.uri(), [] {});
  ASSERT_TRUE(other);
  ASSERT_EQ(cluster_.stop("immediate"), "");
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2500)) {
    (*notifier)->announce();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LE((*notifier)->connects(), 5u) << "tried again at every announcement";
  EXPECT_EQ((*notifier)->sent(), 0u);
  ASSERT_EQ(cluster_.start(), "");
  EXPECT_TRUE(wait_until([&] { return (*notifier)->sent() >= 1; }, std::chrono::seconds(10)))
      << "what was announced while down was never sent";
  // The other one may be listening again only after that: announced until it hears one.
  EXPECT_TRUE(wait_until(
      [&] {
        (*notifier)->announce();
        return (*other)->heard() >= 1;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(heard.load(), 0) << "heard its own notification";
}

TEST_F(PgWriterTest, AServerRestartFailsTheBatchInFlightAndTheNextOneReconnects) {
  auto writer = PgWriter::open(cluster_.uri());
  ASSERT_TRUE(writer) << writer.status().message();
  ASSERT_TRUE((*writer)->run([](JournalTx& j) { j.insert_webhook(webhook("01R0")); }));
  ASSERT_EQ(cluster_.stop("immediate"), "");
  ASSERT_EQ(cluster_.start(), "");
  // The first batch after the restart finds its connection gone (Unavailable, never "ok");
  // the writer connects again for the next.
  Status first = (*writer)->run([](JournalTx& j) { j.insert_webhook(webhook("01R1")); });
  if (!first) {
    EXPECT_EQ(first.kind(), StatusKind::kUnavailable) << first.message();
  }
  Status second = (*writer)->run([](JournalTx& j) { j.insert_webhook(webhook("01R2")); });
  EXPECT_TRUE(second) << second.message();
  EXPECT_GE((*writer)->stats().reconnects, 1u);
  EXPECT_EQ(cluster_.psql("SELECT count(*) FROM webhooks WHERE id IN ('01R0', '01R2')"), "2");
}

}  // namespace
}  // namespace iarelay::testing
