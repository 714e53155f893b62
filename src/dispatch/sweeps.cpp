// Moves of queued webhooks between agents (dispatcher_impl.h): pauses and resumes read from the
// agents table, held webhooks given to an available agent, the queue of a down or paused agent
// failed over, and the queues of agents no longer configured rerouted.
#include <spdlog/spdlog.h>

#include <map>
#include <set>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "dispatch/dispatcher_impl.h"
#include "dispatch/scheduler.h"
#include "journal/routing.h"
#include "journal/statement_cache.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay::dispatch_internal {

// `now` (wall) for paused_until, `steady` for how often.
void DispatcherImpl::check_agents_table(Millis now, Millis steady) {
  if (steady - last_check_ < kAgentsCheckEvery) return;
  last_check_ = steady;
  // A backend without a data version (PostgreSQL) reads the agents table every time.
  const std::int64_t version = journal().data_version().value_or(-2);
  if (version >= 0 && version == data_version_ && steady - last_reload_ < kForcedReloadEvery)
    return;
  data_version_ = version;
  last_reload_ = steady;
  std::map<std::string, AgentRow> rows;
  for (auto& r : journal().load_agents()) rows.emplace(r.id, std::move(r));
  for (auto& [id, a] : agents_) {
    // Resends and other outside changes may have queued older rows: walk again from the start.
    a->candidates.clear();
    a->dirty = true;
    auto it = rows.find(id);
    bool paused = it != rows.end() && it->second.state == "paused";
    if (paused && it->second.paused_until && *it->second.paused_until <= now) {
      paused = false;
      end_pause(id, *it->second.paused_until);
    }
    if (a->health.set_paused(paused, steady)) {
      ctx_.directory->set_availability(id, paused ? Availability::kPaused : Availability::kUp);
      update_gauges(*a);
      spdlog::info("agent {} {}", id, paused ? "paused by operator" : "resumed");
      if (!paused) held_dirty_ = true;
    }
  }
  held_dirty_ = true;
}

void DispatcherImpl::end_pause(const std::string& id, Millis until) {
  // Only if the pause is still the one that ended (an operator may have paused again).
  ctx_.writer->submit_tx(
      [id, until](JournalTx& tx) {
        auto row = tx.load_agent(id);
        if (row && row->state == "paused" && row->paused_until && *row->paused_until == until)
          tx.set_agent_state(id, "up", std::string("pause ended"), std::nullopt, false);
      },
      [](const Status& s) {
        if (!s) spdlog::warn("could not record the end of a pause: {}", s.message());
      });
}

// Held webhooks (assigned_agent NULL, from `unrouted = hold` or a resend) go to an available
// agent of their service.
void DispatcherImpl::sweep_held(Millis steady) {
  if (held_pending_) return;
  if (!held_dirty_ && steady - last_held_sweep_ < kForcedReloadEvery) return;
  held_dirty_ = false;
  last_held_sweep_ = steady;
  auto rows = journal().scan_queue(std::nullopt, held_cursor_, kScanPage);
  held_cursor_ = rows.size() == static_cast<size_t>(kScanPage) ? rows.back().seq : 0;
  if (held_cursor_) held_dirty_ = true;  // more pages: continue on the next turn
  std::vector<QueuedMove> moves;
  for (const auto& r : rows) {
    // An agent that takes its type first; else any (which discards it with the reason).
    auto target = ctx_.directory->available_agent_for(r.service, "", r.type);
    if (!target) target = ctx_.directory->available_agent_for(r.service);
    // An alert together: one of its webhooks held since this read keeps its later ones here.
    if (target) moves.push_back({r.id, *target, ordering_key(Ordering::kEvent, r)});
  }
  if (moves.empty()) return;
  held_pending_ = true;
  submit_moves(std::nullopt, 0, std::move(moves), [this] { held_pending_ = false; });
}

