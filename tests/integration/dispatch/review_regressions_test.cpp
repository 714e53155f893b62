// Regressions from the review of the dispatcher's walk past the head window: a reload that
// turns `ordering = event` into `fifo` while that walk is pending must not let a webhook go past
// a backing-off head; errors before a call is made (reading the payload) must not spend the
// webhook's budget of real attempts (docs/operations.md: max_attempts counts real attempts).
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/crypto.h"
#include "common/metrics.h"
#include "common/time.h"
#include "dispatch/dispatcher.h"
#include "journal/journal.h"
#include "journal/maintenance.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"
#include "relay_harness.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {
using namespace std::chrono_literals;

using testing::wait_until;

class Sink {
 public:
  explicit Sink(const testing::TempDir& dir)
      : port_(testing::free_port()), record_(dir.file("sink.jsonl")) {
    std::vector<std::string> argv = {testing::bin("iarelay-sink"),
                                     "--listen=127.0.0.1:" + std::to_string(port_),
                                     "--record=" + record_};
    process_ = std::make_unique<testing::Process>(argv, dir.file("sink.out"), dir.file("sink.err"));
    EXPECT_TRUE(testing::wait_for_port(port_));
  }
  ~Sink() {
    process_->signal(SIGTERM);
    process_->wait();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/apia_callback"; }
  std::vector<nlohmann::json> records() const {
    std::vector<nlohmann::json> out;
    std::ifstream in(record_);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
  }

 private:
  int port_;
  std::string record_;
  std::unique_ptr<testing::Process> process_;
};

AgentConfig agent(const std::string& id, const std::string& callback, Ordering ordering) {
  AgentConfig a;
  a.handle = id;
  a.id = id;
  a.callback = callback;
  a.services = {"svc"};
  a.format = AgentFormat::kRaw;
  a.max_inflight = 4;
  a.timeout = 2'000;
  a.down_after = 3;
  a.max_attempts = 25;
  a.backoff_initial = 100;
  a.backoff_max = 1'000;
  a.ordering = ordering;
  return a;
}

class Relay : public testing::DispatchRelay {
 public:
  using DispatchRelay::DispatchRelay;
  void store_backing_off(int count) {
    ASSERT_TRUE(writer_->run([&](SQLite::Database& db) {
      for (int i = 0; i < count; ++i) {
        NewWebhook w;
        w.id = new_webhook_id();
        w.received_at = now_millis();
        w.service = "svc";
        w.agent = "a";
        w.type = "status";
        w.event_id = "old-" + std::to_string(i);
        w.state = WebhookState::kQueued;
        w.assigned_agent = "a";
        w.payload = R"({"eventIdentifier": 1})";
        insert_webhook(db, w);
        TransitionFields f;
        f.next_attempt_at = std::optional<Millis>(now_millis() + 3'600'000);
        transition(db, w.id, WebhookState::kQueued, WebhookState::kQueued, f);
      }
    }));
  }
  // A queued row inserted by raw SQL while the payload column is renamed.
  std::string enqueue_raw_after_rename() {
    std::string id = new_webhook_id();
    EXPECT_TRUE(writer_->run([&](SQLite::Database& db) {
      SQLite::Statement q(db,
                          "INSERT INTO webhooks (id, source, received_at, service, agent, type, "
                          "event_id, state, assigned_agent, attempts, moved_away) VALUES "
                          "(?, 'direct', ?, 'svc', 'a', 'status', 'e1', 'queued', 'a', 0, ?)");
      q.bind(1, id);
      q.bind(2, format_time(now_millis()));
      q.bind(3, std::string(R"({"eventIdentifier": 3})"));
      q.exec();
    }));
    return id;
  }
  // A webhook of `event` queued for agent "a".
  static NewWebhook queued_for_a(const std::string& event) {
    NewWebhook w;
    w.id = new_webhook_id();
    w.received_at = now_millis();
    w.service = "svc";
    w.agent = "a";
    w.type = "status";
    w.event_id = event;
    w.state = WebhookState::kQueued;
    w.assigned_agent = "a";
    w.payload = R"({"eventIdentifier": 2})";
    return w;
  }
  std::string enqueue(const std::string& event) {
    NewWebhook w = queued_for_a(event);
    EXPECT_TRUE(writer_->run([&](SQLite::Database& db) { insert_webhook(db, w); }));
    return w.id;
  }
  // As intake stores a webhook: submit_append, whose commit wakes the dispatcher with
  // appends_only (it then reads only the rows past those it has seen). `backing_off`: due in
  // an hour.
  std::string append(const std::string& event, bool backing_off = false) {
    NewWebhook w = queued_for_a(event);
    std::promise<Status> done;
    writer_->submit_append(
        [&w, backing_off](SQLite::Database& db) {
          insert_webhook(db, w);
          if (!backing_off) return;
          TransitionFields f;
          f.next_attempt_at = std::optional<Millis>(now_millis() + 3'600'000);
          transition(db, w.id, WebhookState::kQueued, WebhookState::kQueued, f);
        },
        [&done](const Status& s) { done.set_value(s); });
    EXPECT_TRUE(done.get_future().get());
    return w.id;
  }
  // `count` rows of alert `event` already delivered by agent "a" (an alert's history: the
  // journal keeps delivered rows until retention or a purge removes them).
  void store_history(const std::string& event, int count) {
    ASSERT_TRUE(writer_->run([&](SQLite::Database& db) {
      SQLite::Statement q(db,
                          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<?) "
                          "INSERT INTO webhooks (id, source, received_at, service, agent, type, "
                          "event_id, state, assigned_agent, attempts, payload) SELECT 'hist-' || "
                          "? || '-' || i, 'direct', ?, 'svc', 'a', 'status', ?, 'delivered', 'a', "
                          "1, '{}' FROM n");
      q.bind(1, count);
      q.bind(2, event);
      q.bind(3, format_time(now_millis()));
      q.bind(4, event);
      q.exec();
    }));
  }
  // As `iarelay resend ID` does it, from another process: its own connection, so no commit
  // listener hears it (the dispatcher sees it through PRAGMA data_version, every 250 ms).
  void resend_elsewhere(const std::string& id) {
    auto db = open_journal_for_write(path_, SyncLevel::kNormal);
    ASSERT_TRUE(db) << db.status().message();
    WebhookFilter f;
    f.ids = {id};
    auto n = resend(**db, f, std::nullopt);
    ASSERT_TRUE(n) << n.status().message();
    EXPECT_EQ(*n, 1);
  }
  // Every row but the oldest comes due (their retry time passed); the oldest still backs off.
  void all_but_the_head_due() {
    ASSERT_TRUE(writer_->run([&](SQLite::Database& db) {
      db.exec(
          "UPDATE webhooks SET next_attempt_at=NULL WHERE seq > (SELECT min(seq) FROM webhooks)");
    }));
  }
  int delivered() {
    SQLite::Statement q(*reader_, "SELECT count(*) FROM webhooks WHERE state='delivered'");
    q.executeStep();
    return q.getColumn(0).getInt();
  }
  int attempt_rows(const std::string& id) {
    SQLite::Statement q(*reader_, "SELECT count(*) FROM attempts WHERE webhook_id=?");
    q.bind(1, id);
    q.executeStep();
    return q.getColumn(0).getInt();
  }
  int attempts(const std::string& id) {
    SQLite::Statement q(*reader_, "SELECT attempts FROM webhooks WHERE id=?");
    q.bind(1, id);
    return q.executeStep() ? q.getColumn(0).getInt() : -1;
  }
  std::string state(const std::string& id) {
    SQLite::Statement q(*reader_, "SELECT state FROM webhooks WHERE id=?");
    q.bind(1, id);
    return q.executeStep() ? q.getColumn(0).getString() : "";
  }
};

