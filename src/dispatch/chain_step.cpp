// The chain step and the failover of an alert's tail (chain_step.h): journal reads and guarded
// transitions on the Writer's connection.
#include "dispatch/chain_step.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <exception>

#include "journal/statement_cache.h"

namespace iarelay::dispatch_internal {
namespace {

// The chain step (finish): rows of the agent's queue the writer walks, inside the transaction
// that records an outcome, looking for the next webhook of the same alert.
constexpr int kChainWalk = 256;

// Writer thread, inside the outcome's transaction, after the finished webhook is delivered.
void claim_next_of_alert(SQLite::Database& db, Chain& c) {
  c.claimed = false;
  ChainBatch own;
  ChainBatch& batch = c.batch ? *c.batch : own;
  // An operator's pause committed since the dispatcher last looked: nothing more is sent.
  auto paused = batch.paused.find(c.agent_id);
  if (paused == batch.paused.end()) {
    auto row = load_agent(db, c.agent_id);
    paused = batch.paused.emplace(c.agent_id, row && row->state == "paused").first;
  }
  if (paused->second) return;
  // The alert's next webhook after the finished one (event index), near the head of the queue
  // (one further in is left to the dispatcher's own walk), with no earlier webhook of the alert
  // still queued (a resend, a release: that one goes first, found by the dispatcher's walk).
  auto found = next_queued_of_event(db, c.agent_id, c.event_id, c.after_seq);
  if (!found || queued_ahead(db, c.agent_id, found->seq, kChainWalk) >= kChainWalk ||
      queued_of_event_ahead(db, c.agent_id, c.event_id, found->seq))
    return;
  QueuedWebhook& next = *found;
  if (next.next_attempt_at && *next.next_attempt_at > c.now) return;  // backing off
  if (!c.all_kinds && std::find(c.kinds.begin(), c.kinds.end(), next.type) == c.kinds.end()) return;
  if (!batch.any_held) batch.any_held = any_held_webhook(db);
  const bool any_held = *batch.any_held;
  if (any_held && held_before(db, c.agent_id, c.event_id, next.service, next.seq)) return;
  TransitionFields f;
  f.assigned_agent = std::optional<std::string>(c.agent_id);
  f.increment_attempts = true;
  if (!transition(db, next.id, WebhookState::kQueued, WebhookState::kInflight, f)) return;
  c.claimed = true;
  c.next = std::move(next);
}

}  // namespace

void try_chain_step(SQLite::Database& db, Chain& c) {
  cached_statement(db, "SAVEPOINT chain")->exec();
  try {
    claim_next_of_alert(db, c);
  } catch (const std::exception& e) {
    c.claimed = false;
    // SQLite rolled the whole transaction back (I/O error, disk full): the outcome fails too.
    if (sqlite3_get_autocommit(db.getHandle())) throw;
    cached_statement(db, "ROLLBACK TO chain")->exec();
    spdlog::debug("chain step for agent {} skipped: {}", c.agent_id, e.what());
  }
  cached_statement(db, "RELEASE chain")->exec();
}

bool move_alert_tail(SQLite::Database& db, const AlertMove& m) {
  auto q = cached_statement(db,
                            // "+": the event index (an alert has few rows).
                            "SELECT agent, type, service, state FROM webhooks WHERE event_id=? "
                            "AND seq>? AND +assigned_agent=? AND (+state='queued' OR "
                            "+state='held')");
  q->bind(1, m.event_id);
  q->bind(2, m.after_seq);
  q->bind(3, m.from);
  bool movable = true;
  while (movable && q->executeStep()) {
    const std::string type = q->getColumn(1).getString();
    if (!q->getColumn(0).isNull() || !m.to_cfg.hosts(q->getColumn(2).getString()) ||
        (m.from_cfg.takes(type) && !m.to_cfg.takes(type)) || q->getColumn(3).getString() == "held")
      movable = false;
  }
  q->reset();
  if (!movable) return false;
  auto u = cached_statement(db,
                            "UPDATE webhooks SET assigned_agent=? WHERE event_id=? AND seq>? AND "
                            "+assigned_agent=? AND +state='queued'");
  u->bind(1, m.to);
  u->bind(2, m.event_id);
  u->bind(3, m.after_seq);
  u->bind(4, m.from);
  u->exec();
  u->reset();
  return true;
}

}  // namespace iarelay::dispatch_internal