// Webhooks without an agent identifier waiting on a down or paused agent move to the next
// available agent hosting their service.
void DispatcherImpl::sweep_failover(Agent& a, Millis steady) {
  if (a.failover_pending || a.removed || a.health.state() == AgentHealth::State::kUp) return;
  if (a.orphans_possible) return;  // they go back to its queue first (schedule)
  const std::optional<std::int64_t> epoch = owned(a);
  if (!epoch) return;  // its owner knows whether it is down
  // An alert left behind because a webhook of it was in hand is looked at again as soon as
  // something was released (not only at the next forced reload).
  if (steady - last_failover_sweep_[a.cfg.id] < kForcedReloadEvery && a.failover_cursor == 0 &&
      !(a.failover_recheck && a.dirty))
    return;
  last_failover_sweep_[a.cfg.id] = steady;
  a.failover_recheck = false;
  std::vector<QueuedMove> moves;
  std::size_t walked = 0;
  std::int64_t cursor = a.failover_cursor;
  // A webhook behind a held one of its alert stays with it: moved alone, it would wait on
  // the other agent, and once the hold ends the two would be on different agents.
  const bool any_held = a.cfg.ordering == Ordering::kEvent && journal().any_held_webhook();
  for (;;) {
    auto rows = journal().scan_queue(a.cfg.id, cursor, kScanPage);
    for (const auto& r : rows) {
      cursor = r.seq;
      if (a.in_hand.count(r.seq)) continue;
      // A webhook of an alert with one in hand (a chain step's claim waiting to be given
      // back, say) stays: moved, it could be sent before the one in hand.
      // The walk is paged over loop turns: an alert skipped once stays skipped for the rest
      // of the pass (its key may be released before a later page), so nothing of it is
      // moved ahead of the webhook left behind; the next pass moves them in order.
      std::string key;
      if (a.keys_ordering == Ordering::kEvent) {
        key = ordering_key(Ordering::kEvent, r);
        if (a.busy_keys.count(key) || a.failover_skipped.count(key)) {
          a.failover_skipped.insert(std::move(key));
          a.failover_recheck = true;
          continue;
        }
      }
      // One that stays here (asked for this agent by identifier, behind a held one of its
      // alert, or of a type no other agent takes) keeps its alert's later ones here too, as a
      // retried webhook's failover does (move_alert_tail): moved, they would go ahead of it.
      auto stays = [&] {
        if (!key.empty()) a.failover_skipped.insert(key);
      };
      if (r.agent) {
        stays();
        continue;
      }
      if (any_held && !r.event_id.empty() &&
          journal().held_before(a.cfg.id, r.event_id, r.service, r.seq)) {
        stays();
        continue;
      }
      // Only to an agent that takes its type, if this one does (else it would be discarded
      // there, where this agent would deliver it once back).
      auto target = ctx_.directory->available_agent_for(r.service, a.cfg.id,
                                                        a.cfg.takes(r.type) ? r.type : "");
      if (!target) {
        stays();
        continue;
      }
      moves.push_back({r.id, *target, std::move(key)});
    }
    walked += rows.size();
    if (rows.size() < static_cast<size_t>(kScanPage)) {
      cursor = 0;
      break;
    }
    if (walked >= kMaxWalkRows) break;
  }
  a.failover_cursor = cursor;
  if (cursor == 0) a.failover_skipped.clear();  // the pass ended: the next starts afresh
  if (moves.empty()) return;
  a.failover_pending = true;
  a.candidates.clear();
  std::string from = a.cfg.id;
  submit_moves(from, *epoch, std::move(moves), [this, from] {
    if (auto it = agents_.find(from); it != agents_.end()) it->second->failover_pending = false;
  });
}

// Queued webhooks assigned to an agent that is no longer configured (removed by a reload, or
// retired while the relay was down). Those addressed to it by identifier keep waiting for it
// (docs/architecture.md, "Routing" rule 1; status and iarelay_queue_unconfigured show them,
// `iarelay move` moves them). The others were routed there: one that asked for another agent goes
// back to that agent's queue; one that asked for none goes to the first available agent hosting
// its service, else it is held for any agent of its service (never discarded: it was accepted,
// and its service's other agents may be away for a moment). A reroute applies only while
// the row still waits on the retired agent.
void DispatcherImpl::sweep_retired(Millis steady) {
  if (retired_pending_ || ctx_.directory->is_edge()) return;  // an edge calls no agent
  if (!retired_dirty_ && steady - last_retired_sweep_ < kRetiredSweepEvery) return;
  retired_dirty_ = false;
  last_retired_sweep_ = steady;
  std::set<std::string> configured;
  for (const auto& [id, a] : agents_)
    if (!a->removed) configured.insert(id);
  std::vector<Reroute> reroutes;
  std::size_t walked = 0;
  for (const std::string& agent : journal().agents_with_queued()) {
    if (configured.count(agent)) continue;
    std::int64_t& cursor = retired_cursors_[agent];
    const Agent* busy = nullptr;  // a removed agent still finishing what it has in hand
    if (auto it = agents_.find(agent); it != agents_.end()) busy = it->second.get();
    // Inflight webhooks of it may be orphans (a commit lost unseen): nothing of its queue
    // moves before they are back in it, or a later webhook of their alert would go first.
    if (busy && busy->orphans_possible) continue;
    std::unordered_set<std::string>& skipped = retired_skipped_[agent];
    if (cursor == 0) skipped.clear();  // a new pass
    for (;;) {
      auto rows = journal().scan_queue(agent, cursor, kScanPage);
      for (const auto& r : rows) {
        cursor = r.seq;
        if (r.agent && *r.agent == agent) continue;  // addressed to it: waits for it
        // Behind a webhook of its alert still in hand (being finished or given back): stays
        // until that one is done, or it could be sent first elsewhere.
        // As in sweep_failover, an alert skipped once stays skipped for the rest of the pass.
        if (busy && busy->keys_ordering == Ordering::kEvent) {
          std::string key = ordering_key(Ordering::kEvent, r);
          if (busy->busy_keys.count(key) || skipped.count(key)) {
            skipped.insert(std::move(key));
            continue;
          }
        }
        // Never discarded here: rule 3 discards on arrival only. Acknowledged long ago, a
        // webhook whose other hosts are down or paused for a moment waits for them (held).
        Reroute to{r.id, agent, std::nullopt};
        if (r.agent)
          to.agent = *r.agent;
        else
          to.agent = ctx_.directory->route(r.service, std::nullopt, r.type).assigned_agent;
        reroutes.push_back(std::move(to));
      }
      walked += rows.size();
      if (rows.size() < static_cast<size_t>(kScanPage)) {
        cursor = 0;
        break;
      }
      if (walked >= kMaxWalkRows) {
        retired_dirty_ = true;  // more to walk: go on at the next turn
        break;
      }
    }
    if (walked >= kMaxWalkRows) break;
  }
  if (reroutes.empty()) return;
  retired_pending_ = true;
  submit_reroutes(std::move(reroutes), [this](std::size_t n) {
    retired_pending_ = false;
    if (n)
      spdlog::info("dispatcher: rerouted {} webhooks routed to agents no longer configured", n);
  });
}

