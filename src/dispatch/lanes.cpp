// Each agent's lane (dispatcher_impl.h): what to send next, picked from windows of its queue
// (scheduler.h), claimed through the Writer, given back when not sent, and the claims of chain
// steps started as slots free up.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "dispatch/dispatcher_impl.h"
#include "dispatch/http_call.h"
#include "dispatch/scheduler.h"
#include "journal/statement_cache.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay::dispatch_internal {

void DispatcherImpl::schedule(Agent& a, Millis now, Millis steady) {
  start_ready(a);
  if (a.orphans_possible) {
    // Before anything else, removed or not, held or not (the fence is the epoch of the lost
    // commit): once nothing of the agent is in hand, its inflight webhooks go back.
    if (steady >= a.claim_retry_at && !a.orphan_requeue_pending && a.in_hand.empty() &&
        a.claiming == 0 && a.calls == 0 && a.ready.empty())
      requeue_orphans(a, a.orphan_epoch);
    return;
  }
  if (a.removed || !a.usable) return;
  const std::optional<std::int64_t> epoch = owned(a);
  if (!epoch) return;  // another relay delivers to it (or its lease lapsed): nothing claimed
  // Webhooks are being moved away (failover): a claim now (a probe) could take one whose
  // alert's later webhooks are moved and then sent first elsewhere. Claims wait for the move.
  if (a.failover_pending) return;
  // A claim's commit failed (a full disk): the next waits like any failed write, instead of
  // being made again at once, in a loop, for as long as the journal cannot be written.
  if (steady < a.claim_retry_at) return;
  std::size_t free =
      a.health.may_start(a.calls + a.claiming + a.ready.size(),
                         static_cast<size_t>(std::max(a.cfg.max_inflight, 1)), steady);
  if (free == 0) return;
  if (a.keys_ordering != a.cfg.ordering) {
    // The ordering changed (reload): the keys in hand were computed under the old one.
    if (!a.in_hand.empty()) return;
    a.keys_ordering = a.cfg.ordering;
  }
  const bool probe = a.health.probing();
  if (a.candidates.empty() && a.appended) {
    // New rows only: read those, unless the head window must be walked anyway (a backing-off
    // row came due, a probe) or fifo ordering (its walk stops at the first row: cheap).
    if (a.dirty || probe || now >= a.wake_at || a.cfg.ordering == Ordering::kFifo) {
      a.dirty = true;
      a.appended = false;  // the full fill reads them
    } else if (!read_step(a.scan_gate, "queue scan", [&] { fill_new_rows(a, now); })) {
      return;
    }
  }
  if (a.candidates.empty() && !a.appended) {
    const bool resume_due = a.resume_pending && steady_millis() >= a.next_resume_at;
    // Only the walk past the head is due: nothing changed that the head window would show.
    // Never under fifo: there nothing may go past the head (the head window is walked again
    // once something changes).
    const bool resume_only = !a.dirty && now < a.wake_at && !probe;
    if (resume_only && (!resume_due || a.cfg.ordering == Ordering::kFifo)) return;
    if (!read_step(a.scan_gate, "queue scan", [&] { fill(a, now, probe, resume_only); })) return;
  }
  std::vector<InHand> batch;
  while (free > 0 && !a.candidates.empty()) {
    QueuedWebhook w = std::move(a.candidates.front());
    a.candidates.pop_front();
    InHand item;
    item.key = ordering_key(a.cfg.ordering, w);
    item.attempt = w.attempts + 1;
    item.probe = probe;
    item.epoch = *epoch;
    item.w = std::move(w);
    a.busy_keys.insert(item.key);
    a.in_hand.insert(item.w.seq);
    a.expedite.erase(item.w.seq);
    if (!a.cfg.takes(item.w.type)) {
      discard_not_taken(a, std::move(item));
      continue;
    }
    batch.push_back(std::move(item));
    --free;
  }
  if (probe) a.candidates.clear();  // a probe's pick is not kept: the next one walks again
  if (!batch.empty()) claim(a, std::move(batch));
}

