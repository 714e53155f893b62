// `iarelay` read commands on a sample journal: help, status, list (every filter and format),
// show, and sql (reads in every format; writes refused with the journal unchanged).
#include <unistd.h>

#include <algorithm>
#include <set>

#include "journal/journal.h"
#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

using Ids = std::vector<std::string>;

TEST_F(CliTest, VersionAndHelp) {
  auto v = iarelay_raw({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out, std::string("iarelay ") + IARELAY_VERSION + "\n");

  auto h = iarelay_raw({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  for (const char* c : {"status", "list", "show", "resend", "sql", "agent", "purge", "migrate",
                        "check", "--journal", "--config"})
    EXPECT_NE(h.out.find(c), std::string::npos) << c;

  auto lh = iarelay_raw({"list", "--help"});
  EXPECT_EQ(lh.exit_code, 0) << lh.err;
  for (const char* o : {"--state", "--agent", "--service", "--type", "--event", "--since",
                        "--until", "--limit", "--format"})
    EXPECT_NE(lh.out.find(o), std::string::npos) << o;
  auto hr = iarelay_raw({"help", "resend"});
  EXPECT_EQ(hr.exit_code, 0);
  EXPECT_NE(hr.out.find("--dry-run"), std::string::npos);
  auto ap = iarelay_raw({"agent", "pause", "--help"});
  EXPECT_EQ(ap.exit_code, 0);
  EXPECT_NE(ap.out.find("--until"), std::string::npos);
}

TEST_F(CliTest, BadUsageExitsTwoWithOneLine) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{},
                                             {"frobnicate"},
                                             {"--bogus", "status"},
                                             {"--journal", journal_, "list", "--frob"},
                                             {"--journal", journal_, "show"},
                                             {"--journal", journal_, "show", "a", "b"},
                                             {"--journal", journal_, "status", "--format", "csv"},
                                             {"--journal", journal_, "agent", "dance"}}) {
    auto r = iarelay_raw(args);
    std::string shown;
    for (const auto& a : args) shown += a + " ";
    EXPECT_EQ(r.exit_code, 2) << shown << r.err;
    if (!args.empty()) {
      EXPECT_EQ(lines(r.err), 1) << shown << r.err;
    }
  }
}

TEST_F(CliTest, StatusJsonDocument) {
  Json doc = json_of(iarelay({"status", "--format", "json"}));
  EXPECT_EQ(doc["journal"], journal_);
  EXPECT_EQ(doc["daemon"]["running"], false);
  EXPECT_TRUE(doc["daemon"]["pid"].is_null());
  EXPECT_EQ(doc["totals"]["queued"], 2);
  EXPECT_EQ(doc["totals"]["inflight"], 1);
  EXPECT_EQ(doc["totals"]["delivered"], 2);
  EXPECT_EQ(doc["totals"]["failed"], 2);
  EXPECT_EQ(doc["totals"]["discarded"], 1);
  EXPECT_EQ(doc["totals"]["stored"], 1);
  EXPECT_EQ(doc["held"]["queued"], 1);
  EXPECT_GE(doc["held"]["oldest_queued_age_ms"].get<std::int64_t>(), 2 * kHour - 5000);

  std::map<std::string, Json> agents;
  for (const auto& a : doc["agents"]) agents[a["id"]] = a;
  ASSERT_EQ(agents.size(), 2u) << doc.dump(2);
  const Json& a = agents[kAgentA];
  EXPECT_EQ(a["queued"], 1);
  EXPECT_EQ(a["inflight"], 0);
  EXPECT_EQ(a["oldest_queued_at"], format_time(now_ - 3 * kHour));
  EXPECT_GE(a["oldest_queued_age_ms"].get<std::int64_t>(), 3 * kHour);
  EXPECT_EQ(a["delivered_last_hour"], 0);  // d1 was delivered 50 h ago
  EXPECT_EQ(a["failed_last_hour"], 0);
  EXPECT_TRUE(a["state"].is_null());  // no config, no agents row
  const Json& b = agents[kAgentB];
  EXPECT_EQ(b["state"], "down");
  EXPECT_EQ(b["reason"], "5 failures");
  EXPECT_EQ(b["queued"], 0);
  EXPECT_EQ(b["inflight"], 1);
  EXPECT_EQ(b["delivered_last_hour"], 1);
  EXPECT_EQ(b["failed_last_hour"], 1);

  ASSERT_EQ(doc["upstream"].size(), 1u);
  EXPECT_EQ(doc["upstream"][0]["name"], "edge");
  EXPECT_EQ(doc["upstream"][0]["seq"], 42);
  EXPECT_EQ(doc["feed"]["max_seq"], 9);  // s1 is the 9th row
  ASSERT_EQ(doc["feed"]["consumers"].size(), 1u);
  EXPECT_EQ(doc["feed"]["consumers"][0]["name"], "inner-1");
  EXPECT_EQ(doc["feed"]["consumers"][0]["lag"], 6);
}

