// Usage errors in the tool's own words: every command, given each kind of mistake (a missing
// argument, an unknown option, an option without its value or given twice, too many arguments),
// answers one line naming the command and what to do, exit status 2, and never Boost's text.
#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

// Boost.Program_options' wording, which must never reach the operator.
const char* const kBoostWords[] = {"the option",
                                   "is required but missing",
                                   "unrecognised option",
                                   "unrecognized option",
                                   "the required argument",
                                   "cannot be specified more than once",
                                   "too many positional options",
                                   "invalid option value"};

class UsageErrorsTest : public CliTest {
 protected:
  // Runs `args` (after --journal) and checks the answer is a usage error in our words, naming
  // `command`; returns the message.
  std::string expect_usage_error(const std::vector<std::string>& args, const std::string& command) {
    auto r = iarelay(args);
    std::string cmd;
    for (const auto& a : args) cmd += a + " ";
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.err;
    EXPECT_EQ(lines(r.err), 1) << cmd << ": " << r.err;
    EXPECT_EQ(r.err.rfind("iarelay " + command + ": ", 0), 0u) << cmd << ": " << r.err;
    for (const char* word : kBoostWords)
      EXPECT_EQ(r.err.find(word), std::string::npos) << cmd << ": " << r.err;
    return r.err;
  }
};

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(UsageErrorsTest, AMissingArgumentSaysWhatToGive) {
  EXPECT_TRUE(has(expect_usage_error({"agent", "pause"}, "agent pause"),
                  "iarelay agent pause: give an agent identifier or handle"));
  EXPECT_TRUE(has(expect_usage_error({"agent", "resume"}, "agent resume"),
                  "iarelay agent resume: give an agent identifier or handle"));
  EXPECT_TRUE(has(expect_usage_error({"agent"}, "agent"), "give list, pause ID or resume ID"));
  EXPECT_TRUE(has(expect_usage_error({"show"}, "show"), "iarelay show: give a webhook id"));
  EXPECT_TRUE(has(expect_usage_error({"sql"}, "sql"), "iarelay sql: give a query"));
  EXPECT_TRUE(has(expect_usage_error({"purge"}, "purge"),
                  "iarelay purge: --before is required (give --before T)"));
}

TEST_F(UsageErrorsTest, AnUnknownOptionNamesTheNearestKnownOne) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"status", "--frmat", "json"}, "status"},
      {{"list", "--staet", "failed"}, "list"},
      {{"show", "f1", "--frmat", "json"}, "show"},
      {{"resend", "--staet", "failed"}, "resend"},
      {{"move", "--fron", "x", "--to", "y"}, "move"},
      {{"sql", "--frmat", "csv", "SELECT 1"}, "sql"},
      {{"agent", "list", "--frmat", "json"}, "agent list"},
      {{"agent", "pause", "x", "--untill", "+1h"}, "agent pause"},
      {{"agent", "resume", "x", "--hepl"}, "agent resume"},
      {{"purge", "--bfore", "now"}, "purge"},
  };
  for (const auto& [args, command] : cases) {
    std::string e = expect_usage_error(args, command);
    EXPECT_TRUE(has(e, "unknown option '")) << e;
    EXPECT_TRUE(has(e, "(did you mean --")) << e;
  }
  EXPECT_TRUE(has(expect_usage_error({"list", "--staet", "failed"}, "list"),
                  "unknown option '--staet' (did you mean --state?)"));
  EXPECT_TRUE(has(expect_usage_error({"agent", "pause", "x", "--untill", "+1h"}, "agent pause"),
                  "unknown option '--untill' (did you mean --until?)"));
  // Far from every option: no guess, still our words.
  std::string far = expect_usage_error({"migrate", "--xyzzy"}, "migrate");
  EXPECT_TRUE(has(far, "unknown option '--xyzzy'")) << far;
  EXPECT_FALSE(has(far, "did you mean")) << far;
  expect_usage_error({"check", "--xyzzy"}, "check");
}

TEST_F(UsageErrorsTest, TooManyArgumentsNameTheExtraOne) {
  EXPECT_TRUE(has(expect_usage_error({"show", "f1", "f2"}, "show"),
                  "takes at most 1 argument ('f2' is one too many)"));
  EXPECT_TRUE(has(expect_usage_error({"agent", "pause", "a", "b"}, "agent pause"),
                  "takes at most 1 argument ('b' is one too many)"));
  EXPECT_TRUE(has(expect_usage_error({"sql", "SELECT 1", "SELECT 2"}, "sql"),
                  "('SELECT 2' is one too many)"));
  for (const char* command : {"status", "list", "migrate", "check", "purge"}) {
    std::vector<std::string> args = {command, "extra"};
    if (std::string(command) == "purge") args = {"purge", "--before", "now", "extra"};
    EXPECT_TRUE(
        has(expect_usage_error(args, command), "takes no arguments ('extra' is one too many)"));
  }
  EXPECT_TRUE(
      has(expect_usage_error({"agent", "list", "extra"}, "agent list"), "takes no arguments"));
}

TEST_F(UsageErrorsTest, AMissingValueOrARepeatedOptionIsSaidPlainly) {
  EXPECT_TRUE(has(expect_usage_error({"list", "--since"}, "list"), "--since needs a value"));
  EXPECT_TRUE(has(expect_usage_error({"purge", "--before"}, "purge"), "--before needs a value"));
  EXPECT_TRUE(has(expect_usage_error({"list", "--agent", "a", "--agent", "b"}, "list"),
                  "--agent is given more than once (give it once)"));
  EXPECT_TRUE(has(expect_usage_error({"status", "--format", "yaml"}, "status"),
                  "--format: 'yaml' is not one of table|json"));
  // A time in words: both directions, and the form with an offset.
  std::string t = expect_usage_error({"list", "--since", "yesterday"}, "list");
  EXPECT_TRUE(has(t, "-2h for the past, +2h for the future")) << t;
  std::string local = expect_usage_error({"list", "--until", "2026-11-29T14:00:00"}, "list");
  EXPECT_TRUE(has(local, "has no offset")) << local;
  EXPECT_TRUE(has(local, "2026-11-29T14:00:00Z for UTC")) << local;
}

TEST_F(UsageErrorsTest, GlobalOptionsAndCommandNamesSuggestTooTheNearest) {
  auto r = iarelay_raw({"--jornal", journal_, "status"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "unknown option '--jornal' (did you mean --journal?)")) << r.err;
  for (const char* word : kBoostWords) EXPECT_FALSE(has(r.err, word)) << r.err;
  r = iarelay({"stauts"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "unknown command 'stauts' (did you mean status?)")) << r.err;
  r = iarelay({"agent", "puase", "x"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "unknown agent command 'puase' (did you mean pause?)")) << r.err;
}

}  // namespace
}  // namespace iarelay::clitest