// Offers the agent's queued rows from `after` on to `ks` (candidates go to a.candidates) until
// it is saturated, the queue ends or kMaxWalkRows were walked. Returns the last seq walked
// and whether the queue ended.
std::pair<std::int64_t, bool> DispatcherImpl::walk_queue(Agent& a, KeyScheduler& ks,
                                                         std::int64_t after, bool probe) {
  std::size_t walked = 0;
  for (;;) {
    auto rows = journal().scan_queue(a.cfg.id, after, kScanPage);
    for (auto& r : rows) {
      after = r.seq;
      ++walked;
      bool ignore_due = probe || a.expedite.count(r.seq);
      if (ks.offer(r, a.in_hand.count(r.seq) > 0, ignore_due)) a.candidates.push_back(std::move(r));
      if (ks.saturated()) break;
    }
    if (rows.size() < static_cast<size_t>(kScanPage)) return {after, true};
    if (ks.saturated() || walked >= kMaxWalkRows) return {after, false};
  }
}

// Whether a webhook stands before `w` in the agent's delivery order held by an operator
// (event ordering: one of its alert; fifo: any of the agent). `any_held`: any_held_webhook.
bool DispatcherImpl::held_earlier(const Agent& a, bool any_held, const QueuedWebhook& w) {
  if (!any_held) return false;
  if (a.cfg.ordering == Ordering::kEvent && w.event_id.empty()) return false;
  return journal().held_before(
      a.cfg.id, a.cfg.ordering == Ordering::kEvent ? w.event_id : std::string(), w.service, w.seq);
}

// After commits that only added rows (wake(true)): reads the agent's queued rows past
// tail_seen instead of walking the queue from its head again. Each is checked against the
// rows before it that this read does not see (an earlier queued webhook of its alert, a held
// one). Event or none ordering (fifo walks in full). A row whose alert has a webhook in hand
// waits with no check (the usual case under load: an alert's webhooks come in a stream); for
// any other, the earlier webhook is looked for among the first kShortQueue queued rows, never
// by the event index, which holds every row the alert ever had (delivered rows stay until
// retention: reading them for each new row stalled the dispatcher). When the queue is
// longer, nothing is picked: the queue is walked from its head, as for any other change.
void DispatcherImpl::fill_new_rows(Agent& a, Millis now) {
  a.candidates.clear();
  std::size_t cap = std::min(kMaxCandidates, std::max<std::size_t>(32, 2 * a.cfg.max_inflight));
  KeyScheduler ks(a.cfg.ordering, now, a.busy_keys, cap);
  // One read snapshot for the whole fill (read_step's).
  const bool any_held = a.cfg.ordering != Ordering::kNone && journal().any_held_webhook();
  bool long_queue = false;
  ks.check_earlier([&](const QueuedWebhook& w) {
    if (held_earlier(a, any_held, w)) return true;
    if (a.cfg.ordering != Ordering::kEvent || w.event_id.empty()) return false;
    if (long_queue) return true;  // the queue is walked from its head anyway: no more reads
    auto ahead = journal().queued_of_event_within(a.cfg.id, w.event_id, w.seq, kShortQueue);
    if (!ahead) long_queue = true;
    return ahead.value_or(true);
  });
  auto [last, ended] = walk_queue(a, ks, a.tail_seen, false);
  if (long_queue) {
    a.candidates.clear();
    a.dirty = true;
    a.appended = false;
    return;
  }
  a.tail_seen = last;
  // Stopped short (saturated, or kMaxWalkRows new rows): the rest is read at the next fill.
  a.appended = !ended;
  if (auto due = ks.earliest_not_due()) a.wake_at = std::min(a.wake_at, *due);
  // What the last full fill left in the head window is still there.
  a.more_to_pick = a.more_to_pick || ks.saturated();
}

