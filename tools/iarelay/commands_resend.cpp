// `iarelay resend`, `iarelay move` and `iarelay purge`: the batched, audited changes of
// journal/maintenance.h, with progress on stderr for long runs. A running daemon notices the
// changes by itself.
#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "common/time.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_admin.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {

constexpr std::int64_t kListedRows = 50;  // delivered rows a replay without --force lists

constexpr CommandHelp kResendHelp = {
    "resend ID... | resend --state failed|discarded|delivered [--agent A] [--service S] "
    "[--type T] [--event E] [--since T] [--until T] [--to-agent A] [--force] [--dry-run]",
    "Puts failed, discarded or delivered webhooks back to queued with a fresh attempt budget\n"
    "(attempts 0, due now), either the given ids (all must be in those states, else nothing\n"
    "changes) or every webhook matching the filters. Resending a delivered webhook replays it:\n"
    "the agent gets it again with the same webhook-id (its delivered_at is cleared until it is\n"
    "delivered again). Replaying delivered webhooks chosen by filter (--state delivered) needs\n"
    "--force: without it the command lists what it would replay and changes nothing (by ids,\n"
    "no --force is needed). ID is a webhook id, any unique prefix of\n"
    "it, or its seq. --to-agent assigns them to that agent (identifier or handle); otherwise a\n"
    "webhook stays with its agent and a discarded one waits for any agent of its service.\n"
    "Refused, and why:\n"
    "  queued     it is waiting already ('iarelay retry' makes one backing off due now)\n"
    "  inflight   a call is under way; its outcome decides (wait, then 'iarelay show')\n"
    "  held       an operator holds it ('iarelay release')\n"
    "  stored     kept for an edge's feed, no local agent ('iarelay move --stored')\n"
    "Prints how many; recorded in the audit table, and 'iarelay show ID' marks each series of\n"
    "attempts with who resent it. A running iarelayd starts on them within a second."};

constexpr CommandHelp kPurgeHelp = {
    "purge --before T [--state S]... [--force] [--dry-run]",
    "Deletes webhooks received before T in the given states (default: delivered), with their\n"
    "attempts. Never deletes queued, held or inflight webhooks ('iarelay delete' does, one by\n"
    "one). Stored webhooks (an edge's feed)\n"
    "that not every feed consumer has acknowledged are refused (nothing changes) unless\n"
    "--force. Prints how many; recorded in the audit table."};

constexpr CommandHelp kMoveHelp = {
    "move --from A | --held | --stored  --to B [--service S] [--type T] [--event E] [--since T] "
    "[--until T] [--force] [--dry-run]",
    "Moves waiting webhooks to agent B (identifier or handle): the queue of agent A (a retired\n"
    "agent's, or a paused one's), the unassigned webhooks waiting for any agent of their\n"
    "service (--held: unrouted = hold; not the held state of 'iarelay hold', which stays),\n"
    "or the stored webhooks of a relay that ran as an edge (--stored: they become queued with a\n"
    "fresh attempt budget; those a feed consumer has acknowledged went downstream and are left\n"
    "unless --force). They keep their arrival order, so the webhooks of one alert reach B in\n"
    "order; they are due at once. Refused while a webhook of one of their alerts is inflight on\n"
    "A (pause A and wait). Stop the feed's consumers before moving stored webhooks. Prints how\n"
    "many; recorded in the audit table. A running iarelayd starts on them by itself."};

// "inner-1 has acknowledged up to seq 17 (3 newer not yet)" for each consumer that lags.
std::string unacknowledged_text(const std::vector<UnacknowledgedStored>& lagging) {
  std::string out;
  for (const auto& u : lagging) {
    if (!out.empty()) out += "; ";
    if (u.consumer.empty())
      out += "no feed consumer has acknowledged any (none is known)";
    else
      out += "consumer '" + u.consumer + "' has acknowledged up to seq " +
             std::to_string(u.acked_seq) + " (" + std::to_string(u.rows) + " not yet)";
  }
  return out;
}

}  // namespace

