// The DMZ deployment end to end with real processes: xMatters stand-in → edge iarelayd (stores
// for its feed) → inner iarelayd (polls through the "firewall") → agent. Every webhook the edge
// acknowledged reaches the agent, and the inner journal links each one to the edge's id.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <set>
#include <sstream>
#include <thread>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

// The values of `"key":"…"` in each line of a JSON-lines file.
std::set<std::string> field_values(const std::string& path, const std::string& key) {
  std::set<std::string> out;
  std::istringstream lines(read_file(path));
  std::string line;
  std::string needle = "\"" + key + "\":\"";
  while (std::getline(lines, line)) {
    size_t at = line.find(needle);
    if (at == std::string::npos) continue;
    at += needle.size();
    out.insert(line.substr(at, line.find('"', at) - at));
  }
  return out;
}

TEST(Chain, EdgeToInnerToAgentDeliversEveryAcknowledgedWebhook) {
  TempDir dir;
  int edge_port = free_port(), agent_port = free_port();  // the inner relay has no listener
  write_file(dir.file("token"), "dmz-token\n");
  Process sink({bin("iarelay-sink"), "--listen", "127.0.0.1:" + std::to_string(agent_port),
                "--record", dir.file("delivered.jsonl")},
               dir.file("sink.out"), dir.file("sink.log"));
  write_file(dir.file("edge.conf"),
             "journal = " + dir.file("edge.db") + "\nrole = edge\n[listen]\naddress = 127.0.0.1:" +
                 std::to_string(edge_port) + "\ntoken_file = " + dir.file("token") + "\n");
  write_file(dir.file("inner.conf"),
             "journal = " + dir.file("inner.db") + "\n[upstream]\nurl = http://127.0.0.1:" +
                 std::to_string(edge_port) + "\ntoken_file = " + dir.file("token") +
                 "\nname = edge\nconsumer = inner-1\npoll_wait = 2s\n"
                 "[agent.nnmi1]\nid = ws-198/10.2.0.121:8081\ncallback = http://127.0.0.1:" +
                 std::to_string(agent_port) + "/apia_callback\nservices = hpnnmi\n");
  Process edge({bin("iarelayd"), "--config", dir.file("edge.conf")}, "", dir.file("edge.log"));
  Process inner({bin("iarelayd"), "--config", dir.file("inner.conf")}, "", dir.file("inner.log"));
  ASSERT_TRUE(wait_for_port(edge_port)) << read_file(dir.file("edge.log"));
  ASSERT_TRUE(wait_for_port(agent_port));

  constexpr int kCount = 1000;
  CommandResult sent =
      run({bin("iarelay-loadgen"), "--url", "http://127.0.0.1:" + std::to_string(edge_port),
           "--service", "applications|hpnnmi", "--agent", "ws-198/10.2.0.121:8081", "--count",
           std::to_string(kCount), "--concurrency", "16", "--token-file", dir.file("token"),
           "--record", dir.file("accepted.jsonl")});
  ASSERT_EQ(sent.exit_code, 0) << sent.err << sent.out;
  std::set<std::string> accepted = field_values(dir.file("accepted.jsonl"), "id");
  ASSERT_EQ(accepted.size(), static_cast<size_t>(kCount));

  auto delivered_in_inner = [&] {
    try {
      SQLite::Database db(dir.file("inner.db"));
      return db.execAndGet("SELECT count(*) FROM webhooks WHERE state='delivered'").getInt();
    } catch (const std::exception&) {
      return -1;  // not created yet
    }
  };
  for (int i = 0; i < 600 && delivered_in_inner() < kCount; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(delivered_in_inner(), kCount) << read_file(dir.file("inner.log"));

  // The inner journal holds each edge webhook once, by its edge id, delivered to the agent.
  SQLite::Database db(dir.file("inner.db"));
  std::set<std::string> sources, inner_ids;
  SQLite::Statement q(db,
                      "SELECT source_id, id FROM webhooks WHERE source='edge' AND "
                      "state='delivered' AND assigned_agent='ws-198/10.2.0.121:8081'");
  while (q.executeStep()) {
    sources.insert(q.getColumn(0).getString());
    inner_ids.insert(q.getColumn(1).getString());
  }
  EXPECT_EQ(sources, accepted);
  // The agent received every one of them (by the inner relay's webhook-id).
  std::set<std::string> at_agent = field_values(dir.file("delivered.jsonl"), "webhook_id");
  for (const auto& id : inner_ids) EXPECT_TRUE(at_agent.count(id)) << id;
  // The edge knows how far the inner relay has acked.
  edge.signal(SIGTERM);
  inner.signal(SIGTERM);
  EXPECT_EQ(inner.wait(), 0);
  EXPECT_EQ(edge.wait(), 0);
  SQLite::Database edge_db(dir.file("edge.db"));
  EXPECT_EQ(edge_db.execAndGet("SELECT acked_seq FROM consumers WHERE name='inner-1'").getInt64(),
            edge_db.execAndGet("SELECT max(seq) FROM webhooks").getInt64());
}

}  // namespace
}  // namespace iarelay::testing
