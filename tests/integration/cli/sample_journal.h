// A sample journal for the CLI tests: a few webhooks in every state, attempts, agents, a cursor
// and a feed consumer, written with the journal library; and helpers to run `iarelay` on it,
// read it back, and parse CSV.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/time.h"
#include "journal/store.h"
#include "journal/writer.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::clitest {

using Json = nlohmann::json;

inline constexpr const char* kAgentA = "ws-198/10.2.0.121:8081";  // handle nnmi1 in config()
inline constexpr const char* kAgentB = "agent-b";

// The sample rows (id: state, service, assigned agent, type, event, received):
//   q1  queued     hpnnmi  A     status          E1  -3h   (requested agent A)
//   q2  queued     remedy  NULL  response        E2  -2h   (held for any agent)
//   i1  inflight   hpnnmi  B     status          E3  -90m
//   d1  delivered  hpnnmi  A     status          E1  -50h  1 attempt (delivered, -50h)
//   d2  delivered  remedy  B     annotation      E4  -30m  1 attempt (delivered, -30m)
//   f1  failed     hpnnmi  A     deliveryStatus  E2  -5h   attempts 25, 2 attempt rows
//   f2  failed     remedy  B     status          E5  -1h   last_error with a comma and quote
//   x1  discarded  hpnnmi  NULL  status          E6  -20m  reason "no agent available"
//   s1  stored     hpnnmi  NULL  status          E7  -10m
inline const std::vector<std::string> kAllIds = {"q1", "q2", "i1", "d1", "d2",
                                                 "f1", "f2", "x1", "s1"};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    journal_ = dir_.file("journal.db");
    now_ = now_millis();
    auto w = Writer::open(journal_, SyncLevel::kNormal);
    ASSERT_TRUE(w.is_ok()) << w.status().message();
    writer_ = std::move(*w);
    add("q1", WebhookState::kQueued, "hpnnmi", kAgentA, "status", "E1", -3 * kHour, kAgentA);
    add("q2", WebhookState::kQueued, "remedy", std::nullopt, "response", "E2", -2 * kHour);
    add("i1", WebhookState::kInflight, "hpnnmi", kAgentB, "status", "E3", -90 * kMinute);
    add("d1", WebhookState::kDelivered, "hpnnmi", kAgentA, "status", "E1", -50 * kHour);
    add("d2", WebhookState::kDelivered, "remedy", kAgentB, "annotation", "E4", -30 * kMinute);
    add("f1", WebhookState::kFailed, "hpnnmi", kAgentA, "deliveryStatus", "E2", -5 * kHour);
    add("f2", WebhookState::kFailed, "remedy", kAgentB, "status", "E5", -1 * kHour);
    add("x1", WebhookState::kDiscarded, "hpnnmi", std::nullopt, "status", "E6", -20 * kMinute,
        std::nullopt, "no agent available");
    add("s1", WebhookState::kStored, "hpnnmi", std::nullopt, "status", "E7", -10 * kMinute);
    op([&](SQLite::Database& db) {
      // In the order they happened, as the dispatcher records them.
      record_attempt(db, {"d1", 1, kAgentA, now_ - 50 * kHour, 12, 200, std::nullopt, "delivered"});
      record_attempt(db, {"f1", 24, kAgentA, now_ - 5 * kHour, 30, 503, "busy", "retry"});
      record_attempt(db, {"f1", 25, kAgentA, now_ - 5 * kHour + 1000, 31, 503, "busy", "failed"});
      record_attempt(db, {"f2", 1, kAgentB, now_ - 59 * kMinute, 7, 400, "bad", "failed"});
      record_attempt(db,
                     {"d2", 1, kAgentB, now_ - 30 * kMinute, 9, 204, std::nullopt, "delivered"});
      TransitionFields f;
      f.attempts = 25;
      f.last_status = std::optional<int>(503);
      f.last_error = std::optional<std::string>("busy");
      ASSERT_TRUE(transition(db, "f1", WebhookState::kFailed, WebhookState::kFailed, f));
      TransitionFields g;
      g.attempts = 1;
      g.last_status = std::optional<int>(400);
      g.last_error = std::optional<std::string>("bad \"field\", rejected");
      ASSERT_TRUE(transition(db, "f2", WebhookState::kFailed, WebhookState::kFailed, g));
      set_agent_state(db, kAgentB, "down", std::string("5 failures"), std::nullopt, false);
      save_cursor(db, "edge", 42);
      ack_consumer(db, "inner-1", 3);
    });
  }

  void TearDown() override { writer_.reset(); }

  static constexpr Millis kMinute = 60'000;
  static constexpr Millis kHour = 3'600'000;

  void op(const Writer::Op& fn) {
    ASSERT_TRUE(writer_) << "journal already closed";
    Status s = writer_->run(fn);
    ASSERT_TRUE(s.is_ok()) << s.message();
  }

  void add(const std::string& id, WebhookState state, const std::string& service,
           std::optional<std::string> assigned, const std::string& type, const std::string& event,
           Millis age, std::optional<std::string> agent = std::nullopt,
           std::optional<std::string> reason = std::nullopt) {
    NewWebhook w;
    w.id = id;
    w.received_at = now_ + age;
    w.service = service;
    w.agent = agent;
    w.type = type;
    w.event_id = event;
    w.state = state;
    w.assigned_agent = assigned;
    w.reason = reason;
    w.payload = R"({"eventIdentifier":")" + event + R"(","status":"ACTIVE","id":")" + id + "\"}";
    op([w](SQLite::Database& db) { insert_webhook(db, w); });
  }

  // Closes the writer (checkpointing the WAL into the file) so that the file's bytes are the
  // whole journal and stay put unless something writes.
  void close_journal() { writer_.reset(); }

  testing::CommandResult iarelay(std::vector<std::string> args,
                                 const std::map<std::string, std::string>& env = {}) {
    close_journal();
    std::vector<std::string> argv = {testing::bin("iarelay"), "--journal", journal_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run(argv, "", env);
  }
  testing::CommandResult iarelay_raw(std::vector<std::string> args) {
    close_journal();
    args.insert(args.begin(), testing::bin("iarelay"));
    return testing::run(args);
  }

  Json json_of(const testing::CommandResult& r) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out);
  }

  std::vector<std::string> listed_ids(std::vector<std::string> args) {
    args.insert(args.begin(), "list");
    args.push_back("--format=json");
    auto r = iarelay(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> ids;
    for (const auto& row : Json::parse(r.out)) ids.push_back(row["id"]);
    return ids;
  }

  // A column of one webhook as text ("NULL" for null).
  std::string field(const std::string& id, const std::string& column) {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT " + column + " FROM webhooks WHERE id=?");
    q.bind(1, id);
    if (!q.executeStep()) return "<missing>";
    return q.getColumn(0).isNull() ? "NULL" : q.getColumn(0).getString();
  }
  std::int64_t count(const std::string& sql) {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    return db.execAndGet(sql).getInt64();
  }

  std::string config_file(const std::string& extra = "") {
    std::string path = dir_.file("iarelay.conf");
    testing::write_file(path, "journal = " + journal_ + "\n\n[agent.nnmi1]\nid = " + kAgentA +
                                  "\ncallback = http://127.0.0.1:9/apia_callback\n"
                                  "services = hpnnmi\n\n[agent.idle]\n"
                                  "callback = http://127.0.0.1:9/apia_callback\n"
                                  "services = remedy\n" +
                                  extra);
    return path;
  }

  testing::TempDir dir_;
  std::string journal_;
  Millis now_ = 0;
  std::unique_ptr<Writer> writer_;
};

// RFC 4180 CSV (quoted fields, doubled quotes, CRLF) into rows of fields.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
      any = true;
    } else if (c == '\r') {
    } else if (c == '\n') {
      row.push_back(field);
      rows.push_back(row);
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

inline int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace iarelay::clitest
