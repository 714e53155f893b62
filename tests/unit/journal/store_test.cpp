// Tests of journal/store.h: every journal operation and query on a real journal file.
#include "journal/store.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <thread>

#include "journal/journal.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

class Store : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = open_journal_for_write(dir_.file("journal.db"), SyncLevel::kNormal);
    ASSERT_TRUE(db.is_ok()) << db.status().message();
    db_ = std::move(*db);
    Status s = migrate(*db_);
    ASSERT_TRUE(s.is_ok()) << s.message();
  }

  static NewWebhook hook(const std::string& id, std::optional<std::string> assigned = "a1") {
    NewWebhook w;
    w.id = id;
    w.received_at = 1764427171123;
    w.service = "hpnnmi";
    w.type = "status";
    w.event_id = "4412901";
    w.assigned_agent = std::move(assigned);
    w.payload = R"({"eventIdentifier": 4412901, "status": "active"})";
    return w;
  }

  std::string column(const std::string& id, const std::string& col) {
    SQLite::Statement q(*db_, "SELECT " + col + " FROM webhooks WHERE id=?");
    q.bind(1, id);
    if (!q.executeStep()) return "<no row>";
    return q.getColumn(0).isNull() ? "<null>" : q.getColumn(0).getString();
  }
  int count(const std::string& sql) { return db_->execAndGet(sql).getInt(); }

  testing::TempDir dir_;
  DatabasePtr db_;
};

