// Tests of journal/writer.h: group commit, per-operation failure, draining on destruction,
// the commit listener and the statistics.
#include "journal/writer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/time.h"
#include "journal/journal.h"
#include "journal/store.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

void insert_audit(SQLite::Database& db, const std::string& actor) {
  SQLite::Statement s(db, "INSERT INTO audit (at, actor, action, affected) VALUES ('t',?,'x',1)");
  s.bind(1, actor);
  s.exec();
}

int count_audit(const std::string& path, const std::string& where = "1=1") {
  SQLite::Database r(path);
  return r.execAndGet("SELECT count(*) FROM audit WHERE " + where).getInt();
}

// Holds the writer thread inside one operation until opened, so that everything submitted
// meanwhile is queued and forms the next batch: group commit becomes deterministic.
class Gate {
 public:
  Gate() : opened_(opened_promise_.get_future().share()) {}
  // The operation to submit; it reports that the writer runs it, then waits for open().
  Writer::Op op() {
    return [this](SQLite::Database&) {
      entered_.set_value();
      opened_.wait();
    };
  }
  void wait_entered() { entered_.get_future().wait(); }
  void open() { opened_promise_.set_value(); }

 private:
  std::promise<void> entered_;
  std::promise<void> opened_promise_;
  std::shared_future<void> opened_;
};

std::unique_ptr<Writer> open_writer(const std::string& path, SyncLevel sync = SyncLevel::kNormal) {
  auto w = Writer::open(path, sync);
  EXPECT_TRUE(w.is_ok()) << w.status().message();
  return w.is_ok() ? std::move(*w) : nullptr;
}

TEST(Writer, CommitsSubmittedOperation) {
  testing::TempDir dir;
  auto w = Writer::open(dir.file("j.db"), SyncLevel::kFull);
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  Status s = (*w)->run([](SQLite::Database& db) {
    db.exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t','me','x',1)");
  });
  EXPECT_TRUE(s.is_ok()) << s.message();
  SQLite::Database r(dir.file("j.db"));
  EXPECT_EQ(r.execAndGet("SELECT count(*) FROM audit").getInt(), 1);
}

TEST(Writer, OpenAppliesMigrations) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  SQLite::Database r(dir.file("j.db"));
  EXPECT_EQ(r.execAndGet("SELECT count(*) FROM schema_migrations").getInt(),
            static_cast<int>(embedded_migrations().size()));
  EXPECT_TRUE(w->healthy());
  EXPECT_EQ(w->path(), dir.file("j.db"));
}

TEST(Writer, ConcurrentSubmittersShareCommits) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"), SyncLevel::kFull);
  ASSERT_TRUE(w);
  constexpr int kThreads = 16, kPerThread = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string actor = std::to_string(t) + "-" + std::to_string(i);
        Status s = w->run([actor](SQLite::Database& db) { insert_audit(db, actor); });
        if (!s) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : pool) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto st = w->stats();
  EXPECT_EQ(st.ops, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_LT(st.commits, st.ops) << "no two submissions ever shared a commit";
  EXPECT_EQ(count_audit(dir.file("j.db")), kThreads * kPerThread);
}

TEST(Writer, EverythingQueuedWhileABatchRunsJoinsItsCommit) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  Gate gate;
  auto held = w->submit(gate.op());
  gate.wait_entered();
  std::vector<std::future<Status>> futures;
  std::mutex mu;
  std::vector<std::thread> pool;
  for (int t = 0; t < 8; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto f = w->submit([t, i](SQLite::Database& db) {
          insert_audit(db, std::to_string(t) + "-" + std::to_string(i));
        });
        std::lock_guard lock(mu);
        futures.push_back(std::move(f));
      }
    });
  }
  for (auto& t : pool) t.join();
  gate.open();
  EXPECT_TRUE(held.get().is_ok());
  for (auto& f : futures) EXPECT_TRUE(f.get().is_ok());
  auto st = w->stats();
  EXPECT_EQ(st.ops, 201u);
  // All 200 queued while the gate's operation ran joined its transaction: one commit.
  EXPECT_EQ(st.commits, 1u);
  EXPECT_EQ(count_audit(dir.file("j.db")), 200);
}

