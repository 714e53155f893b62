// Stopping the relay while answers are pending: no writer callback may run into a destroyed
// server or dispatcher. The journal's fsync is held (this binary defines fdatasync(), which
// the C library's and SQLite's calls resolve to) while a webhook waits for its commit; the
// relay is stopped; the fsync is released only after the server's stop grace has passed. Run
// under AddressSanitizer (-DIARELAY_SANITIZE=address,undefined) any use after free is a report.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/config.h"
#include "daemon/relay.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace {

std::mutex hold_mu;
std::condition_variable hold_cv;
bool holding = false;            // GUARDED_BY(hold_mu)
std::atomic<int> held_calls{0};  // fdatasync calls now waiting

}  // namespace

// Every fdatasync of this process (the writer's syncer, SQLite's checkpoints) comes here.
extern "C" int fdatasync(int fd) {
  {
    std::unique_lock lock(hold_mu);
    if (holding) {
      ++held_calls;
      hold_cv.wait(lock, [] { return !holding; });
      --held_calls;
    }
  }
  using SyncFunction = int (*)(int);
  static auto real = reinterpret_cast<SyncFunction>(dlsym(RTLD_NEXT, "fdatasync"));
  return real(fd);
}

namespace iarelay::testing {
namespace {

void set_holding(bool on) {
  {
    std::lock_guard lock(hold_mu);
    holding = on;
  }
  hold_cv.notify_all();
}

TEST(RelayStop, PendingAnswersOutliveNoPart) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"),
             "journal = " + dir.file("journal.db") +
                 "\nsync = full\ndrain_grace = 100ms\n[listen]\naddress = 127.0.0.1:" +
                 std::to_string(port) +
                 "\n[agent.a1]\nid = a1\ncallback = http://127.0.0.1:1/cb\nservices = svc\n");
  auto config = load_config(dir.file("relay.conf"));
  ASSERT_TRUE(config.is_ok()) << config.status().message();
  Relay relay(*config);
  ASSERT_TRUE(relay.start().is_ok());
  ASSERT_TRUE(wait_for_port(port));

  set_holding(true);
  std::thread client([port] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(30, 0);
    // No answer is expected: the relay stops before the commit is durable.
    c.Post("/v1/webhooks/svc", R"({"eventIdentifier": 1, "status": "active"})", "application/json");
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (held_calls.load() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GT(held_calls.load(), 0) << "the webhook's commit never reached its fsync";

  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    relay.stop();
    stopped = true;
  });
  // Past the server's 10 s grace for pending answers: a stop that destroyed the server before
  // draining the writer has done so by now.
  std::this_thread::sleep_for(std::chrono::seconds(11));
  set_holding(false);
  stopper.join();
  client.join();
  EXPECT_TRUE(stopped.load());
}

}  // namespace
}  // namespace iarelay::testing
