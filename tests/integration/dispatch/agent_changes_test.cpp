// The dispatcher in-process against loopback servers, for what changes about an agent that is
// already running: a reload (SIGHUP) of its down_after, ordering or secret, and an agent that
// starts answering 3xx (an http -> https redirect): not followed, retried, counted as a failure.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/crypto.h"
#include "common/metrics.h"
#include "common/time.h"
#include "dispatch/dispatcher.h"
#include "journal/journal.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"
#include "relay_harness.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {
using namespace std::chrono_literals;
using Json = nlohmann::json;
using testing::wait_until;

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

// Writer + directory + dispatcher over a journal in a temp dir; reload() does what
// Relay::reload does once the new configuration is accepted.
class Relay : public testing::DispatchRelay {
 public:
  using DispatchRelay::DispatchRelay;
  // A webhook for the service (routed as intake would) of alert `event` (digits).
  std::string enqueue(const std::string& event, int n) {
    NewWebhook w;
    w.id = new_webhook_id();
    w.received_at = now_millis();
    w.service = "svc";
    w.type = "status";
    w.event_id = event;
    auto route = directory_->route("svc", std::nullopt);
    w.state = route.state;
    w.assigned_agent = route.assigned_agent;
    w.payload = R"({"eventIdentifier": )" + event + R"(, "status": "active", "n": )" +
                std::to_string(n) + "}";
    EXPECT_TRUE(writer_->run([&](SQLite::Database& db) { insert_webhook(db, w); }));
    return w.id;
  }
  WebhookRow row(const std::string& id) {
    WebhookRow out;
    WebhookFilter f;
    for_each_webhook(*reader_, f, false, [&](const WebhookRow& r) {
      if (r.id != id) return true;
      out = r;
      return false;
    });
    return out;
  }
  std::vector<AttemptRecord> attempts(const std::string& id) {
    std::vector<AttemptRecord> out;
    SQLite::Statement q(*reader_,
                        "SELECT attempt, http_status, error, outcome FROM attempts "
                        "WHERE webhook_id=? ORDER BY id");
    q.bind(1, id);
    while (q.executeStep()) {
      AttemptRecord a;
      a.attempt = q.getColumn(0).getInt();
      if (!q.getColumn(1).isNull()) a.http_status = q.getColumn(1).getInt();
      if (!q.getColumn(2).isNull()) a.error = q.getColumn(2).getString();
      a.outcome = q.getColumn(3).getString();
      out.push_back(a);
    }
    return out;
  }
  std::string agent_state(const std::string& id) {
    auto row = load_agent(*reader_, id);
    return row ? row->state : "<none>";
  }
};

// A loopback server that answers every POST with `status`, after `latency`, with `headers`;
// counts requests and, per alert (the raw payload's eventIdentifier), the most calls it held at
// once.
class Agent {
 public:
  Agent(int status, httplib::Headers headers = {}, std::chrono::milliseconds latency = 0ms)
      : port_(testing::free_port()) {
    server_.Post(".*", [this, status, headers, latency](const httplib::Request& req,
                                                        httplib::Response& res) {
      std::string event;
      auto body = Json::parse(req.body, nullptr, false);
      if (body.is_object() && body.contains("eventIdentifier"))
        event = body["eventIdentifier"].dump();
      {
        std::lock_guard lock(mu_);
        ++requests_;
        int now = ++inflight_[event];
        most_[event] = std::max(most_[event], now);
      }
      std::this_thread::sleep_for(latency);
      {
        std::lock_guard lock(mu_);
        --inflight_[event];
      }
      for (const auto& [k, v] : headers) res.set_header(k, v);
      res.status = status;
    });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    EXPECT_TRUE(testing::wait_for_port(port_));
  }
  ~Agent() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/apia_callback"; }
  int requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  int most_at_once(const std::string& event) {
    std::lock_guard lock(mu_);
    return most_[event];
  }
  int inflight(const std::string& event) {
    std::lock_guard lock(mu_);
    return inflight_[event];
  }

