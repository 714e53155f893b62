// Issue 11 B: a [service.NAME] section spelled as xMatters addresses the service
// ([service.applications|hpnnmi]) applies to the service intake stores (hpnnmi).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <nlohmann/json.hpp>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

TEST(ServiceConfig, HoldSpelledWithTheDomainHoldsAWebhookNoAgentCanTake) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"),
             "journal = " + dir.file("journal.db") +
                 "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                 "\n[service.applications|hpnnmi]\nunrouted = hold\n"
                 "[agent.a1]\ncallback = http://127.0.0.1:1/apia_callback\nservices = hpnnmi\n");
  std::vector<std::string> relayd = {bin("iarelayd"), "--config", dir.file("relay.conf")};
  {
    // The first start creates the journal; the only agent is then paused, as for maintenance.
    Process relay(relayd, "", dir.file("first.log"));
    ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("first.log"));
    relay.signal(SIGTERM);
    ASSERT_EQ(relay.wait(), 0) << read_file(dir.file("first.log"));
  }
  auto paused = run({bin("iarelay"), "--config", dir.file("relay.conf"), "agent", "pause", "a1"});
  ASSERT_EQ(paused.exit_code, 0) << paused.err;
  Process relay(relayd, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  for (const char* service : {"hpnnmi", "applications%7Chpnnmi"}) {
    auto r = client.Post((std::string("/v1/webhooks/") + service).c_str(),
                         R"({"status":"active","eventIdentifier":1})", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202) << r->body;
    auto answer = nlohmann::json::parse(r->body, nullptr, false);
    EXPECT_EQ(answer["state"], "queued") << service << ": " << r->body;
  }
  relay.signal(SIGTERM);
  ASSERT_EQ(relay.wait(), 0) << read_file(dir.file("relay.log"));
  SQLite::Database db(dir.file("journal.db"), SQLite::OPEN_READONLY);
  EXPECT_EQ(db.execAndGet("SELECT count(*) FROM webhooks WHERE service='hpnnmi' AND "
                          "state='queued' AND assigned_agent IS NULL")
                .getInt(),
            2);
}

}  // namespace
}  // namespace iarelay::testing
