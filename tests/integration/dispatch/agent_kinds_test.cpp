// The dispatcher in-process against a loopback server, for an agent that is an Integration
// Agent's service gateway (issue 13): callback placeholders filled in per webhook, and `kinds`,
// the webhook types delivered to the agent (the others end discarded with the reason, do not
// hold back their alert, and are delivered by a resend once a reload adds their type).
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
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
class Relay {
 public:
  explicit Relay(const testing::TempDir& dir) : path_(dir.file("journal.db")) {
    auto w = Writer::open(path_, SyncLevel::kNormal);
    EXPECT_TRUE(w) << w.status().message();
    writer_ = std::move(*w);
    auto r = open_journal_for_read(path_);
    EXPECT_TRUE(r);
    reader_ = std::move(*r);
  }
  ~Relay() {
    if (dispatcher_) dispatcher_->stop(2'000);
    writer_.reset();  // first, as in the daemon: its commit listener calls the dispatcher
  }
  void start(std::vector<AgentConfig> agents) {
    directory_ = std::make_unique<AgentDirectory>(std::move(agents), std::vector<ServiceConfig>{});
    DispatcherContext ctx;
    ctx.writer = writer_.get();
    ctx.directory = directory_.get();
    ctx.metrics = &metrics_;
    ctx.journal_path = path_;
    auto d = Dispatcher::start(ctx);
    ASSERT_TRUE(d) << d.status().message();
    dispatcher_ = std::move(*d);
    writer_->set_commit_listener([this] {
      if (dispatcher_) dispatcher_->wake();
    });
  }
  void reload(std::vector<AgentConfig> agents) {
    directory_->reconfigure(std::move(agents), {});
    dispatcher_->reconfigured();
  }
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
    auto route = directory_->route(service, agent_id);
    w.state = route.state;
    w.assigned_agent = route.assigned_agent;
    w.reason = route.reason;
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
  // `iarelay resend ID` as the CLI does it.
  void resend_one(const std::string& id) {
    WebhookFilter f;
    f.ids = {id};
    Result<std::int64_t> n = Status::ok();
    ASSERT_TRUE(writer_->run([&](SQLite::Database& db) { n = resend(db, f, std::nullopt); }));
    ASSERT_TRUE(n) << n.status().message();
    EXPECT_EQ(*n, 1);
  }

 private:
  std::string path_;
  std::unique_ptr<Writer> writer_;
  DatabasePtr reader_;
  std::unique_ptr<AgentDirectory> directory_;
  Metrics metrics_;
  std::unique_ptr<Dispatcher> dispatcher_;
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

}  // namespace
}  // namespace iarelay