// Picks candidates from two windows of the queue: the head (at most kMaxWalkRows from the
// start) and, when the head has nothing more to give, the next kMaxWalkRows from where the
// previous fill's second window stopped. Without the second window, due webhooks behind 4096
// backing-off ones would wait for those to come due.
// `resume_only`: the head window is not walked again (nothing changed there since the last
// fill); rows past it are still checked against earlier queued webhooks of their key.
void DispatcherImpl::fill(Agent& a, Millis now, bool probe, bool resume_only) {
  a.candidates.clear();
  const Millis head_wake_at = a.wake_at;
  a.wake_at = kNever;
  std::size_t cap =
      probe ? 1 : std::min(kMaxCandidates, std::max<std::size_t>(32, 2 * a.cfg.max_inflight));
  KeyScheduler ks(a.cfg.ordering, now, a.busy_keys, cap);
  auto walk = [&](std::int64_t after) { return walk_queue(a, ks, after, probe); };
  // One read snapshot for the whole fill (read_step's): a hold committed between the check for
  // held webhooks and the queue's scan could otherwise let a later webhook of its alert through.
  // A webhook an operator holds keeps its place: later webhooks of its key wait behind it
  // (event: same alert; fifo: the whole agent), as behind one backing off.
  const bool any_held = a.cfg.ordering != Ordering::kNone && journal().any_held_webhook();
  auto held_earlier = [this, &a, any_held](const QueuedWebhook& w) {
    return this->held_earlier(a, any_held, w);
  };
  if (any_held) ks.check_earlier(held_earlier);
  std::int64_t head_last = a.head_last;
  bool head_ended = false;
  if (!resume_only) {
    std::tie(head_last, head_ended) = walk(0);
    a.head_last = head_last;
    // Rows past the head window are the walk past it's (below); new ones, past this, are
    // read by fill_new_rows.
    a.tail_seen = head_ended ? head_last : std::max(head_last, journal().last_queued_seq(a.cfg.id));
    a.appended = false;
  }
  if (head_ended) {
    a.resume_after = 0;
    a.resume_pending = false;
  } else if (ks.saturated() || a.cfg.ordering == Ordering::kFifo) {
    // The head window has work (or, with fifo, its first row holds everything behind it):
    // no walk past it is pending; it resumes from resume_after once the head has nothing.
    a.resume_pending = false;
  } else if (!probe && steady_millis() >= a.next_resume_at) {
    // Rows between the head window and the resume point were not seen by this walk: a row
    // found here is sent only if no earlier webhook of its key is still queued (event
    // ordering; `none` has no constraint; fifo never gets here).
    ks.check_earlier([&](const QueuedWebhook& w) {
      return (a.cfg.ordering == Ordering::kEvent && !w.event_id.empty() &&
              journal().queued_before(a.cfg.id, w.event_id, w.seq)) ||
             held_earlier(w);
    });
    const std::int64_t from = std::max(a.resume_after, head_last);
    const std::size_t picked = ks.picked(), busy = ks.passed_over_busy();
    auto [last, ended] = walk(from);
    if (ks.picked() > picked || ks.passed_over_busy() > busy) {
      // Work here, now or once what is in hand is done: stay on this window (as the head
      // window is walked again) until it yields nothing; completions make the agent dirty.
      a.resume_after = from;
      a.next_resume_at = 0;
      a.resume_pending = false;
    } else {
      // Nothing here: the pass goes on, paced, until the queue's end; then a new one.
      a.resume_after = ended ? 0 : last;
      a.next_resume_at = steady_millis() + (ended ? kPassEvery : kResumeEvery);
      a.resume_pending = true;
    }
  }
  if (auto due = ks.earliest_not_due()) a.wake_at = *due;
  if (resume_only) a.wake_at = std::min(a.wake_at, head_wake_at);
  a.dirty = false;  // only now: a scan that failed part-way is done again
  a.more_to_pick = ks.saturated();
  // Walked without finding work behind busy keys: completions will mark the agent dirty; the
  // rows not walked are looked at again at the next forced reload.
}

// A webhook of a type the agent's `kinds` leave out is not sent: it ends discarded with the
// reason (terminal, so the next webhook of its alert goes on; `iarelay resend` queues it
// again, and it ends the same way while its type is still left out). Checked here, with the
// agent's current configuration, so a reload that adds the type applies to the next pick. No
// claim and no attempt; its key stays busy until the discard is durable, as a call's would.
void DispatcherImpl::discard_not_taken(Agent& a, InHand item) {
  const std::string reason = "type \"" + truncate(header_value(item.w.type), 200) +
                             "\" is not in [agent." + a.cfg.handle + "] kinds (" +
                             a.cfg.kinds_text() + ")";
  spdlog::info("webhook {} discarded for {}: {}", item.w.id, a.cfg.id, truncate(reason, 300));
  TransitionFields f;
  f.last_error = std::optional<std::string>(truncate(reason, 1000));
  f.next_attempt_at = std::optional<Millis>();
  const std::string id = item.w.id;
  auto op = std::make_shared<std::function<void(JournalTx&, OutcomeBatch&)>>(
      [id, agent = a.cfg.id, f, epoch = item.epoch, leases = ctx_.leases](JournalTx& tx,
                                                                          OutcomeBatch& b) {
        if (!lease_holds(tx, leases, b, agent, epoch))
          return;  // the relay that took the agent decides
        // Only while it is still this agent's: moved meanwhile (iarelay move, a failover) to an
        // agent that may take its type, it is that agent's to decide.
        auto place = tx.locate(id);
        if (!place || place->state != WebhookState::kQueued || place->assigned_agent != agent)
          return;
        tx.transition(id, WebhookState::kQueued, WebhookState::kDiscarded, f);
      });
  pending_outcomes_.push_back(
      {0, a.cfg.id, std::move(item), std::move(op), std::string(), nullptr});
}

