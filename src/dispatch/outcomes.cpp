// Outcomes of calls (dispatcher_impl.h): the agent's health after each, the attempt and the
// outcome journaled in one Writer op per loop turn (with the chain step or the alert's failover
// in the same transaction), and journal writes that failed made again.
#include <spdlog/spdlog.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dispatch/chain_step.h"
#include "dispatch/dispatcher_impl.h"
#include "dispatch/http_call.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay::dispatch_internal {

void DispatcherImpl::track_health(Agent& a, const InHand& item, const RetryDecision& d) {
  if (d.kind == RetryDecision::Kind::kRetryable && a.streak.size() < kMaxStreak)
    a.streak.insert(item.w.seq);
  auto change = a.health.on_result(d.agent_failure, item.probe, steady_millis());
  if (!d.agent_failure && change == AgentHealth::Change::kNone) a.streak.clear();
  if (change == AgentHealth::Change::kWentDown) {
    std::string reason = std::to_string(a.health.consecutive_failures()) +
                         " consecutive failures; last: " + truncate(d.reason, 200);
    spdlog::warn("agent {} down: {}", a.cfg.id, reason);
    a.candidates.clear();
    ctx_.directory->set_availability(a.cfg.id, Availability::kDown);
    record_agent_state(a.cfg.id, "down", reason);
    update_gauges(a);
  } else if (change == AgentHealth::Change::kCameUp) {
    spdlog::info("agent {} up again", a.cfg.id);
    // The probe's webhook is done; the others of the outage go at once. (A chain step needs
    // no wait for them: it claims only its alert's first queued webhook, and only when due,
    // so an expedited one of the same alert is never passed.)
    a.streak.erase(item.w.seq);
    a.expedite = std::move(a.streak);
    a.streak.clear();
    a.dirty = true;
    held_dirty_ = true;
    ctx_.directory->set_availability(a.cfg.id, Availability::kUp);
    record_agent_state(a.cfg.id, "up", std::nullopt);
    update_gauges(a);
  }
}

void DispatcherImpl::record_agent_state(const std::string& id, const std::string& state,
                                        std::optional<std::string> reason) {
  ctx_.writer->submit_tx(
      [id, state, reason](JournalTx& tx) {
        tx.set_agent_state(id, state, reason, std::nullopt, /*unless_paused=*/true);
      },
      [id](const Status& s) {
        if (!s) spdlog::warn("could not record the state of agent {}: {}", id, s.message());
      });
}