TEST(Writer, AFailingOperationDoesNotUndoTheOthersInItsBatch) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  Gate gate;
  auto held = w->submit(gate.op());
  gate.wait_entered();
  auto a = w->submit([](SQLite::Database& db) { insert_audit(db, "a"); });
  auto thrower = w->submit([](SQLite::Database& db) {
    insert_audit(db, "b");  // written, then rolled back to the op's savepoint
    throw std::runtime_error("op b refuses");
  });
  auto violator = w->submit([](SQLite::Database& db) {
    insert_audit(db, "c");
    db.exec("INSERT INTO agents (id, state, state_since) VALUES ('x', 'sideways', 't')");
  });
  auto d = w->submit([](SQLite::Database& db) { insert_audit(db, "d"); });
  gate.open();
  EXPECT_TRUE(held.get().is_ok());
  EXPECT_TRUE(a.get().is_ok());
  Status tb = thrower.get();
  EXPECT_EQ(tb.kind(), StatusKind::kInvalidArgument);
  EXPECT_NE(tb.message().find("op b refuses"), std::string::npos) << tb.message();
  Status vc = violator.get();
  EXPECT_FALSE(vc.is_ok());
  EXPECT_NE(vc.message().find("CHECK"), std::string::npos) << vc.message();
  EXPECT_TRUE(d.get().is_ok());
  auto st = w->stats();
  EXPECT_EQ(st.commits, 1u);  // the failures shared the batch's one commit
  EXPECT_EQ(st.failed_ops, 2u);
  EXPECT_EQ(st.failed_commits, 0u);
  EXPECT_EQ(count_audit(dir.file("j.db")), 2);
  EXPECT_EQ(count_audit(dir.file("j.db"), "actor IN ('a','d')"), 2);
  SQLite::Database r(dir.file("j.db"));
  EXPECT_EQ(r.execAndGet("SELECT count(*) FROM agents").getInt(), 0);
  EXPECT_TRUE(w->healthy());
}

TEST(Writer, DestructorDrainsEverythingSubmitted) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  Gate gate;
  w->submit(gate.op(), nullptr);
  gate.wait_entered();
  constexpr int kOps = 300;
  std::atomic<int> ok{0}, failed{0};
  for (int i = 0; i < kOps; ++i)
    w->submit([i](SQLite::Database& db) { insert_audit(db, std::to_string(i)); },
              [&](const Status& s) { (s.is_ok() ? ok : failed).fetch_add(1); });
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate.open();
  });
  w.reset();  // returns only once everything queued ran and its callback was called
  opener.join();
  EXPECT_EQ(ok.load(), kOps);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(count_audit(dir.file("j.db")), kOps);
}

TEST(Writer, SubmissionsOnceStoppingAreRefusedNotLost) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  Writer* raw = w.get();
  Gate gate;
  std::promise<Status> late;
  // When the held op's commit is reported, the destructor has already begun: a submission
  // from that callback must be answered (Unavailable), never silently dropped or run.
  std::atomic<bool> late_op_ran{false};
  raw->submit(gate.op(), [&](const Status&) {
    raw->submit([&](SQLite::Database&) { late_op_ran = true; },
                [&](const Status& s) { late.set_value(s); });
  });
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    gate.open();
  });
  w.reset();
  opener.join();
  auto f = late.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  Status s = f.get();
  EXPECT_EQ(s.kind(), StatusKind::kUnavailable) << s.message();
  EXPECT_FALSE(late_op_ran.load());
}

TEST(Writer, CommitListenerRunsAfterTheCommitIsVisible) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  std::string path = dir.file("j.db");
  std::promise<int> seen;
  std::atomic<int> calls{0};
  w->set_commit_listener([&](bool) {
    // Another connection already sees the commit when the listener runs.
    if (calls.fetch_add(1) == 0) seen.set_value(count_audit(path));
  });
  ASSERT_TRUE(w->run([](SQLite::Database& db) { insert_audit(db, "x"); }).is_ok());
  auto f = seen.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), 1);
  w.reset();
  EXPECT_EQ(calls.load(), 1);  // one commit, one call
}

