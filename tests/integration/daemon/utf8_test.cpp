// Issue 11: bytes that are not UTF-8. Intake refuses them in a request's text fields; and a
// journal that already holds them (an older version stored them, or an operator's SQL) no
// longer breaks any JSON iarelayd or iarelay writes: `iarelay status|list|show|sql`,
// GET /v1/status and the JSON log lines.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/time.h"
#include "journal/store.h"
#include "journal/writer.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using Json = nlohmann::json;

// The document of `text`, or a test failure naming what did not parse (nlohmann's parser
// refuses bytes that are not UTF-8, so a parsed document is valid UTF-8).
Json parsed(const std::string& what, const std::string& text) {
  Json doc = Json::parse(text, nullptr, false);
  EXPECT_FALSE(doc.is_discarded()) << what << " is not valid JSON: " << text;
  return doc;
}

// A relay on `journal` with a listener on `port`, JSON logs, and agent a1 whose callback
// nobody answers (one attempt each: a webhook for it fails at once).
// kinds = *: a row below has a type that is none of the default kinds (it must reach a call).
std::string config(const TempDir& dir, int port) {
  return "journal = " + dir.file("journal.db") +
         "\nlog_format = json\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
         "\n[agent.a1]\ncallback = http://127.0.0.1:1/apia_callback\nservices = hpnnmi\n"
         "max_attempts = 1\nkinds = *\n";
}

TEST(Utf8, AgentThatIsNotUtf8IsRefusedWith400NamingTheField) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), config(dir, port));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto r =
      client.Post("/v1/webhooks/hpnnmi?agent=%FF", R"({"status":"active"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  Json error = parsed("the 400 answer", r->body);
  ASSERT_TRUE(error.is_object() && error["error"].is_string()) << r->body;
  EXPECT_EQ(error["error"], "agent is not valid UTF-8");
  // Nothing stored; the status document and the tool still answer.
  auto status = client.Get("/v1/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200) << status->body;
  Json doc = parsed("GET /v1/status", status->body);
  EXPECT_EQ(doc["totals"]["queued"], 0) << status->body;
  relay.signal(SIGTERM);
  ASSERT_EQ(relay.wait(), 0) << read_file(dir.file("relay.log"));
  auto tool = run({bin("iarelay"), "--journal", dir.file("journal.db"), "status"});
  EXPECT_EQ(tool.exit_code, 0) << tool.err;
}

TEST(Utf8, JournalRowsNotUtf8LeaveEveryJsonOutputWhole) {
  TempDir dir;
  const std::string journal = dir.file("journal.db");
  {
    auto w = Writer::open(journal, SyncLevel::kNormal);
    ASSERT_TRUE(w) << w.status().message();
    ASSERT_TRUE((*w)->run([](SQLite::Database& db) {
      for (const char* id : {"held", "failed", "due"}) {
        NewWebhook n;
        n.id = id;
        n.received_at = now_millis();
        n.service = "hpnnmi";
        n.type = "status";
        n.state = WebhookState::kQueued;
        n.assigned_agent = std::string(id) == "due" ? "a1" : "ws-1";
        n.payload = R"({"status":"active"})";
        insert_webhook(db, n);
      }
      record_attempt(db, {"failed", 1, "ws-1", now_millis(), 5, 500, "x", "failed"});
      set_agent_state(db, "ws-1", "down", std::string("x"), std::nullopt, false);
    }));
  }
  {
    // What an older version could store: bytes that are not UTF-8 (0xFF, a Latin-1 0xE9, a
    // UTF-8 character cut in two) in every text column the outputs show, and a terminal escape.
    SQLite::Database db(journal, SQLite::OPEN_READWRITE);
    db.exec(
        "UPDATE webhooks SET service = 'hp' || x'FF' || 'nnmi', agent = 'ws-1' || x'FF', "
        "assigned_agent = CASE id WHEN 'due' THEN 'a1' ELSE 'ws-1' || x'FF' END, "
        "event_id = 'E' || x'C3', last_error = 'Donn' || x'E9' || 'es ' || x'1B' || '[31m', "
        "type = 'stat' || x'FF' || 'us', state = CASE id WHEN 'failed' THEN 'failed' ELSE state "
        "END");
    db.exec("UPDATE webhooks SET id = 'due' || x'FF' WHERE id = 'due'");
    db.exec("UPDATE attempts SET error = 'HTTP 500: ' || x'E9C3', agent = 'ws-1' || x'FF'");
    db.exec("UPDATE agents SET id = 'ws-1' || x'FF', reason = 'last: ' || x'E9'");
  }
  auto iarelay = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {bin("iarelay"), "--journal", journal});
    auto r = run(args);
    std::string shown;
    for (const auto& a : args) shown += " " + a;
    EXPECT_EQ(r.exit_code, 0) << shown << ": " << r.err;
    return r;
  };
  // (A document that did not parse is discarded: the checks go on with the next output.)
  Json status = parsed("iarelay status --format json", iarelay({"status", "--format", "json"}).out);
  if (status.is_object()) {
    EXPECT_EQ(status["totals"]["failed"], 1) << status.dump();
    EXPECT_NE(status.dump().find("ws-1\xEF\xBF\xBD"), std::string::npos) << status.dump();
  }
  iarelay({"status"});
  Json list = parsed("iarelay list --format json", iarelay({"list", "--format", "json"}).out);
  EXPECT_TRUE(list.is_array() && list.size() == 3u) << list.dump();
  iarelay({"list"});
  iarelay({"list", "--format", "csv"});
  iarelay({"show", "failed"});
  Json show =
      parsed("iarelay show --format json", iarelay({"show", "failed", "--format", "json"}).out);
  EXPECT_TRUE(show.is_object() && show["delivery_attempts"].size() == 1u) << show.dump();
  parsed("iarelay sql --format json",
         iarelay({"sql", "SELECT * FROM webhooks", "--format", "json"}).out);
  parsed("iarelay agent list --format json", iarelay({"agent", "list", "--format", "json"}).out);

  // The daemon on this journal: the status endpoint, and its JSON log lines (it logs the
  // failure of the webhook whose id is not UTF-8: its agent a1 cannot be reached).
  int port = free_port();
  write_file(dir.file("relay.conf"), config(dir, port));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto r = client.Get("/v1/status");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  Json served = parsed("GET /v1/status", r->body);
  EXPECT_NE(served.dump().find("ws-1\xEF\xBF\xBD"), std::string::npos) << r->body;
  ASSERT_TRUE(wait_until(
      [&] { return read_file(dir.file("relay.log")).find("failed for a1") != std::string::npos; },
      std::chrono::seconds(10)))
      << read_file(dir.file("relay.log"));
  relay.signal(SIGTERM);
  ASSERT_EQ(relay.wait(), 0) << read_file(dir.file("relay.log"));
  std::istringstream lines(read_file(dir.file("relay.log")));
  std::string line;
  while (std::getline(lines, line)) parsed("the log line", line);
}

}  // namespace
}  // namespace iarelay::testing
