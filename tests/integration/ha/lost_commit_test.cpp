// A COMMIT whose answer is lost with its connection (issue 15, docs/high-availability.md): the
// server committed the dispatcher's claim, the dispatcher was told it failed. The dispatcher on
// the PostgreSQL journal, in this process, writes through a proxy (support/cut_proxy.h) that
// loses the answer of the first COMMIT after it is armed. Nothing may be left inflight with no
// call made for it, and the alert's webhooks must still reach the agent in order.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "common/config.h"
#include "dispatch/dispatcher.h"
#include "journal/backend.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_writer.h"
#include "journal/routing.h"
#include "support/cut_proxy.h"
#include "support/pg_cluster.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using namespace std::chrono_literals;

// Five webhooks of one alert; the proxy loses the answer of the first claim's COMMIT
// (`at_first_call` false), or of the first COMMIT after the agent's first call: the outcome of
// the first webhook, which claims the second in the same transaction (a chain step). With
// `then_pause`, agent a is paused by an operator as soon as the claim's answer is lost: its
// queue fails over to agent b, and the orphan must go with it, first.
void lose_a_commit_and_deliver_in_order(bool at_first_call, bool then_pause = false) {
  PgCluster cluster;
  ASSERT_EQ(cluster.error(), "");
  ASSERT_EQ(cluster.create_database("journal"), "");
  const std::string uri = cluster.uri("journal");

  // The agent: records each webhook id it is called with.
  httplib::Server agent;
  std::mutex mu;
  std::vector<std::string> calls;  // GUARDED_BY(mu)
  std::unique_ptr<CutProxy> proxy;
  agent.Post("/apia_callback", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mu);
    if (at_first_call && calls.empty()) proxy->arm();
    calls.push_back(req.get_header_value("webhook-id"));
    res.status = 204;
  });
  const int agent_port = agent.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { agent.listen_after_bind(); });
  TempDir dir;
  const std::string callback =
      "http://127.0.0.1:" + std::to_string(agent_port) + "/apia_callback\nservices = svc\n";
  write_file(dir.file("relay.conf"), "journal = " + uri + "\n[agent.a]\ncallback = " + callback +
                                         "format = raw\n[agent.b]\ncallback = " + callback +
                                         "format = raw\n");
  auto config = load_config(dir.file("relay.conf"));
  ASSERT_TRUE(config.is_ok()) << config.status().message();

  // Five webhooks of one alert, queued for agent a.
  auto writer = PgWriter::open(uri);  // migrates
  ASSERT_TRUE(writer.is_ok()) << writer.status().message();
  std::vector<std::string> ids;
  for (int i = 1; i <= 5; ++i) {
    NewWebhook w;
    w.id = "01LOST" + std::to_string(i);
    w.received_at = now_millis();
    w.service = "svc";
    w.type = "status";
    w.event_id = "alert-1";
    w.assigned_agent = "a";
    w.payload = R"({"eventIdentifier": 1, "n": )" + std::to_string(i) + "}";
    ASSERT_TRUE((*writer)->run([&](JournalTx& tx) { tx.insert_webhook(w); }).is_ok());
    ids.push_back(w.id);
  }
  writer->reset();

  proxy = std::make_unique<CutProxy>(cluster.port());
  const std::string through_proxy =
      "postgresql://iarelay@127.0.0.1:" + std::to_string(proxy->port()) + "/journal";
  auto cut_writer = PgWriter::open(through_proxy);
  ASSERT_TRUE(cut_writer.is_ok()) << cut_writer.status().message();
  if (!at_first_call) proxy->arm();
  AgentDirectory directory(config->agents, config->services, config->role);
  DispatcherContext ctx;
  ctx.writer = cut_writer->get();
  ctx.directory = &directory;
  ctx.open_reader = [uri] { return open_pg_reader(uri); };
  auto dispatcher = Dispatcher::start(ctx);
  ASSERT_TRUE(dispatcher.is_ok()) << dispatcher.status().message();

  if (then_pause) {
    ASSERT_TRUE(wait_until([&] { return proxy->cuts() == 1; }, 10s));
    EXPECT_EQ(cluster.psql("INSERT INTO agents VALUES ('a', 'paused', '2026-12-01T00:00:00.000Z', "
                           "'maintenance', NULL) ON CONFLICT (id) DO UPDATE SET state = 'paused'",
                           "journal"),
              "");
  }
  auto delivered = [&] {
    return cluster.psql("SELECT count(*) FROM webhooks WHERE state = 'delivered'", "journal");
  };
  const bool all = wait_until([&] { return delivered() == "5\n" || delivered() == "5"; }, 15s);
  (*dispatcher)->stop(1000);
  agent.stop();
  serving.join();
  EXPECT_EQ(proxy->cuts(), 1);
  EXPECT_TRUE(all) << "delivered: " << delivered()
                   << cluster.psql("SELECT id, state FROM webhooks ORDER BY seq", "journal");
  std::vector<std::string> first;
  {
    std::lock_guard lock(mu);
    for (const auto& id : calls)
      if (std::find(first.begin(), first.end(), id) == first.end()) first.push_back(id);
  }
  EXPECT_EQ(first, ids);  // each webhook of the alert first called in its order
}

TEST(LostCommit, AClaimWhoseCommitLandedUnseenIsDeliveredAndKeepsItsAlertsOrder) {
  lose_a_commit_and_deliver_in_order(false);
}

TEST(LostCommit, AChainStepWhoseCommitLandedUnseenIsDeliveredAndKeepsItsAlertsOrder) {
  lose_a_commit_and_deliver_in_order(true);
}

TEST(LostCommit, AFailoverWaitsForTheOrphansOfItsAgent) {
  lose_a_commit_and_deliver_in_order(false, /*then_pause=*/true);
}

}  // namespace
}  // namespace iarelay::testing
