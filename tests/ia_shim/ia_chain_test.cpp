// The whole path of a real deployment with real processes: xMatters stand-in (iarelay-loadgen,
// HTTP Basic, no bearer) → iarelayd on examples/ia-hpnnmi.conf → an Integration Agent stand-in
// (tools/ia-standin.js, Node) that runs the real shim, contrib/integration-agent/iarelay-shim.js,
// behind its service gateway path /http/applications_hpnnmi, with signatures checked. The
// stand-in's apia_callback records each message; its first calls throw (the shim answers 503, the
// relay retries). Every acknowledged webhook reaches apia_callback exactly once, in per-alert
// order.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

std::vector<nlohmann::json> json_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(read_file(path));
  std::string line;
  while (std::getline(lines, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(IaChain, LoadgenWithBasicAuthThroughTheRelayToTheShimDeliversEachOnceInAlertOrder) {
  const std::string node = IARELAY_NODE;
  if (node.empty()) GTEST_SKIP() << "node not found (install Debian nodejs: tools/setup.sh)";
  TempDir dir;
  int relay_port = free_port(), ia_port = free_port();
  write_file(dir.file("token"), "chain-token\n");
  write_file(dir.file("secret"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
  constexpr int kThrowFirst = 5;
  Process ia({node, std::string(IARELAY_SOURCE_DIR) + "/tools/ia-standin.js", "--listen",
              "127.0.0.1:" + std::to_string(ia_port), "--path", "/http/applications_hpnnmi",
              "--secret-file", dir.file("secret"), "--record", dir.file("callbacks.jsonl"),
              "--throw-first", std::to_string(kThrowFirst)},
             dir.file("ia.out"), dir.file("ia.log"));
  // The shipped example, only its journal, port, files and the IA's port replaced; short
  // backoffs so the throwing calls are retried within the test.
  Process relay(
      {bin("iarelayd"), "--config", std::string(IARELAY_SOURCE_DIR) + "/examples/ia-hpnnmi.conf",
       "--journal=" + dir.file("journal.db"),
       "--listen.address=127.0.0.1:" + std::to_string(relay_port),
       "--listen.token_file=" + dir.file("token"),
       "--agent.ia1.callback=http://127.0.0.1:" + std::to_string(ia_port) +
           "/http/{domain}_{service}",
       "--agent.ia1.secret_file=" + dir.file("secret"), "--agent.ia1.backoff_initial=50ms",
       "--agent.ia1.backoff_max=200ms"},
      "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(ia_port)) << read_file(dir.file("ia.log"));
  ASSERT_TRUE(wait_for_port(relay_port)) << read_file(dir.file("relay.log"));

  constexpr int kCount = 400;
  CommandResult sent = run({bin("iarelay-loadgen"),
                            "--url",
                            "http://127.0.0.1:" + std::to_string(relay_port),
                            "--service",
                            "hpnnmi",
                            "--agent",
                            "ws-198/127.0.0.1:8081",
                            "--auth",
                            "basic",
                            "--user",
                            "xmatters",
                            "--token-file",
                            dir.file("token"),
                            "--count",
                            std::to_string(kCount),
                            "--events",
                            "20",
                            "--concurrency",
                            "8",
                            "--record",
                            dir.file("accepted.jsonl")});
  ASSERT_EQ(sent.exit_code, 0) << sent.err << sent.out;
  std::set<std::string> accepted;
  for (const auto& line : json_lines(dir.file("accepted.jsonl"))) accepted.insert(line["id"]);
  ASSERT_EQ(accepted.size(), static_cast<size_t>(kCount));

  auto delivered = [&] {
    SQLite::Database db(dir.file("journal.db"));
    return db.execAndGet("SELECT count(*) FROM webhooks WHERE state='delivered'").getInt();
  };
  ASSERT_TRUE(wait_until([&] { return delivered() == kCount; }, std::chrono::seconds(90)))
      << delivered() << " delivered\n"
      << read_file(dir.file("relay.log")) << read_file(dir.file("ia.log"));

  // apia_callback saw each acknowledged webhook once (the calls that threw recorded nothing).
  std::vector<nlohmann::json> calls = json_lines(dir.file("callbacks.jsonl"));
  std::map<std::string, int> times;
  for (const auto& c : calls) ++times[c["webhook_id"].get<std::string>()];
  EXPECT_EQ(calls.size(), static_cast<size_t>(kCount));
  for (const auto& id : accepted) EXPECT_EQ(times[id], 1) << id;

  // The message is the one an IA builds: lower-case keys, string values, the callback type.
  for (const auto& c : calls) {
    const auto& msg = c["msg"];
    ASSERT_TRUE(msg.is_object());
    EXPECT_TRUE(msg.contains("xmatters_callback_type")) << msg.dump();
    EXPECT_TRUE(msg.contains("eventidentifier")) << msg.dump();
    for (const auto& [key, value] : msg.items()) {
      if (key == "additionalTokens") continue;
      EXPECT_TRUE(value.is_string()) << key << " in " << msg.dump();
    }
  }

  // Per alert, apia_callback ran in the relay's arrival order (seq), retries included.
  std::map<std::string, std::vector<std::string>> journal_order, callback_order;
  {
    SQLite::Database db(dir.file("journal.db"));
    SQLite::Statement q(db, "SELECT event_id, id FROM webhooks ORDER BY seq");
    while (q.executeStep())
      journal_order[q.getColumn(0).getString()].push_back(q.getColumn(1).getString());
    EXPECT_GE(db.execAndGet("SELECT count(*) FROM attempts WHERE http_status = 503").getInt(),
              kThrowFirst);
  }
  for (const auto& c : calls)
    callback_order[c["msg"]["eventidentifier"].get<std::string>()].push_back(c["webhook_id"]);
  EXPECT_EQ(journal_order.size(), 20u);
  EXPECT_EQ(callback_order, journal_order);

  // The token never reached the relay's log.
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(), 0);
  EXPECT_EQ(read_file(dir.file("relay.log")).find("chain-token"), std::string::npos);
}

}  // namespace
}  // namespace iarelay::testing
