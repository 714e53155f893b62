// The journal backend seam's conformance suite (issue 15): every test runs on the SQLite journal
// and on the PostgreSQL one (a database of its own in one throwaway cluster), through
// JournalBackend, and expects the same outcomes and rows of both.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <stdexcept>
#include <thread>

#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/journal_writer.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_writer.h"
#include "journal/writer.h"

#include "support/pg_cluster.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

constexpr Millis kT0 = 1'800'000'000'000;

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  // One cluster for the suite's PostgreSQL tests, started by the first (ctest runs each test
  // in a process of its own: the SQLite ones start none).
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    if (GetParam() == "sqlite") {
      auto db = open_journal_for_write(dir_.file("journal.db"), SyncLevel::kNormal);
      ASSERT_TRUE(db) << db.status().message();
      lite_ = std::move(*db);
      ASSERT_TRUE(migrate(*lite_));
      backend_ = sqlite_backend(*lite_);
    } else {
      if (!cluster_) cluster_ = new PgCluster();
      ASSERT_EQ(cluster_->error(), "");
      static std::atomic<int> n{0};
      database_ = "conformance_" + std::to_string(++n);
      // Under a collation that is not C (as most databases are): text order is not byte order.
      ASSERT_EQ(cluster_->psql("CREATE DATABASE " + database_ +
                               " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und'"),
                "");
      pg_ = connect();
      ASSERT_TRUE(pg_);
      ASSERT_TRUE(pg_migrate(*pg_));
      backend_ = pg_backend(*pg_);
    }
  }

  std::unique_ptr<PgConnection> connect() {
    auto c = PgConnection::connect(cluster_->uri(database_));
    EXPECT_TRUE(c) << c.status().message();
    return c ? std::move(*c) : nullptr;
  }

  // Runs `op` in one transaction; fails the test when it does not commit.
  void tx(const std::function<void(JournalTx&)>& op) {
    Status s = backend_->transact(op);
    ASSERT_TRUE(s) << s.message();
  }

  static NewWebhook webhook(const std::string& id, const std::string& service = "hpnnmi") {
    NewWebhook w;
    w.id = id;
    w.received_at = kT0;
    w.service = service;
    w.type = "status";
    w.event_id = "ev-1";
    w.assigned_agent = "a1";
    w.payload = R"({"status":"active"})";
    return w;
  }

  InsertOutcome insert(const NewWebhook& w) {
    InsertOutcome out;
    tx([&](JournalTx& j) { out = j.insert_webhook(w); });
    return out;
  }

  std::vector<std::string> queue_ids(const std::optional<std::string>& agent,
                                     std::int64_t after = 0, int limit = 100) {
    std::vector<std::string> ids;
    tx([&](JournalTx& j) {
      for (const auto& w : j.scan_queue(agent, after, limit)) ids.push_back(w.id);
    });
    return ids;
  }

  // One value of the journal, as text ("" for NULL or no row), read outside the seam.
  std::string scalar(const std::string& sql) {
    if (GetParam() == "sqlite") {
      SQLite::Statement q(*lite_, sql);
      if (!q.executeStep() || q.getColumn(0).isNull()) return "";
      return q.getColumn(0).getString();
    }
    auto rows = pg_->query(sql);
    EXPECT_TRUE(rows) << rows.status().message();
    if (!rows || rows->empty() || !(*rows)[0][0]) return "";
    return *(*rows)[0][0];
  }

  // PostgreSQL: this relay's transaction runs `before` and inserts `first_id`, and, while it is
  // open, a second relay inserts `second_id` and a reader scans the queue. Expects the second
  // webhook not to be visible before the first is committed, and the seqs in that order.
  void expect_seqs_visible_in_order(const std::function<void(JournalTx&)>& before,
                                    const std::string& first_id, const std::string& second_id) {
    auto other = connect();
    ASSERT_TRUE(other);
    auto second = pg_backend(*other);
    auto reader_connection = connect();
    ASSERT_TRUE(reader_connection);
    auto reader = pg_backend(*reader_connection);
    std::future<InsertOutcome> later;
    InsertOutcome first;
    std::vector<std::string> seen_meanwhile;
    Status s = backend_->transact([&](JournalTx& j) {
      before(j);
      first = j.insert_webhook(webhook(first_id));
      later = std::async(std::launch::async, [&] {
        InsertOutcome out;
        Status s2 =
            second->transact([&](JournalTx& j2) { out = j2.insert_webhook(webhook(second_id)); });
        EXPECT_TRUE(s2) << s2.message();
        return out;
      });
      later.wait_for(std::chrono::milliseconds(300));
      // What a dispatcher or a feed reads meanwhile.
      EXPECT_TRUE(reader->read([&](JournalTx& r) {
        for (const auto& w : r.scan_queue(std::string("a1"), 0, 10)) seen_meanwhile.push_back(w.id);
      }));
    });
    ASSERT_TRUE(s) << s.message();
    InsertOutcome second_out = later.get();
    EXPECT_TRUE(seen_meanwhile.empty())
        << "the second relay's webhook (seq " << second_out.seq
        << ") was visible while the first's (seq " << first.seq << ") was not yet committed";
    EXPECT_LT(first.seq, second_out.seq);
  }

  // The backend's group-commit writer on the same journal.
  std::unique_ptr<JournalWriter> open_writer() {
    if (GetParam() == "sqlite") {
      auto w = Writer::open(dir_.file("journal.db"), SyncLevel::kFull);
      EXPECT_TRUE(w) << w.status().message();
      return w ? std::move(*w) : nullptr;
    }
    auto w = PgWriter::open(cluster_->uri(database_));
    EXPECT_TRUE(w) << w.status().message();
    return w ? std::move(*w) : nullptr;
  }

  static PgCluster* cluster_;
  TempDir dir_;
  DatabasePtr lite_;
  std::string database_;
  std::unique_ptr<PgConnection> pg_;
  std::unique_ptr<JournalBackend> backend_;
};
PgCluster* Conformance::cluster_ = nullptr;

std::string backend_name(const ::testing::TestParamInfo<std::string>& param) {
  return param.param;
}

TEST_P(Conformance, ARepeatedIdempotencyKeyOfAServiceIsTheWebhookStoredFirst) {
  NewWebhook first = webhook("01A"), again = webhook("01B"), other = webhook("01C", "remedy");
  first.idempotency_key = again.idempotency_key = other.idempotency_key = "k-1";
  auto a = insert(first), b = insert(again), c = insert(other);
  EXPECT_FALSE(a.duplicate);
  EXPECT_TRUE(b.duplicate);
  EXPECT_EQ(b.id, "01A");
  EXPECT_EQ(b.seq, a.seq);
  EXPECT_EQ(b.state, WebhookState::kQueued);
  EXPECT_FALSE(c.duplicate);  // keys are per service
  EXPECT_GT(c.seq, a.seq);
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01A", "01C"}));
}

TEST_P(Conformance, ABatchOfInsertsIsEachInsertInTurn) {
  NewWebhook stored = webhook("01S0");
  stored.idempotency_key = "k-stored";
  insert(stored);
  std::vector<NewWebhook> batch = {webhook("01S1"), webhook("01S2"), webhook("01S3"),
                                   webhook("01S4"), webhook("01S5")};
  batch[1].idempotency_key = "k-new";
  batch[3].idempotency_key = "k-new";     // a duplicate of one earlier in the same batch
  batch[2].idempotency_key = "k-stored";  // of one stored before
  batch[4].source = "edge";               // a feed message keeping its upstream's id
  batch[4].source_id = "01S5";
  std::vector<InsertOutcome> out;
  tx([&](JournalTx& j) { out = j.insert_webhooks(batch); });
  ASSERT_EQ(out.size(), batch.size());
  EXPECT_FALSE(out[0].duplicate);
  EXPECT_FALSE(out[1].duplicate);
  EXPECT_TRUE(out[2].duplicate);
  EXPECT_EQ(out[2].id, "01S0");
  EXPECT_TRUE(out[3].duplicate);
  EXPECT_EQ(out[3].id, "01S2");
  EXPECT_EQ(out[3].seq, out[1].seq);
  EXPECT_FALSE(out[4].duplicate);
  EXPECT_EQ(out[4].id, "01S5");
  EXPECT_LT(out[0].seq, out[1].seq);
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01S0", "01S1", "01S2", "01S5"}));
}

