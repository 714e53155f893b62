// The chain step and the failover of an alert's tail: journal operations the Writer runs inside
// the transaction that records an outcome (DispatcherImpl::finish), so that an alert's webhooks
// keep their order. Writer thread only; through the journal seam (either backend), throwing as
// its operations do.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/time.h"
#include "journal/backend.h"

namespace iarelay::dispatch_internal {

// The next webhook of an alert, claimed in the transaction that records the outcome of the one
// before (docs/journal.md, "Durability and crash semantics"): one commit per step of an alert's
// chain instead of two, and no walk of the queue to find it. Claimed only when, as the journal
// has it at that commit, it is the alert's first queued webhook on the agent, due, with no
// held webhook of the alert before it, and among the first kChainWalk rows of the queue:
// nothing of the alert is overtaken. For kChainQuantum steps in a row it may go before due
// webhooks of other alerts (those take the next free slots meanwhile: the chained webhook waits
// in `ready` until one is free); after that, only while the dispatcher knows of no other work
// for the agent (no candidates, nothing changed since a walk that found everything), so an
// alert that keeps receiving webhooks never holds a slot while others wait. Anything else: no
// claim; the key is released and the queue walked as before.
struct Chain {
  std::string agent_id;
  std::string key;             // the alert's ordering key (event ordering)
  std::string event_id;        // the alert's event id
  std::int64_t after_seq = 0;  // the seq of the webhook whose outcome this is
  Millis now = 0;              // due means next_attempt_at <= now
  // The agent's `kinds` at the outcome: a type it leaves out is not claimed (the dispatcher's
  // walk picks it and discards it with the reason, as any other pick).
  std::vector<std::string> kinds;
  bool all_kinds = false;
  // Set on the writer thread by each run of the op (a failed write runs it again).
  bool claimed = false;
  QueuedWebhook next;  // as read before its claim (attempts not yet counted)
};

// The outcomes of one loop turn, in one writer operation: each outcome's op checks its lease
// and stages its write here; write() then records them all (JournalTx::record_outcomes) and
// takes the chain steps of those delivered together (on PostgreSQL: a round trip for the
// outcomes, one for the chain steps' reads, one for their claims, whatever the batch's size).
// Nothing else writes between them: the outcomes are of different webhooks, the chain steps of
// different alerts.
class OutcomeBatch {
 public:
  // Whether `agent`'s lease is still at `epoch` (`fence` asks the journal): asked once per
  // agent and epoch in the batch (the journal's answer holds until the transaction ends).
  bool lease_holds(const std::string& agent, std::int64_t epoch,
                   const std::function<bool()>& fence);
  // The outcome, and the chain step to take should it move (`chain` null: none).
  void stage(OutcomeWrite w, std::shared_ptr<Chain> chain);
  void write(JournalTx& tx);

 private:
  std::map<std::pair<std::string, std::int64_t>, bool> fences_;
  std::vector<OutcomeWrite> writes_;
  std::vector<std::shared_ptr<Chain>> chains_;
};

// The chain steps of delivered webhooks (of different alerts), under one savepoint: whatever
// goes wrong there (a journal an operator changed, say) leaves the outcomes to be journaled as
// they would be without them, never fails them. When it fails, each step runs again under a
// savepoint of its own: only those that fail alone claim nothing.
void try_chain_steps(JournalTx& tx, const std::vector<Chain*>& chains);

// A webhook of an alert failing over to another agent after a retryable failure (finish):
// the alert's later webhooks queued on this agent go along (see move_alert_tail).
struct AlertMove {
  std::string from, to;
  std::string event_id;
  std::int64_t after_seq = 0;
  AgentConfig from_cfg, to_cfg;  // their kinds, as the dispatcher had them
  TransitionFields stay;         // the outcome's fields should the webhook stay here
};

// Writer thread, in the outcome's transaction, before the failing webhook's own transition.
// Moves the alert's later webhooks queued on `from` to `to` and returns true, or moves nothing
// and returns false when one of them cannot go: asked for `from` by identifier, of a service
// `to` does not host (an alert's key spans its services), of a type `from` takes and `to`
// leaves out (it would be discarded there), or held (released, it would go on `from` while
// the alert's later ones went on `to`).
bool move_alert_tail(JournalTx& tx, const AlertMove& m);

// One webhook a sweep moves (queued -> queued on another agent), as the sweep read it.
struct QueuedMove {
  std::string id;
  std::string to;
  std::string alert;  // its alert's ordering key under event ordering, else empty
};

// Writer thread: moves each webhook to its agent, only while it is still queued where the sweep
// saw it (`from`: assigned there; nullopt: held for its service); another relay's sweep, an
// operator's move or hold, or a claim may have got there first. Once a webhook of an alert
// stays, the alert's later ones of the batch stay too: moved alone they would go ahead of it
// on the other agent (an operator's hold committed since the sweep read it, say). Returns how
// many moved.
int move_queued(JournalTx& tx, const std::optional<std::string>& from,
                const std::vector<QueuedMove>& moves);

}  // namespace iarelay::dispatch_internal
