// `iarelay list` (webhooks by filter, newest first) and `iarelay show` (one webhook in full), on
// a SQLite journal or (journal/pg/pg_admin.h) a PostgreSQL one: the same output from either.
#include <SQLiteCpp/SQLiteCpp.h>

#include <iostream>

#include "args.h"
#include "commands.h"
#include "common/payload.h"
#include "common/time.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_admin.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {

constexpr std::int64_t kDefaultTableLimit = 50;

constexpr CommandHelp kListHelp = {
    "list [--state S]... [--agent A] [--service S] [--type T] [--event E] [--since T] "
    "[--until T] [--limit N] [--format table|csv|json]",
    "Webhooks, newest first. Filters combine (AND); --state may repeat (OR). --agent matches\n"
    "the agent a webhook asked for or the one it is assigned to. The table shows the main\n"
    "fields; csv and json carry every field except the payload (see 'iarelay show')."};

constexpr CommandHelp kShowHelp = {
    "show ID [--format table|json]",
    "One webhook: every field, why it is waiting (queued or held: agent paused or down, backing\n"
    "off, behind an earlier webhook of its alert, held by an operator, waiting for any agent of\n"
    "its service, no agent configured for its identifier, a type its agent's kinds leave out;\n"
    "give --config for the last two, and for \"callback\": the URL its agent is called at), who\n"
    "changed it by hand (resend, retry, hold, release: from the audit table), its payload, and\n"
    "every delivery attempt, in series: the first as received, one more per resend, each\n"
    "marked with who resent it and when. ID is a webhook id, any unique prefix of it, or its\n"
    "seq. In JSON the attempts are the array \"delivery_attempts\" (each with its \"series\"),\n"
    "the reasons \"waiting\", the hand changes \"operator_actions\"."};

Json opt(const std::optional<std::string>& v) {
  return v ? Json(*v) : Json(nullptr);
}
Json opt(const std::optional<int>& v) {
  return v ? Json(*v) : Json(nullptr);
}

const std::vector<std::string> kAllColumns = {
    "seq",         "id",         "received_at", "service",  "agent",           "assigned_agent",
    "type",        "event_id",   "state",       "attempts", "next_attempt_at", "delivered_at",
    "last_status", "last_error", "source",      "source_id"};

std::vector<Json> all_values(const WebhookRow& r) {
  return {r.seq,
          r.id,
          r.received_at,
          r.service,
          opt(r.agent),
          opt(r.assigned_agent),
          r.type,
          opt(r.event_id),
          r.state,
          r.attempts,
          opt(r.next_attempt_at),
          opt(r.delivered_at),
          opt(r.last_status),
          opt(r.last_error),
          r.source,
          opt(r.source_id)};
}

const std::vector<std::string> kTableColumns = {
    "seq",  "id",       "received_at", "state",       "service",   "agent",
    "type", "event_id", "attempts",    "last_status", "last_error"};

std::vector<Json> table_values(const WebhookRow& r) {
  // The agent it is with now; else the one it asked for.
  Json agent = r.assigned_agent ? Json(*r.assigned_agent) : opt(r.agent);
  return {
      r.seq,           r.id,       r.received_at,      r.state,          r.service, agent, r.type,
      opt(r.event_id), r.attempts, opt(r.last_status), opt(r.last_error)};
}

std::optional<WebhookRow> load_webhook(SQLite::Database& db, const std::string& id) {
  std::optional<WebhookRow> out;
  WebhookFilter f;
  f.ids = {id};
  for_each_webhook(db, f, true, [&](const WebhookRow& r) {
    out = r;
    return false;
  });
  return out;
}