// Journals the attempt (when a call was made) and the outcome; the key stays busy until the
// outcome is durable so the next webhook of the key cannot overtake it.
void DispatcherImpl::finish(Agent& a, InHand item, const CallOutcome& outcome,
                            const RetryDecision& d, Millis started, Millis duration, bool called) {
  const Millis now = now_millis();
  auto attempt = std::make_shared<AttemptRecord>();
  attempt->webhook_id = item.w.id;
  attempt->attempt = item.attempt;
  attempt->agent = a.cfg.id;
  attempt->started_at = started;
  attempt->duration_ms = duration;
  if (outcome.kind == CallOutcome::Kind::kHttp && called) attempt->http_status = outcome.status;
  TransitionFields f;
  WebhookState to = WebhookState::kDelivered;
  std::optional<int> status;
  if (called && outcome.kind == CallOutcome::Kind::kHttp) status = outcome.status;
  std::string target;  // failover destination
  switch (d.kind) {
    case RetryDecision::Kind::kDelivered:
      attempt->outcome = "delivered";
      f.delivered_at = now;
      f.last_status = status;
      f.last_error = std::optional<std::string>();
      f.next_attempt_at = std::optional<Millis>();
      if (a.delivered) a.delivered->inc();
      break;
    case RetryDecision::Kind::kRetryable: {
      attempt->outcome = "retry";
      attempt->error = truncate(d.reason, 1000);
      to = WebhookState::kQueued;
      f.last_status = status;
      f.last_error = std::optional<std::string>(truncate(d.reason, 1000));
      f.next_attempt_at = std::optional<Millis>(d.next_attempt_at);
      if (!called) {
        // No call was made (a local error): the claim's attempt is given back, and the
        // webhook stays with this agent (the agent did not fail).
        f.attempts = item.w.attempts;
        break;
      }
      // Under fifo the agent's queue is one sequence: its head stays and is retried here
      // (should the agent go down, the failover sweep moves the queue, in order).
      if (!item.w.agent && a.cfg.ordering != Ordering::kFifo &&
          a.keys_ordering != Ordering::kFifo) {
        if (auto other = ctx_.directory->available_agent_for(
                item.w.service, a.cfg.id, a.cfg.takes(item.w.type) ? item.w.type : "")) {
          target = *other;
          f.assigned_agent = std::optional<std::string>(target);
          f.next_attempt_at = std::optional<Millis>();
        }
      }
      if (a.retried) a.retried->inc();
      break;
    }
    case RetryDecision::Kind::kPermanent:
      attempt->outcome = "failed";
      attempt->error = truncate(d.reason, 1000);
      to = WebhookState::kFailed;
      f.last_status = status;
      f.last_error = std::optional<std::string>(truncate(d.reason, 1000));
      if (a.failed) a.failed->inc();
      if (d.reason.rfind("attempt budget", 0) == 0)
        spdlog::warn("webhook {} failed for {}: {}", item.w.id, a.cfg.id, truncate(d.reason, 200));
      break;
  }
  if (!called) attempt.reset();
  const std::string id = item.w.id;
  std::shared_ptr<Chain> chain;
  if (d.kind == RetryDecision::Kind::kDelivered && called && may_chain(a, item)) {
    chain = std::make_shared<Chain>();
    chain->agent_id = a.cfg.id;
    chain->key = item.key;
    chain->event_id = item.w.event_id;
    chain->after_seq = item.w.seq;
    chain->now = now;
    chain->kinds = a.cfg.kinds;
    chain->all_kinds = a.cfg.all_kinds;
  }
  // A failover of one webhook of an alert (event ordering) takes the alert's later webhooks
  // queued here along, in the same transaction: left here, they would be sent while it waits
  // on the other agent. When one of them cannot go (see move_alert_tail), none goes: the
  // webhook is retried here.
  std::shared_ptr<AlertMove> alert_move;
  if (!target.empty() && a.keys_ordering == Ordering::kEvent && !item.w.event_id.empty()) {
    alert_move = std::make_shared<AlertMove>();
    alert_move->from = a.cfg.id;
    alert_move->to = target;
    alert_move->event_id = item.w.event_id;
    alert_move->after_seq = item.w.seq;
    if (auto it = agents_.find(target); it != agents_.end()) alert_move->to_cfg = it->second->cfg;
    alert_move->from_cfg = a.cfg;
    alert_move->stay = f;
    alert_move->stay.assigned_agent.reset();
    alert_move->stay.next_attempt_at = std::optional<Millis>(d.next_attempt_at);
  }
  auto fenced = std::make_shared<bool>(false);
  auto op = std::make_shared<std::function<void(JournalTx&, OutcomeBatch&)>>(
      [attempt, id, to, f, chain, alert_move, fenced, agent = a.cfg.id, epoch = item.epoch,
       leases = ctx_.leases](JournalTx& tx, OutcomeBatch& b) {
        if (chain) chain->claimed = false;
        // Another relay took the agent since the claim: its outcome is not this relay's to
        // write (the taker requeued the webhook and delivers it again).
        *fenced = !lease_holds(tx, leases, b, agent, epoch);
        if (*fenced) return;
        OutcomeWrite w;
        if (attempt) w.attempt = *attempt;
        w.id = id;
        w.from = WebhookState::kInflight;
        w.to = to;
        w.fields = alert_move && !move_alert_tail(tx, *alert_move) ? alert_move->stay : f;
        // The chain step once the outcome is written, should the webhook have moved.
        b.stage(std::move(w), chain);
      });
  pending_outcomes_.push_back({0, a.cfg.id, std::move(item), std::move(op), std::move(target),
                               std::move(chain), std::move(fenced)});
}