int cmd_resend(Context& ctx) {
  po::options_description options;
  options.add_options()("id", po::value<std::vector<std::string>>(), "");
  add_filter_options(options, false);
  options.add_options()("to-agent", po::value<std::string>()->value_name("A"),
                        "assign them to this agent (identifier or handle)")(
      "force", "replay the delivered webhooks the filters select (without it: list them)")(
      "dry-run", "count what would be resent; change nothing");
  po::positional_options_description positional;
  positional.add("id", -1);
  po::variables_map vm;
  if (auto code = parse_args(ctx, kResendHelp, options, positional, vm)) return *code;
  auto filter = filter_from(ctx, vm, now_millis());
  if (!filter) return usage_error(ctx, filter.status().message());
  if (vm.count("id")) {
    for (const char* name : {"state", "agent", "service", "type", "event", "since", "until"})
      if (vm.count(name))
        return usage_error(ctx,
                           std::string("give webhook ids or --") + name + " filters, not both");
  } else if (filter->states.empty()) {
    return usage_error(
        ctx, "give webhook ids, or --state failed|discarded|delivered with optional filters");
  }
  for (auto s : filter->states)
    if (s != WebhookState::kFailed && s != WebhookState::kDiscarded &&
        s != WebhookState::kDelivered)
      return usage_error(ctx, "--state " + std::string(to_string(s)) +
                                  ": only failed, discarded or delivered webhooks can be resent "
                                  "(see iarelay resend --help)");
  // A replay by filter can take the whole retained history: listed unless --force.
  const bool replay_by_filter =
      !vm.count("id") && std::find(filter->states.begin(), filter->states.end(),
                                   WebhookState::kDelivered) != filter->states.end();
  const bool list_replay = replay_by_filter && !vm.count("force") && !vm.count("dry-run");
  const bool dry_run = vm.count("dry-run") > 0 || list_replay;
  if (is_postgresql_journal(ctx.journal)) {
    PgResend request;
    request.filter = std::move(*filter);
    if (vm.count("id")) request.refs = vm["id"].as<std::vector<std::string>>();
    if (vm.count("to-agent")) request.to_agent = vm["to-agent"].as<std::string>();
    request.list_replay = list_replay;
    request.dry_run = dry_run;
    return pg_resend(ctx, std::move(request));
  }

  // Everything that can be refused is checked on a read-only connection (a dry run is exactly
  // that), so a refusal never opens the journal for writing.
  auto reader = open_for_read(ctx);
  if (!reader) return fail(ctx, reader.status().message());
  if (vm.count("id")) {
    auto ids = resolve_webhook_refs(**reader, vm["id"].as<std::vector<std::string>>());
    if (!ids) return fail(ctx, ids.status().message());
    filter->ids = std::move(*ids);
  }
  std::optional<std::string> to_agent;
  if (vm.count("to-agent")) {
    auto agent = resolve_agent(ctx, **reader, vm["to-agent"].as<std::string>());
    if (!agent) return fail(ctx, "--to-agent: " + agent.status().message());
    to_agent = *agent;
  }
  if (dry_run || !filter->ids.empty()) {
    MaintenanceOptions check;
    check.dry_run = true;
    if (dry_run) check.progress = progress_printer("resend --dry-run");
    if (list_replay) {
      // The delivered webhooks it would replay, oldest first (the first kListedRows).
      WebhookFilter delivered = *filter;
      delivered.states = {WebhookState::kDelivered};
      delivered.oldest_first = true;
      delivered.limit = kListedRows;
      RowWriter out(std::cout, Format::kTable,
                    {"seq", "id", "state", "agent", "event_id", "received_at", "delivered_at"});
      for_each_webhook(**reader, delivered, false, [&](const WebhookRow& r) {
        out.row({r.seq, r.id, r.state, r.assigned_agent ? Json(*r.assigned_agent) : Json(nullptr),
                 r.event_id ? Json(*r.event_id) : Json(nullptr), r.received_at,
                 r.delivered_at ? Json(*r.delivered_at) : Json(nullptr)});
        return true;
      });
      out.finish();
    }
    auto would = resend(**reader, *filter, to_agent, check);
    if (!would) return fail(ctx, would.status().message());
    if (list_replay) {
      WebhookFilter delivered = *filter;
      delivered.states = {WebhookState::kDelivered};
      auto replays = resend(**reader, delivered, to_agent, check);
      if (!replays) return fail(ctx, replays.status().message());
      if (*replays > static_cast<std::int64_t>(kListedRows))
        std::cout << "... and " << (*replays - static_cast<std::int64_t>(kListedRows)) << " more\n";
      std::cout << "would resend " << rows_text(*would) << ", " << *replays
                << " of them delivered already (a replay: the agent gets them again); nothing "
                   "changed: add --force to resend them\n";
      return kExitOk;
    }
    if (dry_run) {
      std::cout << "would resend " << rows_text(*would) << " (dry run: nothing changed)\n";
      return kExitOk;
    }
  }
  reader->reset();

  auto db = open_for_write(ctx);
  if (!db) return fail(ctx, db.status().message());
  MaintenanceOptions run;
  run.progress = progress_printer("resend");
  run.audit = {actor(), audit_filter(ctx), resend_detail(*filter, to_agent)};
  auto done = resend(**db, *filter, to_agent, run);
  if (!done) return fail(ctx, done.status().message());
  std::cout << "resent " << rows_text(*done) << (to_agent ? " to " + *to_agent : "") << "\n";
  return kExitOk;
}