TEST_F(CliTest, StatusWithConfigListsConfiguredAgentsByHandle) {
  std::string config = config_file(
      "\n[upstream]\nurl = http://127.0.0.1:9\nname = edge\n"
      "consumer = inner-1\n");
  auto r = iarelay_raw({"--config", config, "status", "--format", "json"});
  Json doc = json_of(r);
  ASSERT_GE(doc["agents"].size(), 3u);
  // Configured agents first, in configuration order.
  EXPECT_EQ(doc["agents"][0]["id"], kAgentA);
  EXPECT_EQ(doc["agents"][0]["handle"], "nnmi1");
  EXPECT_EQ(doc["agents"][0]["configured"], true);
  EXPECT_EQ(doc["agents"][0]["state"], "up");
  EXPECT_EQ(doc["agents"][1]["id"], "idle");
  EXPECT_EQ(doc["agents"][1]["queued"], 0);
  EXPECT_EQ(doc["agents"][2]["id"], kAgentB);
  EXPECT_EQ(doc["agents"][2]["configured"], false);
  EXPECT_EQ(doc["upstream"][0]["configured"], true);
}

TEST_F(CliTest, StatusTableNamesAgentsAndDaemon) {
  auto r = iarelay({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("not running"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(kAgentA), std::string::npos);
  EXPECT_NE(r.out.find(kAgentB), std::string::npos);
  EXPECT_NE(r.out.find("inner-1"), std::string::npos);
  EXPECT_NE(r.out.find("edge"), std::string::npos);
}

TEST_F(CliTest, StatusSeesDaemonLock) {
  close_journal();
  auto lock = DaemonLock::acquire(journal_);
  ASSERT_TRUE(lock.is_ok()) << lock.status().message();
  Json doc = json_of(iarelay({"status", "--format=json"}));
  EXPECT_EQ(doc["daemon"]["running"], true);
  EXPECT_EQ(doc["daemon"]["pid"], static_cast<long>(::getpid()));
  auto table = iarelay({"status"});
  EXPECT_NE(table.out.find("running (pid " + std::to_string(::getpid()) + ")"), std::string::npos)
      << table.out;
  // migrate refuses while a daemon holds the journal.
  auto m = iarelay({"migrate"});
  EXPECT_EQ(m.exit_code, 1);
  EXPECT_NE(m.err.find("pid " + std::to_string(::getpid())), std::string::npos) << m.err;
}

TEST_F(CliTest, ListNewestFirstWithEveryField) {
  EXPECT_EQ(listed_ids({}), (Ids{"s1", "x1", "f2", "f1", "d2", "d1", "i1", "q2", "q1"}));
  Json rows = json_of(iarelay({"list", "--format", "json", "--state", "failed"}));
  ASSERT_EQ(rows.size(), 2u);
  const Json& f2 = rows[0];
  EXPECT_EQ(f2["id"], "f2");
  EXPECT_EQ(f2["seq"], 7);
  EXPECT_EQ(f2["service"], "remedy");
  EXPECT_EQ(f2["assigned_agent"], kAgentB);
  EXPECT_EQ(f2["state"], "failed");
  EXPECT_EQ(f2["last_status"], 400);
  EXPECT_EQ(f2["last_error"], "bad \"field\", rejected");
  EXPECT_EQ(f2["received_at"], format_time(now_ - kHour));
  EXPECT_TRUE(f2["agent"].is_null());
  EXPECT_EQ(f2["source"], "direct");
}

TEST_F(CliTest, ListFilters) {
  EXPECT_EQ(listed_ids({"--state", "queued"}), (Ids{"q2", "q1"}));
  EXPECT_EQ(listed_ids({"--state", "failed", "--state", "discarded"}), (Ids{"x1", "f2", "f1"}));
  EXPECT_EQ(listed_ids({"--state", "failed,discarded"}), (Ids{"x1", "f2", "f1"}));
  // --agent matches the assigned agent (and the requested one).
  EXPECT_EQ(listed_ids({"--agent", kAgentA}), (Ids{"f1", "d1", "q1"}));
  EXPECT_EQ(listed_ids({"--agent", kAgentB, "--state", "delivered"}), (Ids{"d2"}));
  EXPECT_EQ(listed_ids({"--service", "remedy"}), (Ids{"f2", "d2", "q2"}));
  EXPECT_EQ(listed_ids({"--service", "applications|remedy"}), (Ids{"f2", "d2", "q2"}));
  EXPECT_EQ(listed_ids({"--type", "deliveryStatus"}), (Ids{"f1"}));
  EXPECT_EQ(listed_ids({"--event", "E1"}), (Ids{"d1", "q1"}));
  EXPECT_EQ(listed_ids({"--since", "-95m"}), (Ids{"s1", "x1", "f2", "d2", "i1"}));
  EXPECT_EQ(listed_ids({"--since=-95m", "--until", "-25m"}), (Ids{"f2", "d2", "i1"}));
  EXPECT_EQ(listed_ids({"--until", format_time(now_ - 4 * kHour)}), (Ids{"f1", "d1"}));
  EXPECT_EQ(listed_ids({"--limit", "2"}), (Ids{"s1", "x1"}));
  EXPECT_EQ(listed_ids({"--state", "inflight", "--service", "remedy"}), Ids{});
  // Global options may also follow the command.
  auto after = iarelay_raw({"list", "--state", "queued", "--journal", journal_, "--format=json"});
  EXPECT_EQ(json_of(after).size(), 2u);
  // With --config, a handle names its agent.
  std::string config = config_file();
  auto r = iarelay_raw({"--config", config, "list", "--agent", "nnmi1", "--format", "json"});
  Json rows = json_of(r);
  EXPECT_EQ(rows.size(), 3u);
}

TEST_F(CliTest, ListCsvParses) {
  auto r = iarelay({"list", "--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = parse_csv(r.out);
  ASSERT_EQ(rows.size(), 10u);  // header + 9
  const auto& header = rows[0];
  auto col = [&](const std::string& name) {
    return static_cast<std::size_t>(std::find(header.begin(), header.end(), name) - header.begin());
  };
  for (const char* name : {"seq", "id", "received_at", "service", "agent", "assigned_agent", "type",
                           "event_id", "state", "attempts", "last_error"})
    ASSERT_LT(col(name), header.size()) << name;
  for (const auto& row : rows) ASSERT_EQ(row.size(), header.size());
  EXPECT_EQ(rows[1][col("id")], "s1");
  EXPECT_EQ(rows[3][col("id")], "f2");
  EXPECT_EQ(rows[3][col("last_error")], "bad \"field\", rejected");
  EXPECT_EQ(rows[4][col("attempts")], "25");
  EXPECT_EQ(rows[1][col("assigned_agent")], "");  // NULL is an empty field
}

TEST_F(CliTest, ListTableDefaultsToFifty) {
  for (int i = 0; i < 60; ++i)
    add("bulk" + std::to_string(i), WebhookState::kDelivered, "hpnnmi", kAgentA, "status", "EB",
        -kMinute);
  auto r = iarelay({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out), 51);  // header + 50
  EXPECT_NE(r.out.find("bulk59"), std::string::npos);
  EXPECT_NE(r.err.find("--limit"), std::string::npos);
  EXPECT_EQ(lines(iarelay({"list", "--limit", "0"}).out), 70);
  EXPECT_EQ(Json::parse(iarelay({"list", "--format", "json"}).out).size(), 69u);
}

TEST_F(CliTest, ListRejectsBadInputAsUsage) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"list", "--state", "bogus"}, "'bogus'"},
      {{"list", "--state", "queued,done"}, "'done'"},
      {{"list", "--since", "yesterday"}, "--since: bad time 'yesterday'"},
      {{"list", "--until", "2026-13-01T00:00:00Z"}, "--until"},
      {{"list", "--limit", "many"}, "--limit"},
      {{"list", "--limit", "-3"}, "'-3'"},
      {{"list", "--format", "xml"}, "'xml'"}};
  for (const auto& [args, named] : cases) {
    auto r = iarelay(args);
    EXPECT_EQ(r.exit_code, 2) << args[1] << " " << args[2];
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(named), std::string::npos) << r.err;  // names what is wrong
  }
  auto r = iarelay({"list", "--state", "bogus"});
  EXPECT_NE(r.err.find("queued, inflight, delivered, failed, discarded"), std::string::npos)
      << r.err;
}

