// Files that are not journals, damaged journals and missing journals: every command answers
// with one line on stderr and exit 1 or 2, never a crash, and the file keeps every byte.
#include <filesystem>
#include <random>

#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

const std::vector<std::vector<std::string>> kEveryCommand = {
    {"status"},
    {"status", "--format", "json"},
    {"list"},
    {"list", "--state", "failed", "--format", "csv"},
    {"show", "f1"},
    {"sql", "SELECT count(*) FROM webhooks"},
    {"resend", "f1"},
    {"resend", "--state", "failed"},
    {"resend", "--state", "failed", "--dry-run"},
    {"agent", "list"},
    {"agent", "pause", "agent-b"},
    {"agent", "resume", "agent-b"},
    {"purge", "--before", "now"},
    {"purge", "--before", "now", "--state", "failed,discarded"},
    {"migrate"},
    {"check"},
};

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

class BadInputTest : public CliTest {
 protected:
  // Runs every command on `path` and checks the answer and that the file did not change.
  void expect_refused_unchanged(const std::string& path, const std::string& what) {
    close_journal();
    const std::string before = testing::read_file(path);
    for (const auto& args : kEveryCommand) {
      std::vector<std::string> argv = {testing::bin("iarelay"), "--journal", path};
      argv.insert(argv.end(), args.begin(), args.end());
      auto r = testing::run(argv);
      std::string cmd = args[0] + (args.size() > 1 ? " " + args[1] : "");
      EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2)
          << what << ": " << cmd << " exited " << r.exit_code << ": " << r.err;
      EXPECT_EQ(lines(r.err), 1) << what << ": " << cmd << ": " << r.err;
      EXPECT_EQ(r.err.rfind("iarelay ", 0), 0u) << what << ": " << cmd << ": " << r.err;
      EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
      EXPECT_EQ(testing::read_file(path), before) << what << ": " << cmd << " changed the file";
    }
  }
};

TEST_F(BadInputTest, TextFile) {
  std::string path = dir_.file("notes.txt");
  testing::write_file(path, "this is not a journal\njust some text\n");
  expect_refused_unchanged(path, "text file");
}

TEST_F(BadInputTest, RandomBytesWithSqliteHeader) {
  std::string path = dir_.file("corrupt.db");
  testing::write_file(path, std::string("SQLite format 3\0", 16) + random_bytes(16384, 7));
  expect_refused_unchanged(path, "random bytes with a SQLite header");
}

TEST_F(BadInputTest, ForeignSqliteDatabase) {
  std::string path = dir_.file("other.db");
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('hello')");
  }
  expect_refused_unchanged(path, "foreign SQLite database");
}

TEST_F(BadInputTest, DamagedJournalPages) {
  // Enough rows that most pages hold webhook rows; damage a few in the middle, leaving the
  // schema page readable so the damage shows only when those pages are read.
  op([&](SQLite::Database& db) {
    for (int i = 0; i < 400; ++i) {
      NewWebhook w;
      w.id = "pad-" + std::to_string(i);
      w.received_at = now_ - 2 * kHour;
      w.service = "hpnnmi";
      w.type = "status";
      w.state = WebhookState::kDelivered;
      w.payload = "{\"pad\":\"" + std::string(2000, 'x') + "\"}";
      insert_webhook(db, w);
    }
  });
  close_journal();
  std::string bytes = testing::read_file(journal_);
  const std::size_t pages = bytes.size() / 4096;
  ASSERT_GT(pages, 100u);
  std::mt19937 rng(3);
  for (std::size_t page = pages / 2; page < pages / 2 + 3; ++page)
    for (int k = 0; k < 300; ++k)
      bytes[page * 4096 + 100 + rng() % 3996] = static_cast<char>(rng());
  std::string path = dir_.file("damaged.db");
  testing::write_file(path, bytes);
  close_journal();
  const std::string before = testing::read_file(path);
  // Writes are refused outright (quick_check first); reads may succeed where they do not meet
  // the damage, but never change the file.
  for (const auto& args : kEveryCommand) {
    std::vector<std::string> argv = {testing::bin("iarelay"), "--journal", path};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = testing::run(argv);
    std::string cmd = args[0] + (args.size() > 1 ? " " + args[1] : "");
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << cmd << ": " << r.err;
    if (r.exit_code != 0) {
      EXPECT_EQ(lines(r.err), 1) << cmd << ": " << r.err;
    }
    EXPECT_EQ(testing::read_file(path), before) << cmd << " changed the damaged journal";
  }
  auto check = testing::run({testing::bin("iarelay"), "--journal", path, "check"});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.err.find("integrity_check"), std::string::npos) << check.err;
  // The damage is in rows that a full list reads.
  auto list = testing::run({testing::bin("iarelay"), "--journal", path, "list", "--limit=0"});
  EXPECT_EQ(list.exit_code, 1);
  EXPECT_NE(list.err.find("malformed"), std::string::npos) << list.err;
  auto pause =
      testing::run({testing::bin("iarelay"), "--journal", path, "agent", "pause", "agent-b"});
  EXPECT_EQ(pause.exit_code, 1);
  EXPECT_NE(pause.err.find("damaged"), std::string::npos) << pause.err;
}