// The dispatcher's own claims and outcomes are submitted quiet: a commit made only of quiet
// operations does not call the listener (the dispatcher would walk its queues again for its own
// bookkeeping); a commit with any other operation does, at both sync levels.
TEST(Writer, QuietOperationsAloneDoNotCallTheCommitListener) {
  for (SyncLevel sync : {SyncLevel::kNormal, SyncLevel::kFull}) {
    testing::TempDir dir;
    auto w = open_writer(dir.file("j.db"), sync);
    ASSERT_TRUE(w);
    std::atomic<int> calls{0};
    w->set_commit_listener([&](bool) { calls.fetch_add(1); });
    for (int i = 0; i < 3; ++i) {
      std::promise<Status> done;
      w->submit_quiet([i](SQLite::Database& db) { insert_audit(db, "q" + std::to_string(i)); },
                      [&](const Status& s) { done.set_value(s); });
      ASSERT_TRUE(done.get_future().get().is_ok());
    }
    EXPECT_EQ(calls.load(), 0);
    ASSERT_TRUE(w->run([](SQLite::Database& db) { insert_audit(db, "loud"); }).is_ok());
    w.reset();  // every callback has run
    EXPECT_EQ(calls.load(), 1);
  }
}

// Intake's and the poller's inserts are submitted with submit_append: the listener hears
// appends_only = true for a commit whose loud operations are all such (the dispatcher then
// reads only rows past those it has seen), and false once any other loud operation shares the
// commit. Each commit here is held open by its first operation until the others have joined.
TEST(Writer, TheListenerHearsWhetherACommitOnlyAppended) {
  for (SyncLevel sync : {SyncLevel::kNormal, SyncLevel::kFull}) {
    testing::TempDir dir;
    auto w = open_writer(dir.file("j.db"), sync);
    ASSERT_TRUE(w);
    std::mutex mu;
    std::vector<bool> heard;
    w->set_commit_listener([&](bool appends_only) {
      std::lock_guard lock(mu);
      heard.push_back(appends_only);
    });
    // One commit: an append that waits until `joined` before the rest may join it.
    auto commit = [&](std::function<void(Writer::Op, Writer::Done)> second) {
      std::promise<void> joined;
      auto joined_future = joined.get_future().share();
      std::promise<Status> first_done, second_done;
      w->submit_append(
          [joined_future](SQLite::Database& db) {
            joined_future.wait();
            insert_audit(db, "first");
          },
          [&](const Status& s) { first_done.set_value(s); });
      second([](SQLite::Database& db) { insert_audit(db, "second"); },
             [&](const Status& s) { second_done.set_value(s); });
      joined.set_value();
      ASSERT_TRUE(first_done.get_future().get().is_ok());
      ASSERT_TRUE(second_done.get_future().get().is_ok());
    };
    commit([&](Writer::Op op, Writer::Done done) { w->submit_append(op, done); });
    commit([&](Writer::Op op, Writer::Done done) { w->submit_quiet(op, done); });
    commit([&](Writer::Op op, Writer::Done done) { w->submit(op, done); });
    w.reset();  // every callback has run
    // Either way the second operation is in the first's transaction: it was queued before the
    // first returned. Each commit is durable before the next starts: one listener call each.
    EXPECT_EQ(heard, (std::vector<bool>{true, true, false})) << "sync " << static_cast<int>(sync);
  }
}

TEST(Writer, StatsCountCommitsAndTheirDurations) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"), SyncLevel::kFull);
  ASSERT_TRUE(w);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(w->run([i](SQLite::Database& db) { insert_audit(db, std::to_string(i)); }).is_ok());
  auto st = w->stats();
  EXPECT_EQ(st.commits, 5u);
  EXPECT_EQ(st.ops, 5u);
  EXPECT_EQ(st.failed_ops, 0u);
  EXPECT_GT(st.commit_seconds_total, 0.0);
  std::uint64_t bucketed =
      std::accumulate(std::begin(st.commit_buckets), std::end(st.commit_buckets), std::uint64_t{0});
  EXPECT_EQ(bucketed, st.commits);
}

