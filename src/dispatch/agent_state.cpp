// The agent availability state machine.
#include "dispatch/agent_state.h"

#include <algorithm>

namespace iarelay {

AgentHealth::AgentHealth(int down_after, State initial, Millis now)
    : down_after_(std::max(down_after, 1)), state_(initial), next_probe_at_(now) {}

std::size_t AgentHealth::may_start(std::size_t inflight, std::size_t max_inflight,
                                   Millis now) const {
  switch (state_) {
    case State::kPaused:
      return 0;
    case State::kDown:
      return inflight == 0 && now >= next_probe_at_ ? 1 : 0;
    case State::kUp:
      return inflight < max_inflight ? max_inflight - inflight : 0;
  }
  return 0;
}

AgentHealth::Change AgentHealth::on_result(bool agent_failure, bool was_probe, Millis now) {
  if (!agent_failure) {
    consecutive_failures_ = 0;
    if (state_ == State::kDown) {
      state_ = State::kUp;
      probe_delay_ = kProbeInitial;
      return Change::kCameUp;
    }
    return Change::kNone;
  }
  ++consecutive_failures_;
  if (state_ == State::kUp && consecutive_failures_ >= down_after_) {
    state_ = State::kDown;
    probe_delay_ = kProbeInitial;
    next_probe_at_ = now + probe_delay_;
    return Change::kWentDown;
  }
  if (state_ == State::kDown && was_probe) {
    probe_delay_ = std::min(probe_delay_ * 2, kProbeMax);
    next_probe_at_ = now + probe_delay_;
  }
  return Change::kNone;
}

bool AgentHealth::set_paused(bool paused, Millis now) {
  if (paused == (state_ == State::kPaused)) return false;
  state_ = paused ? State::kPaused : State::kUp;
  consecutive_failures_ = 0;
  probe_delay_ = kProbeInitial;
  next_probe_at_ = now;
  return true;
}

void AgentHealth::set_down_after(int down_after) {
  down_after_ = std::max(down_after, 1);
}

}  // namespace iarelay