void DispatcherImpl::submit_reroutes(std::vector<Reroute> reroutes,
                                     std::function<void(std::size_t)> after) {
  ++outstanding_;
  auto shared = std::make_shared<std::vector<Reroute>>(std::move(reroutes));
  auto moved = std::make_shared<std::size_t>(0);
  ctx_.writer->submit_tx(
      [shared, moved, leases = ctx_.leases](JournalTx& tx) {
        *moved = 0;
        std::map<std::string, bool> elsewhere;
        for (const auto& r : *shared) {
          // Not while another relay delivers to the agent (its configuration still has it: a
          // rolling change of the relays' configurations).
          if (leases) {
            auto it = elsewhere.find(r.from);
            if (it == elsewhere.end())
              it = elsewhere.emplace(r.from, tx.leased_elsewhere(r.from, leases->owner())).first;
            if (it->second) continue;
          }
          // Only if it still waits where it was found: a move, a resend or a reload that
          // brought the agent back may have placed it since.
          auto place = tx.locate(r.id);
          if (!place || place->assigned_agent != r.from) continue;
          TransitionFields f;
          f.assigned_agent.emplace(r.agent);  // nullopt: NULL (held)
          f.next_attempt_at = std::optional<Millis>();
          if (tx.transition(r.id, WebhookState::kQueued, WebhookState::kQueued, f)) ++*moved;
        }
      },
      [this, shared, moved, after = std::move(after), mailbox = mailbox_](const Status& s) {
        mailbox->post([this, shared, moved, after, s] {
          --outstanding_;
          if (!s)
            spdlog::warn("rerouting {} webhooks of agents no longer configured failed: {}",
                         shared->size(), s.message());
          for (const auto& r : *shared)
            if (r.agent)
              if (auto it = agents_.find(*r.agent); it != agents_.end()) it->second->dirty = true;
          held_dirty_ = true;
          after(s ? *moved : 0);
        });
      });
}

// queued → queued with a new assigned agent, one writer op for the batch (move_queued).
void DispatcherImpl::submit_moves(std::optional<std::string> from, std::int64_t epoch,
                                  std::vector<QueuedMove> moves, std::function<void()> after) {
  ++outstanding_;
  auto shared = std::make_shared<std::vector<QueuedMove>>(std::move(moves));
  ctx_.writer->submit_tx(
      [shared, from, epoch, leases = ctx_.leases](JournalTx& tx) {
        // A failover's moves only while this relay still delivers to the agent they leave.
        if (from && !lease_holds(tx, leases, *from, epoch)) return;
        move_queued(tx, from, *shared);
      },
      [this, shared, after = std::move(after), mailbox = mailbox_](const Status& s) {
        mailbox->post([this, shared, after, s] {
          --outstanding_;
          if (!s) spdlog::warn("reassigning {} webhooks failed: {}", shared->size(), s.message());
          for (const QueuedMove& m : *shared)
            if (auto it = agents_.find(m.to); it != agents_.end()) it->second->dirty = true;
          after();
        });
      });
}

}  // namespace iarelay::dispatch_internal