TEST_F(BadInputTest, MissingJournalIsNeverCreated) {
  std::string path = dir_.file("absent/journal.db");
  for (const auto& args : kEveryCommand) {
    if (args[0] == "migrate") continue;  // the one command that creates a journal
    std::vector<std::string> argv = {testing::bin("iarelay"), "--journal", path};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = testing::run(argv);
    EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find("no journal at " + path), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(path)) << args[0] << " created the journal";
    EXPECT_FALSE(std::filesystem::exists(dir_.file("absent"))) << args[0];
  }
}

TEST_F(BadInputTest, DirectoryInsteadOfJournal) {
  std::string path = dir_.file("adir");
  std::filesystem::create_directory(path);
  for (const auto& args : kEveryCommand) {
    std::vector<std::string> argv = {testing::bin("iarelay"), "--journal", path};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = testing::run(argv);
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << args[0] << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1) << args[0] << ": " << r.err;
  }
}

TEST_F(BadInputTest, BadConfigurationIsOneLineNamingFileAndLine) {
  std::string path = dir_.file("broken.conf");
  testing::write_file(path, "journal = " + journal_ + "\n[agent.x]\ncallback = nope\n");
  auto r = iarelay_raw({"--config", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("broken.conf:"), std::string::npos) << r.err;
  auto missing = iarelay_raw({"--config", dir_.file("nowhere.conf"), "status"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("nowhere.conf"), std::string::npos) << missing.err;
}

// Found by the cli_filter fuzz target: Boost's usage-error message replaces each placeholder
// ("%canonical_option%") of its template with the option as given until none is left, so an
// option holding its own placeholder never ended: `iarelay list --x%canonical_option%` ran until
// memory ran out. Each is a one-line usage error naming the option as given.
TEST_F(BadInputTest, OptionHoldingAMessagePlaceholderIsAUsageError) {
  const std::vector<std::vector<std::string>> cases = {
      {"--journal", journal_, "list", "--stat%canonical_option%%since', and '%pree"},
      {"--journal", journal_, "list", "--x%option%", "--state", "failed"},
      {"--journal", journal_, "show", "f1", "--format%original_token%"},
      {"--x%canonical_option%", "--journal", journal_, "status"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& args = cases[i];
    std::vector<std::string> argv = {testing::bin("iarelay")};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string err = dir_.file("err" + std::to_string(i) + ".txt");
    testing::Process p(argv, dir_.file("out" + std::to_string(i) + ".txt"), err);
    const std::string& option = args[0] == "--journal" ? args[3 + (args[2] == "show")] : args[0];
    // Without the fix it never ends (and grows without bound): killed after 10 s.
    ASSERT_EQ(p.wait(std::chrono::seconds(10)), 2) << option;
    std::string message = testing::read_file(err);
    EXPECT_EQ(lines(message), 1) << message;
    EXPECT_NE(message.find("unknown option '" + option + "'"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace iarelay::clitest
