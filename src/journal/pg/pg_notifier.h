// Wake-ups between relays on one PostgreSQL journal (issue 15 §3, docs/high-availability.md):
// LISTEN/NOTIFY on a connection and a thread of their own, as a hint only. A relay that queued
// webhooks announces it; the others hear it and walk their agents' queues at once instead of at
// their next poll (every 250 ms), which they go on doing: a notification lost (a connection
// down, a relay restarting) delays a delivery by at most that poll, never loses it.
// The NOTIFY is sent after the intake's COMMIT, from this thread: never inside the intake's
// transaction (NOTIFY serializes committing transactions on a lock of its own) nor on the
// writer's thread (no round trip between two group commits).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace iarelay {

class PgConnection;

class PgNotifier {
 public:
  static constexpr const char* kChannel = "iarelay_queue";
  // Connects and LISTENs (again every second while it cannot), on its thread. `heard`
  // is called on that thread when other sessions' notifications arrive (several that arrive
  // together: once).
  static Result<std::unique_ptr<PgNotifier>> start(std::string conninfo,
                                                   std::function<void()> heard);
  ~PgNotifier();
  PgNotifier(const PgNotifier&) = delete;
  PgNotifier& operator=(const PgNotifier&) = delete;

  // Tells the other relays that webhooks were queued: one NOTIFY, sent from this thread as soon
  // as it can; announcements made before it is sent share it. Any thread; never blocks.
  void announce();
  // Notifications sent, and other sessions' notifications heard, since start (metrics).
  std::uint64_t sent() const { return sent_; }
  std::uint64_t heard() const { return heard_count_; }
  // Connections tried (the first included); while the server refuses, one a second.
  std::uint64_t connects() const { return connects_; }

 private:
  PgNotifier(std::string conninfo, std::function<void()> heard);
  Status connect();
  void run();
  // Takes what arrived on the connection; false when the connection is gone.
  bool take_notifications();

  const std::string conninfo_;
  const std::function<void()> heard_;
  std::unique_ptr<PgConnection> db_;  // the thread's
  int wake_fd_ = -1;                  // eventfd: an announcement, or the stop
  std::atomic<bool> announce_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> sent_{0}, heard_count_{0}, connects_{0};
  std::thread thread_;
};

}  // namespace iarelay
