// An edge relay's journal on behalf of its feed's consumers: sequence numbers never go back
// after lost commits, and retention keeps what a consumer has not acknowledged.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "common/time.h"
#include "journal/journal.h"
#include "journal/store.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

// An edge: a listener, role = edge, so webhooks are stored for the feed.
std::vector<std::string> edge(const std::string& journal, int port,
                              std::vector<std::string> extra = {}) {
  std::vector<std::string> argv{bin("iarelayd"), "--journal=" + journal, "--role=edge",
                                "--listen.address=127.0.0.1:" + std::to_string(port)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

std::string post(int port, int n) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/webhooks/svc",
                         R"({"status":"active","eventIdentifier":)" + std::to_string(n) + "}",
                         "application/json");
  EXPECT_TRUE(res && res->status == 202);
  return res && res->status == 202 ? nlohmann::json::parse(res->body)["id"].get<std::string>() : "";
}

// seq of each message on the feed after `after`, in order.
std::vector<std::int64_t> feed_seqs(int port, std::int64_t after = 0) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/v1/feed?after=" + std::to_string(after) + "&max=100&wait=0");
  EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  std::vector<std::int64_t> seqs;
  if (!res || res->status != 200) return seqs;
  const nlohmann::json doc = nlohmann::json::parse(res->body);
  for (const auto& m : doc["messages"]) seqs.push_back(m["seq"].get<std::int64_t>());
  return seqs;
}

// A power loss at sync=normal loses the last commits, sqlite_sequence's update with them (a
// restored backup does the same): the next webhooks must not reuse the seqs the consumer saw
// and acknowledged, or it skips them.
TEST(EdgeJournal, SeqsNeverGoBackAfterLostCommits) {
  TempDir dir;
  const std::string journal = dir.file("journal.db");
  int port = free_port();
  std::int64_t served = 0;
  {
    Process relay(edge(journal, port, {"--sync=normal"}), "", dir.file("first.log"));
    ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("first.log"));
    for (int n = 0; n < 3; ++n) post(port, n);
    auto seqs = feed_seqs(port);
    ASSERT_EQ(seqs.size(), 3u) << read_file(dir.file("first.log"));
    served = seqs.back();
    httplib::Client client("127.0.0.1", port);
    auto ack = client.Post("/v1/feed/ack",
                           R"({"consumer":"inner-1","seq":)" + std::to_string(served) + "}",
                           "application/json");
    ASSERT_TRUE(ack && ack->status == 204);
    relay.signal(SIGKILL);
    relay.wait();
  }
  {
    // The last two commits never reached the disk.
    SQLite::Database db(journal, SQLite::OPEN_READWRITE);
    std::int64_t first = db.execAndGet("SELECT min(seq) FROM webhooks").getInt64();
    SQLite::Statement lose(db, "DELETE FROM webhooks WHERE seq > ?");
    lose.bind(1, first);
    EXPECT_EQ(lose.exec(), 2);
    SQLite::Statement back(db, "UPDATE sqlite_sequence SET seq=? WHERE name='webhooks'");
    back.bind(1, first);
    back.exec();
  }
  port = free_port();
  Process relay(edge(journal, port, {"--sync=normal"}), "", dir.file("second.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("second.log"));
  post(port, 10);
  auto seqs = feed_seqs(port, served);
  ASSERT_EQ(seqs.size(), 1u) << "the consumer, after seq " << served << ", misses the new webhook";
  EXPECT_GT(seqs[0], served);
  EXPECT_LT(seqs[0], std::int64_t{1} << 53);
}

// Retention (retain_delivered) purges a stored row only once every consumer of the feed has
// acknowledged it; with no consumer known it keeps them all.
TEST(EdgeJournal, RetentionPurgesOnlyStoredRowsEveryConsumerAcknowledged) {
  for (bool with_consumers : {true, false}) {
    TempDir dir;
    const std::string journal = dir.file("journal.db");
    {
      auto db = open_journal_for_write(journal, SyncLevel::kNormal);
      ASSERT_TRUE(db.is_ok());
      ASSERT_TRUE(migrate(**db).is_ok());
      std::vector<std::int64_t> seqs;
      for (const char* id : {"old-1", "old-2", "old-3", "recent"}) {
        NewWebhook w;
        w.id = id;
        w.received_at = now_millis() - (std::string(id) == "recent" ? 60'000 : 3 * 3'600'000);
        w.service = "svc";
        w.type = "status";
        w.state = WebhookState::kStored;
        w.payload = "{}";
        seqs.push_back(insert_webhook(**db, w).seq);
      }
      if (with_consumers) {
        ack_consumer(**db, "inner-1", seqs[3]);  // everything
        ack_consumer(**db, "inner-2", seqs[1]);  // old-1 and old-2 only
      }
    }
    int port = free_port();
    Process relay(edge(journal, port, {"--retain_delivered=1h"}), "", dir.file("relay.log"));
    ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
    // The janitor's first pass runs 2 s after start.
    auto left = [&] {
      SQLite::Database db(journal);
      return db
          .execAndGet(
              "SELECT group_concat(id, ' ') FROM (SELECT id FROM webhooks ORDER "
              "BY seq)")
          .getString();
    };
    if (with_consumers) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (left() != "old-3 recent" && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      EXPECT_EQ(left(), "old-3 recent") << read_file(dir.file("relay.log"));
      SQLite::Database db(journal);
      EXPECT_EQ(db.execAndGet("SELECT count(*) FROM audit WHERE actor='iarelayd' AND "
                              "action='purge' AND affected=2")
                    .getInt(),
                1);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(3500));
      EXPECT_EQ(left(), "old-1 old-2 old-3 recent") << read_file(dir.file("relay.log"));
    }
  }
}

}  // namespace
}  // namespace iarelay::testing
