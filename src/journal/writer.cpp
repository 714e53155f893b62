// Group commit: drain the queue, run every op under a savepoint, commit once, tell everyone.
#include "journal/writer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "common/time.h"
#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/statement_cache.h"
#include "journal/store.h"

namespace iarelay {
namespace {

// Bounds one transaction so a flood of submissions still commits (and answers) regularly.
constexpr size_t kMaxOpsPerCommit = 4096;
// The WAL only starts over from its beginning when a write transaction begins with every
// frame already checkpointed. Under steady load the writer begins the next transaction at
// once, so the checkpointer never catches up and the WAL grows without end (seen: 720 MB of
// WAL for 100k webhooks). So past kWalCheckpointFrames the checkpointer is woken at once, and
// after each of its passes the writer checkpoints the few frames committed since, between two
// transactions, so that the next one restarts the WAL. Past kWalStallFrames (the checkpointer
// cannot keep up) the writer does it whenever the checkpointer is not running.
constexpr int kWalCheckpointFrames = 2048;  // 8 MiB of 4 KiB pages
constexpr int kWalStallFrames = 16384;      // 64 MiB
// A WAL that grew past this is truncated back to it when it restarts.
constexpr const char* kJournalSizeLimit = "PRAGMA journal_size_limit=67108864";

int on_wal_commit(void* writer_frames, sqlite3*, const char*, int frames) {
  static_cast<std::atomic<int>*>(writer_frames)->store(frames, std::memory_order_relaxed);
  return SQLITE_OK;
}

}  // namespace

Result<std::unique_ptr<Writer>> Writer::open(const std::string& path, SyncLevel sync) {
  auto db = open_journal_for_write(path, sync);
  if (!db) return db.status();
  try {
    // Checkpoints are the checkpointer thread's job, not the committing thread's: also a
    // migration's (copying a big table back into the file at its COMMIT would hold the start).
    (*db)->exec("PRAGMA wal_autocheckpoint=0");
  } catch (const SQLite::Exception& e) {
    return Status::io_error(path + ": " + e.what());
  }
  if (Status s = migrate(**db); !s) return s;
  int wal_fd = -1;
  try {
    (*db)->exec(kJournalSizeLimit);
    if (sync == SyncLevel::kFull) {
      // A read opens (creating if need be) the WAL file, which this connection then keeps
      // open until it closes: while it does, SQLite neither deletes nor replaces the file.
      (*db)->execAndGet("SELECT count(*) FROM sqlite_master");
      const char* wal = sqlite3_filename_wal(sqlite3_db_filename((*db)->getHandle(), "main"));
      wal_fd = ::open(wal, O_RDONLY | O_CLOEXEC);
      if (wal_fd < 0)
        return Status::io_error(std::string(wal) +
                                ": cannot open the WAL to sync it: " + std::strerror(errno));
      // The WAL's directory entry must be durable too (SQLite does this itself at FULL).
      std::string dir = std::filesystem::path(wal).parent_path().string();
      int dir_fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dir_fd >= 0) {
        ::fsync(dir_fd);
        ::close(dir_fd);
      }
      // From here COMMIT only writes the WAL; the syncer thread makes it durable. NORMAL, not
      // OFF: in WAL mode NORMAL does not sync on COMMIT either, but it still syncs the WAL
      // header when the WAL restarts from its beginning, before any frame of the new
      // generation is written, and syncs around checkpoints. At OFF a power loss during the
      // syncer's next fdatasync could leave the old header (old salts) on disk with some of
      // the new frames: recovery would then replay the previous generation's frames, older
      // than pages already checkpointed into the database, over them.
      (*db)->exec("PRAGMA synchronous=NORMAL");
    }
  } catch (const SQLite::Exception& e) {
    Status failed = Status::io_error(path + ": " + e.what());
    // The connection closes first: our descriptor of the WAL is closed only when no
    // connection of this process uses the file (see ~Writer).
    (*db).reset();
    if (wal_fd >= 0) ::close(wal_fd);
    return failed;
  }
  return std::unique_ptr<Writer>(new Writer(path, std::move(*db), wal_fd));
}

