// The journal's single writer: one thread owns the write connection and group-commits.
// Callers submit operations from any thread; every operation pending when the writer wakes,
// and every one submitted while it runs them (up to 4096), runs in one transaction (each under
// its own savepoint, so one failing operation does not undo the others) and one commit. Each
// caller is told when its operation is durable, or why it failed.
//
// At sync=full the fsync is pipelined: COMMIT writes the WAL frames (the connection runs with
// synchronous=NORMAL, which in WAL mode syncs nothing on COMMIT but does sync the WAL header
// when the WAL restarts, and checkpoints), and a syncer thread fdatasync()s the WAL file and
// only then tells the callers of every transaction committed before that sync began. The writer
// meanwhile runs the next transaction, so one fsync overlaps the next batch's work instead of
// stalling it. Other connections may read a committed transaction before its sync; wait_durable()
// is the barrier for readers that hand rows on to someone else (the feed). An fdatasync failure is
// final: the writer refuses every later operation (the kernel may have dropped the unsynced pages).
// At sync=normal the connection runs at synchronous=NORMAL and callers are told at COMMIT:
// durable against a process crash, not against power loss (the last commits may be lost).
// A second thread checkpoints the WAL on its own connection (PASSIVE, synchronous=FULL), so
// checkpoints never stall commits.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "journal/journal_writer.h"

namespace SQLite {
class Database;
}

namespace iarelay {

class Writer final : public JournalWriter {
 public:
  // Runs on the writer thread inside the group transaction. Throw (any std::exception) to fail
  // this operation alone; its changes are rolled back to its savepoint.
  using Op = std::function<void(SQLite::Database&)>;
  // Runs once the transaction is durable (ok) or failed, on the writer or syncer thread.
  // Keep it short.
  using Done = std::function<void(const Status&)>;

  struct Stats {
    std::uint64_t commits = 0;
    std::uint64_t ops = 0;
    std::uint64_t failed_ops = 0;
    std::uint64_t failed_commits = 0;
    std::uint64_t syncs = 0;               // fdatasync calls of the WAL (sync=full)
    double commit_seconds_total = 0;       // COMMIT until durable (incl. the fsync), summed
    std::uint64_t commit_buckets[8] = {};  // commits by that time: <=1,2,5,10,25,50,100,+inf ms
  };
  static constexpr double kCommitBucketsMs[7] = {1, 2, 5, 10, 25, 50, 100};

  // Opens the write connection (creating the file) and applies migrations.
  static Result<std::unique_ptr<Writer>> open(const std::string& path, SyncLevel sync);
  // Drains what was submitted, then stops both threads.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void submit(Op op, Done done);
  // As submit, for an operation that creates no work for anyone the commit listener wakes (the
  // dispatcher's own claims and outcomes: it acts on their Done itself). A commit made only of
  // such operations does not call the listener, so the dispatcher does not walk its queues
  // again for its own bookkeeping.
  void submit_quiet(Op op, Done done);
  // As submit, for an operation that only inserts new rows (intake, the poller's batches): a
  // commit whose loud operations are all such tells the listener so (appends_only), and the
  // dispatcher then reads only rows past those it has already seen instead of walking its
  // queues from their heads. New rows have higher seqs than any before (AUTOINCREMENT).
  void submit_append(Op op, Done done);
  std::future<Status> submit(Op op);
  // Submits and waits until durable.
  Status run(Op op) { return submit(std::move(op)).get(); }
  // JournalWriter: the seam's operations, as submit, submit_quiet and submit_append.
  void submit_tx(TxOp op, Done done) override;
  void submit_quiet_tx(TxOp op, Done done) override;
  void submit_append_tx(TxOp op, Done done) override;
  void submit_insert(NewWebhook w, InsertDone done) override;

