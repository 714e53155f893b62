// The chain step and the failover of an alert's tail (chain_step.h): journal reads and guarded
// transitions through the journal seam, on the writer's thread.
#include "dispatch/chain_step.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <set>

namespace iarelay::dispatch_internal {
namespace {

// The chain step (finish): rows of the agent's queue the writer walks, inside the transaction
// that records an outcome, looking for the next webhook of the same alert.
constexpr int kChainWalk = 256;

// Writer thread, inside the outcomes' transaction, after the finished webhooks are delivered.
void claim_next_of_alerts(JournalTx& tx, const std::vector<Chain*>& chains) {
  // An operator's pause committed since the dispatcher last looked: nothing more is sent.
  std::map<std::string, bool, std::less<>> paused;
  std::vector<Chain*> live;
  std::vector<AlertStep> steps;
  for (Chain* c : chains) {
    auto it = paused.find(c->agent_id);
    if (it == paused.end()) {
      auto row = tx.load_agent(c->agent_id);
      it = paused.emplace(c->agent_id, row && row->state == "paused").first;
    }
    if (it->second) continue;
    live.push_back(c);
    steps.push_back({c->agent_id, c->event_id, c->after_seq});
  }
  if (steps.empty()) return;
  // Each alert's next webhook after the finished one (event index), near the head of the queue
  // (one further in is left to the dispatcher's own walk), with no earlier webhook of the alert
  // still queued (a resend, a release: that one goes first, found by the dispatcher's walk).
  const auto found = tx.next_of_alerts_near_head(steps, kChainWalk);
  std::optional<bool> any_held;
  std::vector<AlertStep> claims;
  std::vector<const QueuedWebhook*> next;
  std::vector<Chain*> claiming;
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (!found[i]) continue;
    const QueuedWebhook& n = *found[i];
    const Chain& c = *live[i];
    if (n.next_attempt_at && *n.next_attempt_at > c.now) continue;  // backing off
    if (!c.all_kinds && std::find(c.kinds.begin(), c.kinds.end(), n.type) == c.kinds.end())
      continue;
    if (!any_held) any_held = tx.any_held_webhook();
    if (*any_held && tx.held_before(c.agent_id, c.event_id, n.service, n.seq)) continue;
    claims.push_back(steps[i]);
    next.push_back(&n);
    claiming.push_back(live[i]);
  }
  if (claims.empty()) return;
  // The reads above on a shared journal may straddle an operator's hold or release (and
  // `any_held` is the batch's first answer): each claim checks the alert's earlier webhooks
  // again, in its own statement.
  const auto claimed = tx.claim_next_of_alerts(claims, next);
  for (std::size_t j = 0; j < claiming.size(); ++j) {
    if (!claimed[j]) continue;
    claiming[j]->claimed = true;
    claiming[j]->next = *next[j];
  }
}

}  // namespace

void try_chain_steps(JournalTx& tx, const std::vector<Chain*>& chains) {
  for (Chain* c : chains) c->claimed = false;
  if (chains.empty()) return;
  Status s = tx.in_savepoint([&] { claim_next_of_alerts(tx, chains); });
  if (s) return;
  // A step's flag is set only once every claim of the savepoint returned: none is set here.
  if (chains.size() == 1) {
    spdlog::debug("chain step for agent {} skipped: {}", chains[0]->agent_id, s.message());
    return;
  }
  // One step failed them all (a row another session holds past lock_timeout, say): each again
  // on its own, so that only the one that fails is skipped.
  for (Chain* c : chains) {
    Status one = tx.in_savepoint([&] { claim_next_of_alerts(tx, {c}); });
    if (!one) spdlog::debug("chain step for agent {} skipped: {}", c->agent_id, one.message());
  }
}

bool OutcomeBatch::lease_holds(const std::string& agent, std::int64_t epoch,
                               const std::function<bool()>& fence) {
  auto key = std::make_pair(agent, epoch);
  auto it = fences_.find(key);
  if (it == fences_.end()) it = fences_.emplace(std::move(key), fence()).first;
  return it->second;
}

void OutcomeBatch::stage(OutcomeWrite w, std::shared_ptr<Chain> chain) {
  writes_.push_back(std::move(w));
  chains_.push_back(std::move(chain));
}

void OutcomeBatch::write(JournalTx& tx) {
  const std::vector<bool> moved = tx.record_outcomes(writes_);
  std::vector<Chain*> delivered;
  for (std::size_t i = 0; i < chains_.size(); ++i)
    if (chains_[i] && moved[i]) delivered.push_back(chains_[i].get());
  try_chain_steps(tx, delivered);
}

bool move_alert_tail(JournalTx& tx, const AlertMove& m) {
  for (const TailRow& r : tx.alert_tail(m.from, m.event_id, m.after_seq))
    if (r.agent || !m.to_cfg.hosts(r.service) ||
        (m.from_cfg.takes(r.type) && !m.to_cfg.takes(r.type)) || r.state == WebhookState::kHeld)
      return false;
  tx.reassign_alert_tail(m.from, m.to, m.event_id, m.after_seq);
  return true;
}

int move_queued(JournalTx& tx, const std::optional<std::string>& from,
                const std::vector<QueuedMove>& moves) {
  std::set<std::string, std::less<>> stayed;  // alerts with a webhook left where it was
  int moved = 0;
  for (const QueuedMove& m : moves) {
    if (!m.alert.empty() && stayed.count(m.alert)) continue;
    if (tx.reassign_queued(m.id, from, m.to))
      ++moved;
    else if (!m.alert.empty())
      stayed.insert(m.alert);
  }
  return moved;
}

}  // namespace iarelay::dispatch_internal
