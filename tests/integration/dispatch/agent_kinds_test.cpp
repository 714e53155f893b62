// The dispatcher in-process against a loopback server, for an agent that is an Integration
// Agent's service gateway (issue 13): callback placeholders filled in per webhook, and `kinds`,
// the webhook types delivered to the agent (the others end discarded with the reason, do not
// hold back their alert, and are delivered by a resend once a reload adds their type).
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/crypto.h"
#include "common/metrics.h"
#include "common/payload.h"
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

// A loopback server answering 204 to a POST on any path; keeps each request's path and
// webhook-id, in arrival order.
class Gateway {
 public:
  struct Call {
    std::string path, webhook_id, type;
  };
  Gateway() : port_(testing::free_port()) {
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      calls_.push_back(
          {req.path, req.get_header_value("webhook-id"), req.get_header_value("X-Iarelay-Type")});
      res.status = 204;
    });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    EXPECT_TRUE(testing::wait_for_port(port_));
  }
  ~Gateway() {
    server_.stop();
    thread_.join();
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Call> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  // The paths the webhook was sent to.
  std::vector<std::string> paths_of(const std::string& id) {
    std::vector<std::string> out;
    for (const auto& c : calls())
      if (c.webhook_id == id) out.push_back(c.path);
    return out;
  }

 private:
  int port_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Call> calls_;  // GUARDED_BY(mu_)
};

AgentConfig agent(const std::string& handle, const std::string& callback) {
  AgentConfig a;
  a.handle = handle;
  a.id = handle;
  a.callback = callback;
  a.services = {"svc"};
  a.format = AgentFormat::kRaw;
  a.max_inflight = 4;
  a.timeout = 2'000;
  a.backoff_initial = 100;
  a.backoff_max = 1'000;
  return a;  // kinds: the default (status, deliveryStatus, response, annotation)
}

// Writer + directory + dispatcher over a journal in a temp dir; reload() does what
// Relay::reload does once the new configuration is accepted.
class Relay : public testing::DispatchRelay {
 public:
  using DispatchRelay::DispatchRelay;
  // A webhook of `type` for `service` and alert `event` (digits), routed as intake would
  // (`agent_id`: ?agent=).
  std::string enqueue(const std::string& event, const std::string& type,
                      const std::string& service = "svc",
                      std::optional<std::string> agent_id = std::nullopt) {
    NewWebhook w;
    w.id = new_webhook_id();
    w.received_at = now_millis();
    w.service = service;
    w.agent = agent_id;
    w.type = type;
    w.event_id = event;
    if (directory_) {
      auto route = directory_->route(service, agent_id);
      w.state = route.state;
      w.assigned_agent = route.assigned_agent;
      w.reason = route.reason;
    } else {  // stored before the start: queued for the agent named (as a restart finds it)
      w.state = WebhookState::kQueued;
      w.assigned_agent = agent_id;
    }
    w.payload =
        R"({"eventIdentifier": )" + event + R"(, "xmatters_callback_type": ")" + type + R"("})";
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
  int attempt_rows(const std::string& id) {
    SQLite::Statement q(*reader_, "SELECT count(*) FROM attempts WHERE webhook_id=?");
    q.bind(1, id);
    q.executeStep();
    return q.getColumn(0).getInt();
  }
  // Any journal change as the CLI makes it (review13).
  void run(const std::function<void(SQLite::Database&)>& fn) { ASSERT_TRUE(writer_->run(fn)); }
  // `iarelay resend ID` as the CLI does it.
  void resend_one(const std::string& id) {
    WebhookFilter f;
    f.ids = {id};
    Result<std::int64_t> n = Status::ok();
    ASSERT_TRUE(writer_->run([&](SQLite::Database& db) { n = resend(db, f, std::nullopt); }));
    ASSERT_TRUE(n) << n.status().message();
    EXPECT_EQ(*n, 1);
  }
};

const char* kReason =
    "type \"escalation\" is not in [agent.nnmi1] kinds (status, deliveryStatus, response, "
    "annotation)";

// One agent section serves every service of an Integration Agent: {domain}_{service} is filled
// in per webhook; the domain is the service's own ("ops|omi") or the agent's `domain`.
TEST(AgentKinds, CallbackPlaceholdersAreFilledInPerWebhook) {
  testing::TempDir dir;
  Gateway ia;
  Relay relay(dir);
  auto ia1 = agent("ia1", ia.base() + "/http/{domain}_{service}");
  ia1.services = {"hpnnmi", "remedy", "ops|omi"};
  auto ia2 = agent("ia2", ia.base() + "/other/{service}?domain={domain}");
  ia2.domain = "custom";
  ia2.services = {};
  relay.start({ia1, ia2});
  // As intake stores them: "applications|hpnnmi" is "hpnnmi"; "ops|omi" keeps its domain.
  std::string nnmi = relay.enqueue("1", "status", normalize_service("applications|hpnnmi"));
  std::string remedy = relay.enqueue("2", "status", "remedy");
  std::string omi = relay.enqueue("3", "response", normalize_service("ops|omi"));
  std::string custom = relay.enqueue("4", "status", "hpnnmi", std::string("ia2"));
  for (const auto& id : {nnmi, remedy, omi, custom})
    ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s))
        << id << " " << relay.row(id).state << " " << relay.row(id).last_error.value_or("");
  EXPECT_EQ(ia.paths_of(nnmi), std::vector<std::string>{"/http/applications_hpnnmi"});
  EXPECT_EQ(ia.paths_of(remedy), std::vector<std::string>{"/http/applications_remedy"});
  EXPECT_EQ(ia.paths_of(omi), std::vector<std::string>{"/http/ops_omi"});
  EXPECT_EQ(ia.paths_of(custom), std::vector<std::string>{"/other/hpnnmi"});
}