TEST(Writer, OperationsRunStoreFunctionsWithTheStatementCache) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"));
  ASSERT_TRUE(w);
  // The same cached INSERT statement reused across operations and batches.
  for (int i = 0; i < 3; ++i) {
    NewWebhook h;
    h.id = "W" + std::to_string(i);
    h.service = "hpnnmi";
    h.type = "status";
    h.payload = "{}";
    InsertOutcome out;
    ASSERT_TRUE(w->run([&](SQLite::Database& db) { out = insert_webhook(db, h); }).is_ok());
    EXPECT_EQ(out.id, h.id);
    EXPECT_FALSE(out.duplicate);
  }
  InsertOutcome dup;
  NewWebhook again;
  again.id = "W0";  // same id: the UNIQUE constraint fails this op alone
  again.service = "hpnnmi";
  again.type = "status";
  again.payload = "{}";
  EXPECT_FALSE(w->run([&](SQLite::Database& db) { dup = insert_webhook(db, again); }).is_ok());
  SQLite::Database r(dir.file("j.db"));
  EXPECT_EQ(r.execAndGet("SELECT count(*) FROM webhooks").getInt(), 3);
}

}  // namespace
}  // namespace iarelay

namespace iarelay {
namespace {

// A sync function the test holds: counts calls, records the file it was asked to sync, and
// blocks until released (or fails with EIO when told to).
struct HeldSync {
  std::mutex mu;
  std::condition_variable cv;
  bool released = false;
  bool fail = false;
  int calls = 0;
  ino_t synced_inode = 0;
  std::function<int(int)> fn() {
    return [this](int fd) {
      std::unique_lock lock(mu);
      ++calls;
      struct stat st {};
      if (::fstat(fd, &st) == 0) synced_inode = st.st_ino;
      cv.notify_all();
      cv.wait(lock, [&] { return released; });
      if (fail) {
        errno = EIO;
        return -1;
      }
      return ::fdatasync(fd);
    };
  }
  void wait_called() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return calls > 0; });
  }
  void release(bool with_failure = false) {
    std::lock_guard lock(mu);
    released = true;
    fail = with_failure;
    cv.notify_all();
  }
};

// A sync=full writer whose WAL syncs the test holds (and releases, or fails).
class HeldSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    w = open_writer(dir.file("j.db"), SyncLevel::kFull);
    ASSERT_TRUE(w);
    w->set_sync_function_for_testing(sync.fn());
  }
  testing::TempDir dir;
  HeldSync sync;  // outlives the writer, whose syncer calls it
  std::unique_ptr<Writer> w;
};