// Control: with fifo from the start, nothing goes while the head backs off.
TEST(Dispatch, FifoHoldsBehindABackingOffHead) {
  testing::TempDir dir;
  Sink sink(dir);
  Relay relay(dir);
  relay.store_backing_off(5'000);
  relay.start({agent("a", sink.url(), Ordering::kFifo)});
  std::this_thread::sleep_for(500ms);
  relay.all_but_the_head_due();
  EXPECT_FALSE(wait_until([&] { return relay.delivered() > 0; }, 4s))
      << "fifo: " << relay.delivered() << " delivered while the head webhook backs off";
}

// The same queue, but the agent ran with ordering = event (more than one window of rows, all
// backing off: the walk past the head window found nothing and is pending) before a reload
// (SIGHUP) switched it to fifo.
TEST(Dispatch, FifoHoldsAfterAReloadFromEventOrdering) {
  testing::TempDir dir;
  Sink sink(dir);
  Relay relay(dir);
  relay.store_backing_off(5'000);
  relay.start({agent("a", sink.url(), Ordering::kEvent)});
  std::this_thread::sleep_for(500ms);  // the walk past the head ran and found nothing: pending
  relay.reload({agent("a", sink.url(), Ordering::kFifo)});
  relay.all_but_the_head_due();
  EXPECT_FALSE(wait_until([&] { return relay.delivered() > 0; }, 4s))
      << "fifo: " << relay.delivered() << " delivered while the head webhook backs off";
}

// A read error of the dispatcher's own connection while preparing the call (here the payload
// column renamed away by an operator's SQL, as in Dispatch.JournalReadErrorsDoNotStopDeliveries)
// makes no call: with max_attempts = 3 the webhook must not end `failed` however long the fault
// lasts, and once it is gone it is delivered as attempt 1 (X-Iarelay-Attempt stays consecutive).
TEST(Dispatch, LocalErrorsDoNotSpendTheAttemptBudget) {
  testing::TempDir dir;
  Sink sink(dir);
  Relay relay(dir);
  auto a = agent("a", sink.url(), Ordering::kEvent);
  a.max_attempts = 3;
  relay.start({a});
  std::string warmup = relay.enqueue("w");
  ASSERT_TRUE(wait_until([&] { return relay.state(warmup) == "delivered"; }, 10s));
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    db.exec("ALTER TABLE webhooks RENAME COLUMN payload TO moved_away");
  }));
  std::string id = relay.enqueue_raw_after_rename();
  bool failed = wait_until([&] { return relay.state(id) == "failed"; }, 8s);
  EXPECT_FALSE(failed) << "failed with " << relay.attempt_rows(id)
                       << " attempt rows (calls made) after a local read error";
  EXPECT_EQ(relay.attempt_rows(id), 0);
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    db.exec("ALTER TABLE webhooks RENAME COLUMN moved_away TO payload");
  }));
  // The local backoff is at most 5 s.
  EXPECT_TRUE(wait_until([&] { return relay.state(id) == "delivered"; }, 10s))
      << "state " << relay.state(id);
  EXPECT_EQ(relay.attempts(id), 1);
  EXPECT_EQ(relay.attempt_rows(id), 1);
  int calls = 0;
  for (const auto& r : sink.records())
    if (r["webhook_id"] == id) {
      ++calls;
      EXPECT_EQ(r["attempt"], "1");
    }
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace iarelay

