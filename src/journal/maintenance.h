// Operator maintenance of the journal, shared by `iarelay` and the daemon: resending failed and
// discarded webhooks (back to queued with a fresh attempt budget), purging old webhooks with
// their attempts (stored ones only once every feed consumer has acknowledged them), and the
// floor that keeps feed sequence numbers from ever going back. Resend and purge work in
// batches so a large change never holds the write lock for long.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/time.h"
#include "journal/store.h"

namespace SQLite {
class Database;
}

namespace iarelay {

// Called after each committed batch with the running total of rows changed (or, for a dry
// run, counted).
using ProgressFn = std::function<void(std::int64_t done)>;

// Who asked, for the audit row; `actor` empty means no audit row is written.
struct AuditInfo {
  std::string actor;   // "$USER@host" of the operator, or "iarelayd"
  std::string filter;  // the command's arguments as given
  std::string detail;  // the selection resolved (absolute times, agent identifiers)
};

struct MaintenanceOptions {
  int batch_size = 1000;  // rows per transaction
  bool dry_run = false;   // count what would change; write nothing (no audit row either)
  // Purge and delete: also delete `stored` rows that not every feed consumer has acknowledged.
  bool force = false;
  ProgressFn progress;  // may be empty
  AuditInfo audit;
};

// Resend: every webhook selected by `filter` goes from failed, discarded or delivered (a
// replay) to queued with attempts = 0 and next_attempt_at and delivered_at NULL; with `to_agent`,
// assigned_agent is set to it (else it keeps its agent; a discarded webhook has none and so
// waits for any agent of its service).
// Each change goes through transition(); a row moved by someone else meanwhile is skipped.
//
// Selection: `filter.ids` non-empty selects those ids (then every id must exist and be
// failed, discarded or delivered, else InvalidArgument naming them and nothing changes);
// otherwise `filter.states` (only failed, discarded, delivered; required) plus the other
// fields of the filter (agent, service, type, event, since, until; limit and order are
// ignored).
//
// Transactions: when `db` is not inside a transaction, each batch runs in its own IMMEDIATE
// transaction, the audit row (action "resend", kept up to date with the running count) in the
// first one, so an interrupted run leaves an accurate audit. When the caller already holds a
// transaction (e.g. a Writer op), everything runs inside it. Returns the number of rows
// changed (or, dry run, that would change). Each webhook resent is linked to the audit row
// (audit_webhooks): `iarelay show` names who resent it. SQLite errors come back as
// IoError/Unavailable.
Result<std::int64_t> resend(SQLite::Database& db, const WebhookFilter& filter,
                            const std::optional<std::string>& to_agent,
                            const MaintenanceOptions& options = {});

// Move: webhooks waiting in one place go to agent `to` (assigned_agent = to, due now), in
// batches like resend(); audit action "move". Where they wait (`from`):
// - an agent identifier: the queued webhooks assigned to it (a retired agent's queue, or a
//   paused one's);
// - nullopt with `stored` false: the queued webhooks held for any agent (assigned_agent NULL);
// - `stored` true: stored webhooks (kept by an edge for its feed), which become queued with a
//   fresh attempt budget: only those no feed consumer has acknowledged (a consumer that did
//   took them downstream), all of them with `include_acknowledged`.
// Only the service, type, event, since and until fields of `filter` apply. Each row keeps its
// seq, so webhooks of one alert keep their order in the new queue. Refused (InvalidArgument,
// nothing changes) while a selected webhook's alert has a webhook inflight where they wait:
// a later webhook could otherwise reach the new agent before the earlier call's outcome.
// Returns the rows moved (dry run: that would move).
struct MoveFrom {
  std::optional<std::string> agent;  // nullopt: held (or stored, below)
  bool stored = false;
  bool include_acknowledged = false;  // stored: also those a consumer has acknowledged
};
Result<std::int64_t> move_webhooks(SQLite::Database& db, const MoveFrom& from,
                                   const std::string& to, const WebhookFilter& filter,
                                   const MaintenanceOptions& options = {});

// --- naming webhooks ------------------------------------------------------------------------
// What every command that takes webhooks accepts for one: the id, any unique prefix of it
// (case as given, else upper case: ids are ULIDs), or the seq (digits only; an id that is all
// digits wins). Returns the ids in the order given, each once. InvalidArgument naming the
// candidates (the first few) for an ambiguous prefix, NotFound for one that matches nothing;
// the first problem is reported. SQLite errors as IoError/Unavailable.
Result<std::vector<std::string>> resolve_webhook_refs(SQLite::Database& db,
                                                      const std::vector<std::string>& refs);

// --- the queue commands: retry, hold, release, delete ----------------------------------------
// Modelled on Postfix: retry is `postqueue -i` (a webhook backing off is due now), hold and
// release are `postsuper -h` / `-H`, delete is `postsuper -d`.
enum class QueueOp {
  kRetry,    // queued with next_attempt_at in the future -> queued, next_attempt_at NULL
  kHold,     // queued -> held (keeps assigned_agent, attempts, next_attempt_at)
  kRelease,  // held -> queued, where it was
  kDelete,   // any state but inflight -> deleted, with its attempts
};
std::string_view queue_op_name(QueueOp op);  // "retry", "hold", ... (the audit action)
// The states `op` applies to, and why it refuses the others (for messages and --help).
std::vector<WebhookState> queue_op_states(QueueOp op);
// Why `op` does not apply to a webhook in `state` ("held (iarelay release it first)"), as the
// refusals of change_webhooks word it on either backend.
std::string queue_op_refusal(QueueOp op, const std::string& state);

// A feed consumer's acknowledgement (a row of `consumers`).
struct FeedConsumerAck {
  std::string name;
  std::int64_t acked_seq = 0;
};
// Which of `consumers` have not acknowledged `seq`, for messages (empty: every one has; with
// no consumer at all, says that none is known).
std::string consumers_lacking(const std::vector<FeedConsumerAck>& consumers, std::int64_t seq);
// The end of delete's refusal of stored rows a consumer lacks: what to do instead.
extern const char* const kUnacknowledgedStoredHint;

// Applies `op` to `filter.ids` (then every id must exist and be in a state `op` applies to,
// else InvalidArgument naming them and nothing changes) or to every webhook matching the
// filter (states: filter.states, each one `op` applies to, or, empty, all of them; delete
// requires them; agent, service, type, event, since, until apply; retry only takes webhooks
// whose next_attempt_at is after `now`). Each row changes through a guarded statement
// (transition(), delete_webhook()): one the daemon moved meanwhile (claimed it, say) is
// skipped, never overwritten. Batches, transactions, audit and dry run as for resend(); every
// webhook changed is linked to the audit row (audit_webhooks), except deleted ones.
// Delete refuses (InvalidArgument naming the consumers that lack them; nothing changes)
// `stored` rows that not every row of `consumers` has acknowledged (none when there is no
// consumer row), as purge keeps them; options.force lifts this.
// `each`, when set, is called for every row selected (dry run: that would change).
Result<std::int64_t> change_webhooks(SQLite::Database& db, QueueOp op, const WebhookFilter& filter,
                                     Millis now, const MaintenanceOptions& options = {},
                                     const std::function<void(const WebhookRow&)>& each = {});

// Purge: deletes webhooks in `states` received before `before`, with their attempts rows.
// `states` empty means {delivered}; queued or inflight among them is refused (InvalidArgument)
// before anything is read. A `stored` row (kept for the feed) is deleted only when every row
// of `consumers` has acknowledged its seq; with no consumer row none is; options.force lifts
// this. Such rows are skipped, not refused: see unacknowledged_stored(). Transactions and
// audit (action "purge") as for resend().
Result<std::int64_t> purge_webhooks(SQLite::Database& db, Millis before,
                                    const std::vector<WebhookState>& states,
                                    const MaintenanceOptions& options = {});

// One feed consumer's share of the stored rows received before a time that it has not yet
// acknowledged. `consumer` empty: no consumer is known, so no row is acknowledged.
struct UnacknowledgedStored {
  std::string consumer;
  std::int64_t acked_seq = 0;  // what it has acknowledged (0 when no consumer is known)
  std::int64_t rows = 0;       // stored rows before the time with a greater seq
};
// Per consumer, the stored rows received before `before` it has not acknowledged (only
// consumers with some); `total` gets the number of rows that purge_webhooks would keep for
// want of acknowledgements. Read-only. SQLite errors as IoError/Unavailable.
Result<std::vector<UnacknowledgedStored>> unacknowledged_stored(SQLite::Database& db, Millis before,
                                                                std::int64_t* total = nullptr);

// Feed sequence numbers (webhooks.seq, AUTOINCREMENT) must never be reused or go back, or a
// consumer that acknowledged them skips the new rows. A power loss at sync=normal (the last
// commits and their sqlite_sequence update are lost) or a journal restored from a backup can
// take sqlite_sequence back. So the next seq is raised to at least now * 1000 (`now` the
// wall clock in ms at daemon start): a previous run that issued under 1000 seqs per ms since
// it started never reached it, and the value stays below 2^53 (exact in JSON doubles) until
// the year 2255. Never lowers it. Throws SQLite::Exception (run it as a Writer operation).
// Returns the value sqlite_sequence now holds for webhooks (the next seq is one more).
std::int64_t raise_seq_floor(SQLite::Database& db, Millis now);

}  // namespace iarelay
