// One agent's availability as the dispatcher sees it (docs/architecture.md, "Availability"): up,
// down after `down_after` consecutive agent failures, probed one call at a time with backoff 1 s →
// 30 s while down, up again on the first answer that is not an agent failure; paused by operators.
// Pure state machine (times are given); owned and used by the dispatcher thread only.
#pragma once

#include <cstddef>

#include "common/time.h"

namespace iarelay {

class AgentHealth {
 public:
  enum class State { kUp, kDown, kPaused };
  enum class Change { kNone, kWentDown, kCameUp };

  static constexpr Millis kProbeInitial = 1'000;
  static constexpr Millis kProbeMax = 30'000;

  explicit AgentHealth(int down_after, State initial = State::kUp, Millis now = 0);

  State state() const { return state_; }
  // How many calls may start now given `inflight` calls under way (0 while paused; while down
  // one probe when none is in flight and the probe time has come).
  std::size_t may_start(std::size_t inflight, std::size_t max_inflight, Millis now) const;
  // While down: the next call started is the probe.
  bool probing() const { return state_ == State::kDown; }
  // When the next probe may start (meaningful while down).
  Millis next_probe_at() const { return next_probe_at_; }

  // A call ended: `agent_failure` per RetryDecision (transport error, timeout,
  // 3xx/408/425/429/5xx).
  // `was_probe`: the call was started while down. Returns the state change to record.
  Change on_result(bool agent_failure, bool was_probe, Millis now);

  // Operator pause (from the journal's agents table). Unpausing makes the agent up.
  // Returns true when the state changed.
  bool set_paused(bool paused, Millis now);
  int consecutive_failures() const { return consecutive_failures_; }
  // A reload changed `down_after`: the failures already counted stay, and the next failure
  // compares against the new value (lowered below them, it marks the agent down).
  void set_down_after(int down_after);

 private:
  int down_after_;
  State state_;
  int consecutive_failures_ = 0;
  Millis probe_delay_ = kProbeInitial;
  Millis next_probe_at_ = 0;
};

}  // namespace iarelay
