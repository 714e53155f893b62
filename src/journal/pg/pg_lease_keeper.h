// Keeps this relay's agent leases on the PostgreSQL journal (issue 15): a thread with a
// connection of its own takes the lease of every configured agent that is free or expired and
// renews the ones it holds, every ttl / 4. Each agent is a transaction of its own (one row
// locked at a time: never a deadlock with the writer's fenced transactions, which lock several
// FOR SHARE). Taking a lease puts the agent's inflight webhooks back in the queue (pg_leases.h).
// A lease counts as held only until ttl * 3 / 4 after the start of its last renewal, on this
// host's monotonic clock: a relay that was stopped (SIGSTOP, a long pause) or cannot reach the
// database stops making calls for its agents before another relay may take them.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/time.h"
#include "journal/leases.h"
#include "journal/pg/pg_leases.h"

namespace iarelay {

class PgLeaseKeeper final : public AgentLeases {
 public:
  // Takes what it can at once (the first round runs before start returns), then keeps going on
  // its thread. `changed` is called (on that thread) whenever the set of held agents changes.
  static Result<std::unique_ptr<PgLeaseKeeper>> start(std::string conninfo, std::string owner,
                                                      Millis ttl, std::vector<std::string> agents,
                                                      std::function<void()> changed);
  // Stops the thread; lets go of the leases when release_on_stop() was called.
  ~PgLeaseKeeper() override;
  PgLeaseKeeper(const PgLeaseKeeper&) = delete;
  PgLeaseKeeper& operator=(const PgLeaseKeeper&) = delete;

  const std::string& owner() const override { return owner_; }
  std::optional<std::int64_t> held(const std::string& agent) const override;
  void set_agents(std::vector<std::string> agents) override;
  // Stops renewing and ends every lease this relay holds (expires now), so another relay takes
  // its agents at once. Called at shutdown, once the dispatcher has stopped and its writes are
  // done: what is still inflight is put back by whoever takes the agent.
  void release_all();
  // Leases taken and lost since start (metrics).
  std::uint64_t taken() const;
  std::uint64_t lost() const;

 private:
  PgLeaseKeeper(std::string conninfo, std::string owner, Millis ttl,
                std::vector<std::string> agents, std::function<void()> changed);
  Status connect();
  void run();
  void round();

  struct Held {
    std::int64_t epoch = 0;
    Millis valid_until = 0;  // steady time
  };

  const std::string conninfo_;
  const std::string owner_;
  const Millis ttl_;
  const std::function<void()> changed_;
  std::unique_ptr<PgConnection> db_;  // the keeper thread's
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> agents_;     // GUARDED_BY(mu_)
  std::map<std::string, Held> held_;    // GUARDED_BY(mu_)
  bool stopping_ = false;               // GUARDED_BY(mu_)
  std::uint64_t taken_ = 0, lost_ = 0;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace iarelay
