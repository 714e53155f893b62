// Health tells the truth: a journal whose fsync fails makes the daemon refuse webhooks (503),
// report not ready, and exit with code 1 so that systemd restarts it and SQLite recovers the
// WAL; what was acknowledged before the failure is there after the restart.
#include <gtest/gtest.h>
#include <httplib.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <thread>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

const char* kBody = R"({"eventIdentifier": 1, "status": "active"})";

TEST(Health, FailedFsyncRefusesWebhooksAndTheDaemonExitsOne) {
  TempDir dir;
  int port = free_port();
  // The agent never answers: webhooks stay queued, so nothing but intake writes.
  write_file(dir.file("relay.conf"),
             "journal = " + dir.file("journal.db") +
                 "\nsync = full\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                 "\n[agent.a1]\nid = a1\ncallback = http://127.0.0.1:1/cb\nservices = svc\n");
  const std::string flag = dir.file("fail-sync-now");
  std::map<std::string, std::string> env{{"LD_PRELOAD", IARELAY_FAIL_SYNC_SHIM},
                                         {"IARELAY_FAIL_SYNC_WHEN", flag}};
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"),
                env);
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto first = client.Post("/v1/webhooks/svc", kBody, "application/json");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 202) << first->body;
  std::string first_id = nlohmann::json::parse(first->body)["id"];
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);

  write_file(flag, "");
  auto second = client.Post("/v1/webhooks/svc", kBody, "application/json");
  // Never acknowledged: the commit could not be made durable (or the daemon is already gone).
  if (second) {
    EXPECT_EQ(second->status, 503) << second->body;
  }
  if (auto not_ready = client.Get("/readyz")) {
    EXPECT_EQ(not_ready->status, 503);
  }
  EXPECT_EQ(relay.wait(std::chrono::seconds(20)), 1) << read_file(dir.file("relay.log"));
  EXPECT_NE(read_file(dir.file("relay.log")).find("cannot write again"), std::string::npos)
      << read_file(dir.file("relay.log"));

  std::remove(flag.c_str());
  Process again({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay2.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay2.log"));
  ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  SQLite::Database db(dir.file("journal.db"), SQLite::OPEN_READONLY);
  SQLite::Statement q(db, "SELECT count(*) FROM webhooks WHERE id = ?");
  q.bind(1, first_id);
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getInt(), 1);
}

}  // namespace
}  // namespace iarelay::testing