  // Called after each successful commit is durable (e.g. to wake feed long-polls), unless every
  // operation of the commit was submitted with submit_quiet.
  // `appends_only`: every such operation of the commit was submitted with submit_append.
  void set_commit_listener(std::function<void(bool appends_only)> listener) override;
  // Waits until every transaction committed (or committing) when it was called is durable.
  // A reader that saw rows calls it before passing them on. Not ok when the sync failed.
  Status wait_durable() override;
  // Test seam: replaces fdatasync(fd) of the WAL (return 0, or -1 with errno set).
  void set_sync_function_for_testing(std::function<int(int)> sync);
  // Whether the last commit succeeded (for /readyz and 503 on intake).
  bool healthy() const override { return healthy_.load(); }
  // Ok while the writer is usable. Not ok (IoError, saying why) once it has failed for good:
  // an fdatasync of the WAL failed, after which every operation is refused until the process
  // restarts and SQLite recovers the WAL. A failed commit alone is not permanent. Any thread.
  Status permanent_failure() const override;
  Stats stats() const;
  const std::string& path() const { return path_; }

 private:
  // wal_fd >= 0: sync=full, the syncer fdatasync()s this file (the WAL) after each commit.
  // The Writer owns it and closes it only after its connection has closed.
  Writer(std::string path, std::unique_ptr<SQLite::Database> db, int wal_fd);
  void run_loop();
  void sync_loop();
  struct Committed;
  void sync_group(std::deque<Committed> group, const std::function<int(int)>& sync_function,
                  Status failure);
  void checkpoint_loop();
  void record_commit(double seconds);  // mu_ held
  void restart_wal();                  // writer thread, between transactions

  enum class Kind { kLoud, kAppend, kQuiet };  // submit, submit_append, submit_quiet
  struct Pending {
    Op op;
    Done done;
    Kind kind = Kind::kLoud;
  };
  void enqueue(Pending p);
  // What a commit of `ops` tells the listener: none (all quiet), or whether only appends.
  struct Loudness {
    bool any = false;          // an operation not submitted quiet
    bool appends_only = true;  // ...and all of those submitted with submit_append
    void add(const std::vector<Pending>& ops);
  };
  // A committed transaction waiting for its fsync.
  struct Committed {
    std::vector<Pending> ops;
    std::vector<Status> results;
    std::uint64_t generation = 0;
    std::chrono::steady_clock::time_point commit_started;
    bool failed = false;  // the transaction did not commit; results say why
  };

  const std::string path_;
  std::unique_ptr<SQLite::Database> db_;  // owned by the writer thread after construction
  mutable std::mutex mu_;
  std::condition_variable cv_;             // wakes the writer thread only
  std::condition_variable checkpoint_cv_;  // wakes the checkpointer only (on stop)
  std::deque<Pending> queue_;              // GUARDED_BY(mu_)
  bool stopping_ = false;                  // GUARDED_BY(mu_)
  bool writer_waiting_ = false;            // GUARDED_BY(mu_): submit() notifies only then
  std::function<void(bool)> listener_;     // GUARDED_BY(mu_)
  Stats stats_;                            // GUARDED_BY(mu_)
  std::atomic<bool> healthy_{true};
  std::atomic<std::uint64_t> commits_since_checkpoint_{0};
  std::atomic<int> wal_frames_{0};          // frames in the WAL after the last commit (wal hook)
  bool checkpoint_wanted_ = false;          // GUARDED_BY(mu_): the WAL grew; checkpoint now
  std::atomic<bool> checkpointing_{false};  // the checkpointer is in a pass
  std::atomic<std::uint64_t> checkpoint_passes_{0};  // passes it finished

  // Pipelined sync (sync=full only; wal_fd_ < 0 otherwise).
  const int wal_fd_;
  std::condition_variable sync_cv_;        // wakes the syncer
  std::condition_variable durable_cv_;     // wakes wait_durable()
  std::deque<Committed> unsynced_;         // GUARDED_BY(mu_)
  std::uint64_t started_generation_ = 0;   // GUARDED_BY(mu_): transactions that began COMMIT
  std::uint64_t durable_generation_ = 0;   // GUARDED_BY(mu_): ...whose outcome is final
  bool writer_done_ = false;               // GUARDED_BY(mu_): the syncer may stop when drained
  bool syncing_ = false;                   // GUARDED_BY(mu_): the syncer has a group in hand
  Status sync_failure_;                    // GUARDED_BY(mu_): set once, never cleared
  std::function<int(int)> sync_function_;  // GUARDED_BY(mu_)

  std::thread thread_;
  std::thread syncer_;
  std::thread checkpointer_;
};

}  // namespace iarelay