TEST_P(Conformance, AFeedMessageIsStoredOnceUnderItsUpstreamsId) {
  NewWebhook m = webhook("01F");
  m.source = "edge";
  m.source_id = "01F";
  EXPECT_FALSE(insert(m).duplicate);
  EXPECT_TRUE(insert(m).duplicate);
  m.source = "edge-renamed";  // the same webhook come again under another upstream name
  auto again = insert(m);
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.id, "01F");
  // Another webhook already has the id a feed message brings: stored under an id of our own.
  EXPECT_FALSE(insert(webhook("01G")).duplicate);
  NewWebhook clash = webhook("01G");
  clash.source = "edge";
  clash.source_id = "01G";
  auto stored = insert(clash);
  EXPECT_FALSE(stored.duplicate);
  EXPECT_NE(stored.id, "01G");
  EXPECT_EQ(queue_ids("a1").size(), 3u);
}

TEST_P(Conformance, APayloadComesBackByteForByte) {
  NewWebhook w = webhook("01P");
  static const char kBytes[] = "\xef\xbb\xbf {\"a\":\"\xff\xfe\"}\n\0tail";
  w.payload = std::string(kBytes, sizeof kBytes - 1);  // the NUL and "tail" included
  insert(w);
  std::optional<std::string> back;
  tx([&](JournalTx& j) { back = j.load_payload("01P"); });
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, w.payload);
  tx([&](JournalTx& j) { EXPECT_FALSE(j.load_payload("nope")); });
}

TEST_P(Conformance, ATransitionHappensOnlyFromTheStateItLeaves) {
  insert(webhook("01T"));
  TransitionFields claim;
  claim.increment_attempts = true;
  tx([&](JournalTx& j) {
    EXPECT_TRUE(j.transition("01T", WebhookState::kQueued, WebhookState::kInflight, claim));
    EXPECT_FALSE(j.transition("01T", WebhookState::kQueued, WebhookState::kInflight, claim));
  });
  EXPECT_TRUE(queue_ids("a1").empty());
  TransitionFields retry;
  retry.next_attempt_at = std::optional<Millis>(kT0 + 5000);
  retry.last_status = std::optional<int>(503);
  retry.last_error = std::optional<std::string>("busy");
  retry.assigned_agent = std::optional<std::string>("a2");
  tx([&](JournalTx& j) {
    EXPECT_TRUE(j.transition("01T", WebhookState::kInflight, WebhookState::kQueued, retry));
  });
  std::vector<QueuedWebhook> q;
  tx([&](JournalTx& j) { q = j.scan_queue(std::string("a2"), 0, 10); });
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].attempts, 1);
  EXPECT_EQ(q[0].next_attempt_at, kT0 + 5000);
  EXPECT_EQ(q[0].received_at, kT0);
  EXPECT_EQ(q[0].event_id, "ev-1");
  TransitionFields clear;
  clear.next_attempt_at = std::optional<Millis>();
  clear.assigned_agent = std::optional<std::string>();  // held for any agent of its service
  tx([&](JournalTx& j) {
    EXPECT_TRUE(j.transition("01T", WebhookState::kQueued, WebhookState::kQueued, clear));
  });
  tx([&](JournalTx& j) { q = j.scan_queue(std::nullopt, 0, 10); });
  ASSERT_EQ(q.size(), 1u);
  EXPECT_FALSE(q[0].next_attempt_at);
  EXPECT_FALSE(q[0].agent);
}

TEST_P(Conformance, AQueueIsOneAgentsQueuedWebhooksInArrivalOrder) {
  for (const char* id : {"01Q1", "01Q2", "01Q3", "01Q4", "01Q5"}) insert(webhook(id));
  NewWebhook other = webhook("01R1"), any = webhook("01N1");
  other.assigned_agent = "a2";
  any.assigned_agent.reset();
  insert(other);
  insert(any);
  tx([&](JournalTx& j) {
    EXPECT_TRUE(j.transition("01Q2", WebhookState::kQueued, WebhookState::kInflight));
  });
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01Q1", "01Q3", "01Q4", "01Q5"}));
  EXPECT_EQ(queue_ids("a1", 0, 2), (std::vector<std::string>{"01Q1", "01Q3"}));
  std::vector<QueuedWebhook> head;
  tx([&](JournalTx& j) { head = j.scan_queue(std::string("a1"), 0, 2); });
  EXPECT_EQ(queue_ids("a1", head.back().seq), (std::vector<std::string>{"01Q4", "01Q5"}));
  EXPECT_EQ(queue_ids("a2"), std::vector<std::string>{"01R1"});
  EXPECT_EQ(queue_ids(std::nullopt), std::vector<std::string>{"01N1"});
  int requeued = 0;
  tx([&](JournalTx& j) { requeued = j.requeue_inflight(); });
  EXPECT_EQ(requeued, 1);
  EXPECT_EQ(queue_ids("a1").size(), 5u);
}

TEST_P(Conformance, OneAgentsInflightWebhooksGoBackAlone) {
  NewWebhook mine = webhook("01M1"), other = webhook("01O1");
  other.assigned_agent = "a2";
  insert(mine);
  insert(other);
  tx([&](JournalTx& j) {
    EXPECT_TRUE(j.transition("01M1", WebhookState::kQueued, WebhookState::kInflight));
    EXPECT_TRUE(j.transition("01O1", WebhookState::kQueued, WebhookState::kInflight));
  });
  int requeued = 0;
  tx([&](JournalTx& j) { requeued = j.requeue_inflight_of("a1"); });
  EXPECT_EQ(requeued, 1);
  EXPECT_EQ(queue_ids("a1"), std::vector<std::string>{"01M1"});
  EXPECT_TRUE(queue_ids("a2").empty());  // a2's call is still its own
}

TEST_P(Conformance, TheDaemonsAgentStatesLeaveAnOperatorsPauseAlone) {
  tx([&](JournalTx& j) {
    EXPECT_FALSE(j.load_agent("a1"));
    EXPECT_TRUE(j.set_agent_state("a1", "up", std::nullopt, std::nullopt, true));
    EXPECT_TRUE(j.set_agent_state("a1", "paused", std::string("maintenance"), kT0 + 60000, false));
    EXPECT_FALSE(j.set_agent_state("a1", "down", std::string("refused"), std::nullopt, true));
    auto row = j.load_agent("a1");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->state, "paused");
    EXPECT_EQ(row->reason, "maintenance");
    EXPECT_EQ(row->paused_until, kT0 + 60000);
  });
}

TEST_P(Conformance, CursorsAndConsumerAcksNeverGoBack) {
  tx([&](JournalTx& j) {
    EXPECT_EQ(j.load_cursor("edge"), 0);
    j.save_cursor("edge", 10);
    j.save_cursor("edge", 5);
    EXPECT_EQ(j.load_cursor("edge"), 10);
    j.ack_consumer("inner", 7);
    j.ack_consumer("inner", 3);
  });
  if (GetParam() == "sqlite") {
    SQLite::Statement q(*lite_, "SELECT acked_seq FROM consumers WHERE name = 'inner'");
    ASSERT_TRUE(q.executeStep());
    EXPECT_EQ(q.getColumn(0).getInt64(), 7);
  } else {
    auto rows = pg_->query("SELECT acked_seq FROM consumers WHERE name = 'inner'");
    ASSERT_TRUE(rows);
    ASSERT_EQ(rows->size(), 1u);
    EXPECT_EQ((*rows)[0][0], "7");
  }
}

