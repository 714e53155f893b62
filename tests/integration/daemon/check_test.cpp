// `iarelayd --check` and `iarelay check --config` run the same checks a start makes and list
// every problem, not the first, in the same words; iarelayd's own usage errors are in its words.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using namespace std::chrono_literals;

// The line of the file at `path` that contains `needle`, once there is one ("" on timeout).
std::string wait_for_line(const std::string& path, const std::string& needle) {
  std::string found;
  wait_until(
      [&] {
        std::istringstream lines(read_file(path));
        for (std::string line; std::getline(lines, line);)
          if (line.find(needle) != std::string::npos) {
            found = line;
            return true;
          }
        return false;
      },
      10s);
  return found;
}

// The lines of `text` with `prefix` taken off each (every line must have it).
std::vector<std::string> problems(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    EXPECT_EQ(line.rfind(prefix, 0), 0u) << line;
    out.push_back(line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : line);
  }
  return out;
}

bool any_has(const std::vector<std::string>& lines, const std::string& part) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(part) != std::string::npos; });
}

TEST(Check, ThreeProblemsAreAllListedByBothCommandsInTheSameWords) {
  TempDir dir;
  // 1. an agent's secret file that does not exist; 2. a TLS certificate that is not one;
  // 3. a journal that cannot be created (a regular file stands where its directory would be).
  write_file(dir.file("not-a-dir"), "a file\n");
  write_file(dir.file("cert.pem"), "not a certificate\n");
  write_file(dir.file("key.pem"), "not a key\n");
  const std::string config = dir.file("relay.conf");
  write_file(config, "journal = " + dir.file("not-a-dir/sub/journal.db") +
                         "\n[listen]\naddress = 127.0.0.1:" + std::to_string(free_port()) +
                         "\ntls_cert = " + dir.file("cert.pem") +
                         "\ntls_key = " + dir.file("key.pem") +
                         "\n[agent.a1]\ncallback = http://127.0.0.1:1/cb\nservices = svc\n"
                         "secret_file = " +
                         dir.file("absent.secret") + "\n");

  CommandResult daemon = run({bin("iarelayd"), "--config", config, "--check"});
  EXPECT_EQ(daemon.exit_code, 2) << daemon.err;
  EXPECT_EQ(daemon.out.find("configuration ok"), std::string::npos) << daemon.out;
  auto from_daemon = problems(daemon.err, "iarelayd: ");
  ASSERT_EQ(from_daemon.size(), 3u) << daemon.err;
  EXPECT_TRUE(any_has(from_daemon, "[agent.a1] secret_file: " + dir.file("absent.secret") +
                                       ": cannot read secret file: No such file or directory"))
      << daemon.err;
  EXPECT_TRUE(any_has(from_daemon,
                      "[listen] tls_cert: " + dir.file("cert.pem") + ": not a PEM certificate"))
      << daemon.err;
  EXPECT_TRUE(any_has(from_daemon, "journal " + dir.file("not-a-dir/sub/journal.db") +
                                       ": cannot be created: " + dir.file("not-a-dir") +
                                       " is not a directory"))
      << daemon.err;

  CommandResult tool = run({bin("iarelay"), "--config", config, "check"});
  EXPECT_EQ(tool.exit_code, 1) << tool.err;
  EXPECT_EQ(problems(tool.err, "iarelay check: "), from_daemon) << tool.err;

  // Each fixed: both pass, and agree that the journal is still to be created.
  write_file(dir.file("absent.secret"), "s3cret\n");
  write_file(config, "journal = " + dir.file("var/journal.db") +
                         "\n[agent.a1]\ncallback = http://127.0.0.1:1/cb\nservices = svc\n"
                         "secret_file = " +
                         dir.file("absent.secret") + "\n");
  daemon = run({bin("iarelayd"), "--config", config, "--check"});
  EXPECT_EQ(daemon.exit_code, 0) << daemon.err;
  EXPECT_NE(daemon.out.find("will be created"), std::string::npos) << daemon.out;
  tool = run({bin("iarelay"), "--config", config, "check"});
  EXPECT_EQ(tool.exit_code, 0) << tool.err;
  EXPECT_NE(tool.out.find("iarelayd creates it at start"), std::string::npos) << tool.out;
}