TEST_F(CliTest, ShowTableAndJson) {
  auto t = iarelay({"show", "f1"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("deliveryStatus"), std::string::npos);
  EXPECT_NE(t.out.find("\"eventIdentifier\": \"E2\""), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("retry"), std::string::npos);
  EXPECT_NE(t.out.find("503"), std::string::npos);

  Json doc = json_of(iarelay({"show", "f1", "--format", "json"}));
  EXPECT_EQ(doc["id"], "f1");
  EXPECT_EQ(doc["state"], "failed");
  EXPECT_EQ(doc["attempts"], 25);
  EXPECT_EQ(doc["last_error"], "busy");
  EXPECT_EQ(doc["payload"]["eventIdentifier"], "E2");
  ASSERT_EQ(doc["delivery_attempts"].size(), 2u);
  EXPECT_EQ(doc["delivery_attempts"][0]["attempt"], 24);
  EXPECT_EQ(doc["delivery_attempts"][0]["outcome"], "retry");
  EXPECT_EQ(doc["delivery_attempts"][1]["outcome"], "failed");
  EXPECT_EQ(doc["delivery_attempts"][1]["http_status"], 503);
  EXPECT_EQ(doc["delivery_attempts"][1]["agent"], kAgentA);

  Json by_seq = json_of(iarelay({"show", "6", "--format=json"}));
  EXPECT_EQ(by_seq["id"], "f1");

  auto missing = iarelay({"show", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("nope"), std::string::npos);
}

// Found writing the ia_format fuzz target: a payload nested 100,000 deep, stored before intake
// refused bodies deeper than kMaxPayloadDepth (64), overflowed the stack of `iarelay show` in
// nlohmann's recursive dump(). Such a payload is printed as its text (a JSON string in json).
TEST_F(CliTest, ShowPrintsAPayloadNested100000DeepAsItsText) {
  const std::string deep =
      R"({"status":"active","n":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  // 64 levels, what intake still accepts, are shown as JSON as before.
  const std::string allowed =
      R"({"status":"active","n":)" + std::string(63, '[') + std::string(63, ']') + "}";
  op([&](SQLite::Database& db) {
    SQLite::Statement q(db, "UPDATE webhooks SET payload=? WHERE id=?");
    for (const auto& [id, payload] : {std::pair{"f1", &deep}, std::pair{"f2", &allowed}}) {
      q.bind(1, *payload);
      q.bind(2, id);
      q.exec();
      q.reset();
    }
  });
  auto t = iarelay({"show", "f1"});
  ASSERT_EQ(t.exit_code, 0) << t.err.substr(0, 500);
  EXPECT_NE(t.out.find("\npayload:\n" + deep + "\n"), std::string::npos);
  EXPECT_NE(t.out.find("attempts:"), std::string::npos);
  auto j = iarelay({"show", "f1", "--format", "json"});
  ASSERT_EQ(j.exit_code, 0) << j.err.substr(0, 500);
  Json doc = Json::parse(j.out);
  EXPECT_EQ(doc["id"], "f1");
  EXPECT_EQ(doc["payload"], deep);  // the text, as a string
  Json shallow = json_of(iarelay({"show", "f2", "--format", "json"}));
  EXPECT_TRUE(shallow["payload"].is_object());
}

TEST_F(CliTest, SqlReadsInEveryFormat) {
  const std::string q = "SELECT state, count(*) AS n FROM webhooks GROUP BY state ORDER BY state";
  Json rows = json_of(iarelay({"sql", q, "--format", "json"}));
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0]["state"], "delivered");
  EXPECT_EQ(rows[0]["n"], 2);
  auto csv = parse_csv(iarelay({"sql", q, "--format", "csv"}).out);
  ASSERT_EQ(csv.size(), 7u);
  EXPECT_EQ(csv[0], (std::vector<std::string>{"state", "n"}));
  EXPECT_EQ(csv[5], (std::vector<std::string>{"queued", "2"}));
  auto table = iarelay({"sql", q});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("state"), std::string::npos);
  EXPECT_EQ(lines(table.out), 7);
  Json types = json_of(iarelay({"sql",
                                "SELECT 1 AS i, 1.5 AS r, NULL AS z, x'0aff' AS b, "
                                "'t' AS s",
                                "--format=json"}));
  EXPECT_EQ(types[0]["i"], 1);
  EXPECT_EQ(types[0]["r"], 1.5);
  EXPECT_TRUE(types[0]["z"].is_null());
  EXPECT_EQ(types[0]["b"], "x'0aff'");
  EXPECT_EQ(types[0]["s"], "t");
  EXPECT_EQ(iarelay({"sql", "PRAGMA table_info(webhooks)"}).exit_code, 0);
}