TEST(StoreStates, NamesRoundTrip) {
  for (auto s : {WebhookState::kStored, WebhookState::kQueued, WebhookState::kInflight,
                 WebhookState::kDelivered, WebhookState::kFailed, WebhookState::kDiscarded}) {
    auto parsed = parse_state(to_string(s));
    ASSERT_TRUE(parsed.has_value()) << to_string(s);
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(to_string(WebhookState::kInflight), "inflight");
  EXPECT_FALSE(parse_state("queue").has_value());
  EXPECT_FALSE(parse_state("").has_value());
}

TEST_F(Store, InsertStoresEveryFieldAndPayloadByteForByte) {
  NewWebhook w = hook("W1");
  w.agent = "ws-198/10.2.0.121:8081";
  w.payload = "{ \"status\" :\t\"active\",\n \"x\": \"\\u00e9\" }";
  InsertOutcome out = insert_webhook(*db_, w);
  EXPECT_EQ(out.id, "W1");
  EXPECT_EQ(out.state, WebhookState::kQueued);
  EXPECT_FALSE(out.duplicate);
  EXPECT_GT(out.seq, 0);
  EXPECT_EQ(column("W1", "payload"), w.payload);
  EXPECT_EQ(column("W1", "received_at"), "2025-11-29T14:39:31.123Z");
  EXPECT_EQ(column("W1", "source"), "direct");
  EXPECT_EQ(column("W1", "source_id"), "<null>");
  EXPECT_EQ(column("W1", "agent"), "ws-198/10.2.0.121:8081");
  EXPECT_EQ(column("W1", "assigned_agent"), "a1");
  EXPECT_EQ(column("W1", "state"), "queued");
  EXPECT_EQ(column("W1", "event_id"), "4412901");
  EXPECT_EQ(column("W1", "attempts"), "0");

  NewWebhook d = hook("W2", std::nullopt);
  d.state = WebhookState::kDiscarded;
  d.reason = "unknown service";
  InsertOutcome out2 = insert_webhook(*db_, d);
  EXPECT_GT(out2.seq, out.seq);
  EXPECT_EQ(out2.state, WebhookState::kDiscarded);
  EXPECT_EQ(column("W2", "state"), "discarded");
  EXPECT_EQ(column("W2", "last_error"), "unknown service");
  EXPECT_EQ(column("W2", "assigned_agent"), "<null>");
}

TEST_F(Store, InsertDeduplicatesOnSourceAndSourceId) {
  NewWebhook a = hook("A");
  a.source = "edge";
  a.source_id = "E17";
  InsertOutcome first = insert_webhook(*db_, a);
  ASSERT_FALSE(first.duplicate);

  NewWebhook again = hook("B");  // a redelivered feed batch: new local id, same source id
  again.source = "edge";
  again.source_id = "E17";
  again.payload = "{\"different\": true}";
  InsertOutcome second = insert_webhook(*db_, again);
  EXPECT_TRUE(second.duplicate);
  EXPECT_EQ(second.id, "A");
  EXPECT_EQ(second.seq, first.seq);
  EXPECT_EQ(second.state, WebhookState::kQueued);
  EXPECT_EQ(count("SELECT count(*) FROM webhooks"), 1);
  EXPECT_EQ(column("A", "payload"), a.payload);

  // Same source id from another source, and rows without a source id, are distinct.
  NewWebhook other = hook("C");
  other.source = "edge2";
  other.source_id = "E17";
  EXPECT_FALSE(insert_webhook(*db_, other).duplicate);
  EXPECT_FALSE(insert_webhook(*db_, hook("D")).duplicate);
  EXPECT_FALSE(insert_webhook(*db_, hook("E")).duplicate);
  EXPECT_EQ(count("SELECT count(*) FROM webhooks"), 4);
}

TEST_F(Store, InsertDeduplicatesOnServiceAndIdempotencyKey) {
  NewWebhook a = hook("A");
  a.idempotency_key = "key-1";
  a.state = WebhookState::kDiscarded;
  ASSERT_FALSE(insert_webhook(*db_, a).duplicate);

  NewWebhook b = hook("B");
  b.idempotency_key = "key-1";
  InsertOutcome dup = insert_webhook(*db_, b);
  EXPECT_TRUE(dup.duplicate);
  EXPECT_EQ(dup.id, "A");
  EXPECT_EQ(dup.state, WebhookState::kDiscarded);  // the stored webhook's state, not the new one
  EXPECT_EQ(column("B", "id"), "<no row>");

  NewWebhook c = hook("C");  // the same key for another service is another webhook
  c.service = "remedy";
  c.idempotency_key = "key-1";
  EXPECT_FALSE(insert_webhook(*db_, c).duplicate);
  EXPECT_EQ(count("SELECT count(*) FROM webhooks"), 2);
}

TEST_F(Store, TransitionIsGuardedByTheCurrentState) {
  insert_webhook(*db_, hook("W"));
  EXPECT_TRUE(transition(*db_, "W", WebhookState::kQueued, WebhookState::kInflight));
  EXPECT_EQ(column("W", "state"), "inflight");
  // A second mover expecting 'queued' loses and changes nothing.
  TransitionFields f;
  f.last_error = std::optional<std::string>("should not be written");
  EXPECT_FALSE(transition(*db_, "W", WebhookState::kQueued, WebhookState::kFailed, f));
  EXPECT_EQ(column("W", "state"), "inflight");
  EXPECT_EQ(column("W", "last_error"), "<null>");
  EXPECT_FALSE(transition(*db_, "nope", WebhookState::kInflight, WebhookState::kQueued));
}

TEST_F(Store, TransitionSetsOnlyTheGivenFields) {
  insert_webhook(*db_, hook("W"));
  TransitionFields f;
  f.attempts = 3;
  f.next_attempt_at = std::optional<Millis>(1764427171123);
  f.last_status = std::optional<int>(503);
  f.last_error = std::optional<std::string>("busy");
  f.assigned_agent = std::optional<std::string>("a2");
  ASSERT_TRUE(transition(*db_, "W", WebhookState::kQueued, WebhookState::kQueued, f));
  EXPECT_EQ(column("W", "attempts"), "3");
  EXPECT_EQ(column("W", "next_attempt_at"), "2025-11-29T14:39:31.123Z");
  EXPECT_EQ(column("W", "last_status"), "503");
  EXPECT_EQ(column("W", "last_error"), "busy");
  EXPECT_EQ(column("W", "assigned_agent"), "a2");

  TransitionFields inc;
  inc.increment_attempts = true;
  ASSERT_TRUE(transition(*db_, "W", WebhookState::kQueued, WebhookState::kInflight, inc));
  EXPECT_EQ(column("W", "attempts"), "4");
  EXPECT_EQ(column("W", "last_error"), "busy");  // unset fields keep their value
  EXPECT_EQ(column("W", "assigned_agent"), "a2");

  TransitionFields done;
  done.delivered_at = 1764427172000;
  done.next_attempt_at = std::optional<Millis>();  // set NULL
  done.last_error = std::optional<std::string>();  // set NULL
  done.assigned_agent = std::optional<std::string>();
  ASSERT_TRUE(transition(*db_, "W", WebhookState::kInflight, WebhookState::kDelivered, done));
  EXPECT_EQ(column("W", "state"), "delivered");
  EXPECT_EQ(column("W", "delivered_at"), "2025-11-29T14:39:32.000Z");
  EXPECT_EQ(column("W", "next_attempt_at"), "<null>");
  EXPECT_EQ(column("W", "last_error"), "<null>");
  EXPECT_EQ(column("W", "assigned_agent"), "<null>");
  EXPECT_EQ(column("W", "last_status"), "503");
}

TEST_F(Store, RequeueInflightReturnsOnlyInflightToQueued) {
  for (const char* id : {"A", "B", "C"}) insert_webhook(*db_, hook(id));
  ASSERT_TRUE(transition(*db_, "A", WebhookState::kQueued, WebhookState::kInflight));
  ASSERT_TRUE(transition(*db_, "B", WebhookState::kQueued, WebhookState::kInflight));
  ASSERT_TRUE(transition(*db_, "C", WebhookState::kQueued, WebhookState::kFailed));
  EXPECT_EQ(requeue_inflight(*db_), 2);
  EXPECT_EQ(column("A", "state"), "queued");
  EXPECT_EQ(column("B", "state"), "queued");
  EXPECT_EQ(column("C", "state"), "failed");
  EXPECT_EQ(requeue_inflight(*db_), 0);
}

TEST_F(Store, RecordAttemptStoresARow) {
  AttemptRecord a;
  a.webhook_id = "W";
  a.attempt = 2;
  a.agent = "a1";
  a.started_at = 1764427171123;
  a.duration_ms = 42;
  a.error = "connection refused";
  a.outcome = "retry";
  record_attempt(*db_, a);
  AttemptRecord ok = a;
  ok.attempt = 3;
  ok.http_status = 204;
  ok.error.reset();
  ok.outcome = "delivered";
  record_attempt(*db_, ok);
  SQLite::Statement q(*db_,
                      "SELECT attempt, agent, started_at, duration_ms, http_status, error, outcome "
                      "FROM attempts WHERE webhook_id='W' ORDER BY attempt");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getInt(), 2);
  EXPECT_EQ(q.getColumn(1).getString(), "a1");
  EXPECT_EQ(q.getColumn(2).getString(), "2025-11-29T14:39:31.123Z");
  EXPECT_EQ(q.getColumn(3).getInt(), 42);
  EXPECT_TRUE(q.getColumn(4).isNull());
  EXPECT_EQ(q.getColumn(5).getString(), "connection refused");
  EXPECT_EQ(q.getColumn(6).getString(), "retry");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(4).getInt(), 204);
  EXPECT_TRUE(q.getColumn(5).isNull());
  EXPECT_EQ(q.getColumn(6).getString(), "delivered");
  EXPECT_FALSE(q.executeStep());
  // The schema refuses outcomes outside its set.
  AttemptRecord bad = a;
  bad.outcome = "maybe";
  EXPECT_THROW(record_attempt(*db_, bad), SQLite::Exception);
}