// The poller's rewind (its upstream's journal went back): the cursor goes back, unlike
// save_cursor, and the audit row says from where to where.
TEST_P(Conformance, ARewoundCursorGoesBackAndItsAuditRowSaysFromWhere) {
  tx([&](JournalTx& j) {
    j.save_cursor("edge", 10);
    j.rewind_cursor("edge", 4);
    EXPECT_EQ(j.load_cursor("edge"), 4);
    j.rewind_cursor("inner", 2);  // a cursor not yet stored
    EXPECT_EQ(j.load_cursor("inner"), 2);
    j.add_audit("iarelayd", "cursor-rewind", "edge", 6, R"({"from":10,"to":4})");
    j.add_audit("operator", "resend", "state=failed", 0);
  });
  EXPECT_EQ(scalar("SELECT count(*) FROM audit"), "2");
  EXPECT_EQ(scalar("SELECT actor || '|' || action || '|' || filter || '|' || affected || '|' || "
                   "detail FROM audit WHERE action = 'cursor-rewind'"),
            R"(iarelayd|cursor-rewind|edge|6|{"from":10,"to":4})");
  EXPECT_EQ(scalar("SELECT detail FROM audit WHERE action = 'resend'"), "")
      << "an empty detail is stored as NULL";
  EXPECT_EQ(scalar("SELECT count(*) FROM audit WHERE detail IS NULL"), "1");
}

// The writer seam (JournalWriter) on each backend: an insert is told its own outcome once
// durable (a repeated id: the stored webhook, duplicate), and operations of the seam commit.
TEST_P(Conformance, TheGroupCommitWriterTellsEachInsertItsOutcomeOnceStored) {
  auto writer = open_writer();
  ASSERT_TRUE(writer);
  EXPECT_TRUE(writer->healthy());
  constexpr int kN = 50;
  std::vector<std::promise<std::pair<Status, InsertOutcome>>> told(kN + 1);
  auto keyed = [](const std::string& id, const std::string& key) {
    NewWebhook w = webhook(id);
    w.idempotency_key = key;
    return w;
  };
  for (int i = 0; i < kN; ++i) {
    writer->submit_insert(keyed("01W" + std::to_string(100 + i), "k-" + std::to_string(i)),
                          [&told, i](const Status& s, const InsertOutcome& o) {
                            told[i].set_value({s, o});
                          });
  }
  // The first one's key again (a client's retry): the webhook stored first.
  writer->submit_insert(keyed("01W999", "k-0"), [&told](const Status& s, const InsertOutcome& o) {
    told[kN].set_value({s, o});
  });
  for (int i = 0; i <= kN; ++i) {
    auto [s, o] = told[i].get_future().get();
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ(o.id, "01W" + std::to_string(100 + (i == kN ? 0 : i)));
    EXPECT_EQ(o.duplicate, i == kN) << i;
    EXPECT_EQ(o.state, WebhookState::kQueued);
  }
  std::promise<Status> acked, appended;
  writer->submit_tx([](JournalTx& j) { j.ack_consumer("inner", 9); },
                    [&](const Status& s) { acked.set_value(s); });
  writer->submit_append_tx(
      [](JournalTx& j) {
        j.insert_webhooks({webhook("01W900"), webhook("01W901")});
        j.save_cursor("edge", 77);
      },
      [&](const Status& s) { appended.set_value(s); });
  EXPECT_TRUE(acked.get_future().get());
  EXPECT_TRUE(appended.get_future().get());
  EXPECT_TRUE(writer->wait_durable());
  EXPECT_TRUE(writer->healthy());
  EXPECT_EQ(scalar("SELECT count(*) FROM webhooks"), std::to_string(kN + 2));
  EXPECT_EQ(scalar("SELECT acked_seq FROM consumers WHERE name = 'inner'"), "9");
  EXPECT_EQ(scalar("SELECT seq FROM cursors WHERE name = 'edge'"), "77");
}

// The dispatcher's reads of a queue, through JournalBackend::read, on both backends: one
// queue of several alerts with an inflight and a held webhook among them.
class ConformanceReads : public Conformance {
 protected:
  void SetUp() override {
    Conformance::SetUp();
    if (HasFatalFailure()) return;
    auto add = [&](const std::string& id, const std::string& agent, const std::string& event) {
      NewWebhook w = webhook(id);
      w.assigned_agent = agent;
      w.event_id = event;
      seq_[id] = insert(w).seq;
    };
    add("01R1", "a1", "ev-1");
    add("01R2", "a1", "ev-2");
    add("01R3", "a1", "ev-1");
    add("01R4", "a2", "ev-1");
    add("01R5", "a1", "ev-3");  // inflight below
    add("01R6", "a1", "ev-1");
    add("01R7", "a1", "ev-2");  // held below
    add("01R8", "zz", "ev-8");
    add("01R9", "B", "ev-9");  // "B" < "a1" in byte order, after it in most locales
    tx([&](JournalTx& j) {
      ASSERT_TRUE(j.transition("01R5", WebhookState::kQueued, WebhookState::kInflight));
      ASSERT_TRUE(j.transition("01R7", WebhookState::kQueued, WebhookState::kHeld));
    });
  }

  // Runs `op` through read(); fails the test when it does not end well.
  void read(const std::function<void(JournalTx&)>& op) {
    Status s = backend_->read(op);
    ASSERT_TRUE(s) << s.message();
  }

  std::map<std::string, std::int64_t> seq_;
};

TEST_P(ConformanceReads, TheChainStepsChecksFindTheAlertsQueuedWebhooksAroundASeq) {
  read([&](JournalTx& j) {
    EXPECT_EQ(j.last_queued_seq("a1"), seq_["01R6"]);
    EXPECT_EQ(j.last_queued_seq("nobody"), 0);

    EXPECT_TRUE(j.queued_before("a1", "ev-1", seq_["01R3"]));
    EXPECT_FALSE(j.queued_before("a1", "ev-1", seq_["01R1"]));
    EXPECT_FALSE(j.queued_before("a1", "ev-3", seq_["01R6"])) << "01R5 is inflight";
    EXPECT_FALSE(j.queued_before("a2", "ev-2", seq_["01R9"]));

    auto next = j.next_queued_of_event("a1", "ev-1", seq_["01R1"]);
    ASSERT_TRUE(next);
    EXPECT_EQ(next->id, "01R3");
    EXPECT_EQ(next->seq, seq_["01R3"]);
    EXPECT_EQ(next->event_id, "ev-1");
    EXPECT_EQ(next->service, "hpnnmi");
    EXPECT_EQ(next->type, "status");
    EXPECT_EQ(next->received_at, kT0);
    EXPECT_EQ(next->attempts, 0);
    EXPECT_FALSE(next->next_attempt_at);
    EXPECT_EQ(j.next_queued_of_event("a1", "ev-1", seq_["01R3"])->id, "01R6");
    EXPECT_FALSE(j.next_queued_of_event("a1", "ev-1", seq_["01R6"]));
    EXPECT_FALSE(j.next_queued_of_event("a1", "ev-2", seq_["01R2"])) << "01R7 is held";
    EXPECT_EQ(j.next_queued_of_event("a2", "ev-1", 0)->id, "01R4");

    EXPECT_EQ(j.queued_ahead("a1", seq_["01R6"], 10), 3);
    EXPECT_EQ(j.queued_ahead("a1", seq_["01R6"], 2), 2);
    EXPECT_EQ(j.queued_ahead("a1", seq_["01R1"], 10), 0);

    EXPECT_TRUE(j.queued_of_event_ahead("a1", "ev-2", seq_["01R6"]));
    EXPECT_FALSE(j.queued_of_event_ahead("a1", "ev-3", seq_["01R6"]));

    // The three together, as the chain step asks (PostgreSQL: one statement).
    auto near = j.next_of_alert_near_head("a1", "ev-2", 0, 10);
    ASSERT_TRUE(near);
    EXPECT_EQ(near->id, "01R2");
    EXPECT_EQ(near->seq, seq_["01R2"]);
    EXPECT_EQ(near->event_id, "ev-2");
    EXPECT_EQ(near->received_at, kT0);
    EXPECT_FALSE(j.next_of_alert_near_head("a1", "ev-2", 0, 1))
        << "01R1 is queued ahead of 01R2: not fewer than the walk";
    EXPECT_FALSE(j.next_of_alert_near_head("a1", "ev-1", seq_["01R1"], 10))
        << "01R3 has 01R1 of its alert queued ahead of it";
    EXPECT_FALSE(j.next_of_alert_near_head("a1", "ev-2", seq_["01R2"], 10)) << "01R7 is held";
    EXPECT_FALSE(j.next_of_alert_near_head("a1", "ev-1", seq_["01R6"], 10));
    EXPECT_EQ(j.next_of_alert_near_head("a2", "ev-1", 0, 10)->id, "01R4");

    EXPECT_EQ(j.queued_of_event_within("a1", "ev-2", seq_["01R6"], 10), true);
    EXPECT_EQ(j.queued_of_event_within("a1", "ev-9", seq_["01R6"], 4), false);
    EXPECT_EQ(j.queued_of_event_within("a1", "ev-9", seq_["01R6"], 3), std::nullopt)
        << "three rows read, the limit: not known past them";
  });
}

