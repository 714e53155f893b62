// examples/iarelay.conf runs as it is and reaches no host but 127.0.0.1: iarelayd starts on it
// (only the journal path and the two ports are given on the command line, so that the test
// owns them) under a preloaded shim that logs every connect() and name lookup, takes a webhook
// and delivers it to the stand-in agent, and nothing in the log names another host.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <sstream>
#include <thread>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

bool loopback(const std::string& line) {
  for (const char* ok : {"connect 127.0.0.1:", "connect [::1]:", "resolve 127.0.0.1", "resolve ::1",
                         "resolve localhost"})
    if (line.rfind(ok, 0) == 0) return true;
  return false;
}

TEST(Examples, ExampleConfigurationStartsAndReachesOnlyLoopback) {
  TempDir dir;
  const int port = free_port(), agent_port = free_port();
  Process sink({bin("iarelay-sink"), "--listen", "127.0.0.1:" + std::to_string(agent_port),
                "--record", dir.file("sink.jsonl")},
               dir.file("sink.out"), dir.file("sink.log"));
  ASSERT_TRUE(wait_for_port(agent_port)) << read_file(dir.file("sink.log"));
  const std::string log = dir.file("connects.log");
  Process relay(
      {bin("iarelayd"), "--config", std::string(IARELAY_SOURCE_DIR) + "/examples/iarelay.conf",
       "--journal=" + dir.file("journal.db"), "--listen.address=127.0.0.1:" + std::to_string(port),
       "--agent.nnmi1.callback=http://127.0.0.1:" + std::to_string(agent_port) + "/apia_callback"},
      "", dir.file("relay.log"),
      {{"LD_PRELOAD", IARELAY_CONNECT_LOG_SHIM}, {"IARELAY_CONNECT_LOG", log}});
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto res =
      client.Post("/v1/webhooks/hpnnmi", read_file(fixture("ib_status.json")), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 202) << res->body;
  EXPECT_TRUE(wait_until(
      [&] { return read_file(dir.file("sink.jsonl")).find("6120448") != std::string::npos; },
      std::chrono::seconds(20)))
      << read_file(dir.file("relay.log"));
  // A poller would have looked its upstream up at start; give anything else a moment too.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_TRUE(relay.running()) << read_file(dir.file("relay.log"));
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(std::chrono::seconds(20)), 0) << read_file(dir.file("relay.log"));

  std::istringstream lines(read_file(log));
  int to_sink = 0;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(loopback(line)) << line;
    if (line == "connect 127.0.0.1:" + std::to_string(agent_port)) ++to_sink;
  }
  // The shim saw the relay's calls (so an empty log would not pass for a quiet relay).
  EXPECT_GE(to_sink, 1) << read_file(log);
  EXPECT_EQ(read_file(dir.file("relay.log")).find("polling"), std::string::npos)
      << read_file(dir.file("relay.log"));
}

}  // namespace
}  // namespace iarelay::testing