void DispatcherImpl::claim(Agent& a, std::vector<InHand> batch) {
  a.claiming += batch.size();
  ++outstanding_;
  auto items = std::make_shared<std::vector<InHand>>(std::move(batch));
  auto claimed = std::make_shared<std::vector<bool>>(items->size(), false);
  std::string agent_id = a.cfg.id;
  ctx_.writer->submit_quiet_tx(
      [items, claimed, agent_id, leases = ctx_.leases](JournalTx& tx) {
        // Afresh at each run (PostgreSQL may run an op again after a rolled-back batch).
        std::fill(claimed->begin(), claimed->end(), false);
        // All of one epoch (schedule). The agent taken by another relay: nothing claimed.
        if (!lease_holds(tx, leases, agent_id, items->front().epoch)) return;
        std::vector<OutcomeWrite> claims(items->size());
        for (size_t i = 0; i < items->size(); ++i) {
          claims[i].id = (*items)[i].w.id;
          claims[i].from = WebhookState::kQueued;
          claims[i].to = WebhookState::kInflight;
          claims[i].fields.assigned_agent = std::optional<std::string>(agent_id);
          claims[i].fields.increment_attempts = true;
        }
        *claimed = tx.record_outcomes(claims);
      },
      [this, items, claimed, agent_id, mailbox = mailbox_](const Status& s) {
        mailbox->post([this, items, claimed, agent_id, s] {
          --outstanding_;
          on_claimed(agent_id, *items, s ? *claimed : std::vector<bool>(items->size(), false), s);
        });
      });
}

void DispatcherImpl::on_claimed(const std::string& agent_id, std::vector<InHand>& items,
                                const std::vector<bool>& claimed, const Status& s) {
  Agent& a = *agents_.at(agent_id);
  a.claiming -= items.size();
  if (!s) {
    spdlog::warn("claiming {} webhooks for {} failed: {}", items.size(), agent_id, s.message());
    a.claim_retry_at = steady_millis() + kWriteRetryDelay;
    note_lost_commit(a, s, items.front().epoch);
  }
  std::vector<InHand> give_back;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!claimed[i]) {
      release(a, items[i]);  // someone else moved it first, or the write failed
      continue;
    }
    // Stopping, or the lease lapsed while the claim committed (another relay may take the
    // agent any moment and call it too): given back, no call.
    if (stopping_ || owned(a) != items[i].epoch) {
      give_back.push_back(std::move(items[i]));
      continue;
    }
    start_call(a, std::move(items[i]));
  }
  if (!give_back.empty()) unclaim(a, std::move(give_back));
}

// Claimed but not sent (stopping, or a chain step's claim the agent can no longer take): back
// to queued with the attempt not counted. Keys and seqs are released only once that is
// journaled: should the write fail, the rows stay inflight and in hand (nothing later of
// their alerts goes first) and the write is made again shortly, as outcomes are.
void DispatcherImpl::note_lost_commit(Agent& a, const Status& s, std::int64_t epoch) {
  if (s.kind() == StatusKind::kUnavailable && ctx_.writer->failed_commits_may_have_landed()) {
    a.orphans_possible = true;
    a.orphan_epoch = epoch;
  }
}

void DispatcherImpl::requeue_orphans(Agent& a, std::int64_t epoch) {
  a.orphan_requeue_pending = true;
  ++outstanding_;
  auto requeued = std::make_shared<int>(0);
  ctx_.writer->submit_quiet_tx(
      [requeued, agent = a.cfg.id, epoch, leases = ctx_.leases](JournalTx& tx) {
        *requeued = 0;
        // Taken by another relay meanwhile: it put them back when it took the agent.
        if (!lease_holds(tx, leases, agent, epoch)) return;
        *requeued = tx.requeue_inflight_of(agent);
      },
      [this, requeued, agent_id = a.cfg.id, mailbox = mailbox_](const Status& s) {
        mailbox->post([this, requeued, agent_id, s] {
          --outstanding_;
          Agent& ag = *agents_.at(agent_id);
          ag.orphan_requeue_pending = false;
          if (!s) {
            ag.claim_retry_at = steady_millis() + kWriteRetryDelay;  // tried again then
            return;
          }
          ag.orphans_possible = false;
          ag.dirty = true;
          if (*requeued)
            spdlog::warn(
                "{} webhooks of {} were left inflight by a journal commit whose connection was "
                "lost; back in the queue",
                *requeued, agent_id);
        });
      });
}

