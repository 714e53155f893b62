// The journal backend seam (issue 15): the operations the relay runs on its journal, inside a
// transaction of whichever backend holds it, SQLite (`journal = /path/file.db`, the embedded
// default) or PostgreSQL (`journal = postgresql://...`). Both pass one conformance suite
// (tests/integration/journal_pg/conformance_test.cpp): same outcomes, same rows.
// Being introduced: intake, dispatch and the tool still call store.h on SQLite directly; each
// moves to this interface as its PostgreSQL path is built (docs/high-availability.md).
// Errors throw (SQLite::Exception, JournalError), as store.h's functions do: the transaction
// they happen in is rolled back and transact() returns the Status. An operation that catches
// such an error and goes on: SQLite undoes the failed statement alone and commits the rest;
// PostgreSQL has aborted the whole transaction, so transact() rolls it back and fails (it is
// never reported as committed). A deadlock or serialization failure on PostgreSQL runs the
// operation again (up to 5 times): operations must only write the journal.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "common/status.h"
#include "journal/store.h"

namespace iarelay {

// A backend's database error, with the kind the caller acts on (Unavailable: the server is
// gone or failing over; IoError: the statement failed).
class JournalError : public std::runtime_error {
 public:
  explicit JournalError(Status s) : std::runtime_error(s.message()), status_(std::move(s)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// Where a webhook is: its state and the agent it is assigned to (none: held or not routed).
struct WebhookPlace {
  WebhookState state = WebhookState::kQueued;
  std::optional<std::string> assigned_agent;
};

// A webhook of an alert's tail on one agent (JournalTx::alert_tail).
struct TailRow {
  std::optional<std::string> agent;  // asked for by identifier
  std::string type, service;
  WebhookState state = WebhookState::kQueued;
};

// One outcome of a batch (JournalTx::record_outcomes): record_outcome's arguments.
struct OutcomeWrite {
  std::optional<AttemptRecord> attempt;  // none: no call was made
  std::string id;
  WebhookState from = WebhookState::kInflight;
  WebhookState to = WebhookState::kDelivered;
  TransitionFields fields;
};

// One chain step of a batch (JournalTx::next_of_alerts_near_head): the alert `event_id` on
// `agent` after the webhook of `after_seq`.
struct AlertStep {
  std::string agent, event_id;
  std::int64_t after_seq = 0;
};

// The operations of one transaction. Semantics as the functions of store.h of the same names.
class JournalTx {
 public:
  virtual ~JournalTx() = default;
  virtual InsertOutcome insert_webhook(const NewWebhook& w) = 0;
  // As insert_webhook for each, in order (a later one may be a duplicate of an earlier one).
  // PostgreSQL sends them as one statement (one round trip for a group commit's inserts).
  virtual std::vector<InsertOutcome> insert_webhooks(const std::vector<NewWebhook>& batch) {
    std::vector<InsertOutcome> out;
    out.reserve(batch.size());
    for (const NewWebhook& w : batch) out.push_back(insert_webhook(w));
    return out;
  }
  virtual bool transition(std::string_view id, WebhookState from, WebhookState to,
                          const TransitionFields& fields = {}) = 0;
  virtual int requeue_inflight() = 0;
  // As requeue_inflight, for the webhooks assigned to `agent` only.
  virtual int requeue_inflight_of(std::string_view agent) = 0;
  virtual void record_attempt(const AttemptRecord& a) = 0;
  // A call's outcome: its attempt row (`attempt`, null when no call was made) and the webhook's
  // transition, as record_attempt then transition. PostgreSQL: one statement (one round trip
  // per outcome).
  virtual bool record_outcome(const AttemptRecord* attempt, std::string_view id, WebhookState from,
                              WebhookState to, const TransitionFields& fields) {
    if (attempt) record_attempt(*attempt);
    return transition(id, from, to, fields);
  }
  // record_outcome of each, in order: whether each moved. For outcomes that do not depend on
  // each other (a loop turn's: no two of one webhook). PostgreSQL: one round trip.
  virtual std::vector<bool> record_outcomes(const std::vector<OutcomeWrite>& batch) {
    std::vector<bool> out;
    out.reserve(batch.size());
    for (const OutcomeWrite& o : batch)
      out.push_back(
          record_outcome(o.attempt ? &*o.attempt : nullptr, o.id, o.from, o.to, o.fields));
    return out;
  }
  virtual std::optional<AgentRow> load_agent(std::string_view id) = 0;
  virtual bool set_agent_state(std::string_view id, std::string_view state,
                               std::optional<std::string> reason,
                               std::optional<Millis> paused_until, bool unless_paused) = 0;
  virtual std::int64_t load_cursor(std::string_view name) = 0;
  virtual void save_cursor(std::string_view name, std::int64_t seq) = 0;
  virtual void ack_consumer(std::string_view name, std::int64_t seq) = 0;
  virtual void rewind_cursor(std::string_view name, std::int64_t seq) = 0;
  virtual void add_audit(std::string_view actor, std::string_view action, std::string_view filter,
                         std::int64_t affected, std::string_view detail = "") = 0;
  virtual std::vector<QueuedWebhook> scan_queue(const std::optional<std::string>& agent,
                                                std::int64_t after_seq, int limit) = 0;
  virtual std::optional<std::string> load_payload(std::string_view id) = 0;
  // Waits for this transaction's turn to take seqs, held until it ends, so that seqs become
  // visible in their order across relays (a reader never sees seq 8 before seq 7). The first
  // insert of a transaction takes it by itself; a group commit takes it before forming its
  // batch. SQLite: nothing to wait for (one writer).
  virtual void lock_seq_order() {}
  // Whether `owner` still holds the lease of `agent` at `epoch` (docs/high-availability.md),
  // locking it until this transaction ends, so no other relay takes the agent before its
  // commit. A dispatcher's write for an agent checks it first and writes nothing when false:
  // another relay took the agent and put its inflight webhooks back in the queue. SQLite: one
  // relay owns every agent, always true.
  virtual bool fence(std::string_view agent, std::string_view owner, std::int64_t epoch) {
    (void)agent, (void)owner, (void)epoch;
    return true;
  }
  // Whether a relay other than `owner` holds a live lease of `agent`: it delivers to it, so
  // a relay whose configuration no longer has the agent leaves its queue alone. SQLite: false.
  virtual bool leased_elsewhere(std::string_view agent, std::string_view owner) {
    (void)agent, (void)owner;
    return false;
  }

  // --- the dispatcher's and the feed's reads (store.h's functions of the same names) --------
  virtual std::vector<AgentRow> load_agents() = 0;
  virtual std::int64_t last_queued_seq(std::string_view agent) = 0;
  virtual bool queued_before(std::string_view agent, std::string_view event_id,
                             std::int64_t before_seq) = 0;
  virtual std::optional<QueuedWebhook> next_queued_of_event(std::string_view agent,
                                                            std::string_view event_id,
                                                            std::int64_t after_seq) = 0;
  virtual int queued_ahead(std::string_view agent, std::int64_t before_seq, int limit) = 0;
  virtual bool queued_of_event_ahead(std::string_view agent, std::string_view event_id,
                                     std::int64_t before_seq) = 0;
  // The chain step's read: the alert's next queued webhook on `agent` after `after_seq`, when
  // fewer than `walk` webhooks are queued ahead of it and none of them is of the alert
  // (next_queued_of_event, queued_ahead and queued_of_event_ahead together). PostgreSQL: one
  // statement.
  virtual std::optional<QueuedWebhook> next_of_alert_near_head(std::string_view agent,
                                                               std::string_view event_id,
                                                               std::int64_t after_seq, int walk) {
    auto found = next_queued_of_event(agent, event_id, after_seq);
    if (!found || queued_ahead(agent, found->seq, walk) >= walk ||
        queued_of_event_ahead(agent, event_id, found->seq))
      return std::nullopt;
    return found;
  }
  // next_of_alert_near_head of each step (of different alerts). PostgreSQL: one round trip.
  virtual std::vector<std::optional<QueuedWebhook>> next_of_alerts_near_head(
      const std::vector<AlertStep>& steps, int walk) {
    std::vector<std::optional<QueuedWebhook>> out;
    out.reserve(steps.size());
    for (const AlertStep& s : steps)
      out.push_back(next_of_alert_near_head(s.agent, s.event_id, s.after_seq, walk));
    return out;
  }
  // The chain step's claim of `w`, the next webhook of alert `event_id` on `agent` (queued ->
  // inflight, assigned to `agent`, an attempt counted): only while no earlier webhook of the
  // alert is queued on `agent` or held for its service. SQLite: transition() (its one writer
  // commits nothing between the chain step's reads and its claim). PostgreSQL: checked in the
  // claiming statement, one snapshot, so an operator's hold or release committed between the
  // chain step's reads cannot let the later webhook go first.
  virtual bool claim_next_of_alert(const QueuedWebhook& w, std::string_view agent,
                                   std::string_view event_id) {
    (void)event_id;
    TransitionFields f;
    f.assigned_agent = std::optional<std::string>(std::string(agent));
    f.increment_attempts = true;
    return transition(w.id, WebhookState::kQueued, WebhookState::kInflight, f);
  }
  // claim_next_of_alert of each (step i claims `next[i]`): whether each was claimed.
  // PostgreSQL: one round trip.
  virtual std::vector<bool> claim_next_of_alerts(const std::vector<AlertStep>& steps,
                                                 const std::vector<const QueuedWebhook*>& next) {
    std::vector<bool> out;
    out.reserve(steps.size());
    for (std::size_t i = 0; i < steps.size(); ++i)
      out.push_back(claim_next_of_alert(*next[i], steps[i].agent, steps[i].event_id));
    return out;
  }
  virtual std::optional<bool> queued_of_event_within(std::string_view agent,
                                                     std::string_view event_id,
                                                     std::int64_t before_seq, int limit) = 0;
  // In byte order of the identifiers on both backends, whatever the database's collation.
  virtual std::vector<std::string> agents_with_queued() = 0;
  virtual bool held_before(std::string_view agent, std::string_view event_id,
                           std::string_view service, std::int64_t before_seq) = 0;
  virtual bool any_held_webhook() = 0;
  virtual std::vector<FeedMessage> feed_after_bounded(std::int64_t after, int max,
                                                      std::size_t max_bytes) = 0;
  virtual std::int64_t newest_seq() = 0;
  // The queue gauges of /metrics (store.h), journal-wide: on PostgreSQL every relay reports
  // the same figures.
  virtual std::vector<QueueDepth> queue_depths() = 0;
  virtual OperatorBacklog operator_backlog() = 0;
  // A number that changes whenever another connection commits (SQLite's PRAGMA data_version),
  // so a reader can skip work when nothing changed; nullopt when the backend has none (read
  // again each time).
  virtual std::optional<std::int64_t> data_version() { return std::nullopt; }

  // --- the dispatcher's writes beyond transitions ---------------------------------------------
  // Runs `fn` under a savepoint: ok, or why it threw, its changes undone and the transaction
  // going on. Rethrows when the transaction itself is gone (SQLite rolled it back: an I/O
  // error, a full disk; PostgreSQL's connection lost).
  virtual Status in_savepoint(const std::function<void()>& fn) = 0;
  virtual std::optional<WebhookPlace> locate(std::string_view id) = 0;
  // The webhooks of alert `event_id` with seq > after_seq assigned to `agent`, queued or held.
  virtual std::vector<TailRow> alert_tail(std::string_view agent, std::string_view event_id,
                                          std::int64_t after_seq) = 0;
  // Assigns queued webhook `id` to `to`, due now, only while it is assigned to `from` (nullopt:
  // none, held for its service): checked in the same statement, so an operator's move or
  // another relay's committed meanwhile is never overwritten. Whether it moved.
  virtual bool reassign_queued(std::string_view id, const std::optional<std::string>& from,
                               std::string_view to) = 0;
  // Assigns those of them that are queued to `to`; returns how many.
  virtual int reassign_alert_tail(std::string_view from, std::string_view to,
                                  std::string_view event_id, std::int64_t after_seq) = 0;
};

class JournalBackend {
 public:
  virtual ~JournalBackend() = default;
  // Runs `op` in one transaction and commits it (durably, at the backend's sync level), or
  // rolls it back when `op` throws, returning why.
  virtual Status transact(const std::function<void(JournalTx&)>& op) = 0;
  // Runs `op`'s reads in one read-only transaction: every read sees one snapshot, and nothing
  // is locked against writers (SQLite: a deferred transaction; PostgreSQL: REPEATABLE READ,
  // READ ONLY). A write in `op` fails.
  virtual Status read(const std::function<void(JournalTx&)>& op) = 0;
  // As read, without a snapshot: each statement sees the commits made before it. For a single
  // read, which then costs no transaction (the dispatcher's payload of each call).
  virtual Status read_each(const std::function<void(JournalTx&)>& op) { return read(op); }
};

// The SQLite journal on an open, migrated connection (not owned; one thread at a time).
std::unique_ptr<JournalBackend> sqlite_backend(SQLite::Database& db);
// A read-only connection of its own to the SQLite journal at `path`, for one thread at a time:
// read() only. With `cache_statements` (the dispatcher's reader) its prepared statements are
// cached from the first read() on, on that thread, and it must be destroyed there; without, it
// may move between threads (the feed's pool of readers).
Result<std::unique_ptr<JournalBackend>> open_sqlite_reader(const std::string& path,
                                                           bool cache_statements = true);
// Runs `op` on `db` inside the transaction its caller already holds (the Writer's group
// transaction): the seam's operations on SQLite without a transaction of their own.
void run_in_sqlite_tx(SQLite::Database& db, const std::function<void(JournalTx&)>& op);

}  // namespace iarelay
