// The documented configuration (examples/iarelay.conf, docs/operations.md) and the systemd
// unit agree with the code.
#include <gtest/gtest.h>

#include <cstdlib>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

std::string between(const std::string& text, const std::string& begin, const std::string& end) {
  size_t b = text.find(begin);
  size_t e = text.find(end);
  if (b == std::string::npos || e == std::string::npos || e < b) return "<markers missing>";
  b += begin.size();
  if (b < text.size() && text[b] == '\n') ++b;
  return text.substr(b, e - b);
}

TEST(ConfigDocs, ExampleFileMatchesTheKeyTable) {
  CommandResult r = run({bin("iarelayd"), "--print-config-example"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, read_file(std::string(IARELAY_SOURCE_DIR) + "/examples/iarelay.conf"))
      << "regenerate with: build/bin/iarelayd --print-config-example > examples/iarelay.conf";
}

TEST(ConfigDocs, OperationsReferenceMatchesTheKeyTable) {
  CommandResult r = run({bin("iarelayd"), "--print-config-reference"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string doc = read_file(std::string(IARELAY_SOURCE_DIR) + "/docs/operations.md");
  EXPECT_EQ(r.out, between(doc, "<!-- config-reference:begin -->", "<!-- config-reference:end -->"))
      << "regenerate the block in docs/operations.md with iarelayd --print-config-reference";
}

TEST(ConfigDocs, HelpListsEveryKeyOfTheExample) {
  CommandResult help = run({bin("iarelayd"), "--help"});
  ASSERT_EQ(help.exit_code, 0);
  std::string example = read_file(std::string(IARELAY_SOURCE_DIR) + "/examples/iarelay.conf");
  int keys = 0;
  size_t pos = 0;
  while (pos < example.size()) {
    size_t nl = example.find('\n', pos);
    std::string line = example.substr(pos, nl - pos);
    pos = nl == std::string::npos ? example.size() : nl + 1;
    if (line.empty() || line[0] == '#' || line[0] == '[') continue;
    std::string key = line.substr(0, line.find(' '));
    ++keys;
    EXPECT_NE(help.out.find("    " + key + " "), std::string::npos) << key;
  }
  EXPECT_GE(keys, 30);
}

TEST(ConfigDocs, ExampleFileIsAValidConfiguration) {
  // --check also checks that the journal can be created: in a directory of ours.
  TempDir dir;
  CommandResult r =
      run({bin("iarelayd"), "--config", std::string(IARELAY_SOURCE_DIR) + "/examples/iarelay.conf",
           "--journal=" + dir.file("new/journal.db"), "--check"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(SystemdUnit, SystemdAnalyzeVerifyAcceptsIt) {
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "systemd-analyze not installed (tools/setup.sh installs it)";
  std::string unit = std::string(IARELAY_SOURCE_DIR) + "/packaging/iarelayd.service";
  // verify wants the ExecStart binary to exist; point it at the built one in a copy.
  std::string text = read_file(unit);
  size_t at = text.find("/usr/bin/iarelayd");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, std::string("/usr/bin/iarelayd").size(), bin("iarelayd"));
  char dir[] = "/tmp/iarelay-unit-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string copy = std::string(dir) + "/iarelayd.service";
  write_file(copy, text);
  CommandResult r = run({"/usr/bin/systemd-analyze", "verify", copy});
  // User=iarelay may not exist on a build machine; that warning is about this host, not the unit.
  std::string complaints;
  std::string all = r.out + r.err;
  size_t pos = 0;
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    std::string line = all.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? all.size() : nl + 1;
    if (line.find("iarelayd.service") != std::string::npos &&
        line.find("User=") == std::string::npos && line.find("user") == std::string::npos)
      complaints += line + "\n";
  }
  EXPECT_EQ(complaints, "") << all;
  std::system((std::string("rm -rf ") + dir).c_str());
}

}  // namespace
}  // namespace iarelay::testing