Writer::Writer(std::string path, std::unique_ptr<SQLite::Database> db, int wal_fd)
    : path_(std::move(path)), db_(std::move(db)), wal_fd_(wal_fd) {
  // Replaces SQLite's own autocheckpoint hook (disabled above): counts the WAL's frames.
  sqlite3_wal_hook(db_->getHandle(), &on_wal_commit, &wal_frames_);
  thread_ = std::thread([this] { run_loop(); });
  if (wal_fd_ >= 0) syncer_ = std::thread([this] { sync_loop(); });
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
  {
    std::lock_guard lock(mu_);
    writer_done_ = true;
  }
  sync_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  checkpointer_.join();
  // The connection closes (its last checkpoint is synced: synchronous=NORMAL syncs
  // checkpoints) before our descriptor of the WAL: closing a descriptor drops every POSIX lock
  // this process holds on that file, so it must outlive every connection of ours on it.
  db_.reset();
  if (wal_fd_ >= 0) ::close(wal_fd_);
}

Status Writer::permanent_failure() const {
  std::lock_guard lock(mu_);
  return sync_failure_;
}

Status Writer::wait_durable() {
  std::unique_lock lock(mu_);
  std::uint64_t target = started_generation_;
  durable_cv_.wait(lock, [&] { return durable_generation_ >= target; });
  return sync_failure_;
}

void Writer::set_sync_function_for_testing(std::function<int(int)> sync) {
  std::lock_guard lock(mu_);
  sync_function_ = std::move(sync);
}

void Writer::record_commit(double seconds) {
  ++stats_.commits;
  stats_.commit_seconds_total += seconds;
  double ms = seconds * 1000;
  size_t b = 0;
  while (b < 7 && ms > kCommitBucketsMs[b]) ++b;
  ++stats_.commit_buckets[b];
}

void Writer::enqueue(Pending p) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(std::move(p));
      // While the writer runs a batch, submitters only queue: no wake-up system call per op.
      if (writer_waiting_) cv_.notify_one();
      return;
    }
  }
  p.done(Status::unavailable("journal writer is stopping"));
}

void Writer::submit(Op op, Done done) {
  enqueue(Pending{std::move(op), std::move(done), Kind::kLoud});
}

void Writer::submit_append(Op op, Done done) {
  enqueue(Pending{std::move(op), std::move(done), Kind::kAppend});
}

void Writer::submit_quiet(Op op, Done done) {
  enqueue(Pending{std::move(op), std::move(done), Kind::kQuiet});
}

namespace {
// A seam operation as an operation on the writer's connection.
Writer::Op on_connection(JournalWriter::TxOp op) {
  return [op = std::move(op)](SQLite::Database& db) { run_in_sqlite_tx(db, op); };
}
}  // namespace

void Writer::submit_tx(TxOp op, Done done) {
  submit(on_connection(std::move(op)), std::move(done));
}

void Writer::submit_quiet_tx(TxOp op, Done done) {
  submit_quiet(on_connection(std::move(op)), std::move(done));
}

void Writer::submit_append_tx(TxOp op, Done done) {
  submit_append(on_connection(std::move(op)), std::move(done));
}

void Writer::submit_insert(NewWebhook w, InsertDone done) {
  auto outcome = std::make_shared<InsertOutcome>();
  submit_append(
      [w = std::move(w), outcome](SQLite::Database& db) { *outcome = insert_webhook(db, w); },
      [outcome, done = std::move(done)](const Status& s) { done(s, *outcome); });
}

void Writer::Loudness::add(const std::vector<Pending>& ops) {
  for (const auto& p : ops) {
    if (p.kind == Kind::kQuiet) continue;
    any = true;
    if (p.kind != Kind::kAppend) appends_only = false;
  }
}

std::future<Status> Writer::submit(Op op) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  submit(std::move(op), [promise](const Status& s) { promise->set_value(s); });
  return future;
}

