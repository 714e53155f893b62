// The dispatcher in-process with a real Writer, AgentDirectory and journal file, calling the
// real iarelay-sink process on loopback: delivery and signing, outages, pauses, failover,
// permanent failures and resend, Retry-After, held webhooks; rows no intake would store,
// journal read errors, and due webhooks behind thousands backing off.
#include "dispatch/dispatcher.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "common/crypto.h"
#include "common/metrics.h"
#include "common/utf8.h"
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

using Json = nlohmann::json;
using namespace std::chrono_literals;

using testing::wait_until;

// A running iarelay-sink with its record file.
class Sink {
 public:
  Sink(const testing::TempDir& dir, const std::string& name, std::vector<std::string> extra = {},
       int port = 0)
      : port_(port ? port : testing::free_port()), record_(dir.file(name + ".jsonl")) {
    std::vector<std::string> argv = {testing::bin("iarelay-sink"),
                                     "--listen=127.0.0.1:" + std::to_string(port_),
                                     "--record=" + record_};
    bool down = false;
    for (auto& e : extra) {
      down = down || e.rfind("--down-for", 0) == 0;
      argv.push_back(e);
    }
    process_ =
        std::make_unique<testing::Process>(argv, dir.file(name + ".out"), dir.file(name + ".err"));
    if (!down) {
      EXPECT_TRUE(testing::wait_for_port(port_));
    }
  }
  ~Sink() { stop(); }
  void stop() {
    if (process_ && process_->running()) {
      process_->signal(SIGTERM);
      process_->wait();
    }
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/apia_callback"; }
  std::vector<Json> records() const {
    std::vector<Json> out;
    std::ifstream in(record_);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) out.push_back(Json::parse(line));
    return out;
  }

 private:
  int port_;
  std::string record_;
  std::unique_ptr<testing::Process> process_;
};

AgentConfig agent(const std::string& id, const std::string& callback) {
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
  return a;
}

// Writer + directory + dispatcher over a journal in a temp dir.
class Relay : public testing::DispatchRelay {
 public:
  using DispatchRelay::DispatchRelay;

  // Stores a webhook as intake would (routed by the directory) and returns its id.
  std::string enqueue(const std::string& event, int n, std::optional<std::string> agent_id = {},
                      const std::string& type = "status") {
    NewWebhook w;
    w.id = new_webhook_id();
    w.received_at = now_millis();
    w.service = "svc";
    w.agent = agent_id;
    w.type = type;
    w.event_id = event;
    auto route = directory_->route("svc", agent_id);
    w.state = route.state;
    w.assigned_agent = route.assigned_agent;
    w.reason = route.reason;
    w.payload = R"({"eventIdentifier": )" + event + R"(, "status": "active", "n": )" +
                std::to_string(n) + "}";
    EXPECT_TRUE(writer_->run([&](SQLite::Database& db) { insert_webhook(db, w); }));
    return w.id;
  }

  Dispatcher& dispatcher() { return *dispatcher_; }

  // Stores a row as given, bypassing intake (as a feed, an older version or an operator's SQL
  // could): queued for `agent_id`.
  std::string insert_raw(const std::string& agent_id, const std::string& type,
                         const std::string& payload, const std::string& service = "svc",
                         std::optional<std::string> asked_agent = {},
                         std::optional<std::string> event = {}) {
    NewWebhook w;
    w.id = new_webhook_id();
    w.received_at = now_millis();
    w.service = service;
    w.agent = std::move(asked_agent);
    w.type = type;
    w.event_id = std::move(event);
    w.state = WebhookState::kQueued;
    w.assigned_agent = agent_id;
    w.payload = payload;
    EXPECT_TRUE(writer_->run([&](SQLite::Database& db) { insert_webhook(db, w); }));
    return w.id;
  }

  std::vector<WebhookRow> rows() {
    std::vector<WebhookRow> out;
    WebhookFilter f;
    f.oldest_first = true;
    for_each_webhook(*reader_, f, false, [&](const WebhookRow& r) {
      out.push_back(r);
      return true;
    });
    return out;
  }
  WebhookRow row(const std::string& id) {
    for (auto& r : rows())
      if (r.id == id) return r;
    ADD_FAILURE() << "no webhook " << id;
    return {};
  }
  int count(const std::string& state) {
    int n = 0;
    for (auto& r : rows()) n += r.state == state;
    return n;
  }
  std::vector<AttemptRecord> attempts(const std::string& id) {
    std::vector<AttemptRecord> out;
    SQLite::Statement q(*reader_,
                        "SELECT attempt, agent, started_at, http_status, error, outcome, "
                        "duration_ms FROM attempts WHERE webhook_id=? ORDER BY id");
    q.bind(1, id);
    while (q.executeStep()) {
      AttemptRecord a;
      a.webhook_id = id;
      a.attempt = q.getColumn(0).getInt();
      a.agent = q.getColumn(1).getString();
      a.started_at = *parse_time(q.getColumn(2).getString(), 0);
      if (!q.getColumn(3).isNull()) a.http_status = q.getColumn(3).getInt();
      if (!q.getColumn(4).isNull()) a.error = q.getColumn(4).getString();
      a.outcome = q.getColumn(5).getString();
      a.duration_ms = q.getColumn(6).getInt64();
      out.push_back(a);
    }
    return out;
  }
  int attempts_with(const std::string& outcome) {
    SQLite::Statement q(*reader_, "SELECT count(*) FROM attempts WHERE outcome=?");
    q.bind(1, outcome);
    q.executeStep();
    return q.getColumn(0).getInt();
  }
  std::optional<AgentRow> agent_row(const std::string& id) { return load_agent(*reader_, id); }
  Metrics& metrics() { return metrics_; }
  Writer::Stats writer_stats() const { return writer_->stats(); }
};

// A loopback HTTP server answering 204 (or what `answer` sets) that keeps every request's
// headers and body: unlike iarelay-sink it shows headers it was not told about, and bytes that
// are not UTF-8, and it can answer any bytes.
class Capture {
 public:
  struct Request {
    httplib::Headers headers;
    std::string body;
  };
  using Answer = std::function<void(const httplib::Request&, httplib::Response&)>;
  explicit Capture(Answer answer = {}) : port_(testing::free_port()) {
    server_.Post("/apia_callback",
                 [this, answer](const httplib::Request& req, httplib::Response& res) {
                   {
                     std::lock_guard lock(mu_);
                     requests_.push_back({req.headers, req.body});
                   }
                   res.status = 204;
                   if (answer) answer(req, res);
                 });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    EXPECT_TRUE(testing::wait_for_port(port_));
  }
  ~Capture() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/apia_callback"; }
  std::vector<Request> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::optional<Request> find(const std::string& webhook_id) {
    for (auto& r : requests()) {
      auto it = r.headers.find("webhook-id");
      if (it != r.headers.end() && it->second == webhook_id) return r;
    }
    return std::nullopt;
  }

 private:
  int port_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Request> requests_;  // GUARDED_BY(mu_)
};

// First successful delivery of each webhook id, in the order the sink received them.
std::vector<std::string> first_deliveries(const std::vector<Json>& records) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& r : records)
    if (r["status"].get<int>() / 100 == 2 && seen.insert(r["webhook_id"]).second)
      out.push_back(r["webhook_id"]);
  return out;
}

// For every event, its webhooks were first delivered in arrival (seq) order.
void expect_per_event_order(Relay& relay, const std::vector<Json>& records) {
  std::map<std::string, std::int64_t> seq;
  std::map<std::string, std::string> event;
  for (auto& r : relay.rows()) {
    seq[r.id] = r.seq;
    event[r.id] = r.event_id.value_or("");
  }
  std::map<std::string, std::int64_t> last_seq;
  for (const auto& id : first_deliveries(records)) {
    auto& last = last_seq[event[id]];
    EXPECT_GT(seq[id], last) << "event " << event[id] << ": webhook " << id
                             << " was delivered before an earlier one";
    last = seq[id];
  }
}

// Stricter than expect_per_event_order, over every call the agents saw (failed ones too, in
// the order given): no webhook of an alert was sent before every earlier webhook of the alert
// had been answered 2xx.
void expect_no_overtaking(Relay& relay, const std::vector<Json>& calls) {
  std::map<std::string, std::int64_t> seq;
  std::map<std::string, std::string> event;
  std::map<std::string, std::set<std::int64_t>> of_event;  // the seqs of each event
  for (auto& r : relay.rows()) {
    seq[r.id] = r.seq;
    event[r.id] = r.event_id.value_or("");
    of_event[event[r.id]].insert(r.seq);
  }
  std::set<std::int64_t> delivered;
  for (const auto& c : calls) {
    const std::string id = c["webhook_id"];
    for (std::int64_t earlier : of_event[event[id]]) {
      if (earlier >= seq[id]) break;
      EXPECT_TRUE(delivered.count(earlier))
          << "event " << event[id] << ": webhook " << id << " (seq " << seq[id]
          << ") was sent before seq " << earlier << " was delivered";
    }
    if (c["status"].get<int>() / 100 == 2) delivered.insert(seq[id]);
  }
}