 private:
  int port_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  int requests_ = 0;                     // GUARDED_BY(mu_)
  std::map<std::string, int> inflight_;  // GUARDED_BY(mu_)
  std::map<std::string, int> most_;      // GUARDED_BY(mu_)
};

// An agent behind http:// that now redirects to https:// must not fail a whole queue in
// seconds: the 301 is not followed, the webhook is retried with backoff, the error names where
// the agent pointed, and down_after such answers make the agent down.
TEST(AgentChanges, RedirectIsRetriedNamesTheLocationAndMakesTheAgentDown) {
  testing::TempDir dir;
  Agent elsewhere(204);  // where the Location points: must never be called
  const std::string location = elsewhere.url();
  Agent redirecting(301, {{"Location", location}});
  Relay relay(dir);
  auto a = agent("a", redirecting.url());
  a.down_after = 3;
  relay.start({a});
  std::string id = relay.enqueue("101", 1);
  // The agent's state is journaled before the outcome of the attempt that made it down.
  ASSERT_TRUE(wait_until(
      [&] {
        return relay.agent_state("a") == "down" && relay.attempts(id).size() >= 3 &&
               relay.row(id).state == "queued";
      },
      10s))
      << "state " << relay.row(id).state << ", last_error "
      << relay.row(id).last_error.value_or("");
  auto row = relay.row(id);
  EXPECT_EQ(row.state, "queued");  // not failed: it waits for its agent like after a 5xx
  EXPECT_EQ(row.last_status, 301);
  EXPECT_NE(row.last_error.value_or("").find("redirect 301 to " + location), std::string::npos)
      << row.last_error.value_or("");
  auto attempts = relay.attempts(id);
  ASSERT_GE(attempts.size(), 3u);
  for (const auto& at : attempts) {
    EXPECT_EQ(at.outcome, "retry");
    EXPECT_EQ(at.http_status, 301);
    EXPECT_NE(at.error.value_or("").find("redirect 301 to " + location), std::string::npos)
        << at.error.value_or("");
  }
  EXPECT_EQ(elsewhere.requests(), 0);  // the redirect was not followed
  EXPECT_GE(redirecting.requests(), 3);
}

// down_after is reloadable for an agent that is already running: lowered from 5 to 1, the next
// failure makes the agent down.
TEST(AgentChanges, ReloadLoweringDownAfterMakesTheNextFailureMarkTheAgentDown) {
  testing::TempDir dir;
  // Nobody listens here: every call fails at once (connection refused).
  const std::string dead = "http://127.0.0.1:" + std::to_string(testing::free_port()) + "/cb";
  Relay relay(dir);
  auto a = agent("a", dead);
  a.down_after = 5;
  a.backoff_initial = 400;
  a.backoff_max = 400;
  relay.start({a});
  std::string id = relay.enqueue("101", 1);
  ASSERT_TRUE(wait_until([&] { return relay.attempts(id).size() >= 1; }, 10s));
  EXPECT_NE(relay.agent_state("a"), "down");  // 1 of 5
  a.down_after = 1;
  relay.reload({a});
  ASSERT_TRUE(wait_until([&] { return relay.agent_state("a") == "down"; }, 10s));
  // Down at the first failure after the reload (the one before it counted too), not at the
  // fifth under the old value.
  EXPECT_LE(relay.attempts(id).size(), 2u);
}