namespace iarelay {
namespace {

// Webhooks stored by intake (Writer::submit_append) wake the dispatcher to read only the rows
// past those its last walk saw (fill_new_rows), not to walk the queue from its head. Such a
// row must still wait behind an earlier webhook of its alert that backs off or is held, which
// that read does not see. Several rounds: the dispatcher's own check of the journal (every
// 250 ms) walks the whole queue, so a round may take the full walk instead. The check reads
// the agent's queue when it is short; in a long one (`rows_ahead` rows of other alerts backing
// off ahead) such a row sends the dispatcher to walk the queue from its head. Each test was seen
// failing with its check removed from fill_new_rows.
void an_earlier_webhook_holds_the_alerts_new_ones(int rows_ahead, bool held) {
  testing::TempDir dir;
  Sink sink(dir);
  Relay relay(dir);
  relay.store_backing_off(rows_ahead);
  relay.start({agent("a", sink.url(), Ordering::kEvent)});
  std::string head = relay.append("e1", /*backing_off=*/true);
  if (held) {
    ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
      SQLite::Statement q(db, "UPDATE webhooks SET state='held', next_attempt_at=NULL WHERE id=?");
      q.bind(1, head);
      q.exec();
    }));
  }
  std::vector<std::string> later, others;
  for (int round = 0; round < 10; ++round) {
    std::this_thread::sleep_for(60ms);
    later.push_back(relay.append("e1"));
    others.push_back(relay.append("other-" + std::to_string(round)));
  }
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& id : others)
          if (relay.state(id) != "delivered") return false;
        return true;
      },
      10s))
      << "webhooks of other alerts were not delivered";
  for (const auto& id : later)
    EXPECT_EQ(relay.state(id), "queued") << "sent before the earlier webhook of its alert";
  EXPECT_EQ(relay.state(head), held ? "held" : "queued");
}

TEST(NewRows, AWebhookStoredBehindABackingOffOneOfItsAlertWaits) {
  an_earlier_webhook_holds_the_alerts_new_ones(0, false);
}

TEST(NewRows, AWebhookStoredBehindABackingOffOneOfItsAlertWaitsInALongQueue) {
  an_earlier_webhook_holds_the_alerts_new_ones(300, false);
}