TEST_F(HeldSyncTest, FullAcknowledgesOnlyAfterTheWalIsSynced) {
  auto done = w->submit([](SQLite::Database& db) { insert_audit(db, "held"); });
  sync.wait_called();
  // Committed (another connection sees it) but not synced: nobody may be told yet.
  EXPECT_EQ(count_audit(dir.file("j.db"), "actor = 'held'"), 1);
  EXPECT_EQ(done.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  struct stat wal {};
  ASSERT_EQ(::stat(dir.file("j.db-wal").c_str(), &wal), 0);
  EXPECT_EQ(sync.synced_inode, wal.st_ino);  // the file synced is the journal's WAL
  sync.release();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(done.get().is_ok());
  EXPECT_GE(w->stats().syncs, 1u);
}

// While one commit is being synced, the next operations already run (the fsync overlaps their
// work) and wait in one open transaction, committed as one as soon as the sync ends.
TEST_F(HeldSyncTest, OperationsRunDuringASyncAndShareTheNextCommit) {
  auto first = w->submit([](SQLite::Database& db) { insert_audit(db, "first"); });
  sync.wait_called();
  auto commits_before = w->stats().commits;
  std::atomic<int> ran{0};
  std::vector<std::future<Status>> next;
  for (int i = 0; i < 5; ++i)
    next.push_back(w->submit([&](SQLite::Database& db) {
      insert_audit(db, "next");
      ++ran;
    }));
  for (int i = 0; i < 500 && ran.load() < 5; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(ran.load(), 5);  // run while the first commit's sync is still held
  EXPECT_EQ(next[0].wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  EXPECT_EQ(count_audit(dir.file("j.db"), "actor = 'next'"), 0);  // not committed yet
  sync.release();
  EXPECT_TRUE(first.get().is_ok());
  for (auto& f : next) EXPECT_TRUE(f.get().is_ok());
  EXPECT_EQ(count_audit(dir.file("j.db"), "actor = 'next'"), 5);
  EXPECT_EQ(w->stats().commits - commits_before, 2u);  // the first, then the five as one
}

TEST_F(HeldSyncTest, FailedSyncFailsItsBatchAndEveryLaterWrite) {
  auto done = w->submit([](SQLite::Database& db) { insert_audit(db, "lost?"); });
  sync.wait_called();
  sync.release(/*with_failure=*/true);
  Status s = done.get();
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("fdatasync"), std::string::npos) << s.message();
  EXPECT_FALSE(w->healthy());
  // Later writes are refused, not half-trusted: the kernel may have dropped unsynced pages.
  Status later = w->run([](SQLite::Database& db) { insert_audit(db, "later"); });
  EXPECT_FALSE(later.is_ok());
  EXPECT_EQ(count_audit(dir.file("j.db"), "actor = 'later'"), 0);
  EXPECT_FALSE(w->wait_durable().is_ok());
  EXPECT_GE(w->stats().failed_commits, 1u);
}

TEST_F(HeldSyncTest, PermanentFailureIsReportedOnceASyncFailed) {
  EXPECT_TRUE(w->permanent_failure().is_ok());
  // A failing operation is not a failing writer.
  Status op_failed = [&] {
    auto f = w->submit([](SQLite::Database&) { throw std::runtime_error("bad op"); });
    sync.wait_called();
    sync.release();
    return f.get();
  }();
  EXPECT_FALSE(op_failed.is_ok());
  EXPECT_TRUE(w->permanent_failure().is_ok());
  {
    std::lock_guard lock(sync.mu);  // hold the next sync again, then fail it
    sync.released = false;
    sync.calls = 0;
  }
  auto done = w->submit([](SQLite::Database& db) { insert_audit(db, "lost?"); });
  sync.wait_called();
  sync.release(/*with_failure=*/true);
  EXPECT_FALSE(done.get().is_ok());
  Status failure = w->permanent_failure();
  EXPECT_EQ(failure.kind(), StatusKind::kIoError);
  EXPECT_NE(failure.message().find("fdatasync"), std::string::npos) << failure.message();
  // It stays failed: later operations do not clear it.
  EXPECT_FALSE(w->run([](SQLite::Database& db) { insert_audit(db, "later"); }).is_ok());
  EXPECT_FALSE(w->permanent_failure().is_ok());
}

TEST_F(HeldSyncTest, WaitDurableWaitsForWhatAReaderCouldSee) {
  auto done = w->submit([](SQLite::Database& db) { insert_audit(db, "seen"); });
  sync.wait_called();
  ASSERT_EQ(count_audit(dir.file("j.db"), "actor = 'seen'"), 1);  // a reader saw it
  auto barrier = std::async(std::launch::async, [&] { return w->wait_durable(); });
  EXPECT_EQ(barrier.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  sync.release();
  EXPECT_TRUE(barrier.get().is_ok());
  EXPECT_TRUE(done.get().is_ok());
}

// A VFS over SQLite's default one that counts, for WAL files, writes of the WAL header
// (offset 0) and syncs that SQLite itself makes right after such a write, before any frame is
// written behind it. Installed as the default VFS for the life of the object.
class WalHeaderSyncSpy {
 public:
  WalHeaderSyncSpy() {
    real_ = sqlite3_vfs_find(nullptr);
    vfs_ = *real_;  // same pAppData, limits and helpers; only files are wrapped
    vfs_.zName = "wal-header-sync-spy";
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + real_->szOsFile;
    vfs_.xOpen = &open;
    vfs_.pNext = nullptr;
    header_writes = 0;
    header_syncs = 0;
    sqlite3_vfs_register(&vfs_, /*makeDflt=*/1);
  }
  ~WalHeaderSyncSpy() {
    sqlite3_vfs_unregister(&vfs_);
    sqlite3_vfs_register(real_, 1);
  }
  WalHeaderSyncSpy(const WalHeaderSyncSpy&) = delete;
  WalHeaderSyncSpy& operator=(const WalHeaderSyncSpy&) = delete;

  static inline std::atomic<int> header_writes{0};
  static inline std::atomic<int> header_syncs{0};

 private:
  struct File {
    sqlite3_file base;
    bool wal;
    bool header_unsynced;  // the last write was the header and no sync followed yet
    sqlite3_file* inner() { return reinterpret_cast<sqlite3_file*>(this + 1); }
  };
  static File* of(sqlite3_file* f) { return reinterpret_cast<File*>(f); }
  static sqlite3_file* in(sqlite3_file* f) { return of(f)->inner(); }
  static inline sqlite3_vfs* real_ = nullptr;
  static inline sqlite3_vfs vfs_{};

  static int open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
    File* f = of(file);
    f->base.pMethods = nullptr;
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->header_unsynced = false;
    int rc = real_->xOpen(real_, name, f->inner(), flags, out_flags);
    if (f->inner()->pMethods) f->base.pMethods = &methods;
    return rc;
  }
  static inline const sqlite3_io_methods methods = {
      3,
      [](sqlite3_file* f) { return in(f)->pMethods->xClose(in(f)); },
      [](sqlite3_file* f, void* b, int n, sqlite3_int64 o) {
        return in(f)->pMethods->xRead(in(f), b, n, o);
      },
      [](sqlite3_file* f, const void* b, int n, sqlite3_int64 o) {
        if (of(f)->wal) {
          of(f)->header_unsynced = o == 0;
          if (o == 0) ++header_writes;
        }
        return in(f)->pMethods->xWrite(in(f), b, n, o);
      },
      [](sqlite3_file* f, sqlite3_int64 size) { return in(f)->pMethods->xTruncate(in(f), size); },
      [](sqlite3_file* f, int flags) {
        if (of(f)->wal && of(f)->header_unsynced) ++header_syncs;
        of(f)->header_unsynced = false;
        return in(f)->pMethods->xSync(in(f), flags);
      },
      [](sqlite3_file* f, sqlite3_int64* size) { return in(f)->pMethods->xFileSize(in(f), size); },
      [](sqlite3_file* f, int lock) { return in(f)->pMethods->xLock(in(f), lock); },
      [](sqlite3_file* f, int lock) { return in(f)->pMethods->xUnlock(in(f), lock); },
      [](sqlite3_file* f, int* out) { return in(f)->pMethods->xCheckReservedLock(in(f), out); },
      [](sqlite3_file* f, int op, void* arg) {
        return in(f)->pMethods->xFileControl(in(f), op, arg);
      },
      [](sqlite3_file* f) { return in(f)->pMethods->xSectorSize(in(f)); },
      [](sqlite3_file* f) { return in(f)->pMethods->xDeviceCharacteristics(in(f)); },
      [](sqlite3_file* f, int page, int size, int extend, void volatile** out) {
        return in(f)->pMethods->xShmMap(in(f), page, size, extend, out);
      },
      [](sqlite3_file* f, int offset, int n, int flags) {
        return in(f)->pMethods->xShmLock(in(f), offset, n, flags);
      },
      [](sqlite3_file* f) { in(f)->pMethods->xShmBarrier(in(f)); },
      [](sqlite3_file* f, int remove) { return in(f)->pMethods->xShmUnmap(in(f), remove); },
      [](sqlite3_file* f, sqlite3_int64 o, int n, void** out) {
        return in(f)->pMethods->xFetch(in(f), o, n, out);
      },
      [](sqlite3_file* f, sqlite3_int64 o, void* p) {
        return in(f)->pMethods->xUnfetch(in(f), o, p);
      },
  };
};

// When the WAL restarts from its beginning, its new header (new salts) must be on disk before
// any frame written behind it: otherwise a power loss during the syncer's next fdatasync can
// leave the old header with some new frames, and recovery replays the previous generation's
// frames over newer pages. SQLite syncs that header itself at synchronous=NORMAL or FULL,
// never at OFF (which the writer used at sync=full before).
TEST(WriterSync, WalRestartSyncsItsNewHeaderAtEveryLevel) {
  for (SyncLevel sync : {SyncLevel::kFull, SyncLevel::kNormal}) {
    testing::TempDir dir;
    WalHeaderSyncSpy spy;
    {
      auto w = open_writer(dir.file("j.db"), sync);
      ASSERT_TRUE(w);
      ASSERT_TRUE(w->run([](SQLite::Database& db) { insert_audit(db, "before"); }).is_ok());
      for (int round = 0; round < 3; ++round) {
        {
          // Every frame checkpointed and the WAL emptied: the next write restarts it.
          SQLite::Database other(dir.file("j.db"), SQLite::OPEN_READWRITE);
          other.setBusyTimeout(5000);
          other.execAndGet("SELECT count(*) FROM sqlite_master");  // opens its WAL
          int log = -1, done = -1;
          ASSERT_EQ(sqlite3_wal_checkpoint_v2(other.getHandle(), nullptr,
                                              SQLITE_CHECKPOINT_TRUNCATE, &log, &done),
                    SQLITE_OK);
        }
        WalHeaderSyncSpy::header_writes = 0;
        WalHeaderSyncSpy::header_syncs = 0;
        ASSERT_TRUE(w->run([](SQLite::Database& db) { insert_audit(db, "after"); }).is_ok());
        EXPECT_EQ(WalHeaderSyncSpy::header_writes.load(), 1) << "sync " << static_cast<int>(sync);
        EXPECT_EQ(WalHeaderSyncSpy::header_syncs.load(), 1)
            << "the restarted WAL's header was not synced before its frames (sync "
            << static_cast<int>(sync) << ")";
      }
    }
  }
}

TEST(WriterSync, NormalNeverSyncsOnCommit) {
  testing::TempDir dir;
  auto w = open_writer(dir.file("j.db"), SyncLevel::kNormal);
  ASSERT_TRUE(w);
  std::atomic<int> calls{0};
  w->set_sync_function_for_testing([&](int) { return ++calls, 0; });
  EXPECT_TRUE(w->run([](SQLite::Database& db) { insert_audit(db, "n"); }).is_ok());
  EXPECT_TRUE(w->wait_durable().is_ok());
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(w->stats().syncs, 0u);
}

}  // namespace
}  // namespace iarelay