// Whether the outcome of `item` (delivered) may claim the next webhook of its alert in the
// same transaction (see Chain): only under event ordering, for an alert, on an agent that is
// up and usable, outside reloads of its ordering and of shutdown; past kChainQuantum steps in
// a row only while nothing else is known to wait for the agent.
bool DispatcherImpl::may_chain(Agent& a, const InHand& item) const {
  if (item.chain_steps >= kChainQuantum &&
      (!a.candidates.empty() || a.dirty || a.appended || a.more_to_pick || a.resume_pending))
    return false;
  if (a.chain_misses >= kChainMisses && ++a.chain_skipped % kChainRetryEvery != 0) return false;
  return !stopping_ && !a.removed && a.usable && !a.orphans_possible &&
         a.cfg.ordering == Ordering::kEvent && a.keys_ordering == Ordering::kEvent && !item.probe &&
         !item.w.event_id.empty() && a.health.state() == AgentHealth::State::kUp &&
         !a.health.probing() && steady_millis() >= a.claim_retry_at;
}

// The outcomes of one loop turn go to the Writer as one op.
void DispatcherImpl::flush_outcomes() {
  if (pending_outcomes_.empty()) return;
  std::vector<PendingOutcome> batch = std::move(pending_outcomes_);
  pending_outcomes_.clear();
  submit_outcomes(std::move(batch));
}

void DispatcherImpl::submit_outcomes(std::vector<PendingOutcome> outcomes) {
  ++outstanding_;
  auto batch = std::make_shared<std::vector<PendingOutcome>>(std::move(outcomes));
  ctx_.writer->submit_quiet_tx(
      [batch](JournalTx& tx) {
        // Afresh at each run: a failed write runs the op again, maybe with another batch.
        OutcomeBatch staged;
        for (auto& o : *batch) (*o.op)(tx, staged);
        staged.write(tx);
      },
      [this, batch, mailbox = mailbox_](const Status& s) {
        mailbox->post([this, batch, s] {
          --outstanding_;
          if (!s) {
            // Not journaled: the keys stay busy and the outcomes are written again shortly,
            // each on its own so that one that cannot be written holds back no other (should
            // the process die first, the rows are requeued as inflight at start).
            spdlog::warn("journaling {} outcomes failed: {}; retrying", batch->size(), s.message());
            for (auto& o : *batch) {
              // The commit may have landed, a chain step's claim of the next webhook with it.
              note_lost_commit(*agents_.at(o.agent_id), s, o.item.epoch);
              o.retry_at = steady_millis() + kWriteRetryDelay;
              write_retries_.push_back(std::move(o));
            }
            return;
          }
          for (auto& o : *batch) {
            Agent& a = *agents_.at(o.agent_id);
            if (*o.fenced) {
              spdlog::warn(
                  "the outcome of webhook {} for {} was not written: another relay took the "
                  "agent (lease epoch {} ended) and delivers it again",
                  o.item.w.id, o.agent_id, o.item.epoch);
              release(a, o.item);
              continue;
            }
            if (o.chain) {
              a.chain_misses = o.chain->claimed ? 0 : a.chain_misses + 1;
              if (o.chain->claimed) {
                continue_chain(a, o.item, std::move(o.chain->next));
                continue;
              }
            }
            release(a, o.item);
            if (!o.target.empty())
              if (auto it = agents_.find(o.target); it != agents_.end()) it->second->dirty = true;
          }
        });
      });
}

void DispatcherImpl::retry_failed_writes(Millis steady) {
  for (auto it = unclaim_retries_.begin(); it != unclaim_retries_.end();) {
    if (it->retry_at <= steady) {
      UnclaimRetry u = std::move(*it);
      it = unclaim_retries_.erase(it);
      unclaim(*agents_.at(u.agent_id), std::move(u.items));
    } else {
      ++it;
    }
  }
  for (auto it = write_retries_.begin(); it != write_retries_.end();) {
    if (it->retry_at <= steady) {
      std::vector<PendingOutcome> one;
      one.push_back(std::move(*it));
      it = write_retries_.erase(it);
      submit_outcomes(std::move(one));
    } else {
      ++it;
    }
  }
}

}  // namespace iarelay::dispatch_internal
