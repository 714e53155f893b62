// `iarelay retry`, `hold`, `release` and `delete`: the queue commands modelled on Postfix
// (postqueue -i, postsuper -h, -H, -d), over change_webhooks() in journal/maintenance.h (on
// PostgreSQL pg_change_webhooks(), journal/pg/pg_admin.h): guarded per row, batched, audited
// with the command line. A running iarelayd sees the change within a second (it rereads its
// queues when the journal's data_version moves; on PostgreSQL every 250 ms).
#include <SQLiteCpp/SQLiteCpp.h>

#include <iostream>

#include "args.h"
#include "commands.h"
#include "common/time.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_admin.h"
#include "pg_commands.h"

namespace iarelay::cli {
namespace {

constexpr std::size_t kListedRows = 50;  // rows a dry run lists

constexpr CommandHelp kRetryHelp = {
    "retry ID... | retry [--agent A] [--service S] [--type T] [--event E] [--since T] "
    "[--until T] | retry --all  [--dry-run]",
    "Makes queued webhooks that are backing off after a failed attempt due now (postqueue -i):\n"
    "next_attempt_at is cleared, the attempt count is kept. ID is a webhook id, any unique\n"
    "prefix of it, or its seq. With filters (or --all) only queued webhooks whose next attempt\n"
    "is in the future are taken. Refused for ids that are not queued: inflight (a call is under\n"
    "way), held (release it), failed, discarded or delivered (use resend). An agent that is\n"
    "down or paused still gets nothing until it is up ('iarelay show ID' says why a webhook\n"
    "waits). A running iarelayd acts on it within a second. Recorded in the audit table."};

constexpr CommandHelp kHoldHelp = {
    "hold ID... | hold [--agent A] [--service S] [--type T] [--event E] [--since T] [--until T] "
    "| hold --all  [--dry-run]",
    "Holds queued webhooks (postsuper -h): state 'held', never sent until 'iarelay release'.\n"
    "A held webhook keeps its agent, attempts and place: with the agent's default ordering\n"
    "(event) the later webhooks of its alert wait behind it, as they would behind one backing\n"
    "off (ordering = fifo: every later webhook of the agent waits; none: nothing waits). Only\n"
    "queued webhooks can be held: an inflight one is refused (its call is under way). ID is a\n"
    "webhook id, any unique prefix of it, or its seq. Not the same as a webhook waiting for\n"
    "any agent of its service (unrouted = hold; 'iarelay move --held' moves those). Recorded\n"
    "in the audit table; 'iarelay show ID' says who held it."};

constexpr CommandHelp kReleaseHelp = {
    "release ID... | release [--agent A] [--service S] [--type T] [--event E] [--since T] "
    "[--until T] | release --all  [--dry-run]",
    "Releases held webhooks (postsuper -H): back to queued where they were (same agent, same\n"
    "place in its queue, same next attempt time; 'iarelay retry' makes them due now). ID is a\n"
    "webhook id, any unique prefix of it, or its seq. Recorded in the audit table."};

constexpr CommandHelp kDeleteHelp = {
    "delete ID... | delete --state S [--agent A] [--service S] [--type T] [--event E] "
    "[--since T] [--until T]  [--force [--force-unacknowledged]] [--dry-run]",
    "Deletes webhooks with their attempts (postsuper -d): any state but inflight (a call is\n"
    "under way: wait for its outcome). Without --force it only lists what would be deleted\n"
    "(as --dry-run does); with --force it deletes them. ID is a webhook id, any unique prefix\n"
    "of it, or its seq; with filters, --state is required (stored, queued, delivered, failed,\n"
    "discarded, held). A deleted webhook is never delivered and cannot be resent. Recorded in\n"
    "the audit table with the ids deleted. For old delivered webhooks 'iarelay purge' is the\n"
    "tool. Stored webhooks (an edge's feed) that not every feed consumer has acknowledged are\n"
    "refused, naming the consumers, as purge refuses them: 'iarelay purge --state stored'\n"
    "deletes them once the consumers have them; --force-unacknowledged with --force deletes\n"
    "them anyway (the consumers never get them; the audit row says so)."};

int queue_command(Context& ctx, QueueOp op, const CommandHelp& help) {
  const std::string name(queue_op_name(op));
  const bool is_delete = op == QueueOp::kDelete;
  po::options_description options;
  options.add_options()("id", po::value<std::vector<std::string>>(), "");
  add_filter_options(options, false);
  if (is_delete)
    options.add_options()("force", "delete them (without it: list what would be deleted)")(
        "force-unacknowledged",
        "also delete stored webhooks that not every feed consumer has acknowledged");
  else
    options.add_options()("all", "every webhook it applies to (no filter)");
  options.add_options()("dry-run", "list what would change; change nothing");
  po::positional_options_description positional;
  positional.add("id", -1);
  po::variables_map vm;
  if (auto code = parse_args(ctx, help, options, positional, vm)) return *code;
  const Millis now = now_millis();
  auto filter = filter_from(ctx, vm, now);
  if (!filter) return usage_error(ctx, filter.status().message());
  bool any_filter = false;
  for (const char* f : {"state", "agent", "service", "type", "event", "since", "until"})
    any_filter |= vm.count(f) > 0;
  const bool all = vm.count("all") > 0;
  if (vm.count("id") && (any_filter || all))
    return usage_error(ctx, "give webhook ids or filters, not both");
  if (!vm.count("id") && !any_filter && !all)
    return usage_error(ctx, is_delete ? "give webhook ids, or --state S with optional filters"
                                      : "give webhook ids, filters (--agent A, --service S, ...) "
                                        "or --all");
  if (is_delete && !vm.count("id") && !vm.count("state"))
    return usage_error(ctx,
                       "delete by filter needs --state (stored, queued, delivered, failed, "
                       "discarded, held): inflight webhooks are never deleted");
  const auto allowed = queue_op_states(op);
  for (auto s : filter->states)
    if (std::find(allowed.begin(), allowed.end(), s) == allowed.end())
      return usage_error(ctx, "--state " + std::string(to_string(s)) + ": " + name +
                                  " does not apply to " + std::string(to_string(s)) +
                                  " webhooks (see iarelay " + name + " --help)");
  const bool dry_run = vm.count("dry-run") > 0 || (is_delete && !vm.count("force"));
  // Stored rows a feed consumer lacks: a second, explicit confirmation (delete's --force only
  // says "not a dry run").
  const bool force_unacknowledged = vm.count("force-unacknowledged") > 0;
  if (force_unacknowledged && !vm.count("force"))
    return usage_error(ctx, "--force-unacknowledged goes with --force");

  // SQLite: the checks on a read-only connection, the change on one opened for writing after
  // them. PostgreSQL: one connection; the checks read, the change's transactions write.
  auto journal = open_command_journal(ctx);
  if (!journal) return fail(ctx, journal.status().message());
  const bool postgresql = journal->pg != nullptr;
  std::unique_ptr<PgConnection> pg = std::move(journal->pg);
  DatabasePtr sqlite = std::move(journal->sqlite);
  auto failure = [&](const Status& s) {
    return fail(ctx, postgresql ? pg_failure(ctx, s) : s.message());
  };
  auto change = [&](const MaintenanceOptions& o,
                    const std::function<void(const WebhookRow&)>& each) {
    return postgresql ? pg_change_webhooks(*pg, op, *filter, now, o, each)
                      : change_webhooks(*sqlite, op, *filter, now, o, each);
  };
  if (vm.count("id")) {
    const auto refs = vm["id"].as<std::vector<std::string>>();
    auto ids =
        postgresql ? pg_resolve_webhook_refs(*pg, refs) : resolve_webhook_refs(*sqlite, refs);
    if (!ids) return failure(ids.status());
    filter->ids = std::move(*ids);
  }
  // Everything that can be refused is refused on the read-only connection first (a dry run
  // is exactly that), so a refusal never opens the journal for writing.
  {
    MaintenanceOptions check;
    check.dry_run = true;
    check.force = force_unacknowledged;
    RowWriter out(std::cout, Format::kTable,
                  {"seq", "id", "state", "agent", "event_id", "received_at", "next_attempt_at"});
    std::int64_t listed = 0;
    auto would = change(check, [&](const WebhookRow& r) {
      if (!dry_run || static_cast<std::size_t>(listed++) >= kListedRows) return;
      Json agent = r.assigned_agent ? Json(*r.assigned_agent) : Json(nullptr);
      out.row({r.seq, r.id, r.state, agent, r.event_id ? Json(*r.event_id) : Json(nullptr),
               r.received_at, r.next_attempt_at ? Json(*r.next_attempt_at) : Json(nullptr)});
    });
    if (!would) return failure(would.status());
    if (dry_run) {
      out.finish();
      if (static_cast<std::size_t>(*would) > kListedRows)
        std::cout << "... and " << (*would - static_cast<std::int64_t>(kListedRows)) << " more\n";
      std::cout << "would " << name << " " << rows_text(*would) << " (dry run: nothing changed"
                << (is_delete && !vm.count("force") ? "; add --force to delete them" : "") << ")\n";
      return kExitOk;
    }
  }
  if (!postgresql) {
    sqlite.reset();
    auto db = open_for_write(ctx);
    if (!db) return fail(ctx, db.status().message());
    sqlite = std::move(*db);
  }
  MaintenanceOptions run;
  run.force = force_unacknowledged;
  run.audit = {
      actor(), audit_filter(ctx),
      selection_detail(*filter) +
          (force_unacknowledged ? " force-unacknowledged (stored webhooks a feed consumer lacked)"
                                : "")};
  auto done = change(run, {});
  if (!done) return failure(done.status());
  const char* past = op == QueueOp::kRetry     ? "made due now"
                     : op == QueueOp::kHold    ? "held"
                     : op == QueueOp::kRelease ? "released"
                                               : "deleted";
  std::cout << past << " " << rows_text(*done) << "\n";
  // A row the daemon moved between the check and the change is skipped (guarded), not
  // overwritten: say so when ids were given.
  if (!filter->ids.empty() && static_cast<std::size_t>(*done) < filter->ids.size())
    std::cout << (filter->ids.size() - static_cast<std::size_t>(*done))
              << " changed state meanwhile (the daemon took them) and were left as they are; "
                 "iarelay show ID says where they are\n";
  return kExitOk;
}

}  // namespace

int cmd_retry(Context& ctx) {
  return queue_command(ctx, QueueOp::kRetry, kRetryHelp);
}
int cmd_hold(Context& ctx) {
  return queue_command(ctx, QueueOp::kHold, kHoldHelp);
}
int cmd_release(Context& ctx) {
  return queue_command(ctx, QueueOp::kRelease, kReleaseHelp);
}
int cmd_delete(Context& ctx) {
  return queue_command(ctx, QueueOp::kDelete, kDeleteHelp);
}

}  // namespace iarelay::cli