// The calls two sinks saw, in the order they arrived (their received_at, then file order).
std::vector<Json> merged_calls(const std::vector<Json>& a, const std::vector<Json>& b) {
  std::vector<Json> all = a;
  all.insert(all.end(), b.begin(), b.end());
  std::stable_sort(all.begin(), all.end(), [](const Json& x, const Json& y) {
    return x["received_at"].get<std::string>() < y["received_at"].get<std::string>();
  });
  return all;
}

TEST(Dispatch, DeliversSignedIaMessageWithSpecHeaders) {
  testing::TempDir dir;
  testing::write_file(dir.file("secret"), "whsec_" + base64_encode("0123456789abcdef") + "\n");
  Sink sink(dir, "sink", {"--secret-file=" + dir.file("secret")});
  Relay relay(dir);
  auto a = agent("nnmi1", sink.url());
  a.format = AgentFormat::kIa;
  a.secret_file = dir.file("secret");
  relay.start({a});
  std::string id = relay.enqueue("4412901", 1);
  ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s));
  auto recs = sink.records();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["webhook_id"], id);
  EXPECT_EQ(recs[0]["signature"], "valid");
  EXPECT_EQ(recs[0]["attempt"], "1");
  EXPECT_EQ(recs[0]["type"], "status");
  EXPECT_EQ(recs[0]["service"], "svc");
  Json body = Json::parse(recs[0]["body"].get<std::string>());
  EXPECT_EQ(body["xmatters_callback_type"], "status");
  EXPECT_EQ(body["eventidentifier"], "4412901");
  EXPECT_EQ(body["n"], "1");
  auto row = relay.row(id);
  EXPECT_EQ(row.attempts, 1);
  EXPECT_EQ(row.last_status, 204);
  EXPECT_TRUE(row.delivered_at);
  auto att = relay.attempts(id);
  ASSERT_EQ(att.size(), 1u);
  EXPECT_EQ(att[0].outcome, "delivered");
  EXPECT_EQ(att[0].http_status, 204);
  EXPECT_NE(relay.metrics().render().find(
                R"(iarelay_deliveries_total{agent="nnmi1",outcome="delivered"} 1)"),
            std::string::npos);
}

TEST(Dispatch, SinkFlagsSignatureMadeWithAnotherSecret) {
  testing::TempDir dir;
  testing::write_file(dir.file("ours"), "s3cret-one");
  testing::write_file(dir.file("theirs"), "s3cret-two");
  Sink sink(dir, "sink", {"--secret-file=" + dir.file("theirs")});
  Relay relay(dir);
  auto a = agent("a", sink.url());
  a.secret_file = dir.file("ours");
  auto b = agent("b", sink.url());  // no secret: unsigned
  relay.start({a, b});
  std::string signed_id = relay.enqueue("1", 1, std::string("a"));
  std::string unsigned_id = relay.enqueue("2", 1, std::string("b"));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 10s));
  std::map<std::string, std::string> verdict;
  for (auto& r : sink.records()) verdict[r["webhook_id"]] = r["signature"];
  EXPECT_EQ(verdict[signed_id], "invalid");
  EXPECT_EQ(verdict[unsigned_id], "unsigned");
}

TEST(Dispatch, RawFormatSendsTheStoredBytes) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  relay.start({agent("a", sink.url())});
  std::string id = relay.enqueue("77", 3);
  ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s));
  EXPECT_EQ(sink.records().at(0)["body"], R"({"eventIdentifier": 77, "status": "active", "n": 3})");
}

TEST(Dispatch, AgentDownForAStretchThenEverythingDeliveredInOrder) {
  testing::TempDir dir;
  // Not listening for 3 s: connection refused, as with a stopped agent.
  Sink sink(dir, "sink", {"--down-for=3s"});
  Relay relay(dir);
  auto a = agent("a", sink.url());
  a.down_after = 2;
  relay.start({a});
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back(relay.enqueue(std::to_string(100 + i % 8), i, std::string("a")));
    if (i % 10 == 9) std::this_thread::sleep_for(300ms);  // they keep arriving during the outage
  }
  ASSERT_TRUE(wait_until(
      [&] { return relay.agent_row("a") && relay.agent_row("a")->state == "down"; }, 5s));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 40; }, 30s))
      << relay.count("delivered") << " delivered";
  EXPECT_EQ(relay.agent_row("a")->state, "up");
  // While down only one probe at a time: far fewer failed attempts than 40 webhooks retrying
  // every 100 ms..1 s for 3 s would make.
  EXPECT_LT(relay.attempts_with("retry"), 25);
  auto recs = sink.records();
  EXPECT_EQ(first_deliveries(recs).size(), 40u);
  expect_per_event_order(relay, recs);
}

TEST(Dispatch, PausedAgentReceivesNothingUntilResumed) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::string("maintenance"), std::nullopt, false);
  }));
  relay.start({agent("a", sink.url())});
  for (int i = 0; i < 5; ++i) relay.enqueue("9", i, std::string("a"));
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(sink.records().empty());
  EXPECT_EQ(relay.count("queued"), 5);
  // Resume as `iarelay agent resume` does, from outside the dispatcher.
  auto resumed = std::chrono::steady_clock::now();
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "up", std::nullopt, std::nullopt, false);
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 5; }, 10s));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  resumed);
  std::cout << "[ info ] resume to all 5 delivered: " << ms.count() << " ms\n";
  expect_per_event_order(relay, sink.records());
}

TEST(Dispatch, PauseWhileRunningStopsAttempts) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  relay.start({agent("a", sink.url())});
  relay.enqueue("1", 0, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 1; }, 10s));
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::nullopt, std::nullopt, false);
  }));
  std::this_thread::sleep_for(600ms);  // the dispatcher looks at the agents table every 250 ms
  relay.enqueue("1", 1, std::string("a"));
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(sink.records().size(), 1u);
  // A pause with an end time in the past ends by itself.
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::nullopt, now_millis() - 1, false);
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 10s));
  EXPECT_TRUE(wait_until([&] { return relay.agent_row("a")->state == "up"; }, 5s));
}

TEST(Dispatch, FailsOverToTheNextAgentOfTheService) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  // The first agent's port has no listener.
  auto first = agent("first", "http://127.0.0.1:" + std::to_string(testing::free_port()) + "/x");
  auto second = agent("second", sink.url());
  relay.start({first, second});
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(relay.enqueue(std::to_string(i), i));  // no agent id
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 10; }, 20s));
  int tried_first = 0;
  for (auto& id : ids) {
    EXPECT_EQ(relay.row(id).assigned_agent, "second");
    for (auto& att : relay.attempts(id)) tried_first += att.agent == "first";
  }
  EXPECT_GT(tried_first, 0);  // routed to "first" (configuration order), failed there, moved
  EXPECT_EQ(first_deliveries(sink.records()).size(), 10u);
  // A webhook naming its agent never fails over: it waits for "first".
  std::string pinned = relay.enqueue("99", 0, std::string("first"));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(relay.row(pinned).state, "queued");
  EXPECT_EQ(relay.row(pinned).assigned_agent, "first");
}

// A hold keeps the later webhooks of its alert waiting on every agent, not only on its own:
// failover must not send a later webhook (no agent identifier) through another agent of the
// service while the held one waits; once released, both go in arrival order.
TEST(Dispatch, HeldWebhookKeepsItsAlertWaitingAfterFailover) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  std::string e1 = relay.insert_raw("first", "status", R"({"eventIdentifier": 7, "n": 1})", "svc",
                                    std::nullopt, std::string("7"));
  std::string w2 = relay.insert_raw("first", "status", R"({"eventIdentifier": 7, "n": 2})", "svc",
                                    std::nullopt, std::string("7"));
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    WebhookFilter f;
    f.ids = {e1};
    auto held = change_webhooks(db, QueueOp::kHold, f, now_millis());
    ASSERT_TRUE(held) << held.status().message();
    EXPECT_EQ(*held, 1);
    set_agent_state(db, "first", "paused", std::string("maintenance"), std::nullopt, false);
  }));
  relay.start({agent("first", sink.url()), agent("second", sink.url())});
  // Failover leaves w2 with the held e1 (moved alone, the two would end up on two agents).
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(relay.row(w2).state, "queued");
  EXPECT_TRUE(sink.records().empty());
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    WebhookFilter f;
    f.ids = {e1};
    ASSERT_TRUE(change_webhooks(db, QueueOp::kRelease, f, now_millis()));
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 10s));
  auto recs = first_deliveries(sink.records());
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0], e1);
  EXPECT_EQ(recs[1], w2);
}