TEST(AgentKinds, DefaultKindsDeliverTheFourStandardTypes) {
  testing::TempDir dir;
  Gateway ia;
  Relay relay(dir);
  relay.start({agent("nnmi1", ia.base() + "/http/{domain}_{service}")});
  std::vector<std::string> ids;
  for (const char* type : {"status", "deliveryStatus", "response", "annotation"})
    ids.push_back(relay.enqueue("7", type));
  for (const auto& id : ids)
    ASSERT_TRUE(wait_until([&] { return relay.row(id).state == "delivered"; }, 10s))
        << relay.row(id).type << ": " << relay.row(id).state;
  for (const auto& id : ids)
    EXPECT_EQ(ia.paths_of(id), std::vector<std::string>{"/http/applications_svc"});
}

// A type the agent's kinds leave out is never sent: it ends discarded with the reason, without
// an attempt, and the next webhook of its alert is delivered after it.
TEST(AgentKinds, ExcludedTypeEndsDiscardedWithTheReasonAndDoesNotHoldBackItsAlert) {
  testing::TempDir dir;
  Gateway ia;
  Relay relay(dir);
  relay.start({agent("nnmi1", ia.base() + "/apia_callback")});
  std::string escalation = relay.enqueue("42", "escalation");
  std::string status = relay.enqueue("42", "status");
  ASSERT_TRUE(wait_until([&] { return relay.row(status).state == "delivered"; }, 10s))
      << relay.row(status).state << " " << relay.row(status).last_error.value_or("");
  WebhookRow r = relay.row(escalation);
  EXPECT_EQ(r.state, "discarded");
  EXPECT_EQ(r.last_error.value_or(""), kReason);
  EXPECT_EQ(r.assigned_agent.value_or(""), "nnmi1");  // a resend goes back to it
  EXPECT_EQ(r.attempts, 0);
  EXPECT_FALSE(r.next_attempt_at);
  EXPECT_EQ(relay.attempt_rows(escalation), 0);
  EXPECT_TRUE(ia.paths_of(escalation).empty());
  ASSERT_EQ(ia.calls().size(), 1u);
  // `kinds = *` takes every type.
  auto all = agent("nnmi1", ia.base() + "/apia_callback");
  all.all_kinds = true;
  relay.reload({all});
  std::string targeted = relay.enqueue("43", "targetedRecipientFailure");
  ASSERT_TRUE(wait_until([&] { return relay.row(targeted).state == "delivered"; }, 10s))
      << relay.row(targeted).state << " " << relay.row(targeted).last_error.value_or("");
}

