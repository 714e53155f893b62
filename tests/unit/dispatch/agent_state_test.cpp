// Agent availability: down after consecutive failures, one probe with 1 s → 30 s backoff, up
// on the first success, operator pauses.
#include "dispatch/agent_state.h"

#include <gtest/gtest.h>

namespace iarelay {
namespace {

using State = AgentHealth::State;
using Change = AgentHealth::Change;

TEST(AgentHealth, DownAfterConsecutiveFailuresOnly) {
  AgentHealth h(3);
  EXPECT_EQ(h.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(h.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(h.on_result(false, false, 0), Change::kNone);  // a success resets the run
  EXPECT_EQ(h.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(h.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(h.on_result(true, false, 100), Change::kWentDown);
  EXPECT_EQ(h.state(), State::kDown);
}

TEST(AgentHealth, WhileDownOneProbeWithBackoffFromOneToThirtySeconds) {
  AgentHealth h(1);
  ASSERT_EQ(h.on_result(true, false, 0), Change::kWentDown);
  EXPECT_EQ(h.may_start(0, 8, 999), 0u);
  EXPECT_EQ(h.may_start(0, 8, 1'000), 1u);
  EXPECT_EQ(h.may_start(1, 8, 5'000), 0u);  // a probe is already in flight
  Millis now = 1'000;
  Millis expected[] = {2'000, 4'000, 8'000, 16'000, 30'000, 30'000};
  for (Millis delay : expected) {
    EXPECT_EQ(h.on_result(true, true, now), Change::kNone);
    EXPECT_EQ(h.next_probe_at(), now + delay);
    now += delay;
  }
  // Failures of calls started before the agent went down do not push the probe back.
  Millis before = h.next_probe_at();
  h.on_result(true, false, now + 10);
  EXPECT_EQ(h.next_probe_at(), before);
  EXPECT_EQ(h.on_result(false, true, now), Change::kCameUp);
  EXPECT_EQ(h.state(), State::kUp);
  EXPECT_EQ(h.may_start(3, 8, now), 5u);
}

TEST(AgentHealth, PausedTakesNothingAndResumeMakesItUp) {
  AgentHealth h(2, State::kDown, 0);
  EXPECT_TRUE(h.set_paused(true, 10));
  EXPECT_EQ(h.may_start(0, 8, 100'000), 0u);
  EXPECT_FALSE(h.set_paused(true, 20));
  EXPECT_TRUE(h.set_paused(false, 30));
  EXPECT_EQ(h.state(), State::kUp);
  EXPECT_EQ(h.may_start(0, 8, 30), 8u);
}

// down_after is reloadable: the failures already counted stay, the next one is compared with
// the new value.
TEST(AgentHealth, ReloadedDownAfterAppliesToTheNextFailure) {
  AgentHealth lowered(5);
  EXPECT_EQ(lowered.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(lowered.on_result(true, false, 0), Change::kNone);
  lowered.set_down_after(1);
  EXPECT_EQ(lowered.state(), State::kUp);  // a reload alone marks nothing down
  EXPECT_EQ(lowered.on_result(true, false, 100), Change::kWentDown);
  EXPECT_EQ(lowered.state(), State::kDown);

  AgentHealth raised(2);
  EXPECT_EQ(raised.on_result(true, false, 0), Change::kNone);
  raised.set_down_after(4);
  EXPECT_EQ(raised.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(raised.on_result(true, false, 0), Change::kNone);
  EXPECT_EQ(raised.on_result(true, false, 0), Change::kWentDown);

  AgentHealth floor(3);
  floor.set_down_after(0);  // as the constructor: at least 1
  EXPECT_EQ(floor.on_result(true, false, 0), Change::kWentDown);
}

}  // namespace
}  // namespace iarelay