TEST_F(CliTest, SqlRefusesWritesAndChangesNothing) {
  close_journal();
  const std::string before = testing::read_file(journal_);
  for (const std::string& q : {
           std::string("INSERT INTO audit (at, actor, action, affected) VALUES ('t','x','y',1)"),
           std::string("DELETE FROM webhooks"),
           std::string("UPDATE webhooks SET state='queued'"),
           std::string("DROP TABLE webhooks"),
           std::string("CREATE TABLE t (x)"),
           std::string("ATTACH '") + dir_.file("other.db") + "' AS other",
           std::string("PRAGMA user_version=7"),
           std::string("PRAGMA journal_mode=DELETE"),
           std::string("PRAGMA query_only=0"),
           std::string("PRAGMA wal_checkpoint(TRUNCATE)"),
           std::string("VACUUM"),
           std::string("SELECT 1; DELETE FROM webhooks"),
       }) {
    auto r = iarelay({"sql", q});
    EXPECT_EQ(r.exit_code, 1) << q << ": " << r.out;
    EXPECT_EQ(lines(r.err), 1) << q << ": " << r.err;
    EXPECT_NE(r.err.find("refused"), std::string::npos) << q << ": " << r.err;
  }
  EXPECT_EQ(testing::read_file(journal_), before);
  EXPECT_EQ(count("SELECT count(*) FROM webhooks"), 9);
  EXPECT_EQ(count("SELECT count(*) FROM audit"), 0);
  EXPECT_EQ(count("PRAGMA user_version"), 0);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("other.db")));
  auto bad = iarelay({"sql", "SELEC 1"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("syntax error"), std::string::npos);
}

}  // namespace
}  // namespace iarelay::clitest