// Review (fifteenth session): a webhook that stays on its paused agent because it asks for that
// agent by identifier kept nothing of its alert there: the failover moved the alert's later
// webhook (no identifier) to the other agent, which sent it first. Now the alert stays
// together, as a retried webhook's failover keeps it (Review14b): both go, in order, on resume.
TEST(Review15, AFailoverLeavesAnAlertWithItsWebhookThatAsksForTheAgent) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  std::string pinned = relay.insert_raw("first", "status", R"({"eventIdentifier": 9, "n": 1})",
                                        "svc", std::string("first"), std::string("9"));
  std::string later = relay.insert_raw("first", "status", R"({"eventIdentifier": 9, "n": 2})",
                                       "svc", std::nullopt, std::string("9"));
  std::string other = relay.insert_raw("first", "status", R"({"eventIdentifier": 10, "n": 1})",
                                       "svc", std::nullopt, std::string("10"));
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    set_agent_state(db, "first", "paused", std::string("maintenance"), std::nullopt, false);
  }));
  relay.start({agent("first", sink.url()), agent("second", sink.url())});
  // The other alert fails over; the pinned one's alert waits for "first".
  ASSERT_TRUE(wait_until([&] { return relay.row(other).state == "delivered"; }, 10s));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(relay.row(later).state, "queued");
  EXPECT_EQ(relay.row(later).assigned_agent, "first") << "moved ahead of the pinned webhook";
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    set_agent_state(db, "first", "up", std::nullopt, std::nullopt, false);
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 10s));
  auto recs = first_deliveries(sink.records());
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0], other);
  EXPECT_EQ(recs[1], pinned);
  EXPECT_EQ(recs[2], later);
}

// The later webhook of a held one's alert, moved by an operator to another agent of the
// service, still waits there until the hold ends.
TEST(Dispatch, HeldWebhookKeepsItsAlertWaitingOnTheAgentALaterOneWasMovedTo) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  std::string e1 = relay.insert_raw("first", "status", R"({"eventIdentifier": 8, "n": 1})", "svc",
                                    std::nullopt, std::string("8"));
  std::string w2 = relay.insert_raw("first", "status", R"({"eventIdentifier": 8, "n": 2})", "svc",
                                    std::nullopt, std::string("8"));
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    WebhookFilter f;
    f.ids = {e1};
    ASSERT_TRUE(change_webhooks(db, QueueOp::kHold, f, now_millis()));
    MoveFrom from;
    from.agent = "first";
    auto moved = move_webhooks(db, from, "second", {});
    ASSERT_TRUE(moved) << moved.status().message();
    EXPECT_EQ(*moved, 1);  // w2: e1 is held, not queued
  }));
  relay.start({agent("first", sink.url()), agent("second", sink.url())});
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(relay.row(w2).assigned_agent, "second");
  EXPECT_EQ(relay.row(w2).state, "queued");
  EXPECT_TRUE(sink.records().empty());
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    WebhookFilter f;
    f.ids = {e1};
    ASSERT_TRUE(change_webhooks(db, QueueOp::kRelease, f, now_millis()));
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 10s));
}

TEST(Dispatch, ClientErrorFailsAtOnceAndResendDelivers) {
  testing::TempDir dir;
  int port = testing::free_port();
  auto sink = std::make_unique<Sink>(
      dir, "sink404", std::vector<std::string>{"--fail-rate=1", "--fail-status=404"}, port);
  Relay relay(dir);
  relay.start({agent("a", sink->url())});
  std::string id = relay.enqueue("5", 0, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "failed"; }, 10s));
  auto row = relay.row(id);
  EXPECT_EQ(row.attempts, 1);
  EXPECT_EQ(row.last_status, 404);
  ASSERT_TRUE(row.last_error);
  EXPECT_NE(row.last_error->find("HTTP 404: {\"error\":\"injected failure\"}"), std::string::npos)
      << *row.last_error;
  sink->stop();
  sink.reset();
  Sink healthy(dir, "sink", {}, port);
  WebhookFilter f;
  f.ids = {id};
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    auto n = resend(db, f, std::nullopt);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 1);
  }));
  ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s));
  EXPECT_EQ(relay.row(id).attempts, 1);                  // a fresh budget
  EXPECT_EQ(healthy.records().at(0)["webhook_id"], id);  // the same webhook-id
}

TEST(Dispatch, AttemptBudgetSpentFails) {
  testing::TempDir dir;
  Sink sink(dir, "sink", {"--fail-rate=1", "--fail-status=500"});
  Relay relay(dir);
  auto a = agent("a", sink.url());
  a.max_attempts = 3;
  a.down_after = 100;
  a.backoff_initial = 50;
  relay.start({a});
  std::string id = relay.enqueue("5", 0, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "failed"; }, 10s));
  auto row = relay.row(id);
  EXPECT_EQ(row.attempts, 3);
  EXPECT_EQ(row.last_error->rfind("attempt budget spent (3 attempts)", 0), 0u) << *row.last_error;
  EXPECT_EQ(relay.attempts(id).size(), 3u);
}

TEST(Dispatch, HonoursRetryAfter) {
  testing::TempDir dir;
  Sink sink(dir, "sink", {"--fail-rate=1", "--fail-status=503", "--retry-after=2"});
  Relay relay(dir);
  auto a = agent("a", sink.url());
  a.down_after = 100;
  a.backoff_initial = 50;
  a.backoff_max = 60'000;
#ifdef IARELAY_SANITIZED
  // Under ThreadSanitizer on a busy machine the sink's first answer took over the 2 s timeout
  // ("Operation timed out after 2000 milliseconds"), so there was no 503 to honour.
  a.timeout = 10'000;
#endif
  relay.start({a});
  std::string id = relay.enqueue("5", 0, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.attempts(id).size() >= 2; }, 10s));
  auto att = relay.attempts(id);
  // Retry-After counts from the answer: from the end of the first call to the second. (From
  // start to start, the time the sink took to answer counted too: under ThreadSanitizer on a
  // busy machine that alone was 2-4 s.)
  Millis gap = att[1].started_at - (att[0].started_at + att[0].duration_ms);
  EXPECT_GE(gap, 2'000);  // not the 50 ms backoff
  EXPECT_LT(gap, 4'000);
  EXPECT_EQ(att[0].http_status, 503) << att[0].error.value_or("");
}

TEST(Dispatch, HeldAndResentDiscardedWebhooksGoToAnAgentOnceUp) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::nullopt, std::nullopt, false);
  }));
  relay.start({agent("a", sink.url())}, {ServiceConfig{"svc", true}});
  std::string held = relay.enqueue("1", 0);  // no agent available: held (queued, no agent)
  EXPECT_EQ(relay.row(held).state, "queued");
  EXPECT_FALSE(relay.row(held).assigned_agent);
  // A discarded one (as a service without hold would have stored it).
  NewWebhook w;
  w.id = new_webhook_id();
  w.received_at = now_millis();
  w.service = "svc";
  w.type = "status";
  w.event_id = "2";
  w.state = WebhookState::kDiscarded;
  w.reason = "no agent available";
  w.payload = R"({"eventIdentifier": 2, "status": "active"})";
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) { insert_webhook(db, w); }));
  std::this_thread::sleep_for(1200ms);
  EXPECT_TRUE(sink.records().empty());
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "up", std::nullopt, std::nullopt, false);
  }));
  ASSERT_TRUE(wait_until([&] { return relay.row(held).state == "delivered"; }, 10s));
  WebhookFilter f;
  f.states = {WebhookState::kDiscarded};
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) { ASSERT_TRUE(resend(db, f, std::nullopt)); }));
  ASSERT_TRUE(wait_until([&] { return relay.row(w.id).state == "delivered"; }, 10s));
  EXPECT_EQ(relay.row(w.id).assigned_agent, "a");
}

