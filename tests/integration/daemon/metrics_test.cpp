// The metrics an operator alerts on, scraped from a running iarelayd: the build, the process
// (the Prometheus client libraries' process_* names) and the failed and discarded webhooks that
// wait for an operator, counted from the journal through an index.
#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <set>

#include "journal/status_report.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

// The value of the series written exactly as `series` (name and labels), or nullopt.
std::optional<double> value_of(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(text.substr(at + series.size() + 2));
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::int64_t count_in(const std::string& journal, const std::string& state) {
  SQLite::Database db(journal);
  SQLite::Statement q(db, "SELECT count(*) FROM webhooks WHERE state=?");
  q.bind(1, state);
  q.executeStep();
  return q.getColumn(0).getInt64();
}

TEST(Metrics, BuildProcessAndOperatorBacklogAreExposed) {
  TempDir dir;
  const int port = free_port(), agent_port = free_port();
  // The agent rejects everything with 400: a permanent error, so each webhook fails at once.
  Process sink({bin("iarelay-sink"), "--listen", "127.0.0.1:" + std::to_string(agent_port),
                "--fail-rate", "1", "--fail-status", "400"},
               dir.file("sink.out"), dir.file("sink.log"));
  ASSERT_TRUE(wait_for_port(agent_port));
  write_file(dir.file("relay.conf"), "journal = " + dir.file("journal.db") +
                                         "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                                         "\n[agent.a1]\ncallback = http://127.0.0.1:" +
                                         std::to_string(agent_port) + "/cb\nservices = svc\n");
  const double started = unix_now();
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  for (int i = 0; i < 3; ++i) {
    auto res = client.Post("/v1/webhooks/svc",
                           R"({"status":"active","eventIdentifier":)" + std::to_string(i) + "}",
                           "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 202) << res->body;
  }
  // A service no agent hosts: discarded.
  for (int i = 0; i < 2; ++i) {
    auto res = client.Post("/v1/webhooks/nobody", R"({"status":"active"})", "application/json");
    ASSERT_TRUE(res);
  }
  const std::string journal = dir.file("journal.db");
  ASSERT_TRUE(
      wait_until([&] { return count_in(journal, "failed") == 3; }, std::chrono::seconds(20)))
      << read_file(dir.file("relay.log"));
  ASSERT_EQ(count_in(journal, "discarded"), 2);

  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const std::string text = res->body;

  // The build.
  const std::string build = "iarelay_build_info{version=\"" + std::string(IARELAY_VERSION) + "\"";
  size_t at = text.find("\n" + build);
  ASSERT_NE(at, std::string::npos) << text;
  std::string line = text.substr(at + 1, text.find('\n', at + 1) - at - 1);
  EXPECT_TRUE(std::regex_match(
      line, std::regex(R"(iarelay_build_info\{version="[^"]+",sqlite="3\.[0-9.]+"\} 1)")))
      << line;
  EXPECT_NE(text.find("# TYPE iarelay_build_info gauge"), std::string::npos);

  // The process, in the names every Prometheus client library uses.
  auto cpu = value_of(text, "process_cpu_seconds_total");
  auto rss = value_of(text, "process_resident_memory_bytes");
  auto vsize = value_of(text, "process_virtual_memory_bytes");
  auto fds = value_of(text, "process_open_fds");
  auto max_fds = value_of(text, "process_max_fds");
  auto start = value_of(text, "process_start_time_seconds");
  ASSERT_TRUE(cpu && rss && vsize && fds && max_fds && start) << text;
  EXPECT_GE(*cpu, 0);
  EXPECT_LT(*cpu, 600);
  EXPECT_GT(*rss, 1 << 20);  // over 1 MiB resident
  EXPECT_GE(*vsize, *rss);
  EXPECT_GT(*fds, 3);  // stdio, the journal, its WAL, the listener...
  EXPECT_LT(*fds, 1000);
  EXPECT_GE(*max_fds, *fds);
  // It started between our spawning it and now (the kernel counts in clock ticks).
  EXPECT_GE(*start, started - 2) << std::fixed << *start << " vs " << started;
  EXPECT_LE(*start, unix_now() + 1);
  for (const char* family : {"process_cpu_seconds_total counter", "process_open_fds gauge",
                             "process_start_time_seconds gauge"})
    EXPECT_NE(text.find(std::string("# TYPE ") + family), std::string::npos) << family;

  // Failed and discarded webhooks waiting for an operator: what the journal holds.
  EXPECT_EQ(value_of(text, R"(iarelay_webhooks_waiting_for_operator{state="failed"})"), 3.0)
      << text;
  EXPECT_EQ(value_of(text, R"(iarelay_webhooks_waiting_for_operator{state="discarded"})"), 2.0)
      << text;

  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(std::chrono::seconds(20)), 0);
}

// A webhook an operator holds waits for an operator too: the gauge counts it under
// state="held" (a hold forgotten for days is what its alert rule catches).
TEST(Metrics, HeldWebhooksAreCountedAsWaitingForOperator) {
  TempDir dir;
  const int port = free_port(), agent_port = free_port();  // nothing listens on agent_port
  write_file(dir.file("relay.conf"), "journal = " + dir.file("journal.db") +
                                         "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                                         "\n[agent.a1]\ncallback = http://127.0.0.1:" +
                                         std::to_string(agent_port) + "/cb\nservices = svc\n");
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":1})",
                         "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 202) << res->body;
  const std::string journal = dir.file("journal.db");
  // Held while the daemon retries it (a hold of an inflight one is refused: try again).
  ASSERT_TRUE(wait_until(
      [&] {
        run({bin("iarelay"), "--config", dir.file("relay.conf"), "hold", "--all"});
        return count_in(journal, "held") == 1;
      },
      std::chrono::seconds(20)));

  auto scrape = client.Get("/metrics");
  ASSERT_TRUE(scrape);
  const std::string text = scrape->body;
  EXPECT_EQ(value_of(text, R"(iarelay_webhooks_waiting_for_operator{state="held"})"), 1.0) << text;
  EXPECT_EQ(value_of(text, R"(iarelay_webhooks_waiting_for_operator{state="failed"})"), 0.0)
      << text;
  // The sample rules watch held webhooks too.
  std::string rules = read_file(std::string(IARELAY_SOURCE_DIR) + "/examples/prometheus-rules.yml");
  EXPECT_NE(rules.find(R"(iarelay_webhooks_waiting_for_operator{state="held"})"),
            std::string::npos);

  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(std::chrono::seconds(20)), 0);
}

// The backlog is counted from the covering index on (state, received_at), never by reading
// the table: a journal of millions of delivered rows costs nothing at each scrape.
TEST(Metrics, OperatorBacklogQueryUsesTheStateIndex) {
  TempDir dir;
  CommandResult r = run({bin("iarelay"), "--journal", dir.file("journal.db"), "migrate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SQLite::Database db(dir.file("journal.db"));
  SQLite::Statement plan(db, std::string("EXPLAIN QUERY PLAN ") + kOperatorBacklogSql);
  std::string details;
  while (plan.executeStep()) details += plan.getColumn(3).getString() + "\n";
  EXPECT_NE(details.find("USING COVERING INDEX webhooks_state"), std::string::npos) << details;
  EXPECT_EQ(details.find("SCAN webhooks\n"), std::string::npos) << details;
}

// Every metric named in the sample alert rules and the dashboard is one the documentation's
// table lists (so a rule cannot watch a series that does not exist), and every row of the
// table naming a process_* metric is exposed.
TEST(Metrics, ExamplesAndTheDocumentedTableAgree) {
  std::string doc = read_file(std::string(IARELAY_SOURCE_DIR) + "/docs/operations.md");
  size_t b = doc.find("<!-- metrics:begin -->"), e = doc.find("<!-- metrics:end -->");
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  std::string table = doc.substr(b, e - b);
  std::set<std::string> documented;
  std::regex row(R"(\| `((iarelay|process)_[a-z_]+)` \|)");
  for (auto it = std::sregex_iterator(table.begin(), table.end(), row);
       it != std::sregex_iterator(); ++it)
    documented.insert((*it)[1]);
  for (const char* name :
       {"iarelay_build_info", "iarelay_webhooks_waiting_for_operator", "process_cpu_seconds_total",
        "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
        "process_max_fds", "process_start_time_seconds"})
    EXPECT_TRUE(documented.count(name)) << name;
  std::regex used(R"(\b((iarelay|process)_[a-z_]+?)(_bucket|_sum|_count)?\b)");
  for (const char* file : {"/examples/prometheus-rules.yml", "/examples/grafana-dashboard.json"}) {
    std::string text = read_file(std::string(IARELAY_SOURCE_DIR) + file);
    int names = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), used);
         it != std::sregex_iterator(); ++it, ++names)
      EXPECT_TRUE(documented.count((*it)[1])) << file << ": " << (*it)[1];
    EXPECT_GE(names, 5) << file;
  }
  std::string rules = read_file(std::string(IARELAY_SOURCE_DIR) + "/examples/prometheus-rules.yml");
  EXPECT_NE(rules.find("iarelay_webhooks_waiting_for_operator"), std::string::npos);
}

}  // namespace
}  // namespace iarelay::testing