int cmd_move(Context& ctx) {
  po::options_description options;
  auto text = [](const char* name) { return po::value<std::string>()->value_name(name); };
  options.add_options()("from", text("A"), "the queue of this agent (identifier or handle)")(
      "held", "the unassigned webhooks waiting for any agent of their service")(
      "stored", "the stored webhooks (kept for an edge's feed)")(
      "to", text("B"), "the agent to move them to (identifier or handle)")(
      "service", text("S"), "only this integration service")(
      "type", text("T"), "only this trigger type")("event", text("E"), "only this alert")(
      "since", text("T"), "received at or after T (RFC 3339, or -2h, -30m)")("until", text("T"),
                                                                             "received before T")(
      "force", "also move stored webhooks a feed consumer has acknowledged (taken downstream)")(
      "dry-run", "count what would move; change nothing");
  po::variables_map vm;
  if (auto code = parse_args(ctx, kMoveHelp, options, {}, vm)) return *code;
  const int sources = static_cast<int>(vm.count("from") + vm.count("held") + vm.count("stored"));
  if (sources != 1) return usage_error(ctx, "give exactly one of --from A, --held, --stored");
  if (!vm.count("to")) return usage_error(ctx, "give --to B, the agent to move them to");
  auto filter = filter_from(ctx, vm, now_millis());
  if (!filter) return usage_error(ctx, filter.status().message());
  const bool dry_run = vm.count("dry-run") > 0;
  const bool force = vm.count("force") > 0;

  // SQLite: the checks on a read-only connection, the move on one opened for writing after
  // them. PostgreSQL: one connection for both.
  auto journal = open_command_journal(ctx);
  if (!journal) return fail(ctx, journal.status().message());
  const bool postgresql = journal->pg != nullptr;
  std::unique_ptr<PgConnection> pg = std::move(journal->pg);
  DatabasePtr sqlite = std::move(journal->sqlite);
  auto failure = [&](const Status& s) {
    return fail(ctx, postgresql ? pg_failure(ctx, s) : s.message());
  };
  auto agent_named = [&](const std::string& name) {
    return postgresql ? pg_resolve_agent(ctx, *pg, name) : resolve_agent(ctx, *sqlite, name);
  };
  MoveFrom from;
  from.stored = vm.count("stored") > 0;
  if (vm.count("from")) {
    auto agent = agent_named(vm["from"].as<std::string>());
    if (!agent) return fail(ctx, "--from: " + agent.status().message());
    from.agent = *agent;
  }
  auto to = agent_named(vm["to"].as<std::string>());
  if (!to) return fail(ctx, "--to: " + to.status().message());
  if (ctx.config && !ctx.config->find_agent(*to))
    return fail(ctx, "--to: agent " + *to + " is not in " + ctx.config->file +
                         "; webhooks moved there would wait for it. Configure it first");
  // Stored rows a feed consumer acknowledged went downstream: moved, they would be delivered
  // twice. move_webhooks leaves them unless --force.
  from.include_acknowledged = force;
  std::string detail = "from=" +
                       (from.stored  ? std::string("stored")
                        : from.agent ? *from.agent
                                     : std::string("held")) +
                       " to=" + *to + (from.stored && force ? " force" : "");
  {
    WebhookFilter shown = *filter;
    shown.states.clear();
    std::string rest = resend_detail(shown, std::nullopt);
    if (!rest.empty()) detail += " " + rest;
  }
  auto move = [&](const MaintenanceOptions& o) {
    return postgresql ? pg_move_webhooks(*pg, from, *to, *filter, o)
                      : move_webhooks(*sqlite, from, *to, *filter, o);
  };
  if (dry_run) {
    MaintenanceOptions check;
    check.dry_run = true;
    auto would = move(check);
    if (!would) return failure(would.status());
    std::cout << "would move " << rows_text(*would) << " to " << *to
              << " (dry run: nothing changed)\n";
    return kExitOk;
  }
  if (!postgresql) {
    sqlite.reset();
    auto db = open_for_write(ctx);
    if (!db) return fail(ctx, db.status().message());
    sqlite = std::move(*db);
  }
  MaintenanceOptions run;
  run.progress = progress_printer("move");
  run.audit = {actor(), audit_filter(ctx), detail};
  auto done = move(run);
  if (!done) return failure(done.status());
  std::cout << "moved " << rows_text(*done) << " to " << *to << "\n";
  return kExitOk;
}