TEST_F(Store, AgentStateSetAndLoaded) {
  EXPECT_FALSE(load_agent(*db_, "a1").has_value());
  EXPECT_TRUE(load_agents(*db_).empty());
  EXPECT_TRUE(set_agent_state(*db_, "b2", "down", std::string("5 failures"), std::nullopt, false));
  EXPECT_TRUE(set_agent_state(*db_, "a1", "up", std::nullopt, std::nullopt, false));
  auto b = load_agent(*db_, "b2");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->state, "down");
  EXPECT_EQ(b->reason, "5 failures");
  EXPECT_FALSE(b->paused_until.has_value());
  EXPECT_EQ(b->state_since.size(), 24u);  // RFC 3339 with ms
  auto all = load_agents(*db_);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, "a1");  // by id
  EXPECT_EQ(all[1].id, "b2");

  EXPECT_TRUE(
      set_agent_state(*db_, "a1", "paused", std::string("maintenance"), 1764427171123, false));
  auto a = load_agent(*db_, "a1");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->state, "paused");
  EXPECT_EQ(a->reason, "maintenance");
  ASSERT_TRUE(a->paused_until.has_value());
  EXPECT_EQ(*a->paused_until, 1764427171123);
}

TEST_F(Store, AgentStateSinceMovesOnlyWhenTheStateChanges) {
  ASSERT_TRUE(set_agent_state(*db_, "a1", "down", std::string("x"), std::nullopt, false));
  std::string since = load_agent(*db_, "a1")->state_since;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(set_agent_state(*db_, "a1", "down", std::string("y"), std::nullopt, false));
  EXPECT_EQ(load_agent(*db_, "a1")->state_since, since);
  EXPECT_EQ(load_agent(*db_, "a1")->reason, "y");
  ASSERT_TRUE(set_agent_state(*db_, "a1", "up", std::nullopt, std::nullopt, false));
  EXPECT_GT(load_agent(*db_, "a1")->state_since, since);
}