void DispatcherImpl::unclaim(Agent& a, std::vector<InHand> items) {
  ++outstanding_;
  auto shared = std::make_shared<std::vector<InHand>>(std::move(items));
  std::string agent_id = a.cfg.id;
  ctx_.writer->submit_quiet_tx(
      [shared, agent_id, leases = ctx_.leases](JournalTx& tx) {
        for (const auto& it : *shared) {
          // Taken by another relay since the claim: it put the webhook back itself, and may
          // have claimed it again.
          if (!lease_holds(tx, leases, agent_id, it.epoch)) continue;
          TransitionFields f;
          f.attempts = it.w.attempts;
          tx.transition(it.w.id, WebhookState::kInflight, WebhookState::kQueued, f);
        }
      },
      [this, shared, agent_id, mailbox = mailbox_](const Status& s) {
        mailbox->post([this, shared, agent_id, s] {
          --outstanding_;
          Agent& ag = *agents_.at(agent_id);
          if (!s && !stopping_) {
            spdlog::warn("giving back {} claimed webhooks of {} failed: {}; retrying",
                         shared->size(), agent_id, s.message());
            unclaim_retries_.push_back(
                {steady_millis() + kWriteRetryDelay, agent_id, std::move(*shared)});
            return;
          }
          // Stopping: rows left inflight are requeued at the next start.
          for (const auto& it : *shared) release(ag, it);
        });
      });
}

void DispatcherImpl::release(Agent& a, const InHand& item) {
  a.busy_keys.erase(item.key);
  a.in_hand.erase(item.w.seq);
  a.expedite.erase(item.w.seq);
  a.dirty = true;
}

// The outcome of `done` claimed the next webhook of its alert: it is sent now (its key stays
// busy), or once a call ends when the slot the finished call freed was taken meanwhile
// (max_inflight holds), or, while stopping, given back.
void DispatcherImpl::continue_chain(Agent& a, const InHand& done, QueuedWebhook next) {
  a.in_hand.erase(done.w.seq);
  InHand item;
  item.key = done.key;
  item.attempt = next.attempts + 1;
  item.chain_steps = done.chain_steps + 1;
  item.epoch = done.epoch;  // claimed in the transaction of done's outcome, under its fence
  item.w = std::move(next);
  a.in_hand.insert(item.w.seq);
  if (a.chained) a.chained->inc();
  a.ready.push_back(std::move(item));
  start_ready(a);
}

// Starts the claimed webhooks waiting for a slot while there is room; gives them back
// (queued, attempt not counted) when the dispatcher stops, the agent is no longer up, or a
// reload changed its ordering since the step was decided (a chain step claims the alert's
// next webhook, not the agent's oldest: under fifo it would pass older webhooks of other
// alerts).
void DispatcherImpl::start_ready(Agent& a) {
  if (a.ready.empty()) return;
  if (stopping_ || a.removed || !a.usable || a.health.state() != AgentHealth::State::kUp ||
      a.cfg.ordering != Ordering::kEvent || a.keys_ordering != Ordering::kEvent || !owned(a)) {
    std::vector<InHand> back(std::make_move_iterator(a.ready.begin()),
                             std::make_move_iterator(a.ready.end()));
    a.ready.clear();
    unclaim(a, std::move(back));
    return;
  }
  // A reload left its type out of `kinds` since the step was decided: given back, the walk
  // picks it and discards it with the reason, as any webhook of that type. One claimed under
  // an earlier lease of the agent: given back (fenced: the taker requeued it).
  const std::int64_t epoch = *owned(a);
  std::vector<InHand> not_taken;
  for (auto it = a.ready.begin(); it != a.ready.end();) {
    if (a.cfg.takes(it->w.type) && it->epoch == epoch) {
      ++it;
    } else {
      not_taken.push_back(std::move(*it));
      it = a.ready.erase(it);
    }
  }
  if (!not_taken.empty()) unclaim(a, std::move(not_taken));
  const auto max = static_cast<std::size_t>(std::max(a.cfg.max_inflight, 1));
  while (!a.ready.empty() && a.calls + a.claiming < max) {
    InHand item = std::move(a.ready.front());
    a.ready.pop_front();
    start_call(a, std::move(item));
  }
}

}  // namespace iarelay::dispatch_internal