namespace iarelay {
namespace {

// Under steady load the writer begins each transaction right after the last, so without its
// own checkpoint between two transactions the WAL never restarts (it grew to 720 MB for 100k
// webhooks). 40k 1 KiB webhooks, always 64 in flight, write some 280 MB of WAL frames.
// A sanitizer makes every commit several times slower: under ThreadSanitizer, beside other
// tests, 120 s were once not enough for the first of the two passes (both took 228 s another
// time).
#ifdef IARELAY_SANITIZED
constexpr std::chrono::seconds kSteadyLoadDeadline(420);
#else
constexpr std::chrono::seconds kSteadyLoadDeadline(120);
#endif

TEST(WriterSync, WalStaysBoundedUnderSteadyLoad) {
  for (SyncLevel sync : {SyncLevel::kFull, SyncLevel::kNormal}) {
    testing::TempDir dir;
    std::string payload(1024, 'x');
    std::mutex mu;
    std::condition_variable cv;
    int done = 0, failed = 0;
    const int total = 40000;
    // Declared before the writer so that they outlive it: when a check below fails and returns,
    // the writer is destroyed first, and its threads run the callbacks still pending (which
    // call `send`) before `send`, `mu` and `cv` go.
    std::function<void(int)> send;
    auto w = open_writer(dir.file("j.db"), sync);
    ASSERT_TRUE(w);
    send = [&](int n) {
      auto row = std::make_shared<NewWebhook>();
      row->id = new_webhook_id();
      row->received_at = now_millis();
      row->service = "hpnnmi";
      row->type = "status";
      row->event_id = std::to_string(n % 100);
      row->assigned_agent = "agent-" + std::to_string(n % 7);
      row->payload = "{\"n\":" + std::to_string(n) + ",\"pad\":\"" + payload + "\"}";
      w->submit([row](SQLite::Database& db) { insert_webhook(db, *row); },
                [&, n](const Status& st) {
                  if (n + 64 < total) send(n + 64);
                  std::lock_guard lock(mu);
                  ++done;
                  if (!st) ++failed;
                  cv.notify_all();
                });
    };
    for (int i = 0; i < 64; ++i) send(i);
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kSteadyLoadDeadline, [&] { return done == total; }))
        << done << " of " << total << " done at sync " << static_cast<int>(sync);
    EXPECT_EQ(failed, 0);
    auto wal = std::filesystem::file_size(dir.file("j.db-wal"));
    EXPECT_LT(wal, 100u << 20) << "WAL of " << wal << " bytes at sync " << static_cast<int>(sync);
    SQLite::Database r(dir.file("j.db"));
    EXPECT_EQ(r.execAndGet("SELECT count(*) FROM webhooks").getInt(), total);
  }
}

}  // namespace
}  // namespace iarelay