TEST_F(Store, AgentStateUnlessPausedLeavesAnOperatorsPauseAlone) {
  ASSERT_TRUE(set_agent_state(*db_, "a1", "paused", std::string("window"), std::nullopt, false));
  EXPECT_FALSE(set_agent_state(*db_, "a1", "down", std::string("timeouts"), std::nullopt, true));
  EXPECT_EQ(load_agent(*db_, "a1")->state, "paused");
  EXPECT_EQ(load_agent(*db_, "a1")->reason, "window");
  // Not paused: the daemon's change applies, and an unknown agent is inserted.
  ASSERT_TRUE(set_agent_state(*db_, "b2", "up", std::nullopt, std::nullopt, false));
  EXPECT_TRUE(set_agent_state(*db_, "b2", "down", std::string("timeouts"), std::nullopt, true));
  EXPECT_EQ(load_agent(*db_, "b2")->state, "down");
  EXPECT_TRUE(set_agent_state(*db_, "c3", "up", std::nullopt, std::nullopt, true));
  EXPECT_EQ(load_agent(*db_, "c3")->state, "up");
  // Without the flag (operator resume), the pause ends.
  EXPECT_TRUE(set_agent_state(*db_, "a1", "up", std::nullopt, std::nullopt, false));
  EXPECT_EQ(load_agent(*db_, "a1")->state, "up");
  EXPECT_FALSE(load_agent(*db_, "a1")->reason.has_value());
}

TEST_F(Store, CursorsOnlyMoveForward) {
  EXPECT_EQ(load_cursor(*db_, "edge"), 0);
  save_cursor(*db_, "edge", 10);
  EXPECT_EQ(load_cursor(*db_, "edge"), 10);
  save_cursor(*db_, "edge", 5);  // a late, older batch does not move it back
  EXPECT_EQ(load_cursor(*db_, "edge"), 10);
  save_cursor(*db_, "edge", 20);
  EXPECT_EQ(load_cursor(*db_, "edge"), 20);
  save_cursor(*db_, "other", 3);
  EXPECT_EQ(load_cursor(*db_, "other"), 3);
  EXPECT_EQ(load_cursor(*db_, "edge"), 20);
}