// The chain step (the next webhook of an alert claimed with the outcome of the one before) asks
// the agent's kinds too: an excluded type in the middle of an alert is discarded, never sent,
// and the alert goes on past it. Merging the chain step with kinds, it was claimed and sent.
TEST(AgentKinds, AChainStepDoesNotSendAnExcludedTypeInTheMiddleOfAnAlert) {
  testing::TempDir dir;
  Gateway ia;
  Relay relay(dir);
  std::string first = relay.enqueue("42", "status", "svc", "nnmi1");
  std::string escalation = relay.enqueue("42", "escalation", "svc", "nnmi1");
  std::string last = relay.enqueue("42", "response", "svc", "nnmi1");
  relay.start({agent("nnmi1", ia.base() + "/apia_callback")});
  ASSERT_TRUE(wait_until([&] { return relay.row(last).state == "delivered"; }, 10s))
      << relay.row(last).state << " " << relay.row(last).last_error.value_or("");
  EXPECT_EQ(relay.row(first).state, "delivered");
  EXPECT_EQ(relay.row(escalation).state, "discarded");
  EXPECT_EQ(relay.row(escalation).last_error.value_or(""), kReason);
  EXPECT_TRUE(ia.paths_of(escalation).empty());
  EXPECT_EQ(ia.calls().size(), 2u);
}

// Resent while its type is still left out it ends the same way; once a reload adds the type to
// kinds, a resend delivers it.
TEST(AgentKinds, ResendAfterAReloadAddsTheTypeDeliversIt) {
  testing::TempDir dir;
  Gateway ia;
  Relay relay(dir);
  auto a = agent("nnmi1", ia.base() + "/http/{domain}_{service}");
  relay.start({a});
  std::string escalation = relay.enqueue("5", "escalation");
  ASSERT_TRUE(wait_until([&] { return relay.row(escalation).state == "discarded"; }, 10s));
  relay.resend_one(escalation);
  ASSERT_TRUE(wait_until(
      [&] {
        WebhookRow r = relay.row(escalation);
        return r.state == "discarded" && r.last_error.value_or("") == kReason;
      },
      10s))
      << relay.row(escalation).state;
  EXPECT_TRUE(ia.paths_of(escalation).empty());

  a.kinds.push_back("escalation");
  relay.reload({a});
  relay.resend_one(escalation);
  ASSERT_TRUE(wait_until([&] { return relay.row(escalation).state == "delivered"; }, 10s))
      << relay.row(escalation).state << " " << relay.row(escalation).last_error.value_or("");
  EXPECT_EQ(ia.paths_of(escalation), std::vector<std::string>{"/http/applications_svc"});
  EXPECT_EQ(relay.row(escalation).attempts, 1);
}

// --- review13 ------------------------------------------------------------------------------
// A loopback server answering 503 to its first `failures` POSTs, then 204.
class FlakyGateway {
 public:
  explicit FlakyGateway(int failures) : port_(testing::free_port()), failures_(failures) {
    server_.Post(".*", [this](const httplib::Request&, httplib::Response& res) {
      std::lock_guard lock(mu_);
      ++calls_;
      res.status = calls_ <= failures_ ? 503 : 204;
    });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    EXPECT_TRUE(testing::wait_for_port(port_));
  }
  ~FlakyGateway() {
    server_.stop();
    thread_.join();
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  int port_;
  int failures_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  int calls_ = 0;
};

// review13 finding 1: failover ignores kinds. A webhook routed to an agent that takes its type
// fails over after ONE retryable answer (503) to the next available agent of its service; that
// agent's kinds leave the type out, so the acknowledged webhook ends discarded instead of being
// retried on the agent that takes it (or waiting for it). Before `kinds` the second agent would
// have delivered it.
TEST(AgentKinds, RetryFailsOverOnlyToAnAgentThatTakesTheType) {
  testing::TempDir dir;
  FlakyGateway flaky(1);  // the first call gets 503, the next ones 204
  Gateway ia;
  Relay relay(dir);
  auto takes_all = agent("raw1", flaky.base() + "/hook");
  takes_all.all_kinds = true;
  takes_all.kinds.clear();
  auto ia1 = agent("ia1", ia.base() + "/http/{domain}_{service}");  // default kinds
  relay.start({takes_all, ia1});
  std::string w = relay.enqueue("9", "escalation");
  ASSERT_EQ(relay.row(w).assigned_agent.value_or(""), "raw1");
  // Settles: delivered by raw1 on its retry, or discarded on ia1 after the failover.
  ASSERT_TRUE(wait_until(
      [&] {
        auto s = relay.row(w).state;
        return s == "delivered" || s == "discarded" || s == "failed";
      },
      10s))
      << relay.row(w).state;
  WebhookRow r = relay.row(w);
  EXPECT_EQ(r.state, "delivered") << "assigned " << r.assigned_agent.value_or("-") << ": "
                                  << r.last_error.value_or("");
}

// A loopback server that holds every answer until released (one release per call), 204.
class GatedGateway {
 public:
  GatedGateway() : port_(testing::free_port()) {
    server_.new_task_queue = [] { return new httplib::ThreadPool(8); };
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
      std::unique_lock lock(mu_);
      ids_.push_back(req.get_header_value("webhook-id"));
      cv_.wait(lock, [&] { return released_ >= static_cast<int>(ids_.size()) || stop_; });
      res.status = 204;
    });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    EXPECT_TRUE(testing::wait_for_port(port_));
  }
  ~GatedGateway() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  size_t arrived() {
    std::lock_guard lock(mu_);
    return ids_.size();
  }
  void release_one() {
    {
      std::lock_guard lock(mu_);
      ++released_;
    }
    cv_.notify_all();
  }

 private:
  int port_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> ids_;
  int released_ = 0;
  bool stop_ = false;
};

