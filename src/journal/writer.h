// The journal's single writer: one thread owns the write connection and group-commits.
// Callers submit operations from any thread; every operation pending when the writer wakes,
// and every one submitted while it runs them (up to 4096), runs in one transaction (each under
// its own savepoint, so one failing operation does not undo the others) and one commit, i.e.
// one fsync at sync=full. Each caller is told when its
// operation is durable, or why it failed. A second thread checkpoints the WAL on its own
// connection (PASSIVE), so checkpoints never stall commits.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/config.h"
#include "common/status.h"

namespace SQLite {
class Database;
}

namespace iarelay {

class Writer {
 public:
  // Runs on the writer thread inside the group transaction. Throw (any std::exception) to fail
  // this operation alone; its changes are rolled back to its savepoint.
  using Op = std::function<void(SQLite::Database&)>;
  // Runs on the writer thread once the transaction committed (ok) or failed. Keep it short.
  using Done = std::function<void(const Status&)>;

  struct Stats {
    std::uint64_t commits = 0;
    std::uint64_t ops = 0;
    std::uint64_t failed_ops = 0;
    std::uint64_t failed_commits = 0;
    double commit_seconds_total = 0;       // time spent in COMMIT (the fsync)
    std::uint64_t commit_buckets[8] = {};  // commits by duration: <=1,2,5,10,25,50,100,+inf ms
  };
  static constexpr double kCommitBucketsMs[7] = {1, 2, 5, 10, 25, 50, 100};

  // Opens the write connection (creating the file) and applies migrations.
  static Result<std::unique_ptr<Writer>> open(const std::string& path, SyncLevel sync);
  // Drains what was submitted, then stops both threads.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void submit(Op op, Done done);
  std::future<Status> submit(Op op);
  // Submits and waits until durable.
  Status run(Op op) { return submit(std::move(op)).get(); }

  // Called on the writer thread after each successful commit (e.g. to wake feed long-polls).
  void set_commit_listener(std::function<void()> listener);
  // Whether the last commit succeeded (for /readyz and 503 on intake).
  bool healthy() const { return healthy_.load(); }
  Stats stats() const;
  const std::string& path() const { return path_; }

 private:
  Writer(std::string path, std::unique_ptr<SQLite::Database> db);
  void run_loop();
  void checkpoint_loop();

  struct Pending {
    Op op;
    Done done;
  };

  const std::string path_;
  std::unique_ptr<SQLite::Database> db_;  // owned by the writer thread after construction
  mutable std::mutex mu_;
  std::condition_variable cv_;             // wakes the writer thread only
  std::condition_variable checkpoint_cv_;  // wakes the checkpointer only (on stop)
  std::deque<Pending> queue_;              // GUARDED_BY(mu_)
  bool stopping_ = false;                  // GUARDED_BY(mu_)
  bool writer_waiting_ = false;            // GUARDED_BY(mu_): submit() notifies only then
  std::function<void()> listener_;         // GUARDED_BY(mu_)
  Stats stats_;                            // GUARDED_BY(mu_)
  std::atomic<bool> healthy_{true};
  std::atomic<std::uint64_t> commits_since_checkpoint_{0};
  std::thread thread_;
  std::thread checkpointer_;
};

}  // namespace iarelay