// What show prints of webhook `id` (store.h's WebhookDetail), from the SQLite journal.
std::optional<WebhookDetail> sqlite_detail(const Context& ctx, SQLite::Database& db,
                                           const std::string& id) {
  auto row = load_webhook(db, id);
  if (!row) return std::nullopt;
  WebhookDetail d;
  d.row = std::move(*row);
  const WebhookRow& r = d.row;
  // An operator's changes of this webhook (audit_webhooks joined to audit), oldest first.
  SQLite::Statement changes(
      db,
      "SELECT a.at, a.actor, a.action, coalesce(a.filter, '') FROM audit_webhooks l JOIN audit a "
      "ON a.id = l.audit_id WHERE l.webhook_id=? ORDER BY a.id");
  changes.bind(1, id);
  while (changes.executeStep())
    d.operator_actions.push_back(
        {changes.getColumn(0).getString(), changes.getColumn(1).getString(),
         changes.getColumn(2).getString(), changes.getColumn(3).getString()});
  SQLite::Statement attempts(db,
                             "SELECT attempt, agent, started_at, duration_ms, http_status, error, "
                             "outcome FROM attempts WHERE webhook_id=? ORDER BY id");
  attempts.bind(1, id);
  while (attempts.executeStep()) {
    auto number = [&](int i) -> std::optional<std::int64_t> {
      const SQLite::Column c = attempts.getColumn(i);
      if (c.isNull()) return std::nullopt;
      return c.getInt64();
    };
    WebhookAttempt a;
    a.attempt = attempts.getColumn(0).getInt64();
    a.agent = attempts.getColumn(1).getString();
    a.started_at = attempts.getColumn(2).getString();
    a.duration_ms = number(3);
    a.http_status = number(4);
    if (!attempts.getColumn(5).isNull()) a.error = attempts.getColumn(5).getString();
    a.outcome = attempts.getColumn(6).getString();
    d.attempts.push_back(std::move(a));
  }
  if (r.assigned_agent) d.agent = load_agent(db, *r.assigned_agent);
  // Delivered one at a time per alert (ordering = event, the default): an earlier webhook of
  // its alert still to be delivered by the same agent goes first, and so does one of its
  // alert held by an operator on any agent of its service.
  const AgentConfig* configured =
      ctx.config && r.assigned_agent ? ctx.config->find_agent(*r.assigned_agent) : nullptr;
  Ordering ordering = configured ? configured->ordering : Ordering::kEvent;
  if ((r.state == "queued" || r.state == "held") && ordering != Ordering::kNone &&
      (r.event_id || ordering == Ordering::kFifo)) {
    std::string sql =
        "SELECT id, seq, state FROM webhooks WHERE seq<?1 AND ((state IN ('queued','inflight',"
        "'held') AND (assigned_agent IS ?2 OR assigned_agent IS NULL))";
    sql += ordering == Ordering::kFifo ? ") AND ?3 IS ?3 AND ?4 IS ?4"
                                       : " OR (state='held' AND service=?4)) AND event_id=?3";
    sql += " ORDER BY seq DESC LIMIT 1";
    SQLite::Statement q(db, sql);
    q.bind(1, r.seq);
    if (r.assigned_agent)
      q.bind(2, *r.assigned_agent);
    else
      q.bind(2);
    if (r.event_id)
      q.bind(3, *r.event_id);
    else
      q.bind(3);
    q.bind(4, r.service);
    if (q.executeStep())
      d.ahead = EarlierWebhook{q.getColumn(0).getString(), q.getColumn(1).getInt64(),
                               q.getColumn(2).getString()};
  }
  return d;
}

