// The journal's crash test: journal_crash_child submits webhooks through the group-commit
// Writer (sync=full) and prints each acknowledged id; it is SIGKILLed at a random moment 20
// times, each round appending to the same journal. Every acknowledged id must be in the journal
// afterwards and PRAGMA integrity_check must say ok.
#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "journal/journal.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using Clock = std::chrono::steady_clock;

// One child: spawned with its stdout on a pipe we read; killed with SIGKILL after `life`.
// Returns the complete lines it printed (a line cut by the kill is not an acknowledgement).
std::vector<std::string> run_and_kill(const std::string& journal, int threads,
                                      std::chrono::milliseconds life, std::string& stderr_text,
                                      const std::string& stderr_path) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  std::string child = testing::bin("journal_crash_child");
  std::string nthreads = std::to_string(threads);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (err >= 0) ::dup2(err, STDERR_FILENO);
    char* args[] = {const_cast<char*>(child.c_str()), const_cast<char*>(journal.c_str()),
                    const_cast<char*>(nthreads.c_str()), nullptr};
    ::execv(args[0], args);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string buffer;
  char chunk[65536];
  auto read_available = [&](int timeout_ms) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    ssize_t n = ::read(out[0], chunk, sizeof chunk);
    if (n > 0) buffer.append(chunk, static_cast<size_t>(n));
    return n > 0;
  };
  // The kill is timed from "ready" (the writer is open), so a slow start on a loaded machine
  // does not turn rounds into kills before the first commit.
  auto ready_by = Clock::now() + std::chrono::seconds(20);
  while (buffer.find('\n') == std::string::npos && Clock::now() < ready_by) {
    if (!read_available(100) && ::waitpid(pid, nullptr, WNOHANG) == pid) break;
  }
  // Keep the pipe drained while the child runs, so it never blocks on a full pipe.
  auto deadline = Clock::now() + life;
  while (Clock::now() < deadline) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    read_available(std::max(left, 0));
  }
  ::kill(pid, SIGKILL);
  // Everything written before the kill is still in the pipe: read to EOF.
  while (read_available(5000)) {
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  stderr_text = testing::read_file(stderr_path);
  std::vector<std::string> ids;
  if (buffer.rfind("ready\n", 0) != 0) {
    stderr_text += "child never became ready";
    return ids;
  }
  size_t start = 6;
  for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1)
    ids.push_back(buffer.substr(start, nl - start));
  return ids;
}

TEST(Crash, EveryAcknowledgedWebhookSurvivesSigkill) {
  testing::TempDir dir;
  std::string journal = dir.file("journal.db");
  std::random_device rd;
  unsigned seed = rd();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> life_ms(10, 300);
  RecordProperty("seed", static_cast<int>(seed));
  std::printf("crash test seed %u\n", seed);

  constexpr int kRounds = 20;
  std::vector<std::pair<int, std::string>> acknowledged;  // (round, id)
  int rounds_with_acks = 0;
  auto started = Clock::now();
  for (int round = 0; round < kRounds; ++round) {
    int life = life_ms(rng);
    std::string err;
    auto ids =
        run_and_kill(journal, 16, std::chrono::milliseconds(life), err, dir.file("child.stderr"));
    // The child never exits on its own: an error message means it failed to open the journal.
    ASSERT_TRUE(err.empty()) << "round " << round << ": child said: " << err;
    if (!ids.empty()) ++rounds_with_acks;
    for (auto& id : ids) acknowledged.emplace_back(round, std::move(id));
  }
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf("crash test: %d rounds in %.1f s, %zu acknowledged ids, %d rounds with acks\n",
              kRounds, seconds, acknowledged.size(), rounds_with_acks);
  // Not vacuous: rounds lived long enough to have commits acknowledged (a 10 ms life on a
  // loaded machine may see none, so only a quarter of them must).
  ASSERT_GE(rounds_with_acks, kRounds / 4);

  auto db = open_journal_for_read(journal);
  ASSERT_TRUE(db.is_ok()) << db.status().message();
  EXPECT_EQ((*db)->execAndGet("PRAGMA integrity_check").getString(), "ok");
  std::set<std::string> stored;
  {
    SQLite::Statement q(**db, "SELECT id FROM webhooks");
    while (q.executeStep()) stored.insert(q.getColumn(0).getString());
  }
  int missing = 0;
  for (const auto& [round, id] : acknowledged) {
    if (stored.count(id)) continue;
    if (++missing <= 10)
      ADD_FAILURE() << "acknowledged in round " << round << " but not in the journal: " << id;
  }
  EXPECT_EQ(missing, 0) << "of " << acknowledged.size() << " acknowledged (seed " << seed << ")";
  // Each id was acknowledged once, and the journal holds at least what was acknowledged.
  std::set<std::string> unique_acks;
  for (const auto& a : acknowledged) unique_acks.insert(a.second);
  EXPECT_EQ(unique_acks.size(), acknowledged.size());
  EXPECT_GE(stored.size(), unique_acks.size());
  // A fresh writer opens the crashed journal and applies no migration twice.
  db.value().reset();
  auto check = open_journal_for_write(journal, SyncLevel::kFull);
  ASSERT_TRUE(check.is_ok()) << check.status().message();
  EXPECT_TRUE(verify_migrations(**check).is_ok());
}

}  // namespace
}  // namespace iarelay