TEST_F(Store, ConsumerAcksOnlyMoveForward) {
  ack_consumer(*db_, "inner-1", 17);
  ack_consumer(*db_, "inner-1", 9);
  ack_consumer(*db_, "inner-2", 4);
  EXPECT_EQ(count("SELECT acked_seq FROM consumers WHERE name='inner-1'"), 17);
  EXPECT_EQ(count("SELECT acked_seq FROM consumers WHERE name='inner-2'"), 4);
  ack_consumer(*db_, "inner-1", 30);
  EXPECT_EQ(count("SELECT acked_seq FROM consumers WHERE name='inner-1'"), 30);
  EXPECT_EQ(count("SELECT count(*) FROM consumers WHERE length(acked_at)=24"), 2);
}

TEST_F(Store, AuditRowsRecordWhoWhatAndFilter) {
  add_audit(*db_, "ops@host", "resend", "--state failed --agent a1", 7);
  add_audit(*db_, "iarelayd", "retention", "", 3, "delivered before 2026-01-01");
  SQLite::Statement q(*db_,
                      "SELECT actor, action, filter, affected, detail, at FROM audit ORDER BY id");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getString(), "ops@host");
  EXPECT_EQ(q.getColumn(1).getString(), "resend");
  EXPECT_EQ(q.getColumn(2).getString(), "--state failed --agent a1");
  EXPECT_EQ(q.getColumn(3).getInt(), 7);
  EXPECT_TRUE(q.getColumn(4).isNull());
  EXPECT_EQ(q.getColumn(5).getString().size(), 24u);
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(1).getString(), "retention");
  EXPECT_EQ(q.getColumn(4).getString(), "delivered before 2026-01-01");
}

TEST_F(Store, ScanQueueReturnsOneAgentsQueuedRowsInArrivalOrder) {
  std::vector<std::int64_t> seqs;
  for (int i = 0; i < 6; ++i)
    seqs.push_back(insert_webhook(*db_, hook("A" + std::to_string(i))).seq);
  insert_webhook(*db_, hook("B0", "b"));
  insert_webhook(*db_, hook("H0", std::nullopt));
  ASSERT_TRUE(transition(*db_, "A2", WebhookState::kQueued, WebhookState::kInflight));
  ASSERT_TRUE(transition(*db_, "A3", WebhookState::kQueued, WebhookState::kDelivered));
  TransitionFields later;
  later.next_attempt_at = std::optional<Millis>(1764427200000);
  later.attempts = 2;
  ASSERT_TRUE(transition(*db_, "A4", WebhookState::kQueued, WebhookState::kQueued, later));

  auto all = scan_queue(*db_, std::string("a1"), 0, 100);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].id, "A0");
  EXPECT_EQ(all[1].id, "A1");
  EXPECT_EQ(all[2].id, "A4");
  EXPECT_EQ(all[3].id, "A5");
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].seq, all[i].seq);
  EXPECT_EQ(all[0].seq, seqs[0]);
  EXPECT_EQ(all[0].service, "hpnnmi");
  EXPECT_EQ(all[0].type, "status");
  EXPECT_EQ(all[0].event_id, "4412901");
  EXPECT_EQ(all[0].received_at, 1764427171123);
  EXPECT_FALSE(all[0].next_attempt_at.has_value());
  EXPECT_EQ(all[2].attempts, 2);
  EXPECT_EQ(all[2].next_attempt_at, 1764427200000);

  auto after = scan_queue(*db_, std::string("a1"), seqs[1], 100);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].id, "A4");
  auto limited = scan_queue(*db_, std::string("a1"), 0, 2);
  ASSERT_EQ(limited.size(), 2u);
  EXPECT_EQ(limited[1].id, "A1");

  auto held = scan_queue(*db_, std::nullopt, 0, 100);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].id, "H0");
  auto b = scan_queue(*db_, std::string("b"), 0, 100);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].id, "B0");
  EXPECT_TRUE(scan_queue(*db_, std::string("nobody"), 0, 100).empty());
}

