// The status document from one read snapshot of the journal. Every query is an index range
// (per agent and state on webhooks_queue, per state on webhooks_state, recent attempts found by
// bisecting their ids), so the cost grows with the queues, not with the delivered history.
#include "journal/status_report.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <vector>

#include "common/config.h"
#include "common/time.h"
#include "journal/journal.h"
#include "journal/store.h"

namespace iarelay {
namespace {

using Json = nlohmann::ordered_json;

constexpr Millis kHourMs = 3'600'000;

Json text_or_null(const SQLite::Column& c) {
  if (c.isNull()) return nullptr;
  return c.getString();
}

struct QueueFigures {
  std::int64_t queued = 0, inflight = 0;
  Json oldest_at = nullptr;
  Json oldest_age_ms = nullptr;
};

// Queued and inflight counts of one agent (nullopt: the held queue) from the covering index
// webhooks_queue (assigned_agent, state, seq), and its oldest queued webhook.
QueueFigures queue_figures(SQLite::Database& db, const std::optional<std::string>& agent,
                           Millis now) {
  QueueFigures f;
  const char* match = agent ? "assigned_agent=?" : "assigned_agent IS NULL";
  for (const char* state : {"queued", "inflight"}) {
    SQLite::Statement q(
        db, std::string("SELECT count(*) FROM webhooks WHERE ") + match + " AND state=?");
    int i = 1;
    if (agent) q.bind(i++, *agent);
    q.bind(i, state);
    q.executeStep();
    (std::string(state) == "queued" ? f.queued : f.inflight) = q.getColumn(0).getInt64();
  }
  if (f.queued > 0) {
    // Arrival order is seq order, so the first queued row by seq is the oldest.
    SQLite::Statement q(db, std::string("SELECT received_at FROM webhooks WHERE ") + match +
                                " AND state='queued' ORDER BY seq LIMIT 1");
    if (agent) q.bind(1, *agent);
    if (q.executeStep()) {
      std::string at = q.getColumn(0).getString();
      f.oldest_at = at;
      if (auto t = parse_time(at, now)) f.oldest_age_ms = std::max<Millis>(0, now - *t);
    }
  }
  return f;
}

// Every distinct assigned_agent, by skipping through the webhooks_queue index (one seek per
// agent instead of a scan of the table).
std::vector<std::string> assigned_agents(SQLite::Database& db) {
  std::vector<std::string> out;
  SQLite::Statement first(db, "SELECT min(assigned_agent) FROM webhooks");
  if (!first.executeStep() || first.getColumn(0).isNull()) return out;
  out.push_back(first.getColumn(0).getString());
  SQLite::Statement next(db, "SELECT min(assigned_agent) FROM webhooks WHERE assigned_agent>?");
  for (;;) {
    next.reset();
    next.bind(1, out.back());
    if (!next.executeStep() || next.getColumn(0).isNull()) break;
    out.push_back(next.getColumn(0).getString());
  }
  return out;
}

struct RecentOutcomes {
  std::int64_t delivered = 0, failed = 0, retried = 0;
};

// Attempts started since `cutoff`, by agent. Attempt ids grow with time (rows are inserted as
// attempts finish), so the first recent id is found by bisection rather than by a scan.
std::map<std::string, RecentOutcomes> recent_attempts(SQLite::Database& db, Millis cutoff) {
  std::map<std::string, RecentOutcomes> out;
  SQLite::Statement bounds(db, "SELECT min(id), max(id) FROM attempts");
  if (!bounds.executeStep() || bounds.getColumn(0).isNull()) return out;
  std::int64_t lo = bounds.getColumn(0).getInt64();
  std::int64_t hi = bounds.getColumn(1).getInt64() + 1;
  const std::string cutoff_text = format_time(cutoff);
  SQLite::Statement probe(db, "SELECT started_at FROM attempts WHERE id>=? ORDER BY id LIMIT 1");
  while (lo < hi) {
    std::int64_t mid = lo + (hi - lo) / 2;
    probe.reset();
    probe.bind(1, mid);
    if (!probe.executeStep() || probe.getColumn(0).getString() >= cutoff_text)
      hi = mid;
    else
      lo = mid + 1;
  }
  // Attempts are inserted when they finish, so start times are only nearly ordered by id (a
  // slow attempt lands after quicker later ones): look a margin of ids further back.
  constexpr std::int64_t kDisorderMargin = 1000;
  SQLite::Statement q(db,
                      "SELECT agent, outcome, count(*) FROM attempts WHERE id>=? AND "
                      "started_at>=? GROUP BY agent, outcome");
  q.bind(1, lo - kDisorderMargin);
  q.bind(2, cutoff_text);
  while (q.executeStep()) {
    RecentOutcomes& r = out[q.getColumn(0).getString()];
    std::string outcome = q.getColumn(1).getString();
    std::int64_t n = q.getColumn(2).getInt64();
    if (outcome == "delivered")
      r.delivered += n;
    else if (outcome == "failed")
      r.failed += n;
    else
      r.retried += n;
  }
  return out;
}

// The last cursor rewind of upstream `name` recorded by its poller, or null.
Json last_rewind(SQLite::Database& reader, const std::string& name) {
  SQLite::Statement q(reader,
                      "SELECT at, detail FROM audit WHERE action=? AND filter=? "
                      "ORDER BY id DESC LIMIT 1");
  q.bind(1, std::string(kCursorRewindAction));
  q.bind(2, name);
  if (!q.executeStep()) return nullptr;
  Json detail = Json::parse(q.getColumn(1).getString(), nullptr, /*allow_exceptions=*/false);
  Json out = {{"at", text_or_null(q.getColumn(0))}, {"from", nullptr}, {"to", nullptr}};
  if (detail.is_object()) {
    if (detail.contains("from")) out["from"] = detail["from"];
    if (detail.contains("to")) out["to"] = detail["to"];
  }
  return out;
}

}  // namespace

const char* const kOperatorBacklogSql =
    "SELECT state, count(*) FROM webhooks WHERE state IN ('failed','discarded','held') GROUP BY "
    "state";

OperatorBacklog operator_backlog(SQLite::Database& reader) {
  OperatorBacklog b;
  SQLite::Statement q(reader, kOperatorBacklogSql);
  while (q.executeStep()) {
    const std::string state = q.getColumn(0).getString();
    (state == "failed" ? b.failed
     : state == "held" ? b.held
                       : b.discarded) = q.getColumn(1).getInt64();
  }
  return b;
}

std::string status_json(SQLite::Database& reader, const Config* config,
                        const std::string& journal_path) {
  // One snapshot for the whole document (unless the caller already holds a transaction).
  std::optional<SQLite::Transaction> snapshot;
  if (sqlite3_get_autocommit(reader.getHandle())) snapshot.emplace(reader);

  const Millis now = now_millis();
  Json doc;
  doc["generated_at"] = format_time(now);
  doc["journal"] = journal_path;
  auto pid = daemon_holding(journal_path);
  doc["daemon"] = {{"running", pid.has_value()}, {"pid", pid ? Json(*pid) : Json(nullptr)}};
  doc["role"] = !config                       ? Json(nullptr)
                : config->role == Role::kEdge ? Json("edge")
                                              : Json("deliver");

  Json totals;
  for (const char* s : {"stored", "queued", "inflight", "delivered", "failed", "discarded", "held"})
    totals[s] = 0;
  {
    SQLite::Statement q(reader, "SELECT state, count(*) FROM webhooks GROUP BY state");
    while (q.executeStep()) totals[q.getColumn(0).getString()] = q.getColumn(1).getInt64();
  }
  doc["totals"] = totals;

  QueueFigures held = queue_figures(reader, std::nullopt, now);
  doc["held"] = {{"queued", held.queued},
                 {"oldest_queued_at", held.oldest_at},
                 {"oldest_queued_age_ms", held.oldest_age_ms}};
  doc["unassigned"] = doc["held"];  // the same: "held" is the older name, kept for scripts
  {
    // Held by an operator (iarelay hold): one range of the state index.
    SQLite::Statement q(reader,
                        "SELECT count(*), min(received_at) FROM webhooks WHERE state='held'");
    q.executeStep();
    Json oldest_at = nullptr, oldest_age_ms = nullptr;
    if (!q.getColumn(1).isNull()) {
      std::string at = q.getColumn(1).getString();
      oldest_at = at;
      if (auto t = parse_time(at, now)) oldest_age_ms = std::max<Millis>(0, now - *t);
    }
    doc["held_by_operator"] = {{"webhooks", q.getColumn(0).getInt64()},
                               {"oldest_received_at", oldest_at},
                               {"oldest_received_age_ms", oldest_age_ms}};
  }

  // Which agents to list, in order: configured, then the agents table, then assignees.
  std::vector<std::string> ids;
  std::set<std::string> listed;
  std::map<std::string, const AgentConfig*> configured;
  if (config)
    for (const auto& a : config->agents) {
      configured[a.id] = &a;
      if (listed.insert(a.id).second) ids.push_back(a.id);
    }
  std::map<std::string, AgentRow> rows;
  for (auto& r : load_agents(reader)) {
    if (listed.insert(r.id).second) ids.push_back(r.id);
    rows[r.id] = std::move(r);
  }
  auto recent = recent_attempts(reader, now - kHourMs);
  std::map<std::string, QueueFigures> figures;
  for (const auto& id : assigned_agents(reader)) {
    QueueFigures f = queue_figures(reader, id, now);
    bool active = f.queued > 0 || f.inflight > 0 || recent.count(id);
    if (active && listed.insert(id).second) ids.push_back(id);
    figures[id] = std::move(f);
  }
  for (const auto& [id, r] : recent)
    if (listed.insert(id).second) ids.push_back(id);

  Json agents = Json::array();
  for (const auto& id : ids) {
    Json a;
    a["id"] = id;
    auto c = configured.find(id);
    a["handle"] = c != configured.end() ? Json(c->second->handle) : Json(nullptr);
    a["configured"] = c != configured.end();
    auto r = rows.find(id);
    if (r != rows.end()) {
      a["state"] = r->second.state;
      a["state_since"] = r->second.state_since;
      a["reason"] = r->second.reason ? Json(*r->second.reason) : Json(nullptr);
      a["paused_until"] =
          r->second.paused_until ? Json(format_time(*r->second.paused_until)) : Json(nullptr);
    } else {
      a["state"] = c != configured.end() ? Json("up") : Json(nullptr);
      a["state_since"] = nullptr;
      a["reason"] = nullptr;
      a["paused_until"] = nullptr;
    }
    auto f = figures.find(id);
    QueueFigures q = f != figures.end() ? f->second : QueueFigures{};
    a["queued"] = q.queued;
    a["inflight"] = q.inflight;
    a["oldest_queued_at"] = q.oldest_at;
    a["oldest_queued_age_ms"] = q.oldest_age_ms;
    auto rc = recent.find(id);
    RecentOutcomes o = rc != recent.end() ? rc->second : RecentOutcomes{};
    a["delivered_last_hour"] = o.delivered;
    a["failed_last_hour"] = o.failed;
    a["retried_last_hour"] = o.retried;
    agents.push_back(std::move(a));
  }
  doc["agents"] = std::move(agents);

  // Webhooks waiting for agents the configuration does not have: addressed to a retired agent
  // or to an identifier nobody configured (they wait for it; `iarelay move` moves them).
  if (config) {
    std::int64_t waiting = 0;
    Json which = Json::array();
    for (const auto& [id, f] : figures)
      if (f.queued > 0 && !configured.count(id)) {
        waiting += f.queued;
        which.push_back(id);
      }
    doc["unconfigured"] = {{"queued", waiting}, {"agents", std::move(which)}};
  } else {
    doc["unconfigured"] = nullptr;
  }

  Json upstream = Json::array();
  bool configured_cursor_seen = false;
  {
    SQLite::Statement q(reader, "SELECT name, seq, updated_at FROM cursors ORDER BY name");
    while (q.executeStep()) {
      std::string name = q.getColumn(0).getString();
      bool is_configured = config && config->upstream && config->upstream->name == name;
      configured_cursor_seen |= is_configured;
      upstream.push_back({{"name", name},
                          {"seq", q.getColumn(1).getInt64()},
                          {"updated_at", text_or_null(q.getColumn(2))},
                          {"configured", is_configured},
                          {"rewound", last_rewind(reader, name)}});
    }
  }
  if (config && config->upstream && !configured_cursor_seen)
    upstream.push_back({{"name", config->upstream->name},
                        {"seq", 0},
                        {"updated_at", nullptr},
                        {"configured", true},
                        {"rewound", nullptr}});
  doc["upstream"] = std::move(upstream);

  std::int64_t max_seq = 0;
  Json consumers = Json::array();
  {
    SQLite::Statement q(reader, "SELECT name, acked_seq, acked_at FROM consumers ORDER BY name");
    std::vector<std::tuple<std::string, std::int64_t, Json>> list;
    while (q.executeStep())
      list.emplace_back(q.getColumn(0).getString(), q.getColumn(1).getInt64(),
                        text_or_null(q.getColumn(2)));
    // The newest stored seq, via the (state, received_at) index range of stored rows.
    SQLite::Statement m(reader, "SELECT max(seq) FROM webhooks WHERE state='stored'");
    if (m.executeStep() && !m.getColumn(0).isNull()) max_seq = m.getColumn(0).getInt64();
    for (auto& [name, acked, at] : list)
      consumers.push_back({{"name", name},
                           {"acked_seq", acked},
                           {"acked_at", at},
                           {"lag", std::max<std::int64_t>(0, max_seq - acked)}});
  }
  doc["feed"] = {{"max_seq", max_seq}, {"consumers", std::move(consumers)}};
  // Any column may hold bytes that are not UTF-8: replaced, where dump() would throw.
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace iarelay
