// The operator's reads and changes of the PostgreSQL journal, for `iarelay` (the SQLite side is
// status_report.h, store.h and maintenance.h): the status document with the agents' leases,
// one query in a read-only transaction, list and show, and the audited changes of
// maintenance.h (resend, retry, hold, release, delete, move, purge; pg_maintenance.cpp). Each
// function takes an open, migrated connection (one thread at a time) and returns a Status:
// nothing here throws.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/time.h"
#include "journal/maintenance.h"
#include "journal/pg/pg_journal.h"
#include "journal/store.h"

namespace iarelay {

struct Config;

// The document of status_json (status_report.h), same keys and meaning, read from one
// REPEATABLE READ READ ONLY snapshot, with these differences:
//   "journal"  `journal_display` as given (journal_for_display: no password)
//   "daemon"   {"running": null, "pid": null}: no lock file tells whether a relay runs; the
//              leases below say which relays deliver
//   "leases"   array, by agent in byte order, of every lease taken at least once:
//              {"agent", "owner", "epoch", "expires_at" (RFC 3339 UTC; null once released at a
//              relay's clean stop), "expires_in_ms" (negative: expired; null: released),
//              "live": bool (on the database's clock)}
// `config` may be null. Fails with the server's error (no password in it).
Result<std::string> pg_status_json(PgConnection& db, const Config* config,
                                   const std::string& journal_display);

// A column of pg_read_only_query's result: its name and the type's OID (pg_type).
struct PgColumn {
  std::string name;
  unsigned type_oid = 0;
};

// Runs `sql`, exactly one statement, inside BEGIN TRANSACTION READ ONLY with statement_timeout
// `timeout`, lock_timeout `lock_wait` and TimeZone UTC, after a first snapshot is taken (so
// that the statement cannot make the transaction read-write), and rolls the transaction back.
// A table lock is no write to PostgreSQL (LOCK TABLE runs in a read-only transaction): while
// it waits, every session that asks for the table queues behind it, hence `lock_wait`. Rows are
// streamed (single- row mode): `on_columns` once, before any row (also for a statement without
// rows: no columns), then `on_row` per row, each column as text (NULL: nullopt). A write, a row
// lock and more than one statement are refused by the server; its message is the Status's, and
// `sqlstate` (when given) gets its SQLSTATE ("25006": a write in a read-only transaction,
// "42501": no privilege, "57014": the timeout, "55P03": the lock wait). InvalidArgument for an
// empty statement.
Status pg_read_only_query(PgConnection& db, const std::string& sql, Millis timeout,
                          Millis lock_wait,
                          const std::function<void(const std::vector<PgColumn>&)>& on_columns,
                          const std::function<void(const PgRow&)>& on_row,
                          std::string* sqlstate = nullptr);

// Whether the journal knows agent `id`: an agents row, or a webhook assigned to it.
Result<bool> pg_agent_known(PgConnection& db, const std::string& id);

// resolve_webhook_refs (maintenance.h) on PostgreSQL: the id, a unique prefix of it (as given,
// else upper case) or the seq; the same errors.
Result<std::vector<std::string>> pg_resolve_webhook_refs(PgConnection& db,
                                                         const std::vector<std::string>& refs);

// for_each_webhook (store.h) on PostgreSQL: the webhooks matching `filter` (states, agent,
// service, type, event, since, until, ids, limit, oldest_first), without payloads, streamed to
// `fn` (stop early by returning false) in pages by seq, all read from one REPEATABLE READ READ
// ONLY snapshot: memory is a page's, whatever the journal holds.
Status pg_for_each_webhook(PgConnection& db, const WebhookFilter& filter,
                           const std::function<bool(const WebhookRow&)>& fn);
// The same rows in a vector (for a bounded selection: give filter.limit).
Result<std::vector<WebhookRow>> pg_select_webhooks(PgConnection& db, const WebhookFilter& filter);

// Webhook `id` as `iarelay show` prints it (store.h's WebhookDetail), read from one snapshot;
// nullopt when there is none. `config` (may be null) gives the ordering of its agent, which
// decides what it waits behind (the default: its alert's earlier webhooks).
Result<std::optional<WebhookDetail>> pg_webhook_detail(PgConnection& db, const std::string& id,
                                                       const Config* config);

// resend (maintenance.h) on PostgreSQL, with the same selection, refusals, batches (each in a
// transaction of its own, through JournalTx::transition), dry run and audit: one row of action
// "resend" written in the first batch and kept current, each webhook resent linked to it in
// audit_webhooks. A running relay's dispatcher finds them when it next reads its queues.
Result<std::int64_t> pg_resend(PgConnection& db, const WebhookFilter& filter,
                               const std::optional<std::string>& to_agent,
                               const MaintenanceOptions& options = {});

// change_webhooks (maintenance.h) on PostgreSQL: retry, hold, release or delete, with the
// same selection, refusals (every id must exist and be in a state `op` applies to; delete's
// refusal of stored rows a feed consumer lacks unless options.force), dry run and audit. Each
// batch runs in a transaction of its own: its rows are read by seq after the last one (only
// those there when the command began) and changed one by one in seq order (so their row locks
// are taken in the order every batch takes them, and a batch and a relay never wait on each
// other in a cycle) through guarded statements (JournalTx::transition, a DELETE ... AND state =
// the one read): a row a relay moved meanwhile is skipped. Deleting a webhook deletes its attempts
// and its audit_webhooks links too (there are no foreign keys to do it), then links it to this
// command's audit row, which keeps the ids a delete took.
Result<std::int64_t> pg_change_webhooks(PgConnection& db, QueueOp op, const WebhookFilter& filter,
                                        Millis now, const MaintenanceOptions& options = {},
                                        const std::function<void(const WebhookRow&)>& each = {});

// move_webhooks (maintenance.h) on PostgreSQL, with the same selection (from an agent's queue,
// the unassigned queue, or stored rows, acknowledged ones only with include_acknowledged), the
// same refusal (InvalidArgument, nothing changes) while a selected webhook's alert has a
// webhook inflight where they wait, and audit (action "move"). Batches by seq, each a
// transaction of its own changing its rows through JournalTx::transition in seq order: a
// webhook a relay moved meanwhile is skipped; each keeps its seq, so an alert's webhooks keep
// their order in the new queue.
Result<std::int64_t> pg_move_webhooks(PgConnection& db, const MoveFrom& from, const std::string& to,
                                      const WebhookFilter& filter,
                                      const MaintenanceOptions& options = {});

// purge_webhooks (maintenance.h) on PostgreSQL, with exactly its contract: deletes the
// webhooks in `states` (empty: delivered; queued, inflight or held refused, InvalidArgument,
// before anything is read) received before `before`, with their attempts and audit_webhooks
// links; a `stored` row only once every feed consumer has acknowledged its seq (none without
// a consumer row) unless options.force; such rows are skipped (see
// pg_unacknowledged_stored). Batches by seq, each in a transaction of its own, its rows locked
// in seq order and deleted only if still in the state read; audit row (action "purge") written
// in the first batch and kept current, none without options.audit.actor; dry run counts.
// Returns the rows deleted (dry run: that would be). Safe beside running relays: they never
// change a row in these states.
Result<std::int64_t> pg_purge_webhooks(PgConnection& db, Millis before,
                                       const std::vector<WebhookState>& states,
                                       const MaintenanceOptions& options = {});

// unacknowledged_stored (maintenance.h) on PostgreSQL: per feed consumer, the stored rows
// received before `before` it has not acknowledged; `total` the rows purge would keep.
Result<std::vector<UnacknowledgedStored>> pg_unacknowledged_stored(PgConnection& db, Millis before,
                                                                   std::int64_t* total = nullptr);

}  // namespace iarelay