TEST_F(Store, ScanQueueUsesTheQueueIndex) {
  // "without scanning the backlog": the plan must search webhooks_queue, not scan the table.
  SQLite::Statement plan(*db_,
                         "EXPLAIN QUERY PLAN SELECT seq, id FROM webhooks WHERE assigned_agent=? "
                         "AND state='queued' AND seq>? ORDER BY seq LIMIT ?");
  std::string detail;
  while (plan.executeStep()) detail += plan.getColumn(3).getString() + "\n";
  EXPECT_NE(detail.find("webhooks_queue"), std::string::npos) << detail;
  EXPECT_EQ(detail.find("TEMP B-TREE"), std::string::npos) << detail;
}

// A held webhook keeps the later ones of its alert (event, service) waiting on every agent:
// failover or a reroute may have moved them to another agent of the service.
TEST_F(Store, HeldBeforeFindsAHeldWebhookOfTheAlertOnAnyAgent) {
  auto held = insert_webhook(*db_, hook("H1", "a1")).seq;
  ASSERT_TRUE(transition(*db_, "H1", WebhookState::kQueued, WebhookState::kHeld));
  auto moved = insert_webhook(*db_, hook("W2", "b")).seq;
  NewWebhook other_service = hook("W3", "b");
  other_service.service = "remedy";
  auto other = insert_webhook(*db_, other_service).seq;
  EXPECT_TRUE(held_before(*db_, "a1", "4412901", "hpnnmi", moved));
  EXPECT_TRUE(held_before(*db_, "b", "4412901", "hpnnmi", moved));   // on another agent
  EXPECT_FALSE(held_before(*db_, "b", "4412901", "hpnnmi", held));   // nothing before it
  EXPECT_FALSE(held_before(*db_, "b", "4412901", "remedy", other));  // another service
  EXPECT_FALSE(held_before(*db_, "b", "other-event", "hpnnmi", moved));
  // By the index of held rows (0003), never a scan of the table.
  SQLite::Statement plan(*db_, std::string("EXPLAIN QUERY PLAN ") + kHeldOfAlertBeforeSql);
  std::string detail;
  while (plan.executeStep()) detail += plan.getColumn(3).getString() + "\n";
  EXPECT_NE(detail.find("webhooks_held"), std::string::npos) << detail;
  EXPECT_EQ(detail.find("SCAN"), std::string::npos) << detail;
}

// Review of the sixth session: with one webhook held anywhere, asking "is an earlier webhook of
// this alert held?" read every row the alert ever had (the event index, then each row), before
// every claim of the alert's webhooks: a long alert stalled the dispatcher for every agent. The
// question now costs a probe of the held rows' index, whatever the alert's history (measured in
// SQLite's virtual-machine steps, not in time).
TEST_F(Store, HeldBeforeCostsAProbeHoweverLongTheAlertsHistory) {
  SQLite::Transaction tx(*db_);
  for (int i = 0; i < 5000; ++i) {
    NewWebhook w = hook("D" + std::to_string(i), "a1");
    w.state = WebhookState::kDelivered;
    insert_webhook(*db_, w);
  }
  NewWebhook elsewhere = hook("H-other", "b");
  elsewhere.event_id = "another-alert";
  insert_webhook(*db_, elsewhere);
  ASSERT_TRUE(transition(*db_, "H-other", WebhookState::kQueued, WebhookState::kHeld));
  auto last = insert_webhook(*db_, hook("W-last", "a1")).seq;
  tx.commit();
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db_->getHandle(), kHeldOfAlertBeforeSql, -1, &stmt, nullptr),
            SQLITE_OK);
  sqlite3_bind_text(stmt, 1, "4412901", -1, SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 2, last);
  sqlite3_bind_text(stmt, 3, "hpnnmi", -1, SQLITE_STATIC);
  EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE);  // nothing of this alert is held
  const int steps = sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_VM_STEP, 0);
  sqlite3_finalize(stmt);
  EXPECT_LT(steps, 100) << "virtual-machine steps for an alert of 5,001 rows";
}