// Issue 9: `type=%FF` with format = ia made nlohmann's dump throw (type_error.316) on the
// dispatcher thread, which died; requeued at every start, the row killed it again.
TEST(Dispatch, InvalidUtf8InAJournalRowDoesNotStopDeliveries) {
  testing::TempDir dir;
  Capture agent_server;
  Relay relay(dir);
  auto a = agent("a", agent_server.url());
  a.format = AgentFormat::kIa;
  a.all_kinds = true;  // the type below is none of the default kinds
  relay.start({a});
  // The reproduction: a valid payload, a type (and service, agent) with bytes not UTF-8.
  std::string bad_type =
      relay.insert_raw("a", "st\xFF", R"({"eventIdentifier": 1, "status": "active"})", "svc\xFF",
                       std::string("ws-1/127.0.0.1:18777\xFF"));
  std::string bad_payload =
      relay.insert_raw("a", "status", "{\"eventIdentifier\": 2, \"x\": \"\xFE\xC3\"}");
  std::string good = relay.enqueue("3", 3, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(good).state == "delivered"; }, 10s))
      << relay.row(good).state;
  // Delivered with U+FFFD for the bad bytes (the choice documented in ia_format.h).
  for (const auto& id : {bad_type, bad_payload})
    ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s))
        << relay.row(id).state << " " << relay.row(id).last_error.value_or("");
  auto req = agent_server.find(bad_type);
  ASSERT_TRUE(req);
  EXPECT_EQ(Json::parse(req->body)["xmatters_callback_type"], "st\xEF\xBF\xBD");
  EXPECT_EQ(req->headers.find("X-Iarelay-Type")->second, "st\xEF\xBF\xBD");
  EXPECT_EQ(req->headers.find("X-Iarelay-Service")->second, "svc\xEF\xBF\xBD");
  req = agent_server.find(bad_payload);
  ASSERT_TRUE(req);
  EXPECT_EQ(Json::parse(req->body)["x"], "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(relay.dispatcher().alive());
  // And it keeps going.
  std::string later = relay.enqueue("4", 4, std::string("a"));
  EXPECT_TRUE(wait_until([&] { return relay.row(later).state == "delivered"; }, 10s));
}

// A payload that is not JSON at all fails that webhook (reason recorded); the next is sent.
TEST(Dispatch, UnconvertiblePayloadFailsOnlyThatWebhook) {
  testing::TempDir dir;
  Capture agent_server;
  Relay relay(dir);
  auto a = agent("a", agent_server.url());
  a.format = AgentFormat::kIa;
  relay.start({a});
  std::string bad = relay.insert_raw("a", "status", "\xFF not json");
  std::string good = relay.enqueue("2", 2, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(good).state == "delivered"; }, 10s));
  ASSERT_TRUE(wait_until([&] { return relay.row(bad).state == "failed"; }, 10s));
  EXPECT_NE(relay.row(bad).last_error.value_or("").find("cannot convert payload to the ia format"),
            std::string::npos);
}

// Issue 11: the excerpt of an agent's answer was its first 500 bytes as they came: a Latin-1
// error page (0xE9) or a UTF-8 character cut in two made last_error, attempts.error and the
// agent's reason invalid UTF-8, and `iarelay status` / GET /v1/status failed on them.
TEST(Dispatch, ErrorTextCutFromAnAgentsAnswerIsValidUtf8) {
  testing::TempDir dir;
  // U+00E9 (C3 A9) at body offset 148 is split by the agent reason's cut at 200 bytes (51 bytes
  // of "attempt budget spent (1 attempts); last: HTTP 500: " come first; the reason is that of
  // the first failure, this or the Latin-1 one); the one at offset 499 by the excerpt's cut.
  const std::string straddling = std::string(148, 'x') + "\xC3\xA9" + std::string(349, 'y') +
                                 "\xC3\xA9" + std::string(40, 'z');
  Capture agent_server([&](const httplib::Request& req, httplib::Response& res) {
    res.status = 500;
    bool latin1 = req.body.find("\"latin1\"") != std::string::npos;
    res.set_content(latin1 ? std::string("<p>Donn\xE9"
                                         "es refus\xE9"
                                         "es</p>\r\n")
                           : straddling,
                    "text/html");
  });
  Relay relay(dir);
  auto a = agent("a", agent_server.url());
  a.max_attempts = 1;
  a.down_after = 1;
  relay.start({a});
  std::string latin1 = relay.insert_raw("a", "status", R"({"eventIdentifier": "latin1"})");
  std::string cut = relay.insert_raw("a", "status", R"({"eventIdentifier": "cut"})");
  for (const auto& id : {latin1, cut})
    ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "failed"; }, 10s))
        << relay.row(id).state;
  auto expect_valid = [](const std::string& text) {
    EXPECT_TRUE(is_valid_utf8(text)) << text;
    EXPECT_FALSE(has_control_character(text)) << text;
  };
  for (const auto& id : {latin1, cut}) {
    ASSERT_TRUE(relay.row(id).last_error);
    expect_valid(*relay.row(id).last_error);
    ASSERT_EQ(relay.attempts(id).size(), 1u);
    ASSERT_TRUE(relay.attempts(id)[0].error);
    expect_valid(*relay.attempts(id)[0].error);
  }
  // The Latin-1 letters are replacement characters; the text around them is kept.
  EXPECT_NE(relay.row(latin1).last_error->find("<p>Donn\xEF\xBF\xBD"
                                               "es refus\xEF\xBF\xBD"
                                               "es</p>"),
            std::string::npos)
      << *relay.row(latin1).last_error;
  // The character the cut splits is left out whole: the excerpt ends with the y's before it.
  const std::string error = relay.row(cut).last_error.value_or("");
  EXPECT_NE(error.find("x\xC3\xA9y"), std::string::npos) << error;
  EXPECT_EQ(error.substr(error.size() - 3), "yyy") << error;
  auto agent_row = relay.agent_row("a");
  ASSERT_TRUE(agent_row);
  ASSERT_TRUE(agent_row->reason);
  expect_valid(*agent_row->reason);
}

TEST(Dispatch, HeaderValuesFromTheJournalCannotAddHeaders) {
  testing::TempDir dir;
  Capture agent_server;
  Relay relay(dir);
  auto a = agent("a", agent_server.url());
  a.all_kinds = true;  // the type below is none of the default kinds
  relay.start({a});
  std::string id = relay.insert_raw("a", "status\r\nX-Evil: 1", R"({"eventIdentifier": 1})",
                                    "svc\nX-Evil-Too: 2\x01");
  ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s));
  auto req = agent_server.find(id);
  ASSERT_TRUE(req);
  EXPECT_EQ(req->headers.count("X-Evil"), 0u);
  EXPECT_EQ(req->headers.count("X-Evil-Too"), 0u);
  EXPECT_EQ(req->headers.find("X-Iarelay-Type")->second, "statusX-Evil: 1");
  EXPECT_EQ(req->headers.find("X-Iarelay-Service")->second, "svcX-Evil-Too: 2");
}

// Errors of the dispatcher's read connection (here: an operator's SQL breaking the tables it
// reads) are logged and backed off; deliveries go on, and resume once the fault is gone.
TEST(Dispatch, JournalReadErrorsDoNotStopDeliveries) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  relay.start({agent("a", sink.url())});
  // The agents table (pauses) gone: reloading it fails every second; delivery goes on.
  ASSERT_TRUE(relay.write([](SQLite::Database& db) { db.exec("DROP TABLE agents"); }));
  std::string first = relay.enqueue("1", 1, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(first).state == "delivered"; }, 10s));
  std::this_thread::sleep_for(1500ms);  // several failed reloads
  std::string second = relay.enqueue("2", 2, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(second).state == "delivered"; }, 10s));
  // The queue scan itself failing (a column it reads renamed away) for a while.
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    db.exec("ALTER TABLE webhooks RENAME COLUMN next_attempt_at TO moved_away");
  }));
  std::string third = relay.enqueue("3", 3, std::string("a"));
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(relay.dispatcher().alive());
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    db.exec("ALTER TABLE webhooks RENAME COLUMN moved_away TO next_attempt_at");
  }));
  ASSERT_TRUE(wait_until([&] { return relay.row(third).state == "delivered"; }, 15s));
  EXPECT_TRUE(relay.dispatcher().alive());
}

TEST(Dispatch, AliveWhileRunningAndNotOnceStopped) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  relay.start({agent("a", sink.url())});
  EXPECT_TRUE(relay.dispatcher().alive());
  std::this_thread::sleep_for(600ms);  // idle: the loop still turns (at least every 250 ms)
  EXPECT_TRUE(relay.dispatcher().alive());
  relay.dispatcher().stop(1'000);
  EXPECT_FALSE(relay.dispatcher().alive());
}

