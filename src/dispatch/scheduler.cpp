// Ordering keys and the per-walk key scheduler.
#include "dispatch/scheduler.h"

#include <algorithm>

namespace iarelay {

std::string ordering_key(Ordering ordering, const QueuedWebhook& w) {
  switch (ordering) {
    case Ordering::kFifo:
      return "";
    case Ordering::kNone:
      return w.id;
    case Ordering::kEvent:
      break;
  }
  // The prefix keeps an event id from ever equalling some webhook id.
  return w.event_id.empty() ? "id:" + w.id : "ev:" + w.event_id;
}

KeyScheduler::KeyScheduler(Ordering ordering, Millis now,
                           const std::unordered_set<std::string>& busy, std::size_t max_pick)
    : ordering_(ordering), now_(now), busy_(busy), max_pick_(max_pick) {}

bool KeyScheduler::saturated() const {
  return picked_ >= max_pick_ || fifo_blocked_;
}

bool KeyScheduler::offer(const QueuedWebhook& w, bool in_hand, bool ignore_due) {
  if (saturated()) return false;
  std::string key = ordering_key(ordering_, w);
  auto block = [&] {
    if (ordering_ == Ordering::kFifo) fifo_blocked_ = true;
    blocked_.insert(std::move(key));
    return false;
  };
  if (in_hand || busy_.count(key)) {
    ++passed_over_busy_;
    return block();
  }
  if (blocked_.count(key)) return block();
  if (!ignore_due && w.next_attempt_at && *w.next_attempt_at > now_) {
    earliest_not_due_ =
        std::min(earliest_not_due_.value_or(*w.next_attempt_at), *w.next_attempt_at);
    return block();
  }
  if (earlier_queued_ && earlier_queued_(w)) return block();
  ++picked_;
  blocked_.insert(std::move(key));
  if (ordering_ == Ordering::kFifo) fifo_blocked_ = true;
  return true;
}

}  // namespace iarelay