TEST_F(Store, QueuedBeforeFindsAnEarlierQueuedWebhookOfTheEventForTheAgent) {
  auto first = insert_webhook(*db_, hook("E1")).seq;  // event 4412901, agent a1
  auto second = insert_webhook(*db_, hook("E2")).seq;
  auto other = insert_webhook(*db_, hook("OTHER", "b")).seq;
  EXPECT_TRUE(queued_before(*db_, "a1", "4412901", second));
  EXPECT_FALSE(queued_before(*db_, "a1", "4412901", first));
  EXPECT_FALSE(queued_before(*db_, "a1", "other-event", second));
  EXPECT_FALSE(queued_before(*db_, "b", "4412901", other));  // a1's rows are not b's
  EXPECT_TRUE(queued_before(*db_, "b", "4412901", other + 1));
  ASSERT_TRUE(transition(*db_, "E1", WebhookState::kQueued, WebhookState::kDelivered));
  EXPECT_FALSE(queued_before(*db_, "a1", "4412901", second));  // no longer queued
}

TEST_F(Store, QueuedBeforeUsesTheEventIndex) {
  SQLite::Statement plan(*db_,
                         "EXPLAIN QUERY PLAN SELECT 1 FROM webhooks WHERE event_id=? AND "
                         "+assigned_agent=? AND +state='queued' AND +seq<? LIMIT 1");
  std::string detail;
  while (plan.executeStep()) detail += plan.getColumn(3).getString() + "\n";
  EXPECT_NE(detail.find("webhooks_event"), std::string::npos) << detail;
}

TEST_F(Store, LoadPayload) {
  NewWebhook w = hook("W");
  insert_webhook(*db_, w);
  EXPECT_EQ(load_payload(*db_, "W"), w.payload);
  EXPECT_FALSE(load_payload(*db_, "X").has_value());
}

TEST_F(Store, FeedAfterServesStoredRowsOldestFirst) {
  std::vector<std::int64_t> seqs;
  for (int i = 0; i < 5; ++i) {
    NewWebhook w = hook("S" + std::to_string(i), std::nullopt);
    w.state = WebhookState::kStored;
    if (i == 1) w.agent = "ws-198/10.2.0.121:8081";
    seqs.push_back(insert_webhook(*db_, w).seq);
  }
  insert_webhook(*db_, hook("Q"));  // queued: not part of the feed
  auto feed = feed_after(*db_, 0, 100);
  ASSERT_EQ(feed.size(), 5u);
  EXPECT_EQ(feed[0].id, "S0");
  EXPECT_EQ(feed[0].seq, seqs[0]);
  EXPECT_EQ(feed[0].service, "hpnnmi");
  EXPECT_EQ(feed[0].type, "status");
  EXPECT_EQ(feed[0].received_at, 1764427171123);
  EXPECT_EQ(feed[0].payload, hook("x").payload);
  EXPECT_FALSE(feed[0].agent.has_value());
  EXPECT_EQ(feed[1].agent, "ws-198/10.2.0.121:8081");
  auto page = feed_after(*db_, seqs[1], 2);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, "S2");
  EXPECT_EQ(page[1].id, "S3");
  EXPECT_TRUE(feed_after(*db_, seqs[4], 100).empty());
}

class StoreFilter : public Store {
 protected:
  void SetUp() override {
    Store::SetUp();
    if (HasFatalFailure()) return;
    // seq order: F0 .. F5.
    auto add = [&](const std::string& id, std::optional<std::string> agent,
                   std::optional<std::string> assigned, const std::string& service,
                   const std::string& type, const std::string& event, Millis at) {
      NewWebhook w = hook(id, std::move(assigned));
      w.agent = std::move(agent);
      w.service = service;
      w.type = type;
      w.event_id = event;
      w.received_at = at;
      insert_webhook(*db_, w);
    };
    add("F0", std::nullopt, "a1", "hpnnmi", "status", "E1", 1000);
    add("F1", "a2", "a2", "hpnnmi", "response", "E1", 2000);
    add("F2", std::nullopt, "a1", "remedy", "status", "E2", 3000);
    add("F3", "a9", std::nullopt, "remedy", "annotation", "E3", 4000);
    add("F4", std::nullopt, "a1", "hpnnmi", "deliveryStatus", "E2", 5000);
    add("F5", std::nullopt, std::nullopt, "hpnnmi", "status", "E4", 6000);
    transition(*db_, "F2", WebhookState::kQueued, WebhookState::kFailed);
    transition(*db_, "F4", WebhookState::kQueued, WebhookState::kDelivered);
    transition(*db_, "F5", WebhookState::kQueued, WebhookState::kDiscarded);
  }