// `count` webhooks for agent "a" of distinct events (prefix + index) backing off: next attempt
// in an hour. Stored in one transaction.
void store_backing_off(Relay& relay, int count, const std::string& event_prefix) {
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    for (int i = 0; i < count; ++i) {
      NewWebhook w;
      w.id = new_webhook_id();
      w.received_at = now_millis();
      w.service = "svc";
      w.agent = "a";
      w.type = "status";
      w.event_id = event_prefix + std::to_string(i);
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

// Issue 9 D: the scan walked only the first 4096 rows of a queue; a due webhook behind 5,000
// backing off waited for them (an hour).
TEST(Dispatch, DueWebhookBehindThousandsBackingOffIsDeliveredPromptly) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  store_backing_off(relay, 5'000, "old-");
  relay.start({agent("a", sink.url())});
  auto start = std::chrono::steady_clock::now();
  std::string due = relay.enqueue("new", 1, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(due).state == "delivered"; }, 5s));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start);
  std::cout << "[ info ] due webhook behind 5000 backing off delivered in " << ms.count()
            << " ms\n";
  EXPECT_EQ(relay.count("queued"), 5'000);
  EXPECT_EQ(sink.records().size(), 1u);
}

// Deeper: the walk past the head goes on window by window (paced), so a due webhook behind
// 20,000 backing off is found in a few passes' windows, not at the forced reload's 4096 rows.
TEST(Dispatch, DueWebhookBehindADeepBacklogIsFoundWindowByWindow) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  store_backing_off(relay, 20'000, "old-");
  relay.start({agent("a", sink.url())});
  auto start = std::chrono::steady_clock::now();
  std::string due = relay.enqueue("new", 1, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(due).state == "delivered"; }, 5s));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start);
  std::cout << "[ info ] due webhook behind 20000 backing off delivered in " << ms.count()
            << " ms\n";
  EXPECT_EQ(sink.records().size(), 1u);
}

// ... but never before an earlier webhook of its alert that is still queued, whether that one
// is in the head window or past it.
TEST(Dispatch, DueWebhookBehindBackingOffKeepsAlertOrder) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  store_backing_off(relay, 5'000, "old-");  // events old-0 (head) ... old-4999 (past 4096)
  relay.start({agent("a", sink.url())});
  std::string behind_head = relay.enqueue("old-10", 1, std::string("a"));
  std::string behind_tail = relay.enqueue("old-4500", 2, std::string("a"));
  std::string free_to_go = relay.enqueue("other", 3, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.row(free_to_go).state == "delivered"; }, 5s));
  std::this_thread::sleep_for(1500ms);  // several fills, past the forced reload
  EXPECT_EQ(relay.row(behind_head).state, "queued");
  EXPECT_EQ(relay.row(behind_tail).state, "queued");
  EXPECT_EQ(sink.records().size(), 1u);
}

// Alerts of several webhooks behind the backlog drain fully, each alert in arrival order.
TEST(Dispatch, AlertsBehindBackingOffDrainInOrder) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  store_backing_off(relay, 5'000, "old-");
  auto a = agent("a", sink.url());
  a.max_inflight = 8;
  relay.start({a});
  for (int i = 0; i < 60; ++i) relay.enqueue(std::to_string(700 + i % 6), i, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 60; }, 15s))
      << relay.count("delivered") << " delivered";
  auto recs = sink.records();
  EXPECT_EQ(first_deliveries(recs).size(), 60u);
  expect_per_event_order(relay, recs);
}

// --- chains: the next webhook of an alert claimed with the outcome of the one before -----------

// One alert's chain takes one journal commit per webhook: its outcome and the claim of the next
// webhook of the alert are one transaction (two commits per webhook before: the outcome, then
// the claim after a walk of the queue).
TEST(Dispatch, AlertChainClaimsTheNextWebhookWithTheOutcome) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  constexpr int kN = 120;
  for (int i = 0; i < kN; ++i)
    relay.insert_raw("a", "status", R"({"eventIdentifier": 7, "n": )" + std::to_string(i) + "}",
                     "svc", std::string("a"), std::string("7"));
  const auto before = relay.writer_stats().commits;
  relay.start({agent("a", sink.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == kN; }, 30s))
      << relay.count("delivered") << " delivered";
  const auto commits = relay.writer_stats().commits - before;
  std::cout << "[ info ] " << commits << " commits for a chain of " << kN << " webhooks\n";
  EXPECT_LE(commits, static_cast<std::uint64_t>(kN + kN / 4));
  auto recs = sink.records();
  EXPECT_EQ(recs.size(), static_cast<std::size_t>(kN));  // each once
  expect_no_overtaking(relay, recs);
}

// An agent that fails a third of its calls (503, retried after 20..100 ms): each alert's chain
// stops at the failed webhook until it is delivered; nothing of the alert overtakes it.
TEST(Dispatch, AlertChainsKeepOrderWhileTheAgentFailsThenSucceeds) {
  testing::TempDir dir;
  Sink sink(dir, "sink", {"--fail-rate=0.33", "--seed=5"});
  Relay relay(dir);
  auto a = agent("a", sink.url());
  a.down_after = 1000;  // stays up: the retries are the webhooks' own
  a.backoff_initial = 20;
  a.backoff_max = 100;
  a.max_inflight = 4;
  relay.start({a});
  for (int i = 0; i < 90; ++i) relay.enqueue(std::to_string(500 + i % 3), i, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 90; }, 60s))
      << relay.count("delivered") << " delivered";
  auto recs = sink.records();
  EXPECT_GT(relay.attempts_with("retry"), 10);
  EXPECT_EQ(first_deliveries(recs).size(), 90u);
  expect_no_overtaking(relay, recs);
}

// Webhooks without an agent identifier: the first agent goes away in the middle of the alert's
// chain; the rest of the chain fails over to the second agent, in order, nothing lost.
TEST(Dispatch, AlertChainFailsOverToTheNextAgentInOrder) {
  testing::TempDir dir;
  // 5 ms a call: the chain (one call at a time) takes at least 750 ms on the first agent, so it
  // is still going when that agent goes away (without it, a fast chain delivered all 150 before
  // the stop under a loaded suite, and nothing was left to fail over).
  Sink first_sink(dir, "first", {"--latency=5ms"});
  Sink second_sink(dir, "second");
  Relay relay(dir);
  auto first = agent("first", first_sink.url());
  first.down_after = 2;
  relay.start({first, agent("second", second_sink.url())});
  constexpr int kN = 150;
  for (int i = 0; i < kN; ++i) relay.enqueue("77", i);  // no agent id: routed to "first"
  ASSERT_TRUE(wait_until([&] { return first_sink.records().size() >= 20; }, 20s));
  first_sink.stop();
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == kN; }, 60s))
      << relay.count("delivered") << " delivered";
  auto on_first = first_sink.records(), on_second = second_sink.records();
  EXPECT_FALSE(on_second.empty());
  EXPECT_EQ(first_deliveries(merged_calls(on_first, on_second)).size(),
            static_cast<std::size_t>(kN));
  expect_no_overtaking(relay, merged_calls(on_first, on_second));
}

// A pause in the middle of a chain stops it (the chain step reads the pause in its own
// transaction; a claimed webhook waiting for a slot is given back); resumed, the chain goes on
// from where it stopped, each webhook delivered once, in order.
TEST(Dispatch, AlertChainStopsAtAPauseAndGoesOnAfterResume) {
  testing::TempDir dir;
  Sink sink(dir, "sink", {"--latency=2ms"});
  Relay relay(dir);
  relay.start({agent("a", sink.url())});
  constexpr int kN = 400;
  for (int i = 0; i < kN; ++i) relay.enqueue(std::to_string(600 + i % 2), i, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return sink.records().size() >= 40; }, 20s));
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::string("maintenance"), std::nullopt, false);
  }));
  std::this_thread::sleep_for(800ms);  // the dispatcher reads the agents table every 250 ms
  const auto at_pause = sink.records().size();
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(sink.records().size(), at_pause) << "calls went on during the pause";
  EXPECT_LT(at_pause, static_cast<std::size_t>(kN)) << "the chain ended before the pause";
  EXPECT_EQ(relay.count("inflight"), 0);
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "up", std::nullopt, std::nullopt, false);
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == kN; }, 30s))
      << relay.count("delivered") << " delivered";
  auto recs = sink.records();
  EXPECT_EQ(recs.size(), static_cast<std::size_t>(kN));  // each once: nothing sent twice
  expect_no_overtaking(relay, recs);
}

// Issue 11 item 6: the wall clock stepped back or forward (an NTP correction, an operator's
// date -s) changes neither how often the dispatcher looks at pauses nor when it probes a down
// agent; only times stored in the journal (paused_until, next_attempt_at) are wall times.
class ClockSteps : public ::testing::Test {
 protected:
  void TearDown() override { set_wall_clock_offset_for_testing(0); }
};