void Writer::set_commit_listener(std::function<void(bool appends_only)> listener) {
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
  const bool pipelined = wal_fd_ >= 0;
  std::uint64_t passes_seen = 0;  // checkpointer passes when the writer last topped one up
  std::vector<Pending> batch;
  std::vector<Status> results;
  for (;;) {
    std::function<void(bool)> listener;
    std::uint64_t generation = 0;
    Status commit_status;
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
      // Counted before anything is written, so a reader that sees this transaction and then
      // calls wait_durable() waits for it.
      generation = ++started_generation_;
      commit_status = sync_failure_;
    }
    results.clear();
    size_t failed_ops = 0;
    auto commit_started = std::chrono::steady_clock::now();
    try {
      if (!commit_status) throw std::runtime_error(commit_status.message());
      if (int frames = wal_frames_.load(std::memory_order_relaxed);
          frames >= kWalCheckpointFrames && !checkpointing_.load()) {
        std::uint64_t passes = checkpoint_passes_.load();
        if (passes != passes_seen || frames >= kWalStallFrames) {
          passes_seen = passes;
          restart_wal();
        }
      }
      step(begin);
      for (size_t i = 0;; ++i) {
        if (i == batch.size()) {
          // Operations that arrived while this batch ran join it before the commit: they
          // share its fsync instead of waiting for the next one, at no cost in latency.
          // While the syncer is still busy with the previous commit, this one could not be
          // synced any sooner: keep the transaction open and take in what arrives meanwhile,
          // so there is one commit per fsync, as large as the arrivals make it.
          std::unique_lock lock(mu_);
          if (pipelined && queue_.empty() && i < kMaxOpsPerCommit) {
            writer_waiting_ = true;
            cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !syncing_; });
            writer_waiting_ = false;
          }
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
      commit_started = std::chrono::steady_clock::now();
      step(commit);
      if (commit_status.is_ok()) healthy_ = true;
    } catch (const std::exception& e) {
      if (commit_status.is_ok())
        commit_status = Status::unavailable(std::string("journal write failed: ") + e.what());
      if (!sqlite3_get_autocommit(db_->getHandle())) {
        try {
          db_->exec("ROLLBACK");
        } catch (const std::exception&) {
          // Nothing more to do: the transaction is gone either way.
        }
      }
      healthy_ = false;
      spdlog::error("journal commit of {} operations failed: {}", batch.size(),
                    commit_status.message());
    }
    commits_since_checkpoint_.fetch_add(1, std::memory_order_relaxed);
    // One checkpointer pass, then the writer's top-up (before its next BEGIN), then the next
    // pass: were the checkpointer woken again at once, it would always be running when the
    // writer looks, and the writer's top-up would never find its moment.
    if (wal_frames_.load(std::memory_order_relaxed) >= kWalCheckpointFrames &&
        checkpoint_passes_.load() == passes_seen && !checkpointing_.load()) {
      std::lock_guard lock(mu_);
      if (!checkpoint_wanted_) {
        checkpoint_wanted_ = true;
        checkpoint_cv_.notify_one();
      }
    }
    if (pipelined) {
      // Durable (and answered) once the syncer's next fdatasync returns.
      std::lock_guard lock(mu_);
      stats_.ops += batch.size();
      stats_.failed_ops += commit_status.is_ok() ? failed_ops : batch.size();
      Committed c{std::move(batch), std::move(results), generation, commit_started};
      if (!commit_status) c.results.assign(c.ops.size(), commit_status);
      c.failed = !commit_status;
      unsynced_.push_back(std::move(c));
      batch = {};
      results = {};
      sync_cv_.notify_one();
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (commit_status.is_ok()) {
        record_commit(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_started)
                .count());
        stats_.ops += batch.size();
        stats_.failed_ops += failed_ops;
      } else {
        ++stats_.failed_commits;
        stats_.failed_ops += batch.size();
      }
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].done) batch[i].done(commit_status.is_ok() ? results[i] : commit_status);
    }
    Loudness loud;
    loud.add(batch);
    batch.clear();
    if (commit_status.is_ok() && loud.any && listener) listener(loud.appends_only);
    {
      std::lock_guard lock(mu_);
      durable_generation_ = generation;
    }
    durable_cv_.notify_all();
  }
}