// Why a queued or held webhook is not being sent now, one reason per entry (empty for other
// states). From its agent's row, the configuration when given, and what it waits behind.
std::vector<std::string> waiting_reasons(const Context& ctx, const WebhookDetail& d, Millis now) {
  const WebhookRow& r = d.row;
  std::vector<std::string> out;
  if (r.state != "queued" && r.state != "held") return out;
  if (r.state == "held") {
    const OperatorAction* hold = nullptr;
    for (const auto& c : d.operator_actions)
      if (c.action == "hold") hold = &c;
    out.push_back(std::string("held by an operator") +
                  (hold ? " (" + hold->actor + " at " + hold->at + ")" : "") +
                  ": never sent until 'iarelay release " + r.id + "'");
  }
  const AgentConfig* configured =
      ctx.config && r.assigned_agent ? ctx.config->find_agent(*r.assigned_agent) : nullptr;
  if (!r.assigned_agent) {
    out.push_back("waits for any agent of service '" + r.service +
                  "' to be available (not assigned to an agent: unrouted = hold, or resent "
                  "after being discarded)");
  } else if (ctx.config && !configured) {
    out.push_back("no agent is configured for identifier '" + *r.assigned_agent + "' in " +
                  ctx.config->file + ": it waits for one ('iarelay move --from " +
                  *r.assigned_agent + " --to B' moves it)");
  } else {
    const auto& agent = d.agent;
    if (agent && agent->state == "paused") {
      std::string text = "agent " + *r.assigned_agent + " paused since " + agent->state_since;
      text += agent->paused_until ? " until " + format_time(*agent->paused_until)
                                  : std::string(" (until 'iarelay agent resume')");
      if (agent->reason) text += ": " + *agent->reason;
      out.push_back(text);
    } else if (agent && agent->state == "down") {
      out.push_back("agent " + *r.assigned_agent + " down since " + agent->state_since +
                    (agent->reason ? ": " + *agent->reason : std::string()) +
                    " (probed until it answers)");
    } else if (!agent && !ctx.config) {
      out.push_back("agent " + *r.assigned_agent +
                    " is unknown to the journal (no daemon has run it yet; with --config FILE "
                    "show checks whether it is configured)");
    }
  }
  if (configured && !configured->takes(r.type))
    out.push_back("its type \"" + r.type + "\" is not in [agent." + configured->handle +
                  "] kinds (" + configured->kinds_text() + ") of " + ctx.config->file +
                  ": the daemon discards it instead of sending it");
  if (r.next_attempt_at) {
    auto at = parse_time(*r.next_attempt_at, now);
    if (at && *at > now)
      out.push_back("backing off until " + *r.next_attempt_at + " after attempt " +
                    std::to_string(r.attempts) +
                    (r.last_error ? " (" + *r.last_error + ")" : std::string()) +
                    "; 'iarelay retry " + r.id + "' makes it due now");
  }
  if (d.ahead) {
    Ordering ordering = configured ? configured->ordering : Ordering::kEvent;
    out.push_back("behind webhook " + d.ahead->id + " (seq " + std::to_string(d.ahead->seq) + ", " +
                  d.ahead->state + ") of " +
                  (ordering == Ordering::kFifo ? std::string("its agent (ordering = fifo)")
                                               : "its alert " + r.event_id.value_or("")) +
                  ": delivered in arrival order");
  }
  if (out.empty() && r.state == "queued") out.push_back("due now: the daemon sends it next");
  return out;
}

}  // namespace

