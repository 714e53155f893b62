// `iarelay status` as a table says why an agent is down or paused (docs/operations.md, "An
// agent is down": "iarelay status shows it down with the reason"), not only the JSON document.
#include <sstream>

#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

// The line of the agents table that names `agent`, or "".
std::string row_of(const std::string& table, const std::string& agent) {
  std::istringstream in(table);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(agent + " ", 0) == 0) return line;
  return "";
}

TEST_F(CliTest, StatusTableShowsWhyAnAgentIsDownOrPaused) {
  auto pause = iarelay({"agent", "pause", kAgentA, "--until", "+2h", "--reason", "patching"});
  ASSERT_EQ(pause.exit_code, 0) << pause.err;
  auto r = iarelay({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("REASON"), std::string::npos) << r.out;
  // agent-b is down (sample journal: "5 failures"); A paused by an operator.
  std::string down = row_of(r.out, kAgentB), paused = row_of(r.out, kAgentA);
  EXPECT_NE(down.find("down"), std::string::npos) << r.out;
  EXPECT_NE(down.find("5 failures"), std::string::npos) << r.out;
  EXPECT_NE(paused.find("paused"), std::string::npos) << r.out;
  EXPECT_NE(paused.find("patching"), std::string::npos) << r.out;

  // Resumed, the old reason is history: the row of an up agent shows none.
  auto resume = iarelay({"agent", "resume", kAgentA});
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  r = iarelay({"status"});
  paused = row_of(r.out, kAgentA);
  EXPECT_NE(paused.find(" up "), std::string::npos) << r.out;
  EXPECT_EQ(paused.find("patching"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace iarelay::clitest
