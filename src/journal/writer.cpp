// Group commit: drain the queue, run every op under a savepoint, commit once, tell everyone.
#include "journal/writer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <chrono>
#include <vector>

#include "common/time.h"
#include "journal/journal.h"
#include "journal/statement_cache.h"

namespace iarelay {
namespace {

// Bounds one transaction so a flood of submissions still commits (and answers) regularly.
constexpr size_t kMaxOpsPerCommit = 4096;

}  // namespace

Result<std::unique_ptr<Writer>> Writer::open(const std::string& path, SyncLevel sync) {
  auto db = open_journal_for_write(path, sync);
  if (!db) return db.status();
  if (Status s = migrate(**db); !s) return s;
  try {
    // Checkpoints are the checkpointer thread's job, not the committing thread's.
    (*db)->exec("PRAGMA wal_autocheckpoint=0");
  } catch (const SQLite::Exception& e) {
    return Status::io_error(path + ": " + e.what());
  }
  return std::unique_ptr<Writer>(new Writer(path, std::move(*db)));
}

Writer::Writer(std::string path, std::unique_ptr<SQLite::Database> db)
    : path_(std::move(path)), db_(std::move(db)) {
  thread_ = std::thread([this] { run_loop(); });
  checkpointer_ = std::thread([this] { checkpoint_loop(); });
}

Writer::~Writer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  checkpoint_cv_.notify_all();
  thread_.join();
  checkpointer_.join();
}

void Writer::submit(Op op, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(Pending{std::move(op), std::move(done)});
      // While the writer runs a batch, submitters only queue: no wake-up system call per op.
      if (writer_waiting_) cv_.notify_one();
      return;
    }
  }
  done(Status::unavailable("journal writer is stopping"));
}

std::future<Status> Writer::submit(Op op) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  submit(std::move(op), [promise](const Status& s) { promise->set_value(s); });
  return future;
}

void Writer::set_commit_listener(std::function<void()> listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

Writer::Stats Writer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Writer::run_loop() {
  StatementCacheScope cache(*db_);
  // Prepared once: exec() would parse these statements again for every operation and batch.
  SQLite::Statement begin(*db_, "BEGIN IMMEDIATE");
  SQLite::Statement commit(*db_, "COMMIT");
  SQLite::Statement savepoint(*db_, "SAVEPOINT op");
  SQLite::Statement release(*db_, "RELEASE op");
  SQLite::Statement rollback_to(*db_, "ROLLBACK TO op");
  auto step = [](SQLite::Statement& st) {
    // tryReset: a reset reports the previous run's error again, which was handled then.
    st.tryReset();
    st.exec();
  };
  std::vector<Pending> batch;
  std::vector<Status> results;
  for (;;) {
    std::function<void()> listener;
    {
      std::unique_lock lock(mu_);
      writer_waiting_ = true;
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      writer_waiting_ = false;
      if (queue_.empty()) break;  // stopping and drained
      size_t n = std::min(queue_.size(), kMaxOpsPerCommit);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      listener = listener_;
    }
    results.clear();
    Status commit_status;
    double commit_seconds = 0;
    size_t failed_ops = 0;
    try {
      step(begin);
      for (size_t i = 0;; ++i) {
        if (i == batch.size()) {
          // Operations that arrived while this batch ran join it before the commit: they
          // share its fsync instead of waiting for the next one, at no cost in latency.
          std::lock_guard lock(mu_);
          size_t n = std::min(queue_.size(), kMaxOpsPerCommit - std::min(i, kMaxOpsPerCommit));
          if (n == 0) break;
          for (size_t k = 0; k < n; ++k) {
            batch.push_back(std::move(queue_.front()));
            queue_.pop_front();
          }
        }
        results.push_back(Status::ok());
        step(savepoint);
        try {
          batch[i].op(*db_);
          step(release);
        } catch (const std::exception& e) {
          ++failed_ops;
          results[i] = Status::invalid_argument(e.what());
          if (sqlite3_get_autocommit(db_->getHandle())) {
            // SQLite rolled the whole transaction back (I/O error, disk full): nothing of
            // this batch is stored, so nobody may be told otherwise.
            throw;
          }
          step(rollback_to);
          step(release);
        }
      }
      auto t0 = std::chrono::steady_clock::now();
      step(commit);
      commit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      healthy_ = true;
    } catch (const std::exception& e) {
      commit_status = Status::unavailable(std::string("journal write failed: ") + e.what());
      if (!sqlite3_get_autocommit(db_->getHandle())) {
        try {
          db_->exec("ROLLBACK");
        } catch (const std::exception&) {
          // Nothing more to do: the transaction is gone either way.
        }
      }
      healthy_ = false;
      spdlog::error("journal commit of {} operations failed: {}", batch.size(), e.what());
    }
    {
      std::lock_guard lock(mu_);
      if (commit_status.is_ok()) {
        ++stats_.commits;
        stats_.ops += batch.size();
        stats_.failed_ops += failed_ops;
        stats_.commit_seconds_total += commit_seconds;
        double ms = commit_seconds * 1000;
        size_t b = 0;
        while (b < 7 && ms > kCommitBucketsMs[b]) ++b;
        ++stats_.commit_buckets[b];
      } else {
        ++stats_.failed_commits;
        stats_.failed_ops += batch.size();
      }
    }
    commits_since_checkpoint_.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].done) batch[i].done(commit_status.is_ok() ? results[i] : commit_status);
    }
    batch.clear();
    if (commit_status.is_ok() && listener) listener();
  }
}

void Writer::checkpoint_loop() {
  std::unique_ptr<SQLite::Database> db;
  try {
    db = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE);
    db->setBusyTimeout(1000);
  } catch (const SQLite::Exception& e) {
    spdlog::error("checkpointer cannot open {}: {}", path_, e.what());
    return;
  }
  for (;;) {
    {
      std::unique_lock lock(mu_);
      checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping_; });
      if (stopping_) break;
    }
    if (commits_since_checkpoint_.exchange(0) == 0) continue;
    int log_frames = 0, checkpointed = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->getHandle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       &log_frames, &checkpointed);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      spdlog::warn("WAL checkpoint failed: {}", sqlite3_errstr(rc));
  }
  // Final checkpoint on a clean stop so the WAL does not linger; failure is harmless.
  sqlite3_wal_checkpoint_v2(db->getHandle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

}  // namespace iarelay
