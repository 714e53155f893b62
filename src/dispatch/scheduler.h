// Ordering keys (docs/architecture.md, "Ordering") and the choice of what an agent may be sent next
// from a window of its queue. Pure: the dispatcher feeds rows in arrival order with what it knows
// (keys in hand, the time); no journal or clock here. Not thread-safe (one per use).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>

#include "common/config.h"
#include "common/time.h"
#include "journal/store.h"

namespace iarelay {

// The key under which webhooks are delivered one at a time, in arrival order:
// event → the alert's event id (a webhook without one is its own key: its webhook id);
// fifo → "" (the whole agent is one sequence); none → the webhook id (no constraint).
std::string ordering_key(Ordering ordering, const QueuedWebhook& w);

// Walks one agent's queued rows in arrival order and picks those that may be claimed now:
// a row is picked when it is due (next_attempt_at <= now, or `ignore_due`), its key is not
// busy (an earlier webhook of the key in hand: claimed, in flight, or its outcome not yet
// committed) and no earlier row of its key was passed over or picked in this walk.
class KeyScheduler {
 public:
  // `busy` must outlive the scheduler. At most `max_pick` rows are picked.
  KeyScheduler(Ordering ordering, Millis now, const std::unordered_set<std::string>& busy,
               std::size_t max_pick);
  // Kept by reference: a temporary would dangle (ASan: stack-use-after-scope).
  KeyScheduler(Ordering, Millis, std::unordered_set<std::string>&&, std::size_t) = delete;

  // Offers the next row (rows must come in increasing seq). `in_hand`: the row itself is
  // already claimed (its claim not yet visible to the reader). `ignore_due`: treat it as due
  // (probes, and webhooks backed off during an outage that has ended).
  // Returns true when the caller should claim it.
  bool offer(const QueuedWebhook& w, bool in_hand = false, bool ignore_due = false);

  // From now on a row that would be picked is first passed to `earlier_queued`; when it says an
  // earlier webhook of the row's key is still queued (one this walk did not offer: the caller
  // skipped part of the queue), the row is passed over and its key blocked.
  void check_earlier(std::function<bool(const QueuedWebhook&)> earlier_queued) {
    earlier_queued_ = std::move(earlier_queued);
  }

  std::size_t picked() const { return picked_; }
  // Rows passed over because they or their key were in hand: they may go once that is done.
  std::size_t passed_over_busy() const { return passed_over_busy_; }
  // Nothing more can be picked in this walk (max reached, or fifo blocked).
  bool saturated() const;
  // The earliest next_attempt_at among rows passed over only because they were not due.
  std::optional<Millis> earliest_not_due() const { return earliest_not_due_; }

 private:
  Ordering ordering_;
  Millis now_;
  const std::unordered_set<std::string>& busy_;
  std::size_t max_pick_;
  std::size_t picked_ = 0;
  std::size_t passed_over_busy_ = 0;
  bool fifo_blocked_ = false;
  std::unordered_set<std::string> blocked_;  // keys passed over or picked in this walk
  std::optional<Millis> earliest_not_due_;
  std::function<bool(const QueuedWebhook&)> earlier_queued_;
};

}  // namespace iarelay