void Writer::sync_loop() {
  for (;;) {
    std::deque<Committed> group;
    std::function<int(int)> sync_function;
    Status failure;
    {
      std::unique_lock lock(mu_);
      sync_cv_.wait(lock, [&] { return writer_done_ || !unsynced_.empty(); });
      if (unsynced_.empty()) break;  // the writer stopped and everything is answered
      group.swap(unsynced_);
      syncing_ = true;
      sync_function = sync_function_;
      failure = sync_failure_;
    }
    sync_group(std::move(group), sync_function, failure);
  }
}

void Writer::sync_group(std::deque<Committed> group, const std::function<int(int)>& sync_function,
                        Status failure) {
  // One fdatasync covers every transaction whose COMMIT returned before it started.
  if (failure.is_ok()) {
    int rc;
    do {
      rc = sync_function ? sync_function(wal_fd_) : ::fdatasync(wal_fd_);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0)
      failure =
          Status::io_error(std::string("fdatasync of the journal's WAL failed (") +
                           std::strerror(errno) + "); no more writes are taken: restart iarelayd");
  }
  auto now = std::chrono::steady_clock::now();
  std::function<void(bool)> listener;
  Loudness durable;  // what the durable commits tell the listener
  {
    std::lock_guard lock(mu_);
    ++stats_.syncs;
    if (!failure.is_ok() && sync_failure_.is_ok()) {
      // After a failed fsync the kernel may have dropped the unsynced pages: nothing
      // written since the last good sync can be trusted to be on disk, so stop writing.
      sync_failure_ = failure;
      healthy_ = false;
      spdlog::critical("{}", failure.message());
    }
    for (const Committed& c : group) {
      if (c.failed || !failure.is_ok()) {
        ++stats_.failed_commits;
        continue;
      }
      durable.add(c.ops);
      record_commit(std::chrono::duration<double>(now - c.commit_started).count());
    }
    listener = listener_;
  }
  for (Committed& c : group) {
    for (size_t i = 0; i < c.ops.size(); ++i)
      if (c.ops[i].done) c.ops[i].done(failure.is_ok() ? c.results[i] : failure);
  }
  if (durable.any && listener) listener(durable.appends_only);
  {
    std::lock_guard lock(mu_);
    durable_generation_ = group.back().generation;
    syncing_ = false;
    // A writer holding its transaction open for this sync to end commits it now.
    if (writer_waiting_) cv_.notify_one();
  }
  durable_cv_.notify_all();
}

void Writer::restart_wal() {
  // The connection runs at synchronous=NORMAL (or FULL): the checkpoint syncs the WAL before
  // copying it and the database file before the WAL may be reused.
  int log_frames = 0, checkpointed = 0;
  int rc = sqlite3_wal_checkpoint_v2(db_->getHandle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                     &log_frames, &checkpointed);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY)
    spdlog::warn("WAL checkpoint by the writer failed: {}", sqlite3_errstr(rc));
}

void Writer::checkpoint_loop() {
  std::unique_ptr<SQLite::Database> db;
  try {
    db = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE);
    db->setBusyTimeout(1000);
    // A checkpoint must sync the WAL before copying it and the database before the WAL is
    // reused; FULL does both (as NORMAL would), whatever the `sync` level.
    db->exec("PRAGMA synchronous=FULL");
  } catch (const SQLite::Exception& e) {
    spdlog::error("checkpointer cannot open {}: {}", path_, e.what());
    return;
  }
  for (;;) {
    {
      std::unique_lock lock(mu_);
      checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(500),
                              [&] { return stopping_ || checkpoint_wanted_; });
      if (stopping_) break;
      checkpoint_wanted_ = false;
    }
    if (commits_since_checkpoint_.exchange(0) == 0) continue;
    int log_frames = 0, checkpointed = 0;
    checkpointing_ = true;
    int rc = sqlite3_wal_checkpoint_v2(db->getHandle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       &log_frames, &checkpointed);
    checkpointing_ = false;
    ++checkpoint_passes_;
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      spdlog::warn("WAL checkpoint failed: {}", sqlite3_errstr(rc));
  }
  // Final checkpoint on a clean stop so the WAL does not linger; failure is harmless.
  sqlite3_wal_checkpoint_v2(db->getHandle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

}  // namespace iarelay