TEST(NewRows, AWebhookStoredBehindAHeldOneOfItsAlertWaits) {
  an_earlier_webhook_holds_the_alerts_new_ones(0, true);
}

}  // namespace
}  // namespace iarelay

namespace iarelay {
namespace {

// Review of the new-row reads (review9). In a long queue (more than kShortQueue rows: here 300
// of other alerts backing off) fill_new_rows checked each new row against earlier queued
// webhooks of its alert through the event index, which holds every row the alert ever had:
// the journal keeps delivered rows until retention (`retain_delivered`, empty by default:
// forever) or a purge. Each webhook of an alert with a long history then costs a read of that
// whole history on the dispatcher thread, which serves every agent (here 400k delivered rows:
// about 100 ms per webhook where a walk of the queue's head window costs well under 1 ms).
// Forty webhooks of that alert, one after the other, each stored once the one before it was
// delivered, against forty of an alert without history in the same queue, in the same run (a
// ratio, not a time: sanitizers and a loaded machine slow both alike). Seen failing: 4.2 s for
// the forty (0.8 s with a long queue walked from its head), about 5 times the control.
TEST(NewRows, AnAlertsLongHistoryDoesNotSlowItsNewWebhooksInALongQueue) {
  testing::TempDir dir;
  Sink sink(dir);
  Relay relay(dir);
  relay.store_backing_off(300);
  relay.store_history("big", 400'000);
  relay.start({agent("a", sink.url(), Ordering::kEvent)});
  std::string warmup = relay.append("warmup");
  ASSERT_TRUE(wait_until([&] { return relay.state(warmup) == "delivered"; }, 10s));
  constexpr int kN = 40;
  auto forty = [&](const std::string& event) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kN; ++i) {
      std::string id = relay.append(event);
      EXPECT_TRUE(wait_until([&] { return relay.state(id) == "delivered"; }, 60s)) << i;
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0)
        .count();
  };
  const auto small = forty("small");
  const auto big = forty("big");
  std::cout << "[ info ] " << kN << " webhooks of an alert with 400k delivered rows: " << big
            << " ms; of an alert without history: " << small << " ms\n";
  EXPECT_LT(big, 2 * small + 200) << "each new webhook read its alert's whole history";
}

}  // namespace
}  // namespace iarelay

namespace iarelay {
namespace {

// Review of the new-row reads (review9): a webhook resent by `iarelay resend` (another
// process: no wake-up; its old seq is behind the rows the last walk saw) and, right after it,
// a new webhook of the same alert stored by intake, with a webhook of another alert backing
// off in between (the last walk saw the queue up to it). The new one's wake-up reads only rows
// past those seen, and checks the new one against the queue, where the resent one waits: the
// resent one goes first. Several rounds, as the dispatcher's own 250 ms check of the journal may
// take the resend first (then the full walk orders them). Seen failing with the check against the
// queue removed from fill_new_rows.
TEST(NewRows, AWebhookResentByAnotherProcessGoesBeforeANewOneOfItsAlert) {
  testing::TempDir dir;
  Sink sink(dir);
  Relay relay(dir);
  relay.start({agent("a", sink.url(), Ordering::kEvent)});
  for (int round = 0; round < 6; ++round) {
    const std::string event = "r" + std::to_string(round);
    std::string resent = relay.append(event);
    ASSERT_TRUE(wait_until([&] { return relay.state(resent) == "delivered"; }, 10s));
    // A row of another alert, backing off, past it: the last walk saw the queue up to there.
    relay.append("blocker-" + std::to_string(round), /*backing_off=*/true);
    std::this_thread::sleep_for(100ms);
    relay.resend_elsewhere(resent);
    std::string later = relay.append(event);
    ASSERT_TRUE(wait_until(
        [&] { return relay.state(resent) == "delivered" && relay.state(later) == "delivered"; },
        10s))
        << "round " << round << ": " << relay.state(resent) << ", " << relay.state(later);
    int calls_of_resent = 0;
    bool later_first = false;
    for (const auto& r : sink.records()) {
      if (r["webhook_id"] == resent) ++calls_of_resent;
      if (r["webhook_id"] == later && calls_of_resent < 2) later_first = true;
    }
    EXPECT_EQ(calls_of_resent, 2) << "round " << round;
    EXPECT_FALSE(later_first) << "round " << round
                              << ": the new webhook went before the resent one of its alert";
  }
}

}  // namespace
}  // namespace iarelay
