// A running iarelayd shares its journal with operators: sqlite3 reads and every `iarelay` write
// command, while webhooks arrive and the janitor runs retention, must never cost the daemon
// its SQLite locks (and so its live WAL): every acknowledged webhook survives a SIGKILL.
#include <dirent.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

// The sqlite3 command-line shell, as an operator runs it (found on PATH).
std::string sqlite3_shell() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/sqlite3";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  ADD_FAILURE() << "the sqlite3 shell is not on PATH";
  return "sqlite3";
}

// Watches /proc/PID/fd for a descriptor of a deleted journal file (the journal, its -wal or
// -shm) until destroyed; what it saw is in deleted().
class DeletedFileWatch {
 public:
  DeletedFileWatch(pid_t pid, std::string journal_name)
      : pid_(pid), name_(std::move(journal_name)), thread_([this] { loop(); }) {}
  ~DeletedFileWatch() {
    stop_ = true;
    thread_.join();
  }
  std::set<std::string> deleted() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void loop() {
    const std::string dir = "/proc/" + std::to_string(pid_) + "/fd";
    while (!stop_) {
      if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d)) {
          char target[4096];
          ssize_t n = ::readlinkat(::dirfd(d), e->d_name, target, sizeof target - 1);
          if (n <= 0) continue;
          std::string link(target, static_cast<size_t>(n));
          if (link.find(name_) != std::string::npos &&
              link.find("(deleted)") != std::string::npos) {
            std::lock_guard lock(mu_);
            seen_.insert(link);
          }
        }
        ::closedir(d);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  const pid_t pid_;
  const std::string name_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::set<std::string> seen_;  // GUARDED_BY(mu_)
  std::thread thread_;
};

TEST(JournalFiles, OperatorsReadsAndCommandsDuringLoadLoseNoAcknowledgedWebhook) {
  TempDir dir;
  const std::string journal = dir.file("journal.db");
  const std::string agent = "host/127.0.0.1:1";
  int port = free_port();
  // Retention on: the janitor opens its connection 2 s after start (and every minute).
  write_file(dir.file("relay.conf"),
             "journal = " + journal + "\nretain_delivered = 1h\n[listen]\naddress = 127.0.0.1:" +
                 std::to_string(port) + "\n[agent.a1]\nid = " + agent +
                 "\ncallback = http://127.0.0.1:1/apia_callback\nservices = svc\n");
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  DeletedFileWatch watch(relay.pid(), "journal.db");

  // Webhooks arrive all along; only those answered 202 count.
  std::atomic<bool> stop_posting{false};
  std::mutex ids_mu;
  std::vector<std::string> acknowledged;
  std::thread poster([&] {
    httplib::Client client("127.0.0.1", port);
    for (int n = 0; !stop_posting; ++n) {
      auto res = client.Post("/v1/webhooks/svc",
                             R"({"status":"active","eventIdentifier":)" + std::to_string(n) + "}",
                             "application/json");
      if (res && res->status == 202) {
        std::lock_guard lock(ids_mu);
        acknowledged.push_back(nlohmann::json::parse(res->body)["id"]);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  // Past the janitor's first pass, then the operators' reads and every write command.
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  const std::vector<std::vector<std::string>> commands = {
      {sqlite3_shell(), journal, "SELECT count(*) FROM webhooks"},
      {bin("iarelay"), "--journal", journal, "resend", "--state", "failed"},
      {sqlite3_shell(), journal, "SELECT state, count(*) FROM webhooks GROUP BY 1"},
      {bin("iarelay"), "--journal", journal, "purge", "--before", "-1h"},
      {bin("iarelay"), "--journal", journal, "purge", "--before", "-1h", "--state", "stored",
       "--force"},
      {bin("iarelay"), "--journal", journal, "agent", "pause", agent, "--reason", "test"},
      {bin("iarelay"), "--journal", journal, "sql", "SELECT count(*) FROM webhooks"},
      {bin("iarelay"), "--journal", journal, "agent", "resume", agent},
      {bin("iarelay"), "--journal", journal, "migrate"},  // refused: the daemon holds it
      {bin("iarelay"), "--journal", journal, "status"},
      {bin("iarelay"), "--journal", journal, "check"},
  };
  for (int round = 0; round < 2; ++round) {
    for (const auto& argv : commands) {
      CommandResult r = run(argv);
      const std::string& what = argv[0] == bin("iarelay") ? argv[3] : argv[2];
      if (what != "migrate") {
        EXPECT_EQ(r.exit_code, 0) << what << ": " << r.err;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop_posting = true;
  poster.join();
  relay.signal(SIGKILL);
  relay.wait();

  EXPECT_TRUE(watch.deleted().empty())
      << "the daemon held a deleted journal file: " << *watch.deleted().begin();
  std::lock_guard lock(ids_mu);
  ASSERT_GT(acknowledged.size(), 50u);
  SQLite::Database db(journal, SQLite::OPEN_READWRITE);
  EXPECT_EQ(db.execAndGet("PRAGMA integrity_check").getString(), "ok");
  std::vector<std::string> lost;
  SQLite::Statement q(db, "SELECT 1 FROM webhooks WHERE id=?");
  for (const auto& id : acknowledged) {
    q.reset();
    q.bind(1, id);
    if (!q.executeStep()) lost.push_back(id);
  }
  EXPECT_TRUE(lost.empty()) << lost.size() << " of " << acknowledged.size()
                            << " acknowledged webhooks are not in the journal after SIGKILL";
}

}  // namespace
}  // namespace iarelay::testing
