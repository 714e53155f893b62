// The chain step and the failover of an alert's tail (chain_step.h): journal reads and guarded
// transitions through the journal seam, on the writer's thread.
#include "dispatch/chain_step.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>

namespace iarelay::dispatch_internal {
namespace {

// The chain step (finish): rows of the agent's queue the writer walks, inside the transaction
// that records an outcome, looking for the next webhook of the same alert.
constexpr int kChainWalk = 256;

// Writer thread, inside the outcome's transaction, after the finished webhook is delivered.
void claim_next_of_alert(JournalTx& tx, Chain& c) {
  c.claimed = false;
  ChainBatch own;
  ChainBatch& batch = c.batch ? *c.batch : own;
  // An operator's pause committed since the dispatcher last looked: nothing more is sent.
  auto paused = batch.paused.find(c.agent_id);
  if (paused == batch.paused.end()) {
    auto row = tx.load_agent(c.agent_id);
    paused = batch.paused.emplace(c.agent_id, row && row->state == "paused").first;
  }
  if (paused->second) return;
  // The alert's next webhook after the finished one (event index), near the head of the queue
  // (one further in is left to the dispatcher's own walk), with no earlier webhook of the alert
  // still queued (a resend, a release: that one goes first, found by the dispatcher's walk).
  auto found = tx.next_of_alert_near_head(c.agent_id, c.event_id, c.after_seq, kChainWalk);
  if (!found) return;
  QueuedWebhook& next = *found;
  if (next.next_attempt_at && *next.next_attempt_at > c.now) return;  // backing off
  if (!c.all_kinds && std::find(c.kinds.begin(), c.kinds.end(), next.type) == c.kinds.end()) return;
  if (!batch.any_held) batch.any_held = tx.any_held_webhook();
  const bool any_held = *batch.any_held;
  if (any_held && tx.held_before(c.agent_id, c.event_id, next.service, next.seq)) return;
  // The reads above on a shared journal may straddle an operator's hold or release (and
  // `any_held` is the batch's first answer): the claim checks the alert's earlier webhooks
  // again, in its own statement.
  if (!tx.claim_next_of_alert(next, c.agent_id, c.event_id)) return;
  c.claimed = true;
  c.next = std::move(next);
}

}  // namespace

void try_chain_step(JournalTx& tx, Chain& c) {
  Status s = tx.in_savepoint([&] { claim_next_of_alert(tx, c); });
  if (!s) {
    c.claimed = false;
    spdlog::debug("chain step for agent {} skipped: {}", c.agent_id, s.message());
  }
}

bool move_alert_tail(JournalTx& tx, const AlertMove& m) {
  for (const TailRow& r : tx.alert_tail(m.from, m.event_id, m.after_seq))
    if (r.agent || !m.to_cfg.hosts(r.service) ||
        (m.from_cfg.takes(r.type) && !m.to_cfg.takes(r.type)) || r.state == WebhookState::kHeld)
      return false;
  tx.reassign_alert_tail(m.from, m.to, m.event_id, m.after_seq);
  return true;
}

}  // namespace iarelay::dispatch_internal