TEST_P(ConformanceReads, AgentsWithQueuedWebhooksAndHeldOnesAreFoundByIndex) {
  read([&](JournalTx& j) {
    EXPECT_EQ(j.agents_with_queued(), (std::vector<std::string>{"B", "a1", "a2", "zz"}));
    EXPECT_TRUE(j.any_held_webhook());
    // An alert's held webhook stands before its later ones, on any agent.
    EXPECT_TRUE(j.held_before("a1", "ev-2", "hpnnmi", seq_["01R7"] + 1));
    EXPECT_TRUE(j.held_before("a2", "ev-2", "hpnnmi", seq_["01R7"] + 1));
    EXPECT_FALSE(j.held_before("a1", "ev-2", "hpnnmi", seq_["01R7"]));
    EXPECT_FALSE(j.held_before("a1", "ev-2", "remedy", seq_["01R7"] + 1));
    // fifo (no event): any held of this agent.
    EXPECT_TRUE(j.held_before("a1", "", "", seq_["01R9"]));
    EXPECT_FALSE(j.held_before("a2", "", "", seq_["01R9"]));
  });
  tx([](JournalTx& j) {
    ASSERT_TRUE(j.transition("01R7", WebhookState::kHeld, WebhookState::kQueued));
  });
  read([](JournalTx& j) { EXPECT_FALSE(j.any_held_webhook()); });
}

// The queue gauges of /metrics: per agent and state (queued, inflight), how many and the oldest;
// the webhooks waiting for an operator by state.
TEST_P(ConformanceReads, QueueDepthsAndTheOperatorsBacklogCountEachAgentAndState) {
  NewWebhook any = webhook("01RA");
  any.assigned_agent = std::nullopt;  // any agent of its service
  insert(any);
  tx([](JournalTx& j) {
    ASSERT_TRUE(j.transition("01R8", WebhookState::kQueued, WebhookState::kInflight));
    ASSERT_TRUE(j.transition("01R8", WebhookState::kInflight, WebhookState::kFailed));
    ASSERT_TRUE(j.transition("01R9", WebhookState::kQueued, WebhookState::kDiscarded));
  });
  read([](JournalTx& j) {
    std::map<std::pair<std::string, std::string>, std::int64_t> depth;
    for (const QueueDepth& q : j.queue_depths()) {
      EXPECT_EQ(q.oldest_received_at, kT0) << q.agent << " " << q.state;
      EXPECT_TRUE(depth.emplace(std::make_pair(q.agent, q.state), q.webhooks).second)
          << q.agent << " " << q.state << " twice";
    }
    using Key = std::pair<std::string, std::string>;
    EXPECT_EQ(depth, (std::map<Key, std::int64_t>{{{"", "queued"}, 1},
                                                  {{"a1", "inflight"}, 1},
                                                  {{"a1", "queued"}, 4},
                                                  {{"a2", "queued"}, 1}}));
    OperatorBacklog b = j.operator_backlog();
    EXPECT_EQ(b.failed, 1);
    EXPECT_EQ(b.discarded, 1);
    EXPECT_EQ(b.held, 1);
  });
}

