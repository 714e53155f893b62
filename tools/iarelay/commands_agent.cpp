// `iarelay agent list|pause|resume`: maintenance windows. Pause and resume write the agents
// row (set_agent_state) with an audit row in one IMMEDIATE transaction; the daemon reads it.
#include <SQLiteCpp/SQLiteCpp.h>

#include <iostream>

#include "args.h"
#include "commands.h"
#include "common/suggest.h"
#include "common/time.h"
#include "common/utf8.h"
#include "journal/store.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {

constexpr std::size_t kMaxReasonBytes = 1024;  // a pause's --reason

constexpr CommandHelp kAgentHelp = {
    "agent list [--format table|csv|json] | agent pause ID [--until T] [--reason R] | "
    "agent resume ID",
    "Agents and maintenance windows. ID is an agent identifier or, with --config, the handle\n"
    "of its [agent.HANDLE] section. A paused agent receives nothing; its queue keeps filling\n"
    "and drains on resume (or at --until). Pause and resume are recorded in the audit table."};

constexpr CommandHelp kListHelp = {
    "agent list [--format table|csv|json]",
    "Configured agents and agents known to the journal: state, since when and why, queue."};
constexpr CommandHelp kPauseHelp = {
    "agent pause ID [--until T] [--reason R]",
    "Pauses the agent: no attempts until resumed, or until T (RFC 3339 or relative, +2h)."};
constexpr CommandHelp kResumeHelp = {"agent resume ID",
                                     "Ends a pause: the agent is up and its queue drains."};

int agent_list(Context& ctx) {
  po::options_description options;
  add_format_option(options, "table", "table|csv|json");
  po::variables_map vm;
  if (auto code = parse_args(ctx, kListHelp, options, {}, vm)) return *code;
  auto format = format_from(vm, "table|csv|json");
  if (!format) return usage_error(ctx, format.status().message());
  auto text = status_document(ctx);
  if (!text) return fail(ctx, text.status().message());
  Json doc = Json::parse(*text);
  std::map<std::string, const AgentConfig*> configured;
  if (ctx.config)
    for (const auto& a : ctx.config->agents) configured[a.id] = &a;
  RowWriter out(std::cout, *format,
                {"id", "handle", "state", "state_since", "reason", "paused_until", "queued",
                 "inflight", "callback", "services"});
  for (const auto& a : doc["agents"]) {
    Json callback = nullptr, services = nullptr;
    if (auto c = configured.find(a["id"].get<std::string>()); c != configured.end()) {
      callback = c->second->callback;
      std::string list;
      for (const auto& s : c->second->services) list += (list.empty() ? "" : ",") + s;
      services = list;
    }
    out.row({a["id"], a["handle"], a["state"], a["state_since"], a["reason"], a["paused_until"],
             a["queued"], a["inflight"], callback, services});
  }
  out.finish();
  if (*format == Format::kTable && out.rows() == 0)
    std::cerr << "no agents configured or known to the journal\n";
  return kExitOk;
}

int agent_change(Context& ctx, bool pause) {
  po::options_description options;
  options.add_options()("id", po::value<std::string>()->required(), "");
  if (pause)
    options.add_options()("until", po::value<std::string>()->value_name("T"),
                          "end of the pause (RFC 3339, or relative like +2h)")(
        "reason", po::value<std::string>()->value_name("R"), "why (shown in status)");
  po::positional_options_description positional;
  positional.add("id", 1);
  po::variables_map vm;
  if (auto code = parse_args(ctx, pause ? kPauseHelp : kResumeHelp, options, positional, vm))
    return *code;
  const Millis now = now_millis();
  std::optional<Millis> until;
  if (vm.count("until")) {
    auto t = time_from("until", vm["until"].as<std::string>(), now);
    if (!t) return usage_error(ctx, t.status().message());
    if (*t <= now) return usage_error(ctx, "--until " + format_time(*t) + " is in the past");
    until = *t;
  }
  std::optional<std::string> reason;
  if (vm.count("reason")) {
    reason = vm["reason"].as<std::string>();
    // Shown by status and agent list: text, not terminal controls or bytes that are not UTF-8.
    if (std::string problem = text_field_problem(*reason, kMaxReasonBytes); !problem.empty())
      return usage_error(ctx, "--reason " + problem);
  }

  if (is_postgresql_journal(ctx.journal))
    return pg_agent_change(ctx, vm["id"].as<std::string>(), pause, until, reason);

  std::string id;
  std::optional<AgentRow> before;
  {
    auto reader = open_for_read(ctx);
    if (!reader) return fail(ctx, reader.status().message());
    auto resolved = resolve_agent(ctx, **reader, vm["id"].as<std::string>());
    if (!resolved) return fail(ctx, resolved.status().message());
    id = *resolved;
    before = load_agent(**reader, id);
  }
  if (!pause && (!before || before->state != "paused")) {
    std::cout << "agent " << id << " is not paused (state " << (before ? before->state : "up")
              << "); nothing to do\n";
    return kExitOk;
  }

  auto db = open_for_write(ctx);
  if (!db) return fail(ctx, db.status().message());
  {
    SQLite::Transaction tx(**db, SQLite::TransactionBehavior::IMMEDIATE);
    bool changed = pause ? set_agent_state(**db, id, "paused", reason, until, false)
                         : set_agent_state(**db, id, "up", std::nullopt, std::nullopt, false);
    add_audit(**db, actor(), pause ? "pause" : "resume", audit_filter(ctx), changed ? 1 : 0,
              "agent=" + id);
    tx.commit();
  }
  if (pause)
    std::cout << "paused agent " << id << (until ? " until " + format_time(*until) : "")
              << (reason ? " (" + *reason + ")" : "") << "\n";
  else
    std::cout << "resumed agent " << id << "\n";
  return kExitOk;
}

}  // namespace

int cmd_agent(Context& ctx) {
  if (ctx.args.empty())
    return usage_error(ctx, "give list, pause ID or resume ID (see iarelay agent --help)");
  std::string sub = ctx.args.front();
  if (sub == "--help" || sub == "-h") {
    po::options_description none;
    po::variables_map vm;
    return parse_args(ctx, kAgentHelp, none, {}, vm).value_or(kExitOk);
  }
  ctx.args.erase(ctx.args.begin());
  ctx.command = "agent " + sub;
  if (sub == "list") return agent_list(ctx);
  if (sub == "pause") return agent_change(ctx, true);
  if (sub == "resume") return agent_change(ctx, false);
  ctx.command = "agent";
  return usage_error(ctx, "unknown agent command '" + sub + "'" +
                              did_you_mean(sub, {"list", "pause", "resume"}) +
                              " (agent list, agent pause ID or agent resume ID)");
}

}  // namespace iarelay::cli