TEST_F(ClockSteps, PauseIsSeenAtOnceAfterTheClockStepsBackAnHour) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  auto a = agent("a", sink.url());
#ifdef IARELAY_SANITIZED
  // The sink counts every call: under ThreadSanitizer on a busy machine its answers took over
  // the 2 s timeout, and the retries of the first webhook were counted as calls made while
  // paused.
  a.timeout = 10'000;
#endif
  relay.start({a});
  relay.enqueue("1", 0, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 1; }, 10s));
  set_wall_clock_offset_for_testing(-3'600'000);
  std::this_thread::sleep_for(300ms);  // the dispatcher runs a few turns on the new time
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::nullopt, std::nullopt, false);
  }));
  std::this_thread::sleep_for(600ms);  // the agents table is read every 250 ms
  relay.enqueue("1", 1, std::string("a"));
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(sink.records().size(), 1u) << "the pause was not seen after the clock stepped back";
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "up", std::nullopt, std::nullopt, false);
  }));
  EXPECT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 5s));
}

TEST_F(ClockSteps, ADownAgentIsProbedOnTimeAfterTheClockStepsBack) {
  testing::TempDir dir;
  int port = testing::free_port();
  Relay relay(dir);
  auto a = agent("a", "http://127.0.0.1:" + std::to_string(port) + "/apia_callback");
  a.down_after = 1;
  relay.start({a});
  std::string id = relay.enqueue("1", 0, std::string("a"));
  ASSERT_TRUE(wait_until(
      [&] {
        auto row = relay.agent_row("a");
        return row && row->state == "down";
      },
      10s));
  set_wall_clock_offset_for_testing(-3'600'000);
  Sink sink(dir, "sink", {}, port);  // the agent is back
  // Probes back off 1 s, 2 s, 4 s: the next one comes within seconds, not in an hour.
  EXPECT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s))
      << relay.row(id).state;
}

TEST_F(ClockSteps, APauseUntilAStoredTimeEndsWhenTheClockPassesIt) {
  testing::TempDir dir;
  Sink sink(dir, "sink");
  Relay relay(dir);
  relay.start({agent("a", sink.url())});
  // Paused until half an hour from now; then the clock steps forward an hour.
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    set_agent_state(db, "a", "paused", std::string("maintenance"), now_millis() + 1'800'000, false);
  }));
  std::this_thread::sleep_for(600ms);
  relay.enqueue("1", 0, std::string("a"));
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(sink.records().size(), 0u);
  set_wall_clock_offset_for_testing(3'600'000);
  EXPECT_TRUE(wait_until([&] { return relay.count("delivered") == 1; }, 5s));
}

// --- review of i14-chain ----------------------------------------------------------------------
// Calls two Capture servers saw, in one order: (event, n, status answered).
struct CallLog {
  std::mutex mu;
  std::vector<std::tuple<std::string, int, int>> calls;
  void add(const httplib::Request& req, int status) {
    auto j = Json::parse(req.body);
    std::lock_guard lock(mu);
    calls.emplace_back(j["eventIdentifier"].dump(), j["n"].get<int>(), status);
  }
  // Index of the first call of (event, n) answered 2xx (or any, when !ok_only); -1: none.
  std::string dump() {
    std::lock_guard lock(mu);
    std::string out;
    for (auto& [e, n, st] : calls)
      out += "(" + e + "," + std::to_string(n) + "," + std::to_string(st) + ") ";
    return out;
  }
  int first(const std::string& event, int n, bool ok_only) {
    std::lock_guard lock(mu);
    for (size_t i = 0; i < calls.size(); ++i)
      if (std::get<0>(calls[i]) == event && std::get<1>(calls[i]) == n &&
          (!ok_only || std::get<2>(calls[i]) / 100 == 2))
        return static_cast<int>(i);
    return -1;
  }
};

// Holds the journal's write lock (another connection, as `iarelay sql` or any other process
// could) for `hold` once asked: the writer's commits wait meanwhile.
class WriteLockHolder {
 public:
  WriteLockHolder(std::string path, std::chrono::milliseconds hold)
      : thread_([this, path, hold] {
          {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [&] { return asked_; });
          }
          SQLite::Database db(path, SQLite::OPEN_READWRITE);
          db.setBusyTimeout(10'000);
          db.exec("BEGIN IMMEDIATE");
          {
            std::lock_guard lock(mu_);
            locked_ = true;
          }
          cv_.notify_all();
          std::this_thread::sleep_for(hold);
          db.exec("ROLLBACK");
        }) {}
  ~WriteLockHolder() {
    take();
    thread_.join();
  }
  // Takes the lock (once) and returns when it is held.
  void take() {
    std::unique_lock lock(mu_);
    asked_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return locked_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool asked_ = false, locked_ = false;
  std::thread thread_;
};

// Alert 1 (n = 0, 1, 2) and alert 2 (n = 100) on "first" (max_inflight 2, down after one
// failure). The agent answers alert 1's first webhook 204 while the journal's write lock is
// held (its outcome, with the chain step claiming n = 1, waits to be committed), then alert 2's
// webhook 503 (the agent goes down). The chain step's commit then finds the agent down: n = 1
// goes to the ready list and is given back (unclaim), while the failover sweep, which skips
// webhooks in hand, has already moved n = 2 to "second". Without the chain step, n = 1 and
// n = 2 would both have been queued and moved together, in order.
TEST(Review14, ChainedWebhookGivenBackAtADownAgentIsNotOvertakenByFailover) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> g1_failed{false};
  WriteLockHolder holder(dir.file("journal.db"), 1500ms);
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    if (j["eventIdentifier"].dump() == "1" && j["n"] == 0) {
      holder.take();
      res.status = 204;
    } else if (j["eventIdentifier"].dump() == "2" && !g1_failed.exchange(true)) {
      std::this_thread::sleep_for(300ms);
      res.status = 503;
    } else {
      res.status = 204;
    }
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.max_inflight = 2;
  a.down_after = 1;
  // Webhooks without an agent identifier, routed to "first" (the first of the service).
  // Stored before the start: the first fill claims n = 0 and alert 2 together.
  std::vector<std::string> ids;
  for (auto [e, n] : std::vector<std::pair<int, int>>{{1, 0}, {2, 100}, {1, 1}, {1, 2}})
    ids.push_back(relay.insert_raw(
        "first", "status",
        R"({"eventIdentifier": )" + std::to_string(e) + R"(, "n": )" + std::to_string(n) + "}",
        "svc", std::nullopt, std::to_string(e)));
  relay.start({a, agent("second", second.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 4; }, 20s))
      << relay.count("delivered") << " delivered";
  const int n1_ok = log.first("1", 1, true), n2_sent = log.first("1", 2, false);
  ASSERT_GE(n1_ok, 0);
  ASSERT_GE(n2_sent, 0);
  EXPECT_LT(n1_ok, n2_sent) << "alert 1: n = 2 was sent before n = 1 was delivered; calls "
                            << log.dump();
  std::cout << "[ info ] calls " << log.dump() << "\n";
}

// As above with one agent, and the unclaim's write failing (a fault injected by a trigger on
// inflight -> queued; in production: a full disk, an `iarelay sql` session or other process
// holding the write lock past the 5 s busy timeout, an I/O error). unclaim's completion ignores
// the status: the key and the seq are released while the row stays inflight, so n = 2 goes
// first and n = 1 is never sent (inflight until the next restart).
TEST(Review14, FailedUnclaimOfAReadyWebhookLeavesItInflightAndLetsTheAlertGoOn) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> g1_failed{false};
  WriteLockHolder holder(dir.file("journal.db"), 1500ms);
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    if (j["eventIdentifier"].dump() == "1" && j["n"] == 0) {
      holder.take();
      res.status = 204;
    } else if (j["eventIdentifier"].dump() == "2" && !g1_failed.exchange(true)) {
      std::this_thread::sleep_for(300ms);
      res.status = 503;
    } else {
      res.status = 204;
    }
    log.add(req, res.status);
  });
  Relay relay(dir);
  ASSERT_TRUE(relay.write([](SQLite::Database& db) {
    db.exec(
        "CREATE TRIGGER review_fail_requeue BEFORE UPDATE OF state ON webhooks WHEN "
        "OLD.state='inflight' AND NEW.state='queued' BEGIN SELECT RAISE(ABORT, 'injected'); END");
  }));
  auto a = agent("first", first.url());
  a.max_inflight = 2;
  a.down_after = 1;
  std::vector<std::string> ids;
  for (auto [e, n] : std::vector<std::pair<int, int>>{{1, 0}, {2, 100}, {1, 1}, {1, 2}})
    ids.push_back(relay.insert_raw(
        "first", "status",
        R"({"eventIdentifier": )" + std::to_string(e) + R"(, "n": )" + std::to_string(n) + "}",
        "svc", std::nullopt, std::to_string(e)));
  relay.start({a});
  // The write failure lasts until the lock was released and the unclaim tried.
  std::this_thread::sleep_for(2500ms);
  ASSERT_TRUE(relay.write(
      [](SQLite::Database& db) { db.exec("DROP TRIGGER IF EXISTS review_fail_requeue"); }));
  EXPECT_TRUE(wait_until([&] { return relay.count("delivered") == 4; }, 15s))
      << relay.count("delivered") << " delivered; n = 1 is " << relay.row(ids[2]).state;
  const int n1_ok = log.first("1", 1, true), n2_sent = log.first("1", 2, false);
  EXPECT_GE(n1_ok, 0) << "alert 1: n = 1 never delivered (state " << relay.row(ids[2]).state << ")";
  EXPECT_TRUE(n1_ok >= 0 && (n2_sent < 0 || n1_ok < n2_sent))
      << "alert 1: n = 2 was sent before n = 1 was delivered; calls " << log.dump();
}

