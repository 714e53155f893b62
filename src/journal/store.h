// The journal's operations and queries: the only code that writes webhook, attempt, agent,
// cursor and audit rows. Each function takes the connection it runs on: a Writer op's
// connection for writes, a reader's for queries. They throw SQLite::Exception on database
// errors (caught by the Writer or the caller's entry point); expected outcomes are values.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.h"

namespace SQLite {
class Database;
class Statement;
}  // namespace SQLite

namespace iarelay {

// The delivery state of a webhook (docs/journal.md, "States"). Changes only through transition().
enum class WebhookState {
  kStored,     // on an edge relay for its feed; no local agent will be called
  kQueued,     // waiting for its agent (or, assigned_agent NULL, for any agent of its service)
  kInflight,   // a callback call is under way; returns to queued on restart
  kDelivered,  // an agent answered 2xx
  kFailed,     // permanent error or attempt budget spent; only `iarelay resend` revives it
  kDiscarded,  // no agent could take it on arrival (reason in last_error); resend revives it
  kHeld,       // held by an operator (`iarelay hold`): never claimed until `iarelay release`
};
std::string_view to_string(WebhookState s);
std::optional<WebhookState> parse_state(std::string_view s);

struct NewWebhook {
  std::string id;
  std::string source = "direct";
  std::optional<std::string> source_id;
  std::optional<std::string> idempotency_key;
  Millis received_at = 0;
  std::string service;
  std::optional<std::string> agent;
  std::string type;
  std::optional<std::string> event_id;
  WebhookState state = WebhookState::kQueued;
  std::optional<std::string> assigned_agent;
  std::optional<std::string> reason;  // stored in last_error (why discarded)
  std::string payload;
};

struct InsertOutcome {
  std::string id;
  WebhookState state;
  bool duplicate = false;
  std::int64_t seq = 0;
};
// Inserts the webhook, or, when (source, source_id) or (service, idempotency_key) is already
// stored, returns the stored one with duplicate = true and changes nothing. A webhook from an
// upstream's feed keeps the upstream's id (id == source_id): one stored under that id by any
// source is a duplicate too; a row of that id that is another webhook makes it stored under a
// new id.
InsertOutcome insert_webhook(SQLite::Database& db, const NewWebhook& w);

// Fields a transition may set besides the state; unset fields keep their value.
struct TransitionFields {
  std::optional<std::optional<std::string>> assigned_agent;  // nullopt: keep; {nullopt}: NULL
  std::optional<std::optional<Millis>> next_attempt_at;
  std::optional<int> attempts;      // set to
  bool increment_attempts = false;  // attempts = attempts + 1
  std::optional<Millis> delivered_at;
  bool clear_delivered_at = false;  // delivered_at = NULL (a replay: not delivered again yet)
  std::optional<std::optional<int>> last_status;
  std::optional<std::optional<std::string>> last_error;
};
// The state machine's one door: UPDATE ... WHERE id = :id AND state = :from. Returns whether
// the row was in `from` (and so changed); false means someone else moved it first.
bool transition(SQLite::Database& db, std::string_view id, WebhookState from, WebhookState to,
                const TransitionFields& fields = {});

// Deletes the webhook, its attempts and its audit_webhooks links, but only while it is still in
// `state` (the guard of transition(): a row the daemon moved meanwhile is left alone). Returns
// whether it was deleted.
bool delete_webhook(SQLite::Database& db, std::string_view id, WebhookState state);

// Ties audit row `audit_id` to a webhook it changed (audit_webhooks), for `iarelay show`.
void link_audit(SQLite::Database& db, std::int64_t audit_id, std::string_view webhook_id);

// On start: every inflight webhook back to queued. Returns how many.
int requeue_inflight(SQLite::Database& db);

struct AttemptRecord {
  std::string webhook_id;
  int attempt = 0;
  std::string agent;
  Millis started_at = 0;
  Millis duration_ms = 0;
  std::optional<int> http_status;
  std::optional<std::string> error;
  std::string outcome;  // delivered|retry|failed
};
void record_attempt(SQLite::Database& db, const AttemptRecord& a);

// --- agents -------------------------------------------------------------------------------
struct AgentRow {
  std::string id;
  std::string state;  // up|down|paused
  std::string state_since;
  std::optional<std::string> reason;
  std::optional<Millis> paused_until;
};
std::vector<AgentRow> load_agents(SQLite::Database& db);
std::optional<AgentRow> load_agent(SQLite::Database& db, std::string_view id);
// Sets the agent's state. With `unless_paused`, a paused agent is left alone (the daemon's
// up/down changes must not undo an operator's pause). Returns whether a row changed.
bool set_agent_state(SQLite::Database& db, std::string_view id, std::string_view state,
                     std::optional<std::string> reason, std::optional<Millis> paused_until,
                     bool unless_paused);

// --- the queue gauges (/metrics) --------------------------------------------------------------
// Webhooks of one agent ("": assigned to none, waiting for any agent of their service) in one
// state, queued or inflight, with the oldest one's received_at.
struct QueueDepth {
  std::string agent;
  std::string state;
  std::int64_t webhooks = 0;
  Millis oldest_received_at = 0;
};
std::vector<QueueDepth> queue_depths(SQLite::Database& db);
// Webhooks no retry will deliver: `failed` and `discarded` rows wait for an operator (`iarelay
// resend`, or `purge`), `held` ones for `iarelay release`. Counted as one range of the index
// webhooks_state (state, received_at) per state, so the cost is the backlog's size, never the
// delivered history's (status_report.h's operator_backlog on SQLite).
struct OperatorBacklog {
  std::int64_t failed = 0, discarded = 0, held = 0;
};

// --- cursors, consumers, audit --------------------------------------------------------------
std::int64_t load_cursor(SQLite::Database& db, std::string_view name);  // 0 if none
void save_cursor(SQLite::Database& db, std::string_view name, std::int64_t seq);
void ack_consumer(SQLite::Database& db, std::string_view name, std::int64_t seq);
void add_audit(SQLite::Database& db, std::string_view actor, std::string_view action,
               std::string_view filter, std::int64_t affected, std::string_view detail = "");

// --- queries --------------------------------------------------------------------------------
struct QueuedWebhook {
  std::int64_t seq = 0;
  std::string id;
  std::string service;
  std::optional<std::string> agent;
  std::string type;
  std::string event_id;
  int attempts = 0;
  std::optional<Millis> next_attempt_at;
  Millis received_at = 0;
};
// Queued webhooks of one agent (or, `agent` nullopt, those held for any agent) with
// seq > after_seq, in arrival order, at most `limit`, by index. Payloads are not loaded.
std::vector<QueuedWebhook> scan_queue(SQLite::Database& db, const std::optional<std::string>& agent,
                                      std::int64_t after_seq, int limit);
// The highest seq queued for `agent`, 0 when none (one seek in the queue index).
std::int64_t last_queued_seq(SQLite::Database& db, std::string_view agent);
// Whether a queued webhook of `agent` with this event id and seq < before_seq exists (by the
// event index): the dispatcher's ordering check for rows found past the head of the queue.
bool queued_before(SQLite::Database& db, std::string_view agent, std::string_view event_id,
                   std::int64_t before_seq);
// The first queued webhook of `agent` with this event id and seq > after_seq (by the event
// index, from after_seq on): the dispatcher's chain step (the next webhook of an alert).
std::optional<QueuedWebhook> next_queued_of_event(SQLite::Database& db, std::string_view agent,
                                                  std::string_view event_id,
                                                  std::int64_t after_seq);
// How many queued webhooks of `agent` have seq < before_seq, counting at most `limit` (from
// the queue index alone, no row read).
int queued_ahead(SQLite::Database& db, std::string_view agent, std::int64_t before_seq, int limit);
// Whether a queued webhook of `agent` with this event id and seq < before_seq exists, by the
// queue index: reads every queued row of the agent before before_seq, so only for a seq near the
// head of the queue (queued_ahead small); queued_before reads the event's rows instead.
bool queued_of_event_ahead(SQLite::Database& db, std::string_view agent, std::string_view event_id,
                           std::int64_t before_seq);
// As queued_of_event_ahead, reading at most `limit` queued rows of `agent` before before_seq:
// nullopt when there are more and none of those read is of the event (not known).
std::optional<bool> queued_of_event_within(SQLite::Database& db, std::string_view agent,
                                           std::string_view event_id, std::int64_t before_seq,
                                           int limit);
std::optional<std::string> load_payload(SQLite::Database& db, std::string_view id);
// Every agent identifier that has queued webhooks assigned to it, in text order: one index seek
// per distinct assigned_agent (webhooks_queue), not a scan of the table.
std::vector<std::string> agents_with_queued(SQLite::Database& db);
// Whether a held webhook (an operator's hold) stands before `before_seq` in the delivery order
// of `agent`: one of the same alert (`event_id` and `service`, by the event index) held on any
// agent (failover, a reroute or a move may have taken the later webhooks elsewhere), or, with
// `event_id` empty (fifo ordering), any held for this agent. The dispatcher's check that a
// hold does not let later webhooks overtake the held one.
bool held_before(SQLite::Database& db, std::string_view agent, std::string_view event_id,
                 std::string_view service, std::int64_t before_seq);
// The query of held_before for an alert (tests check its plan).
extern const char* const kHeldOfAlertBeforeSql;
// Whether any webhook is held (one seek in the state index).
bool any_held_webhook(SQLite::Database& db);

struct FeedMessage {
  std::int64_t seq = 0;
  std::string id, service, type;
  std::optional<std::string> agent;
  Millis received_at = 0;
  std::string payload;
};
// Stored webhooks with seq > after, oldest first, at most max.
std::vector<FeedMessage> feed_after(SQLite::Database& db, std::int64_t after, int max);

// Filters of `iarelay list|resend|purge`; empty fields do not filter.
struct WebhookFilter {
  std::vector<WebhookState> states;
  std::optional<std::string> agent;  // matches agent or assigned_agent
  std::optional<std::string> service;
  std::optional<std::string> type;
  std::optional<std::string> event;
  std::optional<Millis> since, until;  // received_at
  std::optional<std::int64_t> limit;
  std::vector<std::string> ids;
  bool oldest_first = false;
};
struct WebhookRow {
  std::int64_t seq = 0;
  std::string id, source;
  std::optional<std::string> source_id;
  std::string received_at, service;
  std::optional<std::string> agent;
  std::string type;
  std::optional<std::string> event_id;
  std::string state;
  std::optional<std::string> assigned_agent;
  int attempts = 0;
  std::optional<std::string> next_attempt_at, delivered_at;
  std::optional<int> last_status;
  std::optional<std::string> last_error;
  std::optional<std::string> payload;  // only when asked for
};
// What `iarelay show` reads of one webhook besides its row, on either backend: who changed it
// by hand (audit_webhooks joined to audit, oldest first), its attempts in the order recorded,
// its agent's row, and the webhook it waits behind (queued or held: the newest earlier one of
// its alert, or of its agent with ordering = fifo, still to be delivered).
struct OperatorAction {
  std::string at, actor, action, command;  // command: the audit row's filter
};
struct WebhookAttempt {
  std::int64_t attempt = 0;
  std::string agent, started_at;
  std::optional<std::int64_t> duration_ms, http_status;
  std::optional<std::string> error;
  std::string outcome;
};
struct EarlierWebhook {
  std::string id;
  std::int64_t seq = 0;
  std::string state;
};
struct WebhookDetail {
  WebhookRow row;  // with its payload
  std::vector<OperatorAction> operator_actions;
  std::vector<WebhookAttempt> attempts;
  std::optional<AgentRow> agent;        // of assigned_agent, when it has a row
  std::optional<EarlierWebhook> ahead;  // what it waits behind, if anything
};
// The columns read_webhook_row() reads, in order, for a SELECT list ("NULL" in place of the
// payload).
extern const char* const kWebhookRowColumns;
WebhookRow read_webhook_row(SQLite::Statement& q);
// Streams matching rows (newest first unless oldest_first); stop early by returning false.
void for_each_webhook(SQLite::Database& db, const WebhookFilter& f, bool with_payload,
                      const std::function<bool(const WebhookRow&)>& fn);

// --- the feed's bounds and the consumer's rewind (issue 9) ----------------------------------
// feed_after, but stops reading once the payloads read add up to more than `max_bytes` (the
// row that crosses it is returned too, so at least one row when any is newer than `after`).
std::vector<FeedMessage> feed_after_bounded(SQLite::Database& db, std::int64_t after, int max,
                                            std::size_t max_bytes);
// The largest seq this journal has ever assigned (AUTOINCREMENT's record, else the largest
// stored), 0 when none. What a feed reports as "newest".
std::int64_t newest_seq(SQLite::Database& db);
// Sets the cursor to `seq` even when that is lower (save_cursor only moves it forward): the
// poller's answer to an upstream whose newest seq is below the cursor.
void rewind_cursor(SQLite::Database& db, std::string_view name, std::int64_t seq);

}  // namespace iarelay
