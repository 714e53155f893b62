// The documented configuration (examples/iarelay.conf, docs/operations.md) and the systemd
// unit agree with the code; the documents cite only the repository's own documents.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>

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
    // "#key = value" is a key the example leaves out (commented); "# text" is help.
    if (line.size() > 1 && line[0] == '#' && line[1] != ' ' && line[1] != '[') line.erase(0, 1);
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

// The project's documents and --help texts cite the repository's own documents (e.g.
// docs/architecture.md, "Routing"); the specification it was built from is not in the
// repository, so "SPEC §3" would send a reader nowhere.
TEST(Docs, NothingCitesASpecificationOutsideTheRepository) {
  namespace fs = std::filesystem;
  const std::string source = IARELAY_SOURCE_DIR;
  const std::regex spec(R"(\bSPEC\b)");
  std::vector<std::pair<std::string, std::string>> texts;  // (where, text)
  std::vector<std::string> files = {source + "/README.md",
                                    source + "/tests/fixtures/xmatters/README.md"};
  for (const char* dir : {"/docs", "/examples", "/packaging"})
    for (const auto& entry : fs::recursive_directory_iterator(source + dir))
      if (entry.is_regular_file()) files.push_back(entry.path().string());
  for (const auto& f : files) texts.emplace_back(f, read_file(f));
  EXPECT_GE(texts.size(), 10u);
  std::vector<std::vector<std::string>> helps = {{bin("iarelayd"), "--help"},
                                                 {bin("iarelayd"), "--print-config-example"},
                                                 {bin("iarelay"), "--help"},
                                                 {bin("iarelay-sink"), "--help"},
                                                 {bin("iarelay-loadgen"), "--help"}};
  for (const char* command :
       {"status", "list", "show", "resend", "sql", "agent", "purge", "migrate", "check", "move"})
    helps.push_back({bin("iarelay"), "help", command});
  helps.push_back({bin("iarelay"), "agent", "pause", "--help"});
  for (const auto& argv : helps) {
    CommandResult r = run(argv);
    std::string where;
    for (const auto& a : argv) where += a + " ";
    EXPECT_EQ(r.exit_code, 0) << where << r.err;
    EXPECT_GT(r.out.size(), 100u) << where;
    texts.emplace_back(where, r.out + r.err);
  }
  for (const auto& [where, text] : texts) {
    std::smatch m;
    if (std::regex_search(text, m, spec)) {
      size_t at = m.position(0);
      size_t begin = text.rfind('\n', at);
      begin = begin == std::string::npos ? 0 : begin + 1;
      ADD_FAILURE() << where << " cites SPEC (cite the repository's own doc and section): "
                    << text.substr(begin, text.find('\n', at) - begin);
    }
  }
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