int cmd_list(Context& ctx) {
  po::options_description options;
  add_filter_options(options, true);
  add_format_option(options, "table", "table|csv|json");
  po::variables_map vm;
  if (auto code = parse_args(ctx, kListHelp, options, {}, vm)) return *code;
  auto format = format_from(vm, "table|csv|json");
  if (!format) return usage_error(ctx, format.status().message());
  auto filter = filter_from(ctx, vm, now_millis());
  if (!filter) return usage_error(ctx, filter.status().message());
  bool truncated_table = false;
  if (*format == Format::kTable && !vm.count("limit")) {
    // One row more than shown tells whether there is more to see.
    filter->limit = kDefaultTableLimit + 1;
    truncated_table = true;
  }
  auto journal = open_command_journal(ctx);
  if (!journal) return fail(ctx, journal.status().message());
  const bool postgresql = journal->pg != nullptr;
  std::unique_ptr<PgConnection> pg = std::move(journal->pg);
  DatabasePtr db = std::move(journal->sqlite);

  bool table = *format == Format::kTable;
  RowWriter out(std::cout, *format, table ? kTableColumns : kAllColumns);
  bool more = false;
  auto each = [&](const WebhookRow& r) {
    if (truncated_table && out.rows() == static_cast<std::size_t>(kDefaultTableLimit)) {
      more = true;
      return false;
    }
    out.row(table ? table_values(r) : all_values(r));
    return true;
  };
  if (postgresql) {
    Status s = pg_for_each_webhook(*pg, *filter, each);
    if (!s) {
      out.finish();
      return fail(ctx, pg_failure(ctx, s));
    }
  } else {
    for_each_webhook(*db, *filter, false, each);
  }
  out.finish();
  if (table && out.rows() == 0) std::cerr << "no webhooks match\n";
  if (more)
    std::cerr << "(the newest " << kDefaultTableLimit
              << " shown; --limit N or --limit 0 for more)\n";
  return kExitOk;
}