// ordering is reloadable for an agent that is already running: from none to event, later
// webhooks of one alert go one at a time. Reloaded while webhooks claimed under `none` are in
// flight: nothing new is claimed until they are done.
TEST(AgentChanges, ReloadFromOrderingNoneToEventSendsOneAlertAtATime) {
  testing::TempDir dir;
  Agent slow(204, {}, 300ms);
  Relay relay(dir);
  auto a = agent("a", slow.url());
  a.ordering = Ordering::kNone;
  a.max_inflight = 4;
  relay.start({a});
  std::vector<std::string> before, after;
  for (int i = 0; i < 4; ++i) before.push_back(relay.enqueue("101", i));
  // Under `none` one alert's webhooks go in parallel (what the reload must change).
  ASSERT_TRUE(wait_until([&] { return slow.inflight("101") >= 2; }, 10s));
  a.ordering = Ordering::kEvent;
  relay.reload({a});
  for (int i = 0; i < 4; ++i) after.push_back(relay.enqueue("202", i));
  auto all_delivered = [&](const std::vector<std::string>& ids) {
    for (const auto& id : ids)
      if (relay.row(id).state != "delivered") return false;
    return true;
  };
  ASSERT_TRUE(wait_until([&] { return all_delivered(before) && all_delivered(after); }, 20s));
  EXPECT_GE(slow.most_at_once("101"), 2);
  EXPECT_EQ(slow.most_at_once("202"), 1);
  // And in arrival order (RFC 3339 times with milliseconds compare as text; each call takes
  // 300 ms).
  for (size_t i = 1; i < after.size(); ++i)
    EXPECT_LT(relay.row(after[i - 1]).delivered_at.value_or(""),
              relay.row(after[i]).delivered_at.value_or("~"));
}

// A secret that cannot be read at a reload (the daemon refuses such a reload; this is the
// dispatcher's own guard, should the file go between the check and its read): the agent keeps
// signing with the key it had instead of holding its webhooks.
TEST(AgentChanges, ASecretUnreadableAtAReloadKeepsTheKeyItHad) {
  testing::TempDir dir;
  testing::write_file(dir.file("secret"), "whsec_" + base64_encode("0123456789abcdef") + "\n");
  testing::write_file(dir.file("sink-secret"), testing::read_file(dir.file("secret")));
  const int port = testing::free_port();
  testing::Process sink(
      {testing::bin("iarelay-sink"), "--listen=127.0.0.1:" + std::to_string(port),
       "--record=" + dir.file("sink.jsonl"), "--secret-file=" + dir.file("sink-secret")},
      dir.file("sink.out"), dir.file("sink.err"));
  ASSERT_TRUE(testing::wait_for_port(port));
  auto records = [&] {
    std::vector<Json> out;
    std::ifstream in(dir.file("sink.jsonl"));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) out.push_back(Json::parse(line));
    return out;
  };
  Relay relay(dir);
  auto a = agent("a", "http://127.0.0.1:" + std::to_string(port) + "/apia_callback");
  a.secret_file = dir.file("secret");
#ifdef IARELAY_SANITIZED
  // The sink records every call: under ThreadSanitizer on a busy machine its answers took over
  // the 2 s timeout, and the retries of the first webhook were recorded too.
  a.timeout = 10'000;
#endif
  relay.start({a});
  std::string first = relay.enqueue("101", 1);
  ASSERT_TRUE(wait_until([&] { return relay.row(first).state == "delivered"; }, 10s));
  std::remove(dir.file("secret").c_str());
  relay.reload({a});
  std::string second = relay.enqueue("202", 2);
  ASSERT_TRUE(wait_until([&] { return relay.row(second).state == "delivered"; }, 10s))
      << relay.row(second).state;
  auto recs = records();
  ASSERT_EQ(recs.size(), 2u) << [&] {
    std::string calls;  // which webhook, which attempt: a retry, or a call nobody made
    for (const auto& r : recs)
      calls += r["webhook_id"].dump() + " attempt " + r["attempt"].dump() + "; ";
    return calls;
  }();
  EXPECT_EQ(recs[1]["webhook_id"], second);
  EXPECT_EQ(recs[1]["signature"], "valid");
  sink.signal(SIGTERM);
  sink.wait();
}

}  // namespace
}  // namespace iarelay