// Three webhooks of one alert, each of another type, stored before the dispatcher starts: the
// first fill claims the first, the chain steps the two others; all delivered once, in order.
// (A merge with agent kinds saw a SEGFAULT with this shape; on this branch it runs clean.)
TEST(Review14, ThreeTypesOfOneAlertStoredBeforeTheStartAreDeliveredInOrder) {
  testing::TempDir dir;
  CallLog log;
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    res.status = 204;
    log.add(req, 204);
  });
  Relay relay(dir);
  std::vector<std::string> ids;
  int n = 0;
  for (const char* type : {"status", "deliveryStatus", "response"})
    ids.push_back(relay.insert_raw("first", type,
                                   R"({"eventIdentifier": 42, "n": )" + std::to_string(n++) + "}",
                                   "svc", std::nullopt, std::string("42")));
  relay.start({agent("first", first.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 10s))
      << relay.count("delivered") << " delivered";
  EXPECT_EQ(log.dump(), "(42,0,204) (42,1,204) (42,2,204) ");
}

// A reload from event to fifo ordering between a delivered webhook's outcome (with its chain
// step) and that outcome's commit: the webhook the chain step claimed is the alert's next, not
// the agent's oldest; under fifo it must not go before an older webhook of another alert (due by
// the time of the commit). It is given back instead and the queue is sent in order.
TEST(Review14, AChainStepCommittedAfterAReloadToFifoDoesNotPassAnOlderWebhook) {
  testing::TempDir dir;
  CallLog log;
  WriteLockHolder holder(dir.file("journal.db"), 800ms);
  std::atomic<bool> a0_seen{false};
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    if (j["eventIdentifier"].dump() == "1" && j["n"] == 0) {
      holder.take();
      a0_seen = true;
    }
    res.status = 204;
    log.add(req, 204);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.max_inflight = 1;
  std::vector<std::string> ids;
  for (auto [e, n] : std::vector<std::pair<int, int>>{{1, 0}, {2, 100}, {1, 1}})
    ids.push_back(relay.insert_raw(
        "first", "status",
        R"({"eventIdentifier": )" + std::to_string(e) + R"(, "n": )" + std::to_string(n) + "}",
        "svc", std::nullopt, std::to_string(e)));
  // Alert 2's webhook comes due only after the reload (under event ordering it would otherwise
  // take the slot at once, while alert 1's outcome waits on the lock).
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    SQLite::Statement q(db, "UPDATE webhooks SET next_attempt_at = ? WHERE id = ?");
    q.bind(1, format_time(now_millis() + 500));
    q.bind(2, ids[1]);
    q.exec();
  }));
  relay.start({a});
  ASSERT_TRUE(wait_until([&] { return a0_seen.load(); }, 5s));
  std::this_thread::sleep_for(200ms);  // the outcome (and its chain step) waits on the lock
  a.ordering = Ordering::kFifo;
  relay.reload({a});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 15s))
      << relay.count("delivered") << " delivered";
  EXPECT_EQ(log.dump(), "(1,0,204) (2,100,204) (1,1,204) ");
}

// --- review14b -------------------------------------------------------------------------------

// iarelay_chained_claims_total of `agent` as the metrics render it (0 when absent).
long chained_claims(Relay& relay, const std::string& agent_id) {
  const std::string text = relay.metrics().render();
  const std::string name = "iarelay_chained_claims_total{agent=\"" + agent_id + "\"} ";
  auto at = text.find(name);
  if (at == std::string::npos) return 0;
  return std::stol(text.substr(at + name.size()));
}

// An outage ended by a probe: the webhook that failed when the agent went down is in the
// failure streak, the probe delivers it and the agent comes up with `expedite` = the streak.
// That seq is delivered and never picked again, so `expedite` never empties and may_chain
// (which wants it empty) refuses every chain step from then on, until the next outage: the
// agent drains alerts at the speed of main again (two commits per step).
TEST(Review14b, TheChainGoesOnAfterAnOutageEndedByAProbe) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    res.status = failed_once.exchange(true) ? 204 : 503;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("a", first.url());
  a.down_after = 1;
  relay.start({a});
  relay.enqueue("1", 0, std::string("a"));  // 503: the agent goes down; the probe delivers it
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 1; }, 10s))
      << "the probe did not deliver; calls " << log.dump();
  ASSERT_TRUE(
      wait_until([&] { return relay.agent_row("a") && relay.agent_row("a")->state == "up"; }, 5s));
  const long before = chained_claims(relay, "a");
  constexpr int kN = 40;
  for (int i = 0; i < kN; ++i) relay.enqueue("2", i, std::string("a"));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == kN + 1; }, 20s))
      << relay.count("delivered") << " delivered";
  const long chained = chained_claims(relay, "a") - before;
  EXPECT_GE(chained, kN / 2) << "one alert of " << kN << " webhooks after the outage: chain steps "
                             << chained;
}

// A reload that leaves a type out of the agent's kinds, made between a delivered webhook's
// outcome (its chain step takes the kinds of that moment) and the outcome's commit: the chain
// step claims the alert's next webhook of that type with the old kinds and continue_chain sends
// it, after the reload; the dispatcher's own pick would discard it with the reason.
TEST(Review14b, AChainStepCommittedAfterAReloadThatDropsATypeDoesNotSendIt) {
  testing::TempDir dir;
  CallLog log;
  WriteLockHolder holder(dir.file("journal.db"), 800ms);
  std::atomic<bool> first_seen{false};
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    if (j["n"] == 0) {
      holder.take();
      first_seen = true;
    }
    res.status = 204;
    log.add(req, 204);
  });
  Relay relay(dir);
  auto a = agent("a", first.url());
  a.max_inflight = 1;
  std::vector<std::string> ids;
  ids.push_back(relay.insert_raw("a", "status", R"({"eventIdentifier": 1, "n": 0})", "svc",
                                 std::nullopt, std::string("1")));
  ids.push_back(relay.insert_raw("a", "response", R"({"eventIdentifier": 1, "n": 1})", "svc",
                                 std::nullopt, std::string("1")));
  relay.start({a});
  ASSERT_TRUE(wait_until([&] { return first_seen.load(); }, 5s));
  std::this_thread::sleep_for(200ms);  // the outcome (and its chain step) waits on the lock
  a.kinds = {"status"};
  relay.reload({a});
  ASSERT_TRUE(
      wait_until([&] { return relay.count("delivered") + relay.count("discarded") == 2; }, 10s));
  EXPECT_EQ(relay.row(ids[1]).state, "discarded");
  EXPECT_EQ(log.dump(), "(1,0,204) ");
}

// Pre-existing (main has the same finish()): a webhook without an agent identifier that fails
// once (a 503) on an agent that stays up is moved to the next available agent of its service
// (finish's failover target) and its key released on the first; the first agent then sends
// the alert's next webhook at once, before the moved one was delivered on the other.
TEST(Review14b, OneRetryableFailureOnAnUpAgentDoesNotLetTheAlertOvertakeIt) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    std::this_thread::sleep_for(300ms);
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    res.status = j["n"] == 0 && !failed_once.exchange(true) ? 503 : 204;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.down_after = 5;  // stays up
  for (int n = 0; n < 3; ++n)
    relay.insert_raw("first", "status", R"({"eventIdentifier": 1, "n": )" + std::to_string(n) + "}",
                     "svc", std::nullopt, std::string("1"));
  relay.start({a, agent("second", second.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 15s))
      << relay.count("delivered") << " delivered";
  const int n0_ok = log.first("1", 0, true), n1_sent = log.first("1", 1, false);
  EXPECT_TRUE(n0_ok >= 0 && n1_sent >= 0 && n0_ok < n1_sent)
      << "alert 1: n = 1 was sent before n = 0 was delivered; calls " << log.dump();
}