int cmd_show(Context& ctx) {
  po::options_description options;
  options.add_options()("id", po::value<std::string>()->required(), "");
  add_format_option(options, "table", "table|json");
  po::positional_options_description positional;
  positional.add("id", 1);
  po::variables_map vm;
  if (auto code = parse_args(ctx, kShowHelp, options, positional, vm)) return *code;
  auto format = format_from(vm, "table|json");
  if (!format) return usage_error(ctx, format.status().message());
  const std::string ref = vm["id"].as<std::string>();
  std::optional<WebhookDetail> detail;
  std::string id;
  if (is_postgresql_journal(ctx.journal)) {
    auto pg = pg_connect(ctx);
    if (!pg) return fail(ctx, pg.status().message());
    auto ids = pg_resolve_webhook_refs(**pg, {ref});
    if (!ids) return fail(ctx, pg_failure(ctx, ids.status()));
    id = ids->front();
    auto d = pg_webhook_detail(**pg, id, ctx.config ? &*ctx.config : nullptr);
    if (!d) return fail(ctx, pg_failure(ctx, d.status()));
    detail = std::move(*d);
  } else {
    auto db = open_for_read(ctx);
    if (!db) return fail(ctx, db.status().message());
    auto ids = resolve_webhook_refs(**db, {ref});
    if (!ids) return fail(ctx, ids.status().message());
    id = ids->front();
    detail = sqlite_detail(ctx, **db, id);
  }
  if (!detail) return fail(ctx, "webhook " + id + " was deleted meanwhile");
  const WebhookRow* row = &detail->row;
  const Millis now = now_millis();
  const auto& changes = detail->operator_actions;
  const auto waiting = waiting_reasons(ctx, *detail, now);
  // Each resend starts a series of attempts; an attempt belongs to the series of the last
  // resend before it.
  std::vector<const OperatorAction*> resends;
  for (const auto& c : changes)
    if (c.action == "resend") resends.push_back(&c);
  auto series_of = [&](const std::string& started_at) {
    int n = 1;
    for (const auto* r : resends)
      if (r->at <= started_at) ++n;
    return n;
  };

  Json attempts = Json::array();
  for (const WebhookAttempt& a : detail->attempts) {
    auto number = [](const std::optional<std::int64_t>& v) { return v ? Json(*v) : Json(nullptr); };
    attempts.push_back({{"series", series_of(a.started_at)},
                        {"attempt", a.attempt},
                        {"agent", a.agent},
                        {"started_at", a.started_at},
                        {"duration_ms", number(a.duration_ms)},
                        {"http_status", number(a.http_status)},
                        {"error", opt(a.error)},
                        {"outcome", a.outcome}});
  }

  // Where its agent's calls go ({domain} and {service} filled in), from the configuration.
  const AgentConfig* configured =
      ctx.config && row->assigned_agent ? ctx.config->find_agent(*row->assigned_agent) : nullptr;
  const std::optional<std::string> callback =
      configured ? std::optional<std::string>(callback_url(*configured, row->service))
                 : std::nullopt;

  std::vector<Json> values = all_values(*row);
  const std::string& payload_text = row->payload ? *row->payload : std::string();
  // A payload nested deeper than intake now accepts (a row stored before the limit) is shown
  // as its text: nlohmann's dump() recurses once per level, and 100,000 levels overflow the
  // stack. Such a payload is not parsed either (discarded, as text that does not parse is).
  Json payload = json_nested_deeper_than(payload_text, kMaxPayloadDepth)
                     ? Json(Json::value_t::discarded)
                     : Json::parse(payload_text, nullptr, false);
  if (*format == Format::kJson) {
    Json doc;
    for (std::size_t i = 0; i < kAllColumns.size(); ++i) doc[kAllColumns[i]] = values[i];
    // The payload as a JSON value when it parses (it should: intake accepts only objects), else
    // as a JSON string of its text.
    doc["payload"] = payload.is_discarded() ? Json(payload_text) : payload;
    doc["waiting"] = waiting;
    doc["callback"] = callback ? Json(*callback) : Json(nullptr);
    Json actions = Json::array();
    int series = 1;
    for (const auto& c : changes) {
      Json a = {{"at", c.at}, {"actor", c.actor}, {"action", c.action}, {"command", c.command}};
      if (c.action == "resend") a["starts_series"] = ++series;
      actions.push_back(std::move(a));
    }
    doc["operator_actions"] = actions;
    doc["delivery_attempts"] = attempts;  // "attempts" is the count column
    std::cout << doc.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  for (std::size_t i = 0; i < kAllColumns.size(); ++i) {
    const std::string& name = kAllColumns[i];
    std::cout << name << std::string(17 - name.size(), ' ')
              << terminal_text(cell_text(values[i], "-"), /*one_line=*/true) << "\n";
  }
  if (callback) std::cout << "callback         " << terminal_text(*callback, true) << "\n";
  for (const auto& w : waiting)
    std::cout << "waiting          " << terminal_text(w, /*one_line=*/true) << "\n";
  if (!changes.empty()) {
    std::cout << "\nchanged by hand:\n";
    RowWriter out(std::cout, Format::kTable, {"at", "actor", "action", "command"});
    for (const auto& c : changes) out.row({c.at, c.actor, c.action, c.command});
    out.finish();
  }
  // dump() escapes C0 controls but not DEL and C1; terminal_text escapes what is left.
  std::cout << "\npayload:\n"
            << terminal_text(payload.is_discarded()
                                 ? payload_text
                                 : payload.dump(2, ' ', false, Json::error_handler_t::replace),
                             /*one_line=*/false)
            << "\n\n";
  if (attempts.empty()) {
    std::cout << "attempts: none\n";
    return kExitOk;
  }
  std::cout << "attempts:\n";
  const int last_series = 1 + static_cast<int>(resends.size());
  for (int series = 1; series <= last_series; ++series) {
    if (last_series > 1) {
      if (series == 1)
        std::cout << "series 1: as received at " << row->received_at << "\n";
      else
        std::cout << "series " << series << ": resent at " << resends[series - 2]->at << " by "
                  << terminal_text(resends[series - 2]->actor, true) << " ("
                  << terminal_text(resends[series - 2]->command, true) << ")\n";
    }
    RowWriter out(
        std::cout, Format::kTable,
        {"attempt", "agent", "started_at", "duration_ms", "http_status", "outcome", "error"});
    for (const auto& a : attempts)
      if (a["series"] == series)
        out.row({a["attempt"], a["agent"], a["started_at"], a["duration_ms"], a["http_status"],
                 a["outcome"], a["error"]});
    if (out.rows() == 0)
      std::cout << "  none yet\n";
    else
      out.finish();
  }
  return kExitOk;
}

}  // namespace iarelay::cli