TEST(DaemonUsage, MistakesAreSaidInTheDaemonsWordsWithTheNearestOption) {
  const char* boost_words[] = {"the required argument", "the option", "unrecognised",
                               "cannot be specified more than once"};
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  TempDir dir;
  write_file(dir.file("relay.conf"), "journal = " + dir.file("j.db") + "\n");
  const Case cases[] = {
      {{"--config"}, "--config needs a value"},
      {{"--chek", "--config", dir.file("relay.conf")},
       "unexpected argument '--chek' (did you mean --check?)"},
      {{"--config", dir.file("relay.conf"), "--config", dir.file("relay.conf")},
       "--config is given more than once"},
      {{"--config", dir.file("relay.conf"), "--lisen.address=127.0.0.1:1"},
       "unknown section [lisen] (did you mean listen?)"},
      {{"--config", dir.file("relay.conf"), "--listen.adress=127.0.0.1:1"},
       "[listen] adress: unknown key (did you mean address?)"},
      {{"--config", dir.file("relay.conf"), "foo"},
       "unexpected argument 'foo': iarelayd takes options only"},
      {{"--config", dir.file("absent.conf")},
       "cannot read configuration file: No such file or directory"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {bin("iarelayd")};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = run(argv);
    EXPECT_EQ(r.exit_code, 2) << c.says << ": " << r.err;
    EXPECT_EQ(r.err.rfind("iarelayd: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    for (const char* word : boost_words) EXPECT_EQ(r.err.find(word), std::string::npos) << r.err;
  }
}

// A SIGHUP that changes a key needing a restart says so, naming the key, keeps the value in
// use (the listener stays where it is) and applies the rest; /v1/status shows what is in use.
TEST(Reload, AKeyNeedingARestartIsNamedAndKeepsItsValue) {
  TempDir dir;
  const int port = free_port(), other = free_port();
  auto config = [&](int listen_port, const std::string& journal, const std::string& level) {
    return "journal = " + journal + "\nlog_level = " + level +
           "\n[listen]\naddress = 127.0.0.1:" + std::to_string(listen_port) +
           "\n[agent.a1]\ncallback = http://127.0.0.1:1/cb\nservices = svc\n";
  };
  write_file(dir.file("relay.conf"), config(port, dir.file("journal.db"), "info"));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));

  write_file(dir.file("relay.conf"), config(other, dir.file("other.db"), "debug"));
  relay.signal(SIGHUP);
  ASSERT_NE(wait_for_line(dir.file("relay.log"), "reloaded"), "")
      << read_file(dir.file("relay.log"));
  std::string address = wait_for_line(dir.file("relay.log"), "reload: [listen] address");
  EXPECT_NE(address.find("warning"), std::string::npos) << address;
  EXPECT_NE(address.find("changed from 127.0.0.1:" + std::to_string(port) +
                         " to 127.0.0.1:" + std::to_string(other) +
                         ", which needs a restart; keeping 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << address;
  std::string journal = wait_for_line(dir.file("relay.log"), "reload: journal changed");
  EXPECT_NE(journal.find("from " + dir.file("journal.db") + " to " + dir.file("other.db")),
            std::string::npos)
      << journal;

  httplib::Client client("127.0.0.1", port);  // still listening where it was
  auto r = client.Get("/v1/status");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto doc = nlohmann::json::parse(r->body);
  const auto& in_use = doc["in_use"];
  EXPECT_EQ(in_use["listen_address"], "127.0.0.1:" + std::to_string(port)) << r->body;
  EXPECT_EQ(in_use["listen_port"], port);
  EXPECT_EQ(in_use["journal"], dir.file("journal.db"));
  EXPECT_EQ(in_use["config_file"], dir.file("relay.conf"));
  ASSERT_EQ(in_use["restart_needed"].size(), 2u) << r->body;
  EXPECT_EQ(in_use["restart_needed"][0]["key"], "journal");
  EXPECT_EQ(in_use["restart_needed"][1]["key"], "[listen] address");
  EXPECT_EQ(in_use["restart_needed"][1]["in_file"], "127.0.0.1:" + std::to_string(other));
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

// What an operator sees of ?agent=HANDLE and of an identifier nobody configured: the handle's
// webhook is its agent's (by identifier), the other waits, logged once, and `iarelay status`
// shows it as NOT CONFIGURED.
TEST(Intake, AHandleIsItsAgentAndAnUnknownIdentifierIsLoggedOnceAndShownInStatus) {
  TempDir dir;
  const int port = free_port();
  write_file(dir.file("relay.conf"),
             "journal = " + dir.file("journal.db") +
                 "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                 "\n[agent.nnmi1]\nid = ws-1/127.0.0.1:1\ncallback = http://127.0.0.1:1/cb\n"
                 "services = svc\n");
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  for (const char* agent : {"nnmi1", "nnmi2", "nnmi2", "nnmi2"}) {
    auto r = client.Post("/v1/webhooks/svc?agent=" + std::string(agent), R"({"status":"active"})",
                         "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
  }
  std::string warning = wait_for_line(dir.file("relay.log"), "agent identifier 'nnmi2'");
  EXPECT_NE(warning.find("configured: ws-1/127.0.0.1:1 ([agent.nnmi1])"), std::string::npos)
      << warning;
  const std::string log = read_file(dir.file("relay.log"));
  std::size_t times = 0;
  for (auto at = log.find("agent identifier 'nnmi2'"); at != std::string::npos;
       at = log.find("agent identifier 'nnmi2'", at + 1))
    ++times;
  EXPECT_EQ(times, 1u) << log;

  CommandResult list = run({bin("iarelay"), "--config", dir.file("relay.conf"), "list", "--format",
                            "json", "--agent", "ws-1/127.0.0.1:1"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto rows = nlohmann::json::parse(list.out);
  ASSERT_EQ(rows.size(), 1u) << list.out;
  EXPECT_EQ(rows[0]["agent"], "ws-1/127.0.0.1:1") << list.out;
  CommandResult status = run({bin("iarelay"), "--config", dir.file("relay.conf"), "status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("NOT CONFIGURED 3 queued"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("(nnmi2)"), std::string::npos) << status.out;
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

}  // namespace
}  // namespace iarelay::testing