int cmd_purge(Context& ctx) {
  po::options_description options;
  options.add_options()("before", po::value<std::string>()->required()->value_name("T"),
                        "received before T (RFC 3339, or -30d style relative)")(
      "state", po::value<std::vector<std::string>>()->composing()->value_name("S"),
      "states to delete (default delivered; never queued or inflight)")(
      "force", "also delete stored webhooks that not every feed consumer has acknowledged")(
      "dry-run", "count what would be deleted; change nothing");
  po::variables_map vm;
  if (auto code = parse_args(ctx, kPurgeHelp, options, {}, vm)) return *code;
  auto before = time_from("before", vm["before"].as<std::string>(), now_millis());
  if (!before) return usage_error(ctx, before.status().message());
  std::vector<WebhookState> states;
  if (vm.count("state")) {
    auto parsed = states_from(vm["state"].as<std::vector<std::string>>());
    if (!parsed) return usage_error(ctx, parsed.status().message());
    states = std::move(*parsed);
  }
  for (auto s : states)
    if (s == WebhookState::kQueued || s == WebhookState::kInflight || s == WebhookState::kHeld)
      return usage_error(ctx, "--state " + std::string(to_string(s)) +
                                  ": purge never deletes queued, held or inflight webhooks "
                                  "(iarelay delete ID --force deletes one)");
  const bool dry_run = vm.count("dry-run") > 0;
  const bool force = vm.count("force") > 0;

  // SQLite: the checks on a read-only connection, the purge on one opened for writing after
  // them. PostgreSQL: one connection for both.
  auto journal = open_command_journal(ctx);
  if (!journal) return fail(ctx, journal.status().message());
  const bool postgresql = journal->pg != nullptr;
  std::unique_ptr<PgConnection> pg = std::move(journal->pg);
  DatabasePtr sqlite = std::move(journal->sqlite);
  auto failure = [&](const Status& s) {
    return fail(ctx, postgresql ? pg_failure(ctx, s) : s.message());
  };
  auto purge = [&](const MaintenanceOptions& o) {
    return postgresql ? pg_purge_webhooks(*pg, *before, states, o)
                      : purge_webhooks(*sqlite, *before, states, o);
  };
  // A stored row is kept for the feed's consumers; deleting one they have not acknowledged
  // loses it for them. Checked before anything changes (acks only grow meanwhile, and rows
  // stored meanwhile are newer than T).
  std::int64_t unacknowledged = 0;
  std::string lagging;
  if (std::find(states.begin(), states.end(), WebhookState::kStored) != states.end()) {
    auto found = postgresql ? pg_unacknowledged_stored(*pg, *before, &unacknowledged)
                            : unacknowledged_stored(*sqlite, *before, &unacknowledged);
    if (!found) return failure(found.status());
    lagging = unacknowledged_text(*found);
  }
  if (dry_run) {
    MaintenanceOptions count;
    count.dry_run = true;
    count.force = force;
    auto would = purge(count);
    if (!would) return failure(would.status());
    std::cout << "would purge " << rows_text(*would) << " received before " << format_time(*before)
              << " (dry run: nothing changed)\n";
    if (unacknowledged > 0 && !force)
      std::cout << "and would refuse: " << rows_text(unacknowledged)
                << " stored and not acknowledged by every feed consumer (" << lagging
                << "); --force deletes them too\n";
    return kExitOk;
  }
  if (unacknowledged > 0 && !force)
    return fail(ctx, "refusing to purge " + rows_text(unacknowledged) +
                         " stored for the feed and not acknowledged by every consumer: " + lagging +
                         ". Nothing was deleted; wait for the consumers, give an earlier --before, "
                         "or add --force to delete them anyway");
  if (!postgresql) {
    sqlite.reset();
    auto db = open_for_write(ctx);
    if (!db) return fail(ctx, db.status().message());
    sqlite = std::move(*db);
  }
  MaintenanceOptions run;
  run.progress = progress_printer("purge");
  run.force = force;
  std::string detail = "before=" + format_time(*before) + " states=";
  for (auto s : states.empty() ? std::vector{WebhookState::kDelivered} : states)
    detail += std::string(detail.back() == '=' ? "" : ",") + std::string(to_string(s));
  if (force && unacknowledged > 0)
    detail +=
        " force: " + std::to_string(unacknowledged) + " unacknowledged stored (" + lagging + ")";
  run.audit = {actor(), audit_filter(ctx), detail};
  auto done = purge(run);
  if (!done) return failure(done.status());
  std::cout << "purged " << rows_text(*done) << " received before " << format_time(*before) << "\n";
  return kExitOk;
}

}  // namespace iarelay::cli