// As above, but a later webhook of the alert asked for "first" by identifier: it cannot go
// along, so the failed one is not moved either; it is retried on "first", and the alert keeps
// its order there.
TEST(Review14b, AFailoverThatCannotTakeTheAlertsLaterWebhooksAlongRetriesHere) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  std::atomic<int> second_calls{0};
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    ++second_calls;
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    res.status = j["n"] == 0 && !failed_once.exchange(true) ? 503 : 204;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.down_after = 5;  // stays up
  for (int n = 0; n < 3; ++n)
    relay.insert_raw("first", "status", R"({"eventIdentifier": 1, "n": )" + std::to_string(n) + "}",
                     "svc", n == 1 ? std::optional<std::string>("first") : std::nullopt,
                     std::string("1"));
  relay.start({a, agent("second", second.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 15s))
      << relay.count("delivered") << " delivered";
  EXPECT_EQ(second_calls.load(), 0) << log.dump();
  EXPECT_EQ(log.dump(), "(1,0,503) (1,0,204) (1,1,204) (1,2,204) ");
}

// --- review14c -------------------------------------------------------------------------------

// The tail moved along with a failover (move_alert_tail) is the alert's later webhooks of every
// service (the event index, no service in the query), but the target was chosen because it
// hosts the failing webhook's service only. Agent "first" hosts svc and svc2, "second" only
// svc: one 503 on alert 1's svc webhook moves its svc2 webhook to "second", which is called
// with it (a service it does not host: its IA has no such integration). Left on "first" (or
// the failing one retried there), it would have been delivered by an agent of its service.
TEST(Review14c, AFailoverDoesNotTakeALaterWebhookOfAnotherServiceToAnAgentNotHostingIt) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  std::atomic<int> second_svc2{0};
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("X-Iarelay-Service") == "svc2") ++second_svc2;
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    res.status = j["n"] == 0 && !failed_once.exchange(true) ? 503 : 204;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.services = {"svc", "svc2"};
  a.down_after = 5;  // stays up
  relay.insert_raw("first", "status", R"({"eventIdentifier": 1, "n": 0})", "svc", std::nullopt,
                   std::string("1"));
  std::string other = relay.insert_raw("first", "status", R"({"eventIdentifier": 1, "n": 1})",
                                       "svc2", std::nullopt, std::string("1"));
  relay.start({a, agent("second", second.url())});  // "second" hosts svc only
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 15s))
      << relay.count("delivered") << " delivered; calls " << log.dump();
  EXPECT_EQ(second_svc2.load(), 0)
      << "svc2's webhook was sent to an agent not hosting svc2; calls " << log.dump();
  EXPECT_EQ(relay.row(other).assigned_agent, "first");
}

// A webhook an operator holds in the middle of an alert is not queued, so the move along with a
// failover leaves it on "first" and takes the one after it to "second": the alert is split
// around the hold. Once released (iarelay release: back on its agent), the held one goes on
// "first" and the later one, no longer behind a hold, goes on "second" at once: it is
// delivered before the released one. Without the move, both stayed on "first", in order.
TEST(Review14c, TheTailMovedWithAFailoverDoesNotOvertakeAHeldWebhookOfTheAlert) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    if (j["n"] == 1) std::this_thread::sleep_for(500ms);  // a slower answer than "second"'s
    res.status = j["n"] == 0 && !failed_once.exchange(true) ? 503 : 204;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.down_after = 5;  // stays up
  std::vector<std::string> ids;
  for (int n = 0; n < 3; ++n)
    ids.push_back(relay.insert_raw("first", "status",
                                   R"({"eventIdentifier": 1, "n": )" + std::to_string(n) + "}",
                                   "svc", std::nullopt, std::string("1")));
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    WebhookFilter f;
    f.ids = {ids[1]};
    auto held = change_webhooks(db, QueueOp::kHold, f, now_millis());
    ASSERT_TRUE(held) << held.status().message();
    EXPECT_EQ(*held, 1);
  }));
  relay.start({a, agent("second", second.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 1; }, 10s)) << log.dump();
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(relay.write([&](SQLite::Database& db) {
    WebhookFilter f;
    f.ids = {ids[1]};
    ASSERT_TRUE(change_webhooks(db, QueueOp::kRelease, f, now_millis()));
  }));
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 10s))
      << relay.count("delivered") << " delivered; calls " << log.dump();
  const int n1_ok = log.first("1", 1, true), n2_sent = log.first("1", 2, false);
  EXPECT_TRUE(n1_ok >= 0 && n2_sent >= 0 && n1_ok < n2_sent)
      << "alert 1: n = 2 (moved to second) was sent before the released n = 1 was delivered; "
         "assigned "
      << relay.row(ids[1]).assigned_agent.value_or("-") << ", "
      << relay.row(ids[2]).assigned_agent.value_or("-") << "; calls " << log.dump();
}

// The move takes the alert's later webhooks queued at the outcome's commit; one that arrives
// after it is routed by intake to the first available agent of the service, "first" (up), and
// is sent there at once while the failed one waits on "second". A KNOWN GAP, left open
// (docs/architecture.md step 8): intake routes each webhook by the routing rules (SPEC,
// "Routing"), which know nothing of where its alert's earlier webhooks wait; the contract's
// order is within one agent. Closing it needs routing by alert (a later issue); disabled
// until then, kept as its reproduction.
TEST(Review14c, DISABLED_AWebhookOfTheAlertArrivingAfterItsFailoverDoesNotOvertakeIt) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    std::this_thread::sleep_for(800ms);
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    res.status = j["n"] == 0 && !failed_once.exchange(true) ? 503 : 204;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.down_after = 5;  // stays up
  relay.start({a, agent("second", second.url())});
  std::string w0 = relay.enqueue("1", 0);
  ASSERT_TRUE(wait_until([&] { return relay.row(w0).assigned_agent == "second"; }, 10s))
      << log.dump();
  relay.enqueue("1", 1);  // routed to "first"
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 2; }, 10s))
      << relay.count("delivered") << " delivered; calls " << log.dump();
  const int n0_ok = log.first("1", 0, true), n1_sent = log.first("1", 1, false);
  EXPECT_TRUE(n0_ok >= 0 && n1_sent >= 0 && n0_ok < n1_sent)
      << "alert 1: n = 1 was sent before n = 0 was delivered; calls " << log.dump();
}

// As Review14b.OneRetryableFailureOnAnUpAgent... under `ordering = fifo`: the move is made for
// event ordering only, so under fifo (the whole agent one sequence, an alert's order included)
// the failed webhook goes to "second" alone and "first" sends the alert's next one at once.
TEST(Review14c, OneRetryableFailureOnAnUpFifoAgentDoesNotLetTheAlertOvertakeIt) {
  testing::TempDir dir;
  CallLog log;
  std::atomic<bool> failed_once{false};
  Capture second([&](const httplib::Request& req, httplib::Response& res) {
    std::this_thread::sleep_for(300ms);
    res.status = 204;
    log.add(req, 204);
  });
  Capture first([&](const httplib::Request& req, httplib::Response& res) {
    auto j = Json::parse(req.body);
    res.status = j["n"] == 0 && !failed_once.exchange(true) ? 503 : 204;
    log.add(req, res.status);
  });
  Relay relay(dir);
  auto a = agent("first", first.url());
  a.down_after = 5;  // stays up
  a.ordering = Ordering::kFifo;
  for (int n = 0; n < 3; ++n)
    relay.insert_raw("first", "status", R"({"eventIdentifier": 1, "n": )" + std::to_string(n) + "}",
                     "svc", std::nullopt, std::string("1"));
  relay.start({a, agent("second", second.url())});
  ASSERT_TRUE(wait_until([&] { return relay.count("delivered") == 3; }, 15s))
      << relay.count("delivered") << " delivered";
  const int n0_ok = log.first("1", 0, true), n1_sent = log.first("1", 1, false);
  EXPECT_TRUE(n0_ok >= 0 && n1_sent >= 0 && n0_ok < n1_sent)
      << "alert 1: n = 1 was sent before n = 0 was delivered; calls " << log.dump();
}

}  // namespace
}  // namespace iarelay
