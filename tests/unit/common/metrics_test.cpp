// Tests of common/metrics.h's process figures and throttled collectors.
#include "common/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace iarelay {
namespace {

using namespace std::chrono_literals;

TEST(ProcessMetrics, ThisProcessInThePrometheusClientNames) {
  std::string text = render_process_metrics();
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds"})
    EXPECT_NE(text.find(std::string("\n") + name + " "), std::string::npos) << name << "\n" << text;
  size_t at = text.find("\nprocess_open_fds ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stod(text.substr(at + 18)), 3);  // stdin, stdout, stderr at least
}

TEST(ThrottledCollector, RunsAtMostOncePerIntervalAndRepeatsItsText) {
  int runs = 0;
  auto collect = throttled_collector([&] { return "x " + std::to_string(++runs) + "\n"; },
                                     std::chrono::milliseconds(300));
  std::string first, second, third;
  collect(first);
  collect(second);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(first, "x 1\n");
  EXPECT_EQ(second, "x 1\n");
  std::this_thread::sleep_for(400ms);
  collect(third);
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(third, "x 2\n");
}

TEST(ThrottledCollector, ASlowRenderRunsNoMoreThanOnePercentOfTheTime) {
  int runs = 0;
  // No minimum interval: a render of 20 ms is not run again for 100 x 20 ms = 2 s.
  auto collect = throttled_collector(
      [&] {
        ++runs;
        std::this_thread::sleep_for(20ms);
        return std::string("y\n");
      },
      std::chrono::milliseconds(0));
  std::string out;
  collect(out);
  std::this_thread::sleep_for(100ms);
  collect(out);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(out, "y\ny\n");
}

}  // namespace
}  // namespace iarelay