  std::string ids(const WebhookFilter& f, bool with_payload = false) {
    std::string out;
    for_each_webhook(*db_, f, with_payload, [&](const WebhookRow& r) {
      out += (out.empty() ? "" : ",") + r.id;
      return true;
    });
    return out;
  }
};

TEST_F(StoreFilter, NoFilterListsNewestFirst) {
  EXPECT_EQ(ids({}), "F5,F4,F3,F2,F1,F0");
  WebhookFilter f;
  f.oldest_first = true;
  EXPECT_EQ(ids(f), "F0,F1,F2,F3,F4,F5");
  f.limit = 2;
  EXPECT_EQ(ids(f), "F0,F1");
}

TEST_F(StoreFilter, EachFilterNarrows) {
  WebhookFilter states;
  states.states = {WebhookState::kFailed, WebhookState::kDiscarded};
  EXPECT_EQ(ids(states), "F5,F2");
  WebhookFilter agent;  // the requested agent or the one holding it
  agent.agent = "a2";
  EXPECT_EQ(ids(agent), "F1");
  agent.agent = "a9";
  EXPECT_EQ(ids(agent), "F3");
  agent.agent = "a1";
  EXPECT_EQ(ids(agent), "F4,F2,F0");
  WebhookFilter service;
  service.service = "remedy";
  EXPECT_EQ(ids(service), "F3,F2");
  WebhookFilter type;
  type.type = "status";
  EXPECT_EQ(ids(type), "F5,F2,F0");
  WebhookFilter event;
  event.event = "E2";
  EXPECT_EQ(ids(event), "F4,F2");
  WebhookFilter window;
  window.since = 2000;  // inclusive
  window.until = 5000;  // exclusive
  EXPECT_EQ(ids(window), "F3,F2,F1");
  WebhookFilter by_id;
  by_id.ids = {"F3", "F0", "nope"};
  EXPECT_EQ(ids(by_id), "F3,F0");
  WebhookFilter combined;
  combined.service = "hpnnmi";
  combined.states = {WebhookState::kQueued};
  combined.type = "status";
  EXPECT_EQ(ids(combined), "F0");
}

TEST_F(StoreFilter, RowsCarryFieldsAndPayloadOnlyWhenAsked) {
  WebhookFilter f;
  f.ids = {"F2"};
  int n = 0;
  for_each_webhook(*db_, f, false, [&](const WebhookRow& r) {
    ++n;
    EXPECT_EQ(r.state, "failed");
    EXPECT_EQ(r.service, "remedy");
    EXPECT_EQ(r.received_at, "1970-01-01T00:00:03.000Z");
    EXPECT_EQ(r.assigned_agent, "a1");
    EXPECT_FALSE(r.agent.has_value());
    EXPECT_EQ(r.source, "direct");
    EXPECT_FALSE(r.payload.has_value());
    return true;
  });
  EXPECT_EQ(n, 1);
  for_each_webhook(*db_, f, true, [&](const WebhookRow& r) {
    EXPECT_EQ(r.payload, hook("x").payload);
    return true;
  });
}

TEST_F(StoreFilter, CallbackStopsEarly) {
  int n = 0;
  for_each_webhook(*db_, {}, false, [&](const WebhookRow&) { return ++n < 2; });
  EXPECT_EQ(n, 2);
}

}  // namespace
}  // namespace iarelay
