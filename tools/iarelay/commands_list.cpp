// `iarelay list` (webhooks by filter, newest first) and `iarelay show` (one webhook in full).
#include <SQLiteCpp/SQLiteCpp.h>

#include <iostream>

#include "args.h"
#include "commands.h"
#include "common/payload.h"
#include "common/time.h"

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
    "One webhook: every field, its payload, and every delivery attempt. ID is the webhook id\n"
    "(or its seq number). In JSON the attempts are the array \"delivery_attempts\"."};

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

std::optional<WebhookRow> find_webhook(SQLite::Database& db, const std::string& id) {
  std::optional<WebhookRow> out;
  WebhookFilter f;
  f.ids = {id};
  for_each_webhook(db, f, true, [&](const WebhookRow& r) {
    out = r;
    return false;
  });
  if (out || id.empty() || id.find_first_not_of("0123456789") != std::string::npos) return out;
  SQLite::Statement q(db, "SELECT id FROM webhooks WHERE seq=?");
  q.bind(1, static_cast<std::int64_t>(std::stoll(id)));
  if (!q.executeStep()) return out;
  f.ids = {q.getColumn(0).getString()};
  for_each_webhook(db, f, true, [&](const WebhookRow& r) {
    out = r;
    return false;
  });
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
  auto db = open_for_read(ctx);
  if (!db) return fail(ctx, db.status().message());

  bool table = *format == Format::kTable;
  RowWriter out(std::cout, *format, table ? kTableColumns : kAllColumns);
  bool more = false;
  for_each_webhook(**db, *filter, false, [&](const WebhookRow& r) {
    if (truncated_table && out.rows() == static_cast<std::size_t>(kDefaultTableLimit)) {
      more = true;
      return false;
    }
    out.row(table ? table_values(r) : all_values(r));
    return true;
  });
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
  auto db = open_for_read(ctx);
  if (!db) return fail(ctx, db.status().message());
  const std::string id = vm["id"].as<std::string>();
  auto row = find_webhook(**db, id);
  if (!row) return fail(ctx, "no webhook with id '" + id + "' in " + ctx.journal);

  Json attempts = Json::array();
  SQLite::Statement q(**db,
                      "SELECT attempt, agent, started_at, duration_ms, http_status, error, outcome "
                      "FROM attempts WHERE webhook_id=? ORDER BY id");
  q.bind(1, row->id);
  while (q.executeStep()) {
    auto col = [&](int i) -> Json {
      const SQLite::Column c = q.getColumn(i);
      if (c.isNull()) return nullptr;
      if (c.isInteger()) return c.getInt64();
      return c.getString();
    };
    attempts.push_back({{"attempt", col(0)},
                        {"agent", col(1)},
                        {"started_at", col(2)},
                        {"duration_ms", col(3)},
                        {"http_status", col(4)},
                        {"error", col(5)},
                        {"outcome", col(6)}});
  }

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
    doc["delivery_attempts"] = attempts;  // "attempts" is the count column
    std::cout << doc.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  for (std::size_t i = 0; i < kAllColumns.size(); ++i) {
    const std::string& name = kAllColumns[i];
    std::cout << name << std::string(17 - name.size(), ' ')
              << terminal_text(cell_text(values[i], "-"), /*one_line=*/true) << "\n";
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
  RowWriter out(
      std::cout, Format::kTable,
      {"attempt", "agent", "started_at", "duration_ms", "http_status", "outcome", "error"});
  for (const auto& a : attempts)
    out.row({a["attempt"], a["agent"], a["started_at"], a["duration_ms"], a["http_status"],
             a["outcome"], a["error"]});
  out.finish();
  return kExitOk;
}

}  // namespace iarelay::cli
