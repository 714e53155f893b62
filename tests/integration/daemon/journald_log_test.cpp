// Logging under systemd: with JOURNAL_STREAM naming stderr (sd-daemon(3)), every line starts with
// its syslog priority and carries no timestamp of its own; otherwise the usual format.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

// "DEVICE:INODE" of a file, as systemd puts in JOURNAL_STREAM for the stream it gives stderr.
std::string stream_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

// Runs iarelayd without agents (it warns that it starts as an edge) until it listens, makes a
// reload fail (an error line), stops it, and returns what it wrote to stderr.
std::string daemon_log(const TempDir& dir, const std::string& log,
                       const std::map<std::string, std::string>& env,
                       const std::string& extra = "") {
  int port = free_port();
  std::string conf = dir.file("relay.conf");
  write_file(conf, "journal = " + dir.file("journal.db") + "\nlog_level = debug\n" + extra +
                       "[listen]\n" + "address = 127.0.0.1:" + std::to_string(port) + "\n");
  Process relay({bin("iarelayd"), "--config", conf}, "", log, env);
  EXPECT_TRUE(wait_for_port(port)) << read_file(log);
  write_file(conf, "no_such_key = 1\n");
  relay.signal(SIGHUP);
  EXPECT_TRUE(wait_until([&] { return read_file(log).find("reload failed") != std::string::npos; },
                         std::chrono::seconds(10)))
      << read_file(log);
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(), 0);
  return read_file(log);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(JournaldLog, UnderSystemdEveryLineStartsWithItsPriorityAndHasNoTimestamp) {
  TempDir dir;
  std::string log = dir.file("stderr.log");
  write_file(log, "");
  auto lines = lines_of(daemon_log(dir, log, {{"JOURNAL_STREAM", stream_id(log)}}));
  ASSERT_GE(lines.size(), 3u);
  EXPECT_NE(lines.front().find("<6>info  "), std::string::npos) << lines.front();
  const std::regex prefixed(R"(<[2-7]>(debug|info |warning|error|critical) \S.*)");
  const std::regex timestamp(R"(\d{4}-\d\d-\d\dT\d\d:\d\d)");
  std::map<char, int> by_priority;
  for (const auto& line : lines) {
    EXPECT_TRUE(std::regex_match(line, prefixed)) << line;
    EXPECT_FALSE(std::regex_search(line.substr(0, 30), timestamp)) << line;
    if (line.size() > 3) ++by_priority[line[1]];
  }
  EXPECT_GT(by_priority['4'], 0) << "the edge warning";
  EXPECT_GT(by_priority['6'], 0) << "info lines";
  EXPECT_GT(by_priority['3'], 0) << "the failed reload";
  for (const auto& line : lines) {
    if (line.find("reload failed") != std::string::npos) {
      EXPECT_EQ(line.rfind("<3>error ", 0), 0u) << line;
    }
  }
}

TEST(JournaldLog, JsonLinesCarryThePriorityBeforeTheObject) {
  TempDir dir;
  std::string log = dir.file("stderr.log");
  write_file(log, "");
  auto lines =
      lines_of(daemon_log(dir, log, {{"JOURNAL_STREAM", stream_id(log)}}, "log_format = json\n"));
  ASSERT_GE(lines.size(), 3u);
  for (const auto& line : lines) {
    ASSERT_TRUE(std::regex_match(line.substr(0, 4), std::regex(R"(<[2-7]>\{)"))) << line;
    auto doc = nlohmann::json::parse(line.substr(3), nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << line;
    std::string level = doc["level"];
    char expected = level == "error" ? '3' : level == "warning" ? '4' : level == "info" ? '6' : '7';
    EXPECT_EQ(line[1], expected) << line;
  }
}

TEST(JournaldLog, WithoutJournaldTheLinesKeepTheirTimestamp) {
  TempDir dir;
  std::string log = dir.file("stderr.log");
  write_file(log, "");
  // Not set, and set but naming another stream (stderr redirected away from journald): the
  // usual "TIME LEVEL message" lines.
  for (const std::string& journal_stream : {std::string(""), stream_id(dir.path())}) {
    write_file(log, "");
    auto lines = lines_of(daemon_log(dir, log, {{"JOURNAL_STREAM", journal_stream}}));
    ASSERT_GE(lines.size(), 3u);
    const std::regex usual(
        R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info |warning|error) .*)");
    for (const auto& line : lines) EXPECT_TRUE(std::regex_match(line, usual)) << line;
  }
}

}  // namespace
}  // namespace iarelay::testing