// review13 finding 2: the discard's write (queued -> discarded, WHERE state='queued' only) does
// not check that the webhook is still assigned to the agent whose kinds it was checked against.
// A webhook left among an agent's candidates (the agent at max_inflight) that an operator moves
// (`iarelay move`) to an agent taking its type is discarded "for" the agent it left, as soon as
// a slot frees, although it now waits on an agent that takes it. Timing-dependent (candidates
// are dropped at the next data_version check, <= 250 ms), so the test tries a few times.
TEST(AgentKinds, AWebhookMovedAwayIsNotDiscardedForTheAgentItLeft) {
  int discarded = 0, tries = 0;
  for (; tries < 5 && discarded == 0; ++tries) {
    testing::TempDir dir;
    GatedGateway gate;
    Gateway other;
    Relay relay(dir);
    auto a = agent("nnmi1", gate.base() + "/apia_callback");  // default kinds
    a.max_inflight = 1;
    auto b = agent("raw2", other.base() + "/hook");
    b.all_kinds = true;
    b.kinds.clear();
    b.services = {};  // takes nothing by routing; only what is moved to it
    relay.start({a, b});
    std::string w0 = relay.enqueue("100", "status");
    ASSERT_TRUE(wait_until([&] { return gate.arrived() == 1; }, 10s));
    std::string w1 = relay.enqueue("101", "status");
    std::string w2 = relay.enqueue("102", "escalation");
    std::this_thread::sleep_for(300ms);  // nnmi1 is full: no fill meanwhile
    gate.release_one();                  // w0 done: the next fill picks w1 (sent) and w2 (kept)
    ASSERT_TRUE(wait_until([&] { return gate.arrived() == 2; }, 10s));
    // The operator moves w2 to raw2, which takes every type; then w1 finishes.
    relay.run([&](SQLite::Database& db) {
      MoveFrom from;
      from.agent = "nnmi1";
      WebhookFilter f;
      f.event = "102";
      auto n = move_webhooks(db, from, "raw2", f);
      ASSERT_TRUE(n) << n.status().message();
      EXPECT_EQ(*n, 1);
    });
    gate.release_one();
    ASSERT_TRUE(wait_until(
        [&] {
          auto s = relay.row(w2).state;
          return s == "delivered" || s == "discarded";
        },
        10s));
    if (relay.row(w2).state == "discarded") {
      ++discarded;
      WebhookRow r = relay.row(w2);
      ADD_FAILURE() << "try " << tries << ": moved to " << r.assigned_agent.value_or("-")
                    << " (kinds = *), yet discarded: " << r.last_error.value_or("");
    }
  }
  EXPECT_EQ(discarded, 0) << "in " << tries << " tries";
}

}  // namespace
}  // namespace iarelay
