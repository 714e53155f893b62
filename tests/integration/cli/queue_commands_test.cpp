// Issue 12, "queues an operator can see and fix": one way to name webhooks (id, unique prefix,
// seq) in every command; retry, hold, release and delete (Postfix's postqueue -i, postsuper
// -h/-H/-d), guarded and audited; resend of a delivered webhook (a replay) with show marking
// each series of attempts and who resent it; show saying why a webhook waits. The last tests
// run them against a running iarelayd with a stand-in sink.
#include <httplib.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "common/crypto.h"
#include "journal/journal.h"
#include "sample_journal.h"
#include "support/old_journal.h"

namespace iarelay::clitest {
namespace {

class QueueTest : public CliTest {
 protected:
  std::string seq_of(const std::string& id) { return field(id, "seq"); }
  // (action, filter, affected) of every audit row, oldest first.
  std::vector<std::tuple<std::string, std::string, std::int64_t>> audit_rows() {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT action, filter, affected FROM audit ORDER BY id");
    std::vector<std::tuple<std::string, std::string, std::int64_t>> out;
    while (q.executeStep())
      out.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getString(),
                       q.getColumn(2).getInt64());
    return out;
  }
  std::string detail_of_last_audit() {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    return db.execAndGet("SELECT coalesce(detail, '') FROM audit ORDER BY id DESC LIMIT 1")
        .getString();
  }
  std::int64_t links(const std::string& id) {
    return count("SELECT count(*) FROM audit_webhooks WHERE webhook_id='" + id + "'");
  }
  void reopen() {
    if (writer_) return;
    auto w = Writer::open(journal_, SyncLevel::kNormal);
    ASSERT_TRUE(w.is_ok()) << w.status().message();
    writer_ = std::move(*w);
  }
  void set_next_attempt(const std::string& id, Millis at) {
    reopen();
    op([&](SQLite::Database& db) {
      TransitionFields f;
      f.next_attempt_at = std::optional<Millis>(at);
      f.attempts = 3;
      f.last_error = std::optional<std::string>("HTTP 503: busy");
      ASSERT_TRUE(transition(db, id, WebhookState::kQueued, WebhookState::kQueued, f));
    });
  }
  // A ULID-like id: prefix tests need ids that share beginnings.
  void add_queued(const std::string& id, const std::string& event, Millis age,
                  std::optional<std::string> agent = std::string(kAgentA)) {
    reopen();
    add(id, WebhookState::kQueued, "hpnnmi", agent, "status", event, age);
  }
};

// --- naming webhooks --------------------------------------------------------------------------

TEST_F(QueueTest, EveryCommandTakesTheIdAUniquePrefixOrTheSeq) {
  add_queued("01JDAAAA0000000000000000Q1", "E9", -40 * kMinute);
  add_queued("01JDAAAA0000000000000000Q2", "E10", -39 * kMinute);
  add_queued("01JDBBBB0000000000000000Q3", "E11", -38 * kMinute);
  const std::string f1_seq = seq_of("f1");

  // show: seq and unique prefix (in any case: ids are upper case).
  auto by_seq = iarelay({"show", f1_seq, "--format=json"});
  EXPECT_EQ(json_of(by_seq)["id"], "f1");
  auto by_prefix = iarelay({"show", "01jdbb", "--format=json"});
  EXPECT_EQ(json_of(by_prefix)["id"], "01JDBBBB0000000000000000Q3");

  // resend by seq: refused before this issue ("ID" was taken as an id only).
  auto resend = iarelay({"resend", f1_seq});
  ASSERT_EQ(resend.exit_code, 0) << resend.err;
  EXPECT_EQ(field("f1", "state"), "queued");

  // hold and release by prefix and by seq.
  auto hold = iarelay({"hold", "01JDB", seq_of("q1")});
  ASSERT_EQ(hold.exit_code, 0) << hold.err;
  EXPECT_EQ(field("01JDBBBB0000000000000000Q3", "state"), "held");
  EXPECT_EQ(field("q1", "state"), "held");
  auto release = iarelay({"release", "01JDBBBB"});
  ASSERT_EQ(release.exit_code, 0) << release.err;
  EXPECT_EQ(field("01JDBBBB0000000000000000Q3", "state"), "queued");

  // An ambiguous prefix names the candidates and changes nothing; an unknown one says so.
  auto ambiguous = iarelay({"hold", "01JDA"});
  EXPECT_EQ(ambiguous.exit_code, 1);
  EXPECT_EQ(lines(ambiguous.err), 1) << ambiguous.err;
  EXPECT_NE(ambiguous.err.find("01JDAAAA0000000000000000Q1"), std::string::npos) << ambiguous.err;
  EXPECT_NE(ambiguous.err.find("01JDAAAA0000000000000000Q2"), std::string::npos) << ambiguous.err;
  EXPECT_NE(ambiguous.err.find("more than one"), std::string::npos) << ambiguous.err;
  EXPECT_EQ(field("01JDAAAA0000000000000000Q1", "state"), "queued");
  for (const char* command : {"show", "resend", "retry", "hold", "release", "delete"}) {
    auto unknown = iarelay({command, "ZZZZ"});
    EXPECT_EQ(unknown.exit_code, 1) << command;
    EXPECT_NE(unknown.err.find("no webhook has the id, id prefix or seq 'ZZZZ'"), std::string::npos)
        << command << ": " << unknown.err;
  }
}

// --- retry ------------------------------------------------------------------------------------

TEST_F(QueueTest, RetryMakesABackingOffWebhookDueNowAndIsAudited) {
  set_next_attempt("q1", now_ + 2 * kHour);
  auto dry = iarelay({"retry", "q1", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("would retry 1 webhook"), std::string::npos) << dry.out;
  EXPECT_NE(field("q1", "next_attempt_at"), "NULL");

  auto r = iarelay({"retry", "q1"}, {{"USER", "carol"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("made due now 1 webhook"), std::string::npos) << r.out;
  EXPECT_EQ(field("q1", "next_attempt_at"), "NULL");
  EXPECT_EQ(field("q1", "state"), "queued");
  EXPECT_EQ(field("q1", "attempts"), "3");  // the budget is not reset (resend does that)
  auto log = audit_rows();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0],
            std::make_tuple(std::string("retry"), std::string("retry q1"), std::int64_t{1}));
  EXPECT_EQ(links("q1"), 1);

  // Refused, nothing changed: inflight (a call is under way), failed (resend's business).
  auto refused = iarelay({"retry", "i1", "f1"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("i1 is inflight"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("f1 is failed"), std::string::npos) << refused.err;
  EXPECT_EQ(audit_rows().size(), 1u);

  // By filter: only queued webhooks whose next attempt is in the future.
  add_queued("later", "E20", -kMinute);
  set_next_attempt("later", now_ + kHour);
  auto all = iarelay({"retry", "--agent", kAgentA});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_NE(all.out.find("made due now 1 webhook"), std::string::npos) << all.out;
  EXPECT_EQ(field("later", "next_attempt_at"), "NULL");
  auto usage = iarelay({"retry"});
  EXPECT_EQ(usage.exit_code, 2);
}

// --- hold and release -------------------------------------------------------------------------

TEST_F(QueueTest, HoldKeepsAgentAndPlaceReleaseReturnsItThere) {
  set_next_attempt("q1", now_ + kHour);
  const std::string next = field("q1", "next_attempt_at");
  auto r = iarelay({"hold", "q1"}, {{"USER", "dave"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("held 1 webhook"), std::string::npos) << r.out;
  EXPECT_EQ(field("q1", "state"), "held");
  EXPECT_EQ(field("q1", "assigned_agent"), kAgentA);
  EXPECT_EQ(field("q1", "next_attempt_at"), next);

  // list and status know the state.
  EXPECT_EQ(listed_ids({"--state", "held"}), std::vector<std::string>{"q1"});
  auto status = json_of(iarelay({"status", "--format=json"}));
  EXPECT_EQ(status["totals"]["held"], 1);
  // The operator's holds apart from the unassigned webhooks (unrouted = hold: q2), whose
  // key "held" stays for compatibility.
  EXPECT_EQ(status["held_by_operator"]["webhooks"], 1) << status.dump();
  EXPECT_EQ(status["unassigned"]["queued"], 1) << status.dump();
  EXPECT_EQ(status["held"]["queued"], 1);
  auto text = iarelay({"status"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("unassigned 1 queued for any agent of their service"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("held       1 held by an operator"), std::string::npos) << text.out;

  auto show = json_of(iarelay({"show", "q1", "--format=json"}));
  ASSERT_FALSE(show["waiting"].empty());
  EXPECT_NE(show["waiting"][0].get<std::string>().find("held by an operator (dave@"),
            std::string::npos)
      << show["waiting"];

  // Refused: an inflight webhook (its call is under way), one held already, a failed one.
  auto refused = iarelay({"hold", "i1"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("i1 is inflight: a call is under way"), std::string::npos)
      << refused.err;
  EXPECT_EQ(field("i1", "state"), "inflight");
  EXPECT_EQ(iarelay({"release", "f1"}).exit_code, 1);

  auto back = iarelay({"release", "q1"});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(field("q1", "state"), "queued");
  EXPECT_EQ(field("q1", "assigned_agent"), kAgentA);
  EXPECT_EQ(field("q1", "next_attempt_at"), next);
  auto log = audit_rows();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(std::get<0>(log[0]), "hold");
  EXPECT_EQ(std::get<1>(log[1]), "release q1");
  EXPECT_EQ(links("q1"), 2);

  // A dry run changes nothing; purge never deletes held webhooks.
  ASSERT_EQ(iarelay({"hold", "--all", "--dry-run"}).exit_code, 0);
  EXPECT_EQ(field("q1", "state"), "queued");
  ASSERT_EQ(iarelay({"hold", "q1"}).exit_code, 0);
  auto purge = iarelay({"purge", "--before", "+1h", "--state", "held"});
  EXPECT_EQ(purge.exit_code, 2) << purge.err;
  EXPECT_EQ(field("q1", "state"), "held");
}

// --- delete -----------------------------------------------------------------------------------

TEST_F(QueueTest, DeleteListsWithoutForceDeletesWithItAndNeverInflight) {
  close_journal();
  const std::string before = testing::read_file(journal_);
  auto listing = iarelay({"delete", "f1", "q2"});
  ASSERT_EQ(listing.exit_code, 0) << listing.err;
  EXPECT_NE(listing.out.find("f1"), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("q2"), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("would delete 2 webhooks"), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("add --force"), std::string::npos) << listing.out;
  EXPECT_TRUE(testing::read_file(journal_) == before);

  auto refused = iarelay({"delete", "f1", "i1", "--force"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("i1 is inflight"), std::string::npos) << refused.err;
  EXPECT_EQ(field("f1", "state"), "failed");

  auto r = iarelay({"delete", "f1", "q2", "--force"}, {{"USER", "erin"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("deleted 2 webhooks"), std::string::npos) << r.out;
  EXPECT_EQ(field("f1", "state"), "<missing>");
  EXPECT_EQ(field("q2", "state"), "<missing>");
  EXPECT_EQ(count("SELECT count(*) FROM attempts WHERE webhook_id='f1'"), 0);
  SQLite::Database db(journal_, SQLite::OPEN_READONLY);
  SQLite::Statement q(db, "SELECT action, filter, affected, detail FROM audit");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getString(), "delete");
  EXPECT_EQ(q.getColumn(1).getString(), "delete f1 q2 --force");
  EXPECT_EQ(q.getColumn(2).getInt64(), 2);
  EXPECT_NE(q.getColumn(3).getString().find("f1"), std::string::npos);

  // By filter --state is required (inflight never deleted).
  EXPECT_EQ(iarelay({"delete", "--agent", kAgentB, "--force"}).exit_code, 2);
  EXPECT_EQ(iarelay({"delete", "--state", "inflight", "--force"}).exit_code, 2);
  auto by_filter = iarelay({"delete", "--state", "delivered", "--service", "remedy", "--force"});
  ASSERT_EQ(by_filter.exit_code, 0) << by_filter.err;
  EXPECT_EQ(field("d2", "state"), "<missing>");
  EXPECT_EQ(field("d1", "state"), "delivered");
  EXPECT_EQ(field("i1", "state"), "inflight");
}

// delete keeps the feed's guard of purge: a stored webhook not every consumer acknowledged is
// refused (naming who lags and the way out) unless confirmed a second time, and audited so.
TEST_F(QueueTest, DeleteRefusesStoredWebhooksAFeedConsumerHasNotAcknowledged) {
  auto refused = iarelay({"delete", "s1", "--force"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("inner-1"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--force-unacknowledged"), std::string::npos) << refused.err;
  EXPECT_EQ(field("s1", "state"), "stored");
  refused = iarelay({"delete", "--state", "stored", "--force"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("inner-1"), std::string::npos) << refused.err;
  EXPECT_EQ(field("s1", "state"), "stored");
  EXPECT_TRUE(audit_rows().empty());

  auto r = iarelay({"delete", "s1", "--force", "--force-unacknowledged"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(field("s1", "state"), "<missing>");
  EXPECT_NE(detail_of_last_audit().find("unacknowledged"), std::string::npos)
      << detail_of_last_audit();
}

// --- resend of a delivered webhook: a replay, in series --------------------------------------

TEST_F(QueueTest, ResendOfADeliveredWebhookReplaysItAndShowMarksTheSeries) {
  auto r = iarelay({"resend", "d1"}, {{"USER", "frank"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(field("d1", "state"), "queued");
  EXPECT_EQ(field("d1", "attempts"), "0");
  EXPECT_EQ(links("d1"), 1);
  // The daemon's second delivery, as it records it.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto w = Writer::open(journal_, SyncLevel::kNormal);
  ASSERT_TRUE(w.is_ok());
  writer_ = std::move(*w);
  op([&](SQLite::Database& db) {
    record_attempt(db, {"d1", 1, kAgentA, now_millis(), 8, 200, std::nullopt, "delivered"});
  });

  auto doc = json_of(iarelay({"show", "d1", "--format=json"}));
  ASSERT_EQ(doc["delivery_attempts"].size(), 2u) << doc.dump();
  EXPECT_EQ(doc["delivery_attempts"][0]["series"], 1);
  EXPECT_EQ(doc["delivery_attempts"][1]["series"], 2);
  ASSERT_EQ(doc["operator_actions"].size(), 1u);
  EXPECT_EQ(doc["operator_actions"][0]["action"], "resend");
  EXPECT_EQ(doc["operator_actions"][0]["command"], "resend d1");
  EXPECT_EQ(doc["operator_actions"][0]["starts_series"], 2);
  EXPECT_EQ(doc["operator_actions"][0]["actor"].get<std::string>().rfind("frank@", 0), 0u);

  auto table = iarelay({"show", "d1"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("series 1: as received"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("series 2: resent at"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("by frank@"), std::string::npos) << table.out;

  // A replay clears delivered_at: it is not delivered (again) yet.
  reopen();
  op([&](SQLite::Database& db) {
    TransitionFields f;
    f.delivered_at = now_ - 30 * kMinute;
    ASSERT_TRUE(transition(db, "d2", WebhookState::kDelivered, WebhookState::kDelivered, f));
  });
  EXPECT_NE(field("d2", "delivered_at"), "NULL");
  ASSERT_EQ(iarelay({"resend", "d2"}).exit_code, 0);
  EXPECT_EQ(field("d2", "delivered_at"), "NULL");

  // --help names what it refuses and why.
  auto help = iarelay({"resend", "--help"});
  for (const char* refused : {"queued", "inflight", "held", "stored"})
    EXPECT_NE(help.out.find("  " + std::string(refused) + " "), std::string::npos) << refused;
}

// Replaying delivered webhooks chosen by filter needs --force: without it, the command lists
// what it would replay and changes nothing (by explicit ids it needs none).
TEST_F(QueueTest, ResendOfDeliveredWebhooksByFilterNeedsForce) {
  op([&](SQLite::Database& db) {
    TransitionFields f;
    f.delivered_at = now_ - 50 * kHour;
    ASSERT_TRUE(transition(db, "d1", WebhookState::kDelivered, WebhookState::kDelivered, f));
  });
  close_journal();
  const std::string before = testing::read_file(journal_);
  auto listing = iarelay({"resend", "--state", "delivered", "--agent", kAgentA});
  ASSERT_EQ(listing.exit_code, 0) << listing.err;
  EXPECT_NE(listing.out.find("d1"), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("would resend 1 webhook"), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("--force"), std::string::npos) << listing.out;
  EXPECT_EQ(field("d1", "state"), "delivered");
  EXPECT_TRUE(testing::read_file(journal_) == before);
  // Failed ones alone need no --force.
  auto failed = iarelay({"resend", "--state", "failed", "--service", "remedy"});
  ASSERT_EQ(failed.exit_code, 0) << failed.err;
  EXPECT_EQ(field("f2", "state"), "queued");

  auto r = iarelay({"resend", "--state", "delivered", "--agent", kAgentA, "--force"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("resent 1 webhook"), std::string::npos) << r.out;
  EXPECT_EQ(field("d1", "state"), "queued");
  EXPECT_EQ(field("d1", "delivered_at"), "NULL");
  EXPECT_EQ(field("d2", "state"), "delivered");
}

// --- show: why a webhook waits ----------------------------------------------------------------

TEST_F(QueueTest, ShowSaysWhyAWebhookWaits) {
  auto reasons = [&](const std::string& id, std::vector<std::string> global = {}) {
    std::vector<std::string> args = global;
    args.insert(args.end(), {"show", id, "--format=json"});
    auto doc = json_of(global.empty() ? iarelay(args) : iarelay_raw(args));
    std::string all;
    for (const auto& w : doc["waiting"]) all += w.get<std::string>() + "\n";
    return all;
  };
  // Unassigned (unrouted = hold).
  EXPECT_NE(reasons("q2").find("waits for any agent of service 'remedy'"), std::string::npos);
  // Agent down since T (agent-b is down in the sample).
  add_queued("onb", "E30", -kMinute, std::string(kAgentB));
  EXPECT_NE(reasons("onb").find("agent agent-b down since"), std::string::npos) << reasons("onb");
  // Backing off until T.
  set_next_attempt("q1", now_ + kHour);
  EXPECT_NE(reasons("q1").find("backing off until " + field("q1", "next_attempt_at")),
            std::string::npos)
      << reasons("q1");
  // Behind an earlier webhook of its alert (q1, event E1).
  add_queued("q1b", "E1", -kMinute);
  EXPECT_NE(reasons("q1b").find("behind webhook q1"), std::string::npos) << reasons("q1b");
  // Agent paused until T.
  ASSERT_EQ(iarelay({"agent", "pause", kAgentA, "--until", "+2h", "--reason", "upgrade"}).exit_code,
            0);
  EXPECT_NE(reasons("q1").find("paused since"), std::string::npos) << reasons("q1");
  EXPECT_NE(reasons("q1").find("upgrade"), std::string::npos) << reasons("q1");
  // No agent configured for its identifier (with --config).
  add_queued("lost", "E31", -kMinute, std::string("nobody/10.9.9.9:8081"));
  const std::string config = config_file();
  EXPECT_NE(reasons("lost", {"--config", config})
                .find("no agent is configured for identifier 'nobody/10.9.9.9:8081'"),
            std::string::npos)
      << reasons("lost", {"--config", config});
  // Delivered webhooks do not wait.
  EXPECT_EQ(reasons("d1"), "");
  // The table shows it too.
  auto table = iarelay({"show", "q1b"});
  EXPECT_NE(table.out.find("waiting          behind webhook q1"), std::string::npos) << table.out;
}

// --- the migration that adds the held state ---------------------------------------------------

TEST(HeldStateMigration, UpgradesA0001JournalKeepingRowsAndTheSeqRecord) {
  testing::TempDir dir;
  const std::string path = dir.file("old.db");
  {
    // A journal as the previous build left it: migration 0001 only, an edge's raised seq floor.
    SQLite::Database db = testing::journal_at_first_migration(path);
    db.exec(
        "INSERT INTO webhooks (id, source, received_at, service, type, event_id, state, "
        "assigned_agent, payload) VALUES ('old1', 'direct', '2026-11-29T14:00:00.000Z', "
        "'hpnnmi', 'status', 'E1', 'queued', 'a1', '{\"k\":1}')");
    db.exec("UPDATE sqlite_sequence SET seq = 5000000 WHERE name = 'webhooks'");
    // Before the migration the journal refuses the state.
    EXPECT_THROW(db.exec("UPDATE webhooks SET state = 'held'"), SQLite::Exception);
  }
  auto r = testing::run({testing::bin("iarelay"), "--journal", path, "migrate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SQLite::Database db(path, SQLite::OPEN_READWRITE);
  EXPECT_EQ(db.execAndGet("SELECT payload FROM webhooks WHERE id = 'old1'").getString(),
            "{\"k\":1}");
  EXPECT_EQ(db.execAndGet("SELECT seq FROM sqlite_sequence WHERE name = 'webhooks'").getInt64(),
            5000000);
  EXPECT_EQ(
      db.execAndGet("SELECT count(*) FROM sqlite_master WHERE name = 'webhooks_0001'").getInt(), 0);
  db.exec("UPDATE webhooks SET state = 'held' WHERE id = 'old1'");
  db.exec(
      "INSERT INTO webhooks (id, source, received_at, service, type, state, payload) VALUES "
      "('new1', 'direct', '2026-11-29T15:00:00.000Z', 'hpnnmi', 'status', 'queued', '{}')");
  EXPECT_EQ(db.execAndGet("SELECT seq FROM webhooks WHERE id = 'new1'").getInt64(), 5000001);
  EXPECT_EQ(db.execAndGet("PRAGMA integrity_check").getString(), "ok");
}

// --- against a running iarelayd ---------------------------------------------------------------

class LiveQueueTest : public ::testing::Test {
 protected:
  static constexpr const char* kAgent = "nnmi/10.1.1.1:8081";

  void start_sink(bool failing, const std::string& latency = "") {
    sink_.reset();
    std::vector<std::string> argv = {testing::bin("iarelay-sink"), "--listen",
                                     "127.0.0.1:" + std::to_string(sink_port_), "--record",
                                     dir_.file("sink.jsonl")};
    if (failing) argv.insert(argv.end(), {"--fail-rate", "1"});
    if (!latency.empty()) argv.insert(argv.end(), {"--latency", latency});
    sink_ = std::make_unique<testing::Process>(argv, dir_.file("sink.out"), dir_.file("sink.log"));
    ASSERT_TRUE(testing::wait_for_port(sink_port_));
  }
  void start_relay(const std::string& agent_extra = "") {
    port_ = testing::free_port();
    testing::write_file(dir_.file("relay.conf"),
                        "journal = " + dir_.file("journal.db") +
                            "\ndrain_grace = 1s\n[listen]\naddress = " + "127.0.0.1:" +
                            std::to_string(port_) + "\n[agent.nnmi]\nid = " + kAgent +
                            "\ncallback = http://127.0.0.1:" + std::to_string(sink_port_) +
                            "/apia_callback\nservices = hpnnmi\ndown_after = 100\n" + agent_extra);
    relay_ = std::make_unique<testing::Process>(
        std::vector<std::string>{testing::bin("iarelayd"), "--config", dir_.file("relay.conf")}, "",
        dir_.file("relay.log"));
    ASSERT_TRUE(testing::wait_for_port(port_)) << testing::read_file(dir_.file("relay.log"));
  }
  std::string post(int event) {
    httplib::Client client("127.0.0.1", port_);
    auto res = client.Post("/v1/webhooks/hpnnmi",
                           R"({"status":"active","eventIdentifier":)" + std::to_string(event) + "}",
                           "application/json");
    EXPECT_TRUE(res);
    if (!res) return "";
    EXPECT_EQ(res->status, 202) << res->body;
    return nlohmann::json::parse(res->body)["id"];
  }
  testing::CommandResult iarelay(std::vector<std::string> args) {
    args.insert(args.begin(), {testing::bin("iarelay"), "--config", dir_.file("relay.conf")});
    return testing::run(args);
  }
  // Webhook ids the sink received, in order.
  std::vector<std::string> delivered() {
    std::vector<std::string> ids;
    std::istringstream lines(testing::read_file(dir_.file("sink.jsonl")));
    std::string line;
    while (std::getline(lines, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object()) ids.push_back(j.value("webhook_id", ""));
    }
    return ids;
  }
  std::string state(const std::string& id) {
    SQLite::Database db(dir_.file("journal.db"), SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT state FROM webhooks WHERE id=?");
    q.bind(1, id);
    return q.executeStep() ? q.getColumn(0).getString() : "<missing>";
  }

  testing::TempDir dir_;
  int port_ = 0, sink_port_ = testing::free_port();
  std::unique_ptr<testing::Process> sink_, relay_;
};

TEST_F(LiveQueueTest, RetryOnARunningDaemonSendsABackingOffWebhookWithinASecondOrTwo) {
  start_sink(true);
  start_relay("backoff_initial = 10m\nbackoff_max = 10m\n");
  const std::string id = post(1);
  // One failed attempt: it backs off for ten minutes.
  ASSERT_TRUE(testing::wait_until(
      [&] {
        SQLite::Database db(dir_.file("journal.db"), SQLite::OPEN_READONLY);
        return db.execAndGet("SELECT count(*) FROM attempts").getInt() >= 1;
      },
      std::chrono::seconds(10)));
  start_sink(false);  // the agent works again
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(state(id), "queued");  // still backing off
  auto show = iarelay({"show", id.substr(0, 20)});
  EXPECT_NE(show.out.find("backing off until"), std::string::npos) << show.out << show.err;

  const auto before = std::chrono::steady_clock::now();
  auto r = iarelay({"retry", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(
      testing::wait_until([&] { return state(id) == "delivered"; }, std::chrono::seconds(5)))
      << state(id) << "\n"
      << testing::read_file(dir_.file("relay.log"));
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(3));
}

TEST_F(LiveQueueTest, HeldWebhookIsNotSentAndLaterOnesOfItsAlertWaitUntilRelease) {
  // One call at a time, each answered after 1.5 s: what arrives behind the first call waits
  // in the queue long enough to be held.
  start_sink(false, "1500ms");
  start_relay("max_inflight = 1\n");
  const std::string blocker = post(1);
  ASSERT_TRUE(
      testing::wait_until([&] { return state(blocker) == "inflight"; }, std::chrono::seconds(5)));
  const std::string first = post(7), second = post(7), other = post(8);
  ASSERT_EQ(state(first), "queued");
  auto hold = iarelay({"hold", first});
  ASSERT_EQ(hold.exit_code, 0) << hold.err;

  // The other alert goes; the held webhook and the later one of its alert stay.
  ASSERT_TRUE(
      testing::wait_until([&] { return state(other) == "delivered"; }, std::chrono::seconds(5)))
      << testing::read_file(dir_.file("relay.log"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(state(first), "held");
  EXPECT_EQ(state(second), "queued");
  auto why = iarelay({"show", second});
  EXPECT_NE(why.out.find("behind webhook " + first), std::string::npos) << why.out;

  auto release = iarelay({"release", first});
  ASSERT_EQ(release.exit_code, 0) << release.err;
  ASSERT_TRUE(
      testing::wait_until([&] { return state(second) == "delivered"; }, std::chrono::seconds(5)));
  auto ids = delivered();
  auto at = [&](const std::string& id) { return std::find(ids.begin(), ids.end(), id); };
  ASSERT_NE(at(first), ids.end());
  EXPECT_LT(at(first), at(second));  // the alert's order is kept
}

}  // namespace
}  // namespace iarelay::clitest
