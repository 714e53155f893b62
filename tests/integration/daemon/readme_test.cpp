// The README's "Your first ten minutes", run as written: its ```sh blocks, in order, in one
// bash, from a directory laid out like the repository root (build/bin and tests/fixtures are
// links to this build's programs and the fixtures). The one change: the two ports the README
// names, 8080 (the relay) and 8081 (the stand-in agent), become free ones, wherever they
// appear (addresses, the agent identifier, its URL-encoded form).
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

// The ```sh blocks of the README section titled `title`.
std::vector<std::string> shell_blocks(const std::string& readme, const std::string& title) {
  std::vector<std::string> blocks;
  size_t begin = readme.find("\n## " + title + "\n");
  if (begin == std::string::npos) return blocks;
  size_t end = readme.find("\n## ", begin + 1);
  std::string section = readme.substr(begin, end == std::string::npos ? end : end - begin);
  for (size_t at = section.find("```sh\n"); at != std::string::npos;
       at = section.find("```sh\n", at)) {
    at += 6;
    size_t close = section.find("\n```", at);
    if (close == std::string::npos) break;
    blocks.push_back(section.substr(at, close - at + 1));
    at = close + 4;
  }
  return blocks;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(Readme, FirstTenMinutesRunsAsWritten) {
  const std::string source = IARELAY_SOURCE_DIR;
  std::vector<std::string> blocks =
      shell_blocks(read_file(source + "/README.md"), "Your first ten minutes");
  ASSERT_GE(blocks.size(), 4u) << "README.md has no section \"Your first ten minutes\" with its "
                                  "```sh blocks";

  TempDir dir;  // the "repository root"
  const std::string bin_dir = bin("iarelayd").substr(0, bin("iarelayd").rfind('/'));
  ASSERT_EQ(::mkdir(dir.file("build").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(dir.file("tests").c_str(), 0700), 0);
  ASSERT_EQ(::symlink(bin_dir.c_str(), dir.file("build/bin").c_str()), 0);
  ASSERT_EQ(::symlink((source + "/tests/fixtures").c_str(), dir.file("tests/fixtures").c_str()), 0);

  const std::string relay_port = std::to_string(free_port());
  const std::string agent_port = std::to_string(free_port());
  std::string script = "cd " + dir.path() + "\n";
  for (size_t i = 0; i < blocks.size(); ++i) {
    std::string block = blocks[i];
    for (const char* sep : {":", "%3A"}) {
      block = replace_all(block, std::string(sep) + "8080", sep + relay_port);
      block = replace_all(block, std::string(sep) + "8081", sep + agent_port);
    }
    script += "echo '### block " + std::to_string(i + 1) + "'\n" + block;
  }
  script += "echo '### done'\n";
  write_file(dir.file("walkthrough.sh"), script);

  // Its own process group (Process does setpgid), so whatever it left running goes with it.
  Process bash({"/bin/bash", dir.file("walkthrough.sh")}, dir.file("out.txt"), dir.file("err.txt"));
  const int code = bash.wait(std::chrono::seconds(120));
  ::kill(-bash.pid(), SIGKILL);
  const std::string out = read_file(dir.file("out.txt"));
  const std::string transcript = script + "\n--- stdout\n" + out + "\n--- stderr\n" +
                                 read_file(dir.file("err.txt")) + "\n--- iarelayd.log\n" +
                                 read_file(dir.file("var/first/iarelayd.log"));
  ASSERT_EQ(code, 0) << transcript;
  ASSERT_NE(out.find("### done"), std::string::npos) << transcript;

  // Two webhooks were accepted ...
  int accepted = 0;
  for (size_t at = out.find("\"state\":\"queued\""); at != std::string::npos;
       at = out.find("\"state\":\"queued\"", at + 1))
    ++accepted;
  EXPECT_EQ(accepted, 2) << transcript;
  // ... status named the agent, show 1 the first webhook delivered, list --state failed the
  // second, and both were delivered in the end.
  const std::string agent = "ws-198/127.0.0.1:" + agent_port;
  EXPECT_NE(out.find(agent), std::string::npos) << transcript;
  SQLite::Database db(dir.file("var/first/journal.db"));
  SQLite::Statement q(db, "SELECT id, state, assigned_agent FROM webhooks ORDER BY seq");
  std::vector<std::string> ids;
  while (q.executeStep()) {
    ids.push_back(q.getColumn(0).getString());
    EXPECT_EQ(q.getColumn(1).getString(), "delivered") << ids.back() << "\n" << transcript;
    EXPECT_EQ(q.getColumn(2).getString(), agent);
  }
  ASSERT_EQ(ids.size(), 2u) << transcript;
  size_t block3 = out.find("### block 3"), block4 = out.find("### block 4");
  ASSERT_NE(block3, std::string::npos);
  ASSERT_NE(block4, std::string::npos);
  EXPECT_NE(out.substr(block3, block4 - block3).find(ids[1]), std::string::npos)
      << "list --state failed did not show the failed webhook\n"
      << transcript;
  EXPECT_NE(out.substr(block3, block4 - block3).find("400"), std::string::npos) << transcript;

  // What the agent received, in order: the first webhook (204), the second rejected (400),
  // then the second again after the resend (204).
  std::vector<std::string> calls = lines_of(read_file(dir.file("var/first/sink.jsonl")));
  ASSERT_EQ(calls.size(), 3u) << transcript;
  EXPECT_NE(calls[0].find("\"webhook_id\":\"" + ids[0] + "\""), std::string::npos) << calls[0];
  EXPECT_NE(calls[0].find("\"status\":204"), std::string::npos) << calls[0];
  EXPECT_NE(calls[0].find("6120448"), std::string::npos) << calls[0];  // ib_status.json's alert
  EXPECT_NE(calls[1].find("\"webhook_id\":\"" + ids[1] + "\""), std::string::npos) << calls[1];
  EXPECT_NE(calls[1].find("\"status\":400"), std::string::npos) << calls[1];
  EXPECT_NE(calls[2].find("\"webhook_id\":\"" + ids[1] + "\""), std::string::npos) << calls[2];
  EXPECT_NE(calls[2].find("\"status\":204"), std::string::npos) << calls[2];
}

}  // namespace
}  // namespace iarelay::testing
