// Issue 11 C: values from the journal are outside text. In CSV a cell a spreadsheet would run as
// a formula is prefixed with a single quote (OWASP); in tables, control characters and bytes
// that are not UTF-8 are shown escaped instead of reaching the terminal; JSON stays exact.
#include <algorithm>

#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

// Bytes a terminal acts on: C0 controls other than LF, DEL, and C1 (UTF-8 C2 80-C2 9F, or a
// lone byte 80-9F that a terminal not in UTF-8 mode reads as C1).
std::string control_bytes_in(const std::string& out) {
  std::string found;
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto c = static_cast<unsigned char>(out[i]);
    bool c1 = c == 0xC2 && i + 1 < out.size() && static_cast<unsigned char>(out[i + 1]) >= 0x80 &&
              static_cast<unsigned char>(out[i + 1]) <= 0x9F;
    if ((c < 0x20 && c != '\n') || c == 0x7F || c1 || c == 0xFF) {
      found += "at " + std::to_string(i) + ": " + std::to_string(c) + "; ";
    }
  }
  return found;
}

class OutputSafety : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    // A webhook whose every shown field holds what a hostile or broken sender could get into
    // the journal (an older version stored it, or an operator's SQL).
    add("evil", WebhookState::kFailed, "=HYPERLINK(\"http://x\")", std::string("ws\x1B[31m"),
        "-2+3", "@SUM(1)", -kMinute, std::string("+cmd|' /C calc'!A0"));
    op([&](SQLite::Database& db) {
      TransitionFields f;
      f.attempts = 1;
      f.last_error = std::optional<std::string>(
          "\tHTTP 500: \x1B]0;pwned\x07\x7F\xC2\x9B"
          "end\r");
      ASSERT_TRUE(transition(db, "evil", WebhookState::kFailed, WebhookState::kFailed, f));
      record_attempt(db, {"evil", 1, "ws\x1B[31m", now_, 5, 500, "\x1B[2Jgone\xFF", "failed"});
      set_agent_state(db, "ws\x1B[31m", "down", std::string("\x1B[5mblink"), std::nullopt, false);
    });
  }
};

TEST_F(OutputSafety, CsvCellsASpreadsheetWouldRunStartWithAQuote) {
  auto r = iarelay({"list", "--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = parse_csv(r.out);
  const auto& header = rows.at(0);
  auto col = [&](const std::string& name) {
    auto at = std::find(header.begin(), header.end(), name);
    EXPECT_NE(at, header.end()) << name;
    return static_cast<std::size_t>(at - header.begin());
  };
  const auto& evil = rows.at(1);
  ASSERT_EQ(evil.at(col("id")), "evil");
  EXPECT_EQ(evil.at(col("service")), "'=HYPERLINK(\"http://x\")");
  EXPECT_EQ(evil.at(col("agent")), "'+cmd|' /C calc'!A0");
  EXPECT_EQ(evil.at(col("assigned_agent")), "ws\x1B[31m");  // CSV is data: bytes as stored
  EXPECT_EQ(evil.at(col("type")), "'-2+3");
  EXPECT_EQ(evil.at(col("event_id")), "'@SUM(1)");
  EXPECT_EQ(evil.at(col("last_error")).substr(0, 2), "'\t");
  // Numbers are numbers, and other text is as stored.
  EXPECT_EQ(evil.at(col("attempts")), "1");
  EXPECT_EQ(rows.at(2).at(col("id")), "s1");
  EXPECT_EQ(rows.at(2).at(col("service")), "hpnnmi");

  auto sql = parse_csv(
      iarelay({"sql", "SELECT '=1+1' AS \"=x\", -5 AS n, '\r1' AS cr", "--format", "csv"}).out);
  ASSERT_EQ(sql.size(), 2u);
  EXPECT_EQ(sql[0], (std::vector<std::string>{"'=x", "n", "cr"}));
  EXPECT_EQ(sql[1], (std::vector<std::string>{"'=1+1", "-5", "'\r1"}));

  auto help = iarelay({"list", "--help"});
  EXPECT_NE(help.out.find("leading '"), std::string::npos) << help.out;

  // JSON keeps the exact values.
  Json doc = json_of(iarelay({"show", "evil", "--format", "json"}));
  EXPECT_EQ(doc["service"], "=HYPERLINK(\"http://x\")");
  EXPECT_EQ(doc["event_id"], "@SUM(1)");
  EXPECT_EQ(doc["last_error"],
            "\tHTTP 500: \x1B]0;pwned\x07\x7F\xC2\x9B"
            "end\r");
}

TEST_F(OutputSafety, TablesShowControlCharactersEscaped) {
  std::string config = config_file();
  const std::vector<std::vector<std::string>> commands = {
      {"--journal", journal_, "list"},
      {"--journal", journal_, "show", "evil"},
      {"--journal", journal_, "status"},
      {"--config", config, "agent", "list"},
      {"--journal", journal_, "sql", "SELECT id, assigned_agent, last_error FROM webhooks"}};
  for (const auto& args : commands) {
    auto r = iarelay_raw(args);
    std::string shown = args.at(2) + (args.size() > 3 ? " " + args.at(3) : "");
    ASSERT_EQ(r.exit_code, 0) << shown << ": " << r.err;
    EXPECT_EQ(control_bytes_in(r.out), "") << shown << ":\n" << r.out;
    EXPECT_NE(r.out.find("ws\\x1b[31m"), std::string::npos) << shown << ":\n" << r.out;
  }
  auto show = iarelay({"show", "evil"});
  EXPECT_NE(show.out.find("\\x1b]0;pwned\\x07\\x7f\\u009bend"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("\\x1b[2Jgone\\xff"), std::string::npos) << show.out;  // not UTF-8
  // The agent's reason.
  auto agents = iarelay({"agent", "list"});
  EXPECT_NE(agents.out.find("\\x1b[5mblink"), std::string::npos) << agents.out;
}

// A pause's reason is text the operator types: refused (bad usage, nothing stored) when it
// holds a terminal control or bytes that are not UTF-8.
TEST_F(OutputSafety, PauseReasonMustBeText) {
  for (const char* reason : {"\x1B[2Jpatching", "patch\xFF"}) {
    auto r = iarelay({"agent", "pause", kAgentA, "--reason", reason});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("--reason"), std::string::npos) << r.err;
  }
  EXPECT_EQ(count("SELECT count(*) FROM agents WHERE state = 'paused'"), 0);
  auto ok = iarelay({"agent", "pause", kAgentA, "--reason", "patching caf\xC3\xA9"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace iarelay::clitest