TEST_P(ConformanceReads, AgentsComeInByteOrderWithTheirStates) {
  tx([](JournalTx& j) {
    j.set_agent_state("b-agent", "down", std::string("503"), std::nullopt, false);
    j.set_agent_state("a-agent", "paused", std::string("maintenance"), kT0 + 60'000, false);
    j.set_agent_state("C-agent", "up", std::nullopt, std::nullopt, false);
  });
  read([](JournalTx& j) {
    auto agents = j.load_agents();
    ASSERT_EQ(agents.size(), 3u);
    EXPECT_EQ(agents[0].id, "C-agent");
    EXPECT_EQ(agents[1].id, "a-agent");
    EXPECT_EQ(agents[1].state, "paused");
    EXPECT_EQ(agents[1].reason, "maintenance");
    EXPECT_EQ(agents[1].paused_until, kT0 + 60'000);
    EXPECT_EQ(agents[2].id, "b-agent");
    EXPECT_EQ(agents[2].state, "down");
    EXPECT_FALSE(agents[2].paused_until);
  });
}

TEST_P(ConformanceReads, TheFeedStopsAfterTheRowThatCrossesItsByteBudget) {
  std::vector<std::int64_t> seqs;
  for (int i = 0; i < 3; ++i) {
    NewWebhook w = webhook("01F" + std::to_string(i));
    w.state = WebhookState::kStored;
    w.assigned_agent = std::nullopt;
    w.payload = std::string(100, static_cast<char>('a' + i));
    w.payload[50] = '\0';  // bytes, not text
    seqs.push_back(insert(w).seq);
  }
  read([&](JournalTx& j) {
    auto page = j.feed_after_bounded(0, 10, 150);
    ASSERT_EQ(page.size(), 2u) << "100 bytes before the second (<= 150), 200 before the third";
    EXPECT_EQ(page[0].seq, seqs[0]);
    EXPECT_EQ(page[0].id, "01F0");
    EXPECT_EQ(page[0].payload.size(), 100u);
    EXPECT_EQ(page[0].payload[50], '\0');
    EXPECT_EQ(page[1].payload[0], 'b');
    EXPECT_EQ(page[1].service, "hpnnmi");
    EXPECT_EQ(page[1].received_at, kT0);
    EXPECT_EQ(j.feed_after_bounded(0, 1, 1 << 20).size(), 1u);
    auto rest = j.feed_after_bounded(seqs[1], 10, 0);
    ASSERT_EQ(rest.size(), 1u) << "at least one row when any is newer";
    EXPECT_EQ(rest[0].id, "01F2");
    EXPECT_TRUE(j.feed_after_bounded(seqs[2], 10, 1 << 20).empty());
    EXPECT_GE(j.newest_seq(), seqs[2]);
  });
}

TEST_P(ConformanceReads, AReadCannotWrite) {
  Status s = backend_->read([](JournalTx& j) { j.insert_webhook(webhook("01RW")); });
  EXPECT_FALSE(s);
  EXPECT_EQ(scalar("SELECT count(*) FROM webhooks WHERE id = '01RW'"), "0");
}

// The chain step's savepoint: a failing statement inside it is undone with what it wrote
// there, and the transaction goes on to commit the rest (on PostgreSQL too, where a failed
// statement otherwise aborts the whole transaction).
TEST_P(ConformanceReads, AFailureInsideASavepointUndoesItAloneAndTheRestCommits) {
  Status inner;
  tx([&](JournalTx& j) {
    ASSERT_TRUE(j.transition("01R1", WebhookState::kQueued, WebhookState::kInflight));
    inner = j.in_savepoint([&] {
      j.transition("01R3", WebhookState::kQueued, WebhookState::kInflight);
      AttemptRecord a;
      a.webhook_id = "01R3";
      a.attempt = 1;
      a.agent = "a1";
      a.outcome = "no-such-outcome";  // refused by the table's check
      j.record_attempt(a);
    });
    EXPECT_TRUE(j.in_savepoint(
        [&] { j.transition("01R4", WebhookState::kQueued, WebhookState::kInflight); }));
  });
  EXPECT_FALSE(inner);
  EXPECT_EQ(scalar("SELECT state FROM webhooks WHERE id = '01R1'"), "inflight");
  EXPECT_EQ(scalar("SELECT state FROM webhooks WHERE id = '01R3'"), "queued")
      << "undone with the savepoint";
  EXPECT_EQ(scalar("SELECT state FROM webhooks WHERE id = '01R4'"), "inflight");
  EXPECT_EQ(scalar("SELECT count(*) FROM attempts"), "0");
}

TEST_P(ConformanceReads, AWebhookIsLocatedByIdWithItsStateAndAgent) {
  tx([](JournalTx& j) {
    auto queued = j.locate("01R2");
    ASSERT_TRUE(queued);
    EXPECT_EQ(queued->state, WebhookState::kQueued);
    EXPECT_EQ(queued->assigned_agent, "a1");
    EXPECT_EQ(j.locate("01R5")->state, WebhookState::kInflight);
    EXPECT_FALSE(j.locate("no-such-id"));
    TransitionFields f;
    f.assigned_agent.emplace(std::nullopt);  // held for any agent
    ASSERT_TRUE(j.transition("01R8", WebhookState::kQueued, WebhookState::kQueued, f));
    EXPECT_EQ(j.locate("01R8")->assigned_agent, std::nullopt);
  });
}

// A failover's move of an alert's later webhooks: the tail of ev-1 after 01R1 on a1 is 01R3
// and 01R6 (01R4 is a2's); ev-2's tail holds the held 01R7.
TEST_P(ConformanceReads, AnAlertsTailOnAnAgentIsReadAndItsQueuedRowsReassigned) {
  tx([&](JournalTx& j) {
    auto tail = j.alert_tail("a1", "ev-1", seq_["01R1"]);
    ASSERT_EQ(tail.size(), 2u);
    for (const TailRow& r : tail) {
      EXPECT_EQ(r.state, WebhookState::kQueued);
      EXPECT_EQ(r.service, "hpnnmi");
      EXPECT_EQ(r.type, "status");
      EXPECT_FALSE(r.agent);
    }
    auto held = j.alert_tail("a1", "ev-2", seq_["01R2"]);
    ASSERT_EQ(held.size(), 1u);
    EXPECT_EQ(held[0].state, WebhookState::kHeld);
    EXPECT_TRUE(j.alert_tail("a1", "ev-1", seq_["01R6"]).empty());
    EXPECT_EQ(j.reassign_alert_tail("a1", "a2", "ev-1", seq_["01R1"]), 2);
    EXPECT_EQ(j.reassign_alert_tail("a1", "a2", "ev-2", seq_["01R2"]), 0) << "held stays";
  });
  EXPECT_EQ(scalar("SELECT assigned_agent FROM webhooks WHERE id = '01R3'"), "a2");
  EXPECT_EQ(scalar("SELECT assigned_agent FROM webhooks WHERE id = '01R6'"), "a2");
  EXPECT_EQ(scalar("SELECT assigned_agent FROM webhooks WHERE id = '01R1'"), "a1");
}

// read_each: reads (one statement, no transaction of its own on SQLite) and cannot write.
TEST_P(ConformanceReads, ReadEachReadsAndCannotWrite) {
  std::vector<std::string> ids;
  Status s =
      backend_->read_each([&](JournalTx& j) { ids.push_back(j.locate("01R1") ? "01R1" : "-"); });
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(ids, std::vector<std::string>{"01R1"});
  EXPECT_FALSE(backend_->read_each([](JournalTx& j) { j.insert_webhook(webhook("01RX")); }));
  EXPECT_EQ(scalar("SELECT count(*) FROM webhooks WHERE id = '01RX'"), "0");
}

// The chain steps of a loop turn's outcomes, asked together (PostgreSQL: one pipeline each for
// the reads and the claims): the answers of the single operations, in the order asked.
TEST_P(ConformanceReads, TheChainStepsOfABatchAreEachStepInTurn) {
  const std::vector<AlertStep> steps = {{"a1", "ev-2", 0},
                                        {"a1", "ev-1", seq_["01R1"]},
                                        {"a2", "ev-1", 0},
                                        {"a1", "ev-2", seq_["01R2"]},
                                        {"a1", "ev-1", 0}};
  read([&](JournalTx& j) {
    auto found = j.next_of_alerts_near_head(steps, 10);
    ASSERT_EQ(found.size(), steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i) {
      auto one =
          j.next_of_alert_near_head(steps[i].agent, steps[i].event_id, steps[i].after_seq, 10);
      EXPECT_EQ(found[i].has_value(), one.has_value()) << "step " << i;
      if (found[i] && one) {
        EXPECT_EQ(found[i]->id, one->id) << "step " << i;
        EXPECT_EQ(found[i]->seq, one->seq) << "step " << i;
        EXPECT_EQ(found[i]->received_at, kT0) << "step " << i;
      }
    }
    ASSERT_TRUE(found[0] && found[2] && found[4]);
    EXPECT_EQ(found[0]->id, "01R2");
    EXPECT_FALSE(found[1]) << "01R3 has 01R1 of its alert queued ahead of it";
    EXPECT_EQ(found[2]->id, "01R4");
    EXPECT_FALSE(found[3]) << "01R7 is held";
    EXPECT_EQ(found[4]->id, "01R1");
    EXPECT_TRUE(j.next_of_alerts_near_head({}, 10).empty());
  });
  // Claims: 01R2 and 01R4 are queued, their alerts' first; 01R5 is inflight already.
  QueuedWebhook r2, r4, r5;
  read([&](JournalTx& j) {
    r2 = *j.next_queued_of_event("a1", "ev-2", 0);
    r4 = *j.next_queued_of_event("a2", "ev-1", 0);
  });
  r5 = r2;
  r5.id = "01R5";
  r5.seq = seq_["01R5"];
  r5.event_id = "ev-3";
  std::vector<bool> claimed;
  tx([&](JournalTx& j) {
    claimed = j.claim_next_of_alerts({{"a1", "ev-2", 0}, {"a1", "ev-3", 0}, {"a2", "ev-1", 0}},
                                     {&r2, &r5, &r4});
  });
  EXPECT_EQ(claimed, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(scalar("SELECT state || ' ' || attempts FROM webhooks WHERE id = '01R2'"),
            "inflight 1");
  EXPECT_EQ(scalar("SELECT state || ' ' || attempts FROM webhooks WHERE id = '01R4'"),
            "inflight 1");
  EXPECT_EQ(scalar("SELECT state || ' ' || attempts FROM webhooks WHERE id = '01R5'"),
            "inflight 0");
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceReads, ::testing::Values("sqlite", "postgresql"),
                         backend_name);

TEST_P(Conformance, AFailedTransactionLeavesNothingBehind) {
  Status s = backend_->transact([&](JournalTx& j) {
    j.insert_webhook(webhook("01X"));
    AttemptRecord a;
    a.webhook_id = "01X";
    a.attempt = 1;
    a.agent = "a1";
    a.outcome = "no-such-outcome";  // refused by the table's check
    j.record_attempt(a);
  });
  EXPECT_FALSE(s);
  EXPECT_TRUE(queue_ids("a1").empty());
  // And the backend goes on: the next transaction commits.
  EXPECT_FALSE(insert(webhook("01Y")).duplicate);
  EXPECT_EQ(queue_ids("a1"), std::vector<std::string>{"01Y"});
}

// Review: an operation that catches the error of one of its statements (a per-item guard, as
// the dispatcher's) and goes on. SQLite undoes that statement only and commits the rest;
// PostgreSQL has aborted the whole transaction, its COMMIT answers ROLLBACK, and transact()
// must not then report a commit.
TEST_P(Conformance, ATransactionReportedCommittedHasItsWrites) {
  Status s = backend_->transact([&](JournalTx& j) {
    j.insert_webhook(webhook("01Z"));
    try {
      AttemptRecord a;
      a.webhook_id = "01Z";
      a.attempt = 1;
      a.agent = "a1";
      a.outcome = "no-such-outcome";  // refused by the table's check
      j.record_attempt(a);
    } catch (const std::exception&) {
      // this item fails alone; the others go on
    }
  });
  if (s) {
    EXPECT_EQ(queue_ids("a1"), std::vector<std::string>{"01Z"})
        << "transact() reported a commit, but the webhook it inserted is not stored";
  }
  // The one documented difference (backend.h): SQLite undid the failed statement alone and
  // committed the rest; PostgreSQL aborted the transaction, and transact says so.
  if (GetParam() == "sqlite") {
    EXPECT_TRUE(s) << s.message();
  } else {
    EXPECT_FALSE(s);
    EXPECT_TRUE(queue_ids("a1").empty());
  }
}

// Review: TransitionFields that name one column twice (attempts set and incremented; delivered_at
// set and cleared). SQLite keeps the rightmost assignment; PostgreSQL refuses the statement
// ("multiple assignments to same column"). No caller does it today.
TEST_P(Conformance, ATransitionSettingAndIncrementingAttemptsIsOneOutcome) {
  insert(webhook("01M"));
  TransitionFields f;
  f.attempts = 5;
  f.increment_attempts = true;
  bool moved = false;
  Status s = backend_->transact([&](JournalTx& j) {
    moved = j.transition("01M", WebhookState::kQueued, WebhookState::kQueued, f);
  });
  EXPECT_TRUE(s) << s.message();
  EXPECT_TRUE(moved);
}

// A call's outcome in one operation: the attempt row and the transition both, or, when the
// webhook is not in the state it leaves, the attempt row alone (as record_attempt then
// transition do); without a call, the transition alone.
TEST_P(Conformance, AnOutcomeRecordsItsAttemptAndItsTransition) {
  insert(webhook("01O1"));
  insert(webhook("01O2"));
  AttemptRecord a;
  a.webhook_id = "01O1";
  a.attempt = 1;
  a.agent = "a1";
  a.started_at = 1700000000000;
  a.duration_ms = 12;
  a.http_status = 204;
  a.outcome = "delivered";
  TransitionFields f;
  f.last_status = std::optional<int>(204);
  bool moved = false, stale = true, bare = false;
  Status s = backend_->transact([&](JournalTx& j) {
    moved = j.record_outcome(&a, "01O1", WebhookState::kQueued, WebhookState::kDelivered, f);
    AttemptRecord again = a;
    again.attempt = 2;
    stale = j.record_outcome(&again, "01O1", WebhookState::kQueued, WebhookState::kFailed, f);
    bare = j.record_outcome(nullptr, "01O2", WebhookState::kQueued, WebhookState::kFailed, {});
  });
  ASSERT_TRUE(s) << s.message();
  EXPECT_TRUE(moved);
  EXPECT_FALSE(stale) << "01O1 had left queued";
  EXPECT_TRUE(bare);
  EXPECT_EQ(scalar("SELECT state FROM webhooks WHERE id = '01O1'"), "delivered");
  EXPECT_EQ(scalar("SELECT last_status FROM webhooks WHERE id = '01O1'"), "204");
  EXPECT_EQ(scalar("SELECT state FROM webhooks WHERE id = '01O2'"), "failed");
  EXPECT_EQ(scalar("SELECT count(*) FROM attempts"), "2");
  EXPECT_EQ(scalar("SELECT count(*) FROM attempts WHERE webhook_id = '01O1' AND http_status = "
                   "204 AND outcome = 'delivered' AND duration_ms = 12"),
            "2");
}

// A loop turn's outcomes in one call (PostgreSQL: one pipeline): each as record_outcome would
// write it, told in the order given; a stale one (its webhook no longer in the state it leaves)
// moves nothing and the others still do.
TEST_P(Conformance, ABatchOfOutcomesIsEachOutcomeInTurn) {
  for (const char* id : {"01B1", "01B2", "01B3", "01B4"}) insert(webhook(id));
  tx([](JournalTx& j) {
    ASSERT_TRUE(j.transition("01B1", WebhookState::kQueued, WebhookState::kInflight));
    ASSERT_TRUE(j.transition("01B2", WebhookState::kQueued, WebhookState::kInflight));
    ASSERT_TRUE(j.transition("01B4", WebhookState::kQueued, WebhookState::kInflight));
  });
  std::vector<OutcomeWrite> batch(4);
  batch[0].attempt = AttemptRecord{};
  batch[0].attempt->webhook_id = "01B1";
  batch[0].attempt->attempt = 1;
  batch[0].attempt->agent = "a1";
  batch[0].attempt->http_status = 204;
  batch[0].attempt->outcome = "delivered";
  batch[0].id = "01B1";
  batch[0].fields.last_status = std::optional<int>(204);
  batch[1].attempt = batch[0].attempt;
  batch[1].attempt->webhook_id = "01B2";
  batch[1].attempt->http_status = 503;
  batch[1].attempt->outcome = "retry";
  batch[1].id = "01B2";
  batch[1].to = WebhookState::kQueued;
  batch[1].fields.next_attempt_at = std::optional<Millis>(kT0 + 5000);
  batch[1].fields.assigned_agent = std::optional<std::string>("a2");
  batch[2].id = "01B3";  // queued, not inflight: stale
  batch[3].id = "01B4";  // no call made: the transition alone
  batch[3].to = WebhookState::kFailed;
  batch[3].fields.last_error = std::optional<std::string>("gone");
  std::vector<bool> moved;
  tx([&](JournalTx& j) { moved = j.record_outcomes(batch); });
  EXPECT_EQ(moved, (std::vector<bool>{true, true, false, true}));
  EXPECT_EQ(scalar("SELECT state || ' ' || last_status FROM webhooks WHERE id = '01B1'"),
            "delivered 204");
  EXPECT_EQ(scalar("SELECT state || ' ' || assigned_agent FROM webhooks WHERE id = '01B2'"),
            "queued a2");
  EXPECT_EQ(scalar("SELECT state FROM webhooks WHERE id = '01B3'"), "queued");
  EXPECT_EQ(scalar("SELECT state || ' ' || last_error FROM webhooks WHERE id = '01B4'"),
            "failed gone");
  EXPECT_EQ(scalar("SELECT count(*) FROM attempts"), "2");
  EXPECT_EQ(scalar("SELECT count(*) FROM attempts WHERE webhook_id = '01B2' AND http_status = 503 "
                   "AND outcome = 'retry'"),
            "1");
  tx([&](JournalTx& j) { EXPECT_TRUE(j.record_outcomes({}).empty()); });
}

// A sweep's move: only from the agent the webhook is on (none: held for its service), only while
// queued; due at once where it goes.
TEST_P(Conformance, AQueuedWebhookIsReassignedOnlyFromWhereItIs) {
  insert(webhook("01G1"));
  NewWebhook unassigned = webhook("01G2");
  unassigned.assigned_agent = std::nullopt;
  insert(unassigned);
  insert(webhook("01G3"));
  TransitionFields later;
  later.next_attempt_at = std::optional<Millis>(kT0 + 60'000);
  tx([&](JournalTx& j) {
    ASSERT_TRUE(j.transition("01G1", WebhookState::kQueued, WebhookState::kQueued, later));
    ASSERT_TRUE(j.transition("01G3", WebhookState::kQueued, WebhookState::kHeld));
  });
  std::vector<bool> moved;
  tx([&](JournalTx& j) {
    moved = {j.reassign_queued("01G1", std::string("a2"), "a3"),
             j.reassign_queued("01G1", std::nullopt, "a3"),
             j.reassign_queued("01G2", std::string("a1"), "a3"),
             j.reassign_queued("01G3", std::string("a1"), "a3"),
             j.reassign_queued("01G1", std::string("a1"), "a3"),
             j.reassign_queued("01G2", std::nullopt, "a2")};
  });
  EXPECT_EQ(moved, (std::vector<bool>{false, false, false, false, true, true}));
  EXPECT_EQ(scalar("SELECT assigned_agent FROM webhooks WHERE id = '01G1'"), "a3");
  EXPECT_EQ(scalar("SELECT count(*) FROM webhooks WHERE id = '01G1' AND next_attempt_at IS NULL"),
            "1");
  EXPECT_EQ(scalar("SELECT assigned_agent FROM webhooks WHERE id = '01G2'"), "a2");
  EXPECT_EQ(scalar("SELECT assigned_agent || ' ' || state FROM webhooks WHERE id = '01G3'"),
            "a1 held");
}

// A batch whose write fails part-way leaves nothing of it, the statements before the failed one
// included; the backend goes on.
TEST_P(Conformance, ABatchOfOutcomesThatFailsPartWayLeavesNothing) {
  insert(webhook("01F1"));
  insert(webhook("01F2"));
  std::vector<OutcomeWrite> batch(3);
  batch[0].id = "01F1";
  batch[0].from = WebhookState::kQueued;
  batch[1].attempt = AttemptRecord{};
  batch[1].attempt->webhook_id = "01F2";
  batch[1].attempt->attempt = 1;
  batch[1].attempt->agent = "a1";
  batch[1].attempt->outcome = "no-such-outcome";  // refused by the table's check
  batch[1].id = "01F2";
  batch[1].from = WebhookState::kQueued;
  batch[2].id = "01F2";
  batch[2].from = WebhookState::kQueued;
  batch[2].to = WebhookState::kFailed;
  EXPECT_FALSE(backend_->transact([&](JournalTx& j) { j.record_outcomes(batch); }));
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01F1", "01F2"}));
  EXPECT_EQ(scalar("SELECT count(*) FROM attempts"), "0");
  batch[1].attempt->outcome = "delivered";
  std::vector<bool> moved;
  tx([&](JournalTx& j) { moved = j.record_outcomes(batch); });
  EXPECT_EQ(moved, (std::vector<bool>{true, true, false})) << "01F2 left queued at [1]";
  EXPECT_TRUE(queue_ids("a1").empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::Values("sqlite", "postgresql"),
                         backend_name);

// PostgreSQL only: two relays insert one webhook (one Idempotency-Key) at the same moment. The
// second waits for the first's commit and gets its webhook as a duplicate; neither fails.
class PgConcurrency : public Conformance {};

TEST_P(PgConcurrency, TwoRelaysInsertingOneWebhookStoreItOnce) {
  auto other = connect();
  ASSERT_TRUE(other);
  auto second = pg_backend(*other);
  NewWebhook w1 = webhook("01K1"), w2 = webhook("01K2");
  w1.idempotency_key = w2.idempotency_key = "same";
  std::promise<void> first_inserted;
  std::future<InsertOutcome> later;
  Status s = backend_->transact([&](JournalTx& j) {
    EXPECT_FALSE(j.insert_webhook(w1).duplicate);
    later = std::async(std::launch::async, [&] {
      InsertOutcome out;
      Status s2 = second->transact([&](JournalTx& j2) { out = j2.insert_webhook(w2); });
      EXPECT_TRUE(s2) << s2.message();
      return out;
    });
    // The second relay's insert waits on this uncommitted one.
    EXPECT_EQ(later.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  });
  ASSERT_TRUE(s) << s.message();
  InsertOutcome out = later.get();
  EXPECT_TRUE(out.duplicate);
  EXPECT_EQ(out.id, "01K1");
  EXPECT_EQ(queue_ids("a1"), std::vector<std::string>{"01K1"});
}

// Review: an operator's release or hold committed between the chain step's reads (the alert's
// next queued webhook, whether one is held before it, the batch's "any held") let the later
// webhook be claimed and sent before the earlier one. The claim checks again, in one statement.
TEST_P(PgConcurrency, AnOperatorsReleaseOrHoldBetweenTheChainStepsReadsDoesNotReorderTheAlert) {
  auto other = connect();
  ASSERT_TRUE(other);
  auto second = pg_backend(*other);
  const std::int64_t a = insert(webhook("01CA")).seq;
  insert(webhook("01CB"));
  insert(webhook("01CC"));
  tx([](JournalTx& j) {
    ASSERT_TRUE(j.transition("01CA", WebhookState::kQueued, WebhookState::kInflight));
    ASSERT_TRUE(j.transition("01CB", WebhookState::kQueued, WebhookState::kHeld));
  });
  auto by_operator = [&](WebhookState from, WebhookState to) {
    Status s = second->transact([&](JournalTx& j) { ASSERT_TRUE(j.transition("01CB", from, to)); });
    ASSERT_TRUE(s) << s.message();
  };
  // Released between the read of the next webhook and the check for a held one.
  Status s = backend_->transact([&](JournalTx& j) {
    auto next = j.next_of_alert_near_head("a1", "ev-1", a, 256);
    ASSERT_TRUE(next);
    ASSERT_EQ(next->id, "01CC");
    by_operator(WebhookState::kHeld, WebhookState::kQueued);
    EXPECT_FALSE(j.held_before("a1", "ev-1", next->service, next->seq));
    EXPECT_FALSE(j.claim_next_of_alert(*next, "a1", "ev-1"))
        << "01CC claimed while 01CB, before it, is queued";
  });
  ASSERT_TRUE(s) << s.message();
  // Held after the batch found nothing held, before the next webhook was read.
  s = backend_->transact([&](JournalTx& j) {
    EXPECT_FALSE(j.any_held_webhook());
    by_operator(WebhookState::kQueued, WebhookState::kHeld);
    auto next = j.next_of_alert_near_head("a1", "ev-1", a, 256);
    ASSERT_TRUE(next);
    ASSERT_EQ(next->id, "01CC");
    EXPECT_FALSE(j.claim_next_of_alert(*next, "a1", "ev-1"))
        << "01CC claimed while 01CB, before it, is held";
  });
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01CC"}));
}

// Two relays take webhooks of one alert at once. A seq is handed out at INSERT: if the second
// relay's commit (seq 2) became visible while the first's (seq 1) was still open, a dispatcher
// would send 2 before 1, and a feed consumer whose cursor passed 2 would never read 1. Seqs
// must become visible in their order: the second relay's insert waits for the first's commit.
TEST_P(PgConcurrency, SeqsBecomeVisibleInTheirOrderAcrossRelays) {
  expect_seqs_visible_in_order([](JournalTx&) {}, "01S1", "01S2");
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01S1", "01S2"}));
}

// Review: two webhooks (two Idempotency-Keys) retried on two relays, each relay's transaction
// (a group commit's batch) taking them in the other order. Each used to wait for the other's
// commit (a deadlock, one side run again); now the second waits at its first insert for the
// first's commit (seqs are taken one transaction at a time), then finds both stored.
TEST_P(PgConcurrency, TwoRelaysInsertingTwoWebhooksInOppositeOrdersBothCommit) {
  auto other = connect();
  ASSERT_TRUE(other);
  auto second = pg_backend(*other);
  NewWebhook a1 = webhook("01D1"), b1 = webhook("01D2"), a2 = webhook("01D3"), b2 = webhook("01D4");
  a1.idempotency_key = a2.idempotency_key = "key-a";
  b1.idempotency_key = b2.idempotency_key = "key-b";
  std::future<Status> later;
  InsertOutcome b2_out, a2_out;
  Status s = backend_->transact([&](JournalTx& j) {
    j.insert_webhook(a1);
    later = std::async(std::launch::async, [&] {
      return second->transact([&](JournalTx& j2) {
        b2_out = j2.insert_webhook(b2);
        a2_out = j2.insert_webhook(a2);
      });
    });
    EXPECT_EQ(later.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
    j.insert_webhook(b1);
  });
  Status s2 = later.get();
  EXPECT_TRUE(s) << s.message();
  EXPECT_TRUE(s2) << s2.message();
  EXPECT_TRUE(b2_out.duplicate);
  EXPECT_EQ(b2_out.id, "01D2");
  EXPECT_TRUE(a2_out.duplicate);
  EXPECT_EQ(a2_out.id, "01D1");
  EXPECT_EQ(queue_ids("a1"), (std::vector<std::string>{"01D1", "01D2"}));
}

// Review: pg_journal.h says the transactions run at READ COMMITTED, which the concurrent
// insert relies on; BEGIN takes whatever default_transaction_isolation the database has.
TEST_P(PgConcurrency, TwoRelaysInsertingOneWebhookStoreItOnceWhateverTheDatabasesDefaultIsolation) {
  ASSERT_EQ(cluster_->psql("ALTER DATABASE " + database_ +
                           " SET default_transaction_isolation = 'repeatable read'"),
            "");
  auto first = connect(), other = connect();
  ASSERT_TRUE(first);
  ASSERT_TRUE(other);
  auto one = pg_backend(*first), two = pg_backend(*other);
  NewWebhook w1 = webhook("01E1"), w2 = webhook("01E2");
  w1.idempotency_key = w2.idempotency_key = "same";
  std::future<std::pair<Status, InsertOutcome>> later;
  Status s = one->transact([&](JournalTx& j) {
    j.insert_webhook(w1);
    later = std::async(std::launch::async, [&] {
      InsertOutcome out;
      Status s2 = two->transact([&](JournalTx& j2) {
        j2.load_cursor("x");  // the transaction's snapshot is taken here
        out = j2.insert_webhook(w2);
      });
      return std::make_pair(s2, out);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  });
  ASSERT_TRUE(s) << s.message();
  auto [s2, out] = later.get();
  EXPECT_TRUE(s2) << s2.message();
  EXPECT_TRUE(out.duplicate);
}

// The dispatcher's reader reads a call's payload with read_each: on PostgreSQL each statement
// outside a transaction (one round trip), so it sees what other relays committed since the
// op began; its connection takes no writes there either.
TEST_P(PgConcurrency, TheDispatchersReaderReadsEachStatementOutsideATransactionAndCannotWrite) {
  auto reader = open_pg_reader(cluster_->uri(database_));
  ASSERT_TRUE(reader) << reader.status().message();
  insert(webhook("01E1"));
  bool first = false, second = false;
  Status s = (*reader)->read_each([&](JournalTx& j) {
    first = j.locate("01E1").has_value();
    insert(webhook("01E2"));  // committed by another connection meanwhile
    second = j.locate("01E2").has_value();
  });
  ASSERT_TRUE(s) << s.message();
  EXPECT_TRUE(first);
  EXPECT_TRUE(second) << "read_each read a snapshot taken before the other connection's commit";
  EXPECT_FALSE((*reader)->read_each([](JournalTx& j) { j.insert_webhook(webhook("01EW")); }));
  EXPECT_EQ(scalar("SELECT count(*) FROM webhooks WHERE id = '01EW'"), "0");
  // And the reader goes on, with read() and read_each() alike, and a read of nothing.
  EXPECT_TRUE((*reader)->read([](JournalTx&) {}));
  std::size_t queued = 0;
  EXPECT_TRUE((*reader)->read([&](JournalTx& j) { queued = j.scan_queue("a1", 0, 10).size(); }));
  EXPECT_EQ(queued, 2u);
  EXPECT_TRUE((*reader)->read_each([&](JournalTx& j) { first = j.locate("01E1").has_value(); }));
  EXPECT_TRUE(first);
}

INSTANTIATE_TEST_SUITE_P(Backends, PgConcurrency, ::testing::Values("postgresql"), backend_name);

// Review (issue 15 seam): JournalWriter::healthy() is "whether the last commit succeeded"
// (/readyz). SQLite's Writer says false after any failed commit. PgWriter, once the server takes
// no writes but the connection stays up (a database put read-only: default_transaction_read_only,
// as managed services do when storage runs out), fails every commit with an I/O error and says
// healthy: /readyz keeps the relay in the load balancer while intake answers every webhook 503.
class Review15s : public Conformance {};

TEST_P(Review15s, APgWriterWhoseCommitsAllFailIsNotHealthy) {
  auto writer = open_writer();
  ASSERT_TRUE(writer);
  auto insert_through = [&](const std::string& id) {
    std::promise<Status> told;
    writer->submit_insert(webhook(id),
                          [&told](const Status& s, const InsertOutcome&) { told.set_value(s); });
    return told.get_future().get();
  };
  ASSERT_TRUE(insert_through("01H1"));
  EXPECT_TRUE(writer->healthy());
  // The database takes no more writes; the writer's session is ended (a restart, a pooler
  // recycling it), so the one it opens again is read-only.
  ASSERT_EQ(
      cluster_->psql("ALTER DATABASE " + database_ + " SET default_transaction_read_only = on"),
      "");
  ASSERT_EQ(cluster_->psql("SELECT count(pg_terminate_backend(pid)) >= 0 FROM pg_stat_activity "
                           "WHERE datname = '" +
                           database_ + "' AND pid <> pg_backend_pid()"),
            "t");
  EXPECT_FALSE(insert_through("01H2")) << "the connection was ended";
  EXPECT_FALSE(writer->healthy());
  for (int i = 3; i < 6; ++i) {
    Status s = insert_through("01H" + std::to_string(i));
    EXPECT_FALSE(s) << "a read-only database stores nothing";
    EXPECT_FALSE(writer->healthy())
        << "commit " << i << " failed (" << s.message() << ") and the writer says it is healthy";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Review15s, ::testing::Values("postgresql"), backend_name);

// Review (seq order, bd8fea8): JournalTx::lock_seq_order holds the turn to take seqs "until the
// transaction ends". PostgreSQL releases a transaction-level advisory lock taken inside a
// savepoint when that savepoint is rolled back; PgTx still believes it holds the turn, so the
// transaction's next insert takes a seq without it. Another relay then inserts and commits a
// higher seq that a reader sees while the lower one is still open (in_savepoint is the seam's
// own way to let a failed step go and the transaction go on).
class Review15r : public Conformance {};

TEST_P(Review15r, ASavepointRolledBackKeepsTheTurnToTakeSeqs) {
  expect_seqs_visible_in_order(
      [](JournalTx& j) {
        // A step that inserted and then failed: undone alone, the transaction goes on.
        Status step = j.in_savepoint([&] {
          j.insert_webhook(webhook("01V0"));
          throw std::runtime_error("the step fails after its insert");
        });
        EXPECT_FALSE(step);
      },
      "01V1", "01V2");
}

INSTANTIATE_TEST_SUITE_P(Backends, Review15r, ::testing::Values("postgresql"), backend_name);

}  // namespace
}  // namespace iarelay::testing

namespace iarelay::testing {
namespace {

// The dispatcher's own reader on SQLite: a read-only connection that sees the writer's
// commits at each read, tells by its data version that something changed, and cannot write.
TEST(SqliteReader, SeesEachCommitTellsByItsDataVersionAndCannotWrite) {
  TempDir dir;
  auto db = open_journal_for_write(dir.file("journal.db"), SyncLevel::kNormal);
  ASSERT_TRUE(db) << db.status().message();
  ASSERT_TRUE(migrate(**db));
  auto writer = sqlite_backend(**db);
  auto reader = open_sqlite_reader(dir.file("journal.db"));
  ASSERT_TRUE(reader) << reader.status().message();
  auto count = [&] {
    std::optional<std::int64_t> version;
    std::size_t n = 0;
    EXPECT_TRUE((*reader)->read([&](JournalTx& j) {
      version = j.data_version();
      n = j.scan_queue(std::string("a1"), 0, 100).size();
    }));
    return std::make_pair(n, version);
  };
  auto [before, v1] = count();
  EXPECT_EQ(before, 0u);
  ASSERT_TRUE(v1);
  NewWebhook w;
  w.id = "01SR";
  w.received_at = 1'800'000'000'000;
  w.service = "hpnnmi";
  w.type = "status";
  w.assigned_agent = "a1";
  w.payload = "{}";
  ASSERT_TRUE(writer->transact([&](JournalTx& j) { j.insert_webhook(w); }));
  auto [after, v2] = count();
  EXPECT_EQ(after, 1u);
  ASSERT_TRUE(v2);
  EXPECT_NE(*v1, *v2) << "another connection committed";
  auto [same, v3] = count();
  EXPECT_EQ(*v2, *v3) << "nothing committed since";
  std::optional<std::string> payload;
  EXPECT_TRUE((*reader)->read_each([&](JournalTx& j) { payload = j.load_payload("01SR"); }));
  EXPECT_EQ(payload, "{}");
  EXPECT_FALSE((*reader)->transact([&](JournalTx& j) { j.insert_webhook(w); }));
  w.id = "01SS";
  EXPECT_FALSE((*reader)->read([&](JournalTx& j) { j.insert_webhook(w); }));
  EXPECT_FALSE((*reader)->read_each([&](JournalTx& j) { j.insert_webhook(w); }));
  EXPECT_EQ(count().first, 1u);
}

}  // namespace
}  // namespace iarelay::testing
