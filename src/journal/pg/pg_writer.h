// The PostgreSQL journal's group commit (issue 15): one thread owns a write connection; every
// operation pending when it wakes (up to 4096) runs in one transaction and one COMMIT, which
// with synchronous_commit = on returns once the commit is durable (on the primary and the
// synchronous standbys it names). Each caller is told then, or why its operation failed.
// An operation that throws fails alone: the batch is rolled back and its operations run again
// one transaction each (operations run again must only write the journal). A lost connection
// fails the batch (Unavailable) and is opened again for the next one: with several hosts in the
// connection string, libpq finds the new primary (target_session_attrs=read-write).
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

#include "common/status.h"
#include "journal/backend.h"
#include "journal/journal_writer.h"

namespace iarelay {

class PgConnection;

class PgWriter final : public JournalWriter {
 public:
  using Op = TxOp;

  struct Stats {
    std::uint64_t commits = 0;
    std::uint64_t ops = 0;
    std::uint64_t failed_ops = 0;
    std::uint64_t reconnects = 0;
  };

  // Connects and applies migrations/postgresql.
  static Result<std::unique_ptr<PgWriter>> open(const std::string& conninfo);
  // Drains what was submitted, then stops.
  ~PgWriter();
  PgWriter(const PgWriter&) = delete;
  PgWriter& operator=(const PgWriter&) = delete;

  void submit(Op op, Done done);
  // Inserts one webhook (JournalTx::insert_webhook), told its outcome once durable. The
  // inserts of a batch go to the server as one statement.
  void submit_insert(NewWebhook w, InsertDone done) override;
  // JournalWriter. A COMMIT that returned is durable (synchronous_commit = on), and a reader
  // sees a commit only once it is flushed: wait_durable() has nothing to wait for.
  void submit_tx(TxOp op, Done done) override { submit(std::move(op), std::move(done)); }
  void submit_quiet_tx(TxOp op, Done done) override;
  void submit_append_tx(TxOp op, Done done) override;
  Status wait_durable() override { return Status::ok(); }
  bool healthy() const override { return healthy_.load(); }
  void set_commit_listener(std::function<void(bool appends_only)> listener) override;
  // Called on the writer's thread after each commit that inserted webhooks, once their
  // submitters were told (the relay announces them to the other relays: pg_notifier.h).
  void set_insert_listener(std::function<void()> listener) {
    insert_listener_ = std::move(listener);
  }
  bool failed_commits_may_have_landed() const override { return true; }
  // Submits and waits until durable.
  Status run(Op op);
  Stats stats() const;

 private:
  PgWriter(std::string conninfo, std::unique_ptr<PgConnection> db);
  void run_loop();
  struct Pending {
    Op op;  // empty for an insert
    Done done;
    NewWebhook insert;
    InsertDone insert_done;
    InsertOutcome outcome;
    bool inserts = false;  // an insert, or an append op: its batch takes the turn for seqs
    bool quiet = false;    // submit_quiet_tx: its commit calls no listener
    void tell(const Status& s) {
      if (op) {
        if (done) done(s);
      } else if (insert_done) {
        insert_done(s, outcome);
      }
      done = nullptr;
      insert_done = nullptr;
    }
    bool told() const { return !done && !insert_done; }
  };
  static void run_in(JournalTx& tx, std::deque<Pending>& batch);
  void enqueue(Pending p);
  void enqueue_op(Op op, Done done, bool inserts, bool quiet = false);
  Status run_batch(std::deque<Pending>& batch);
  void top_up(std::deque<Pending>& batch);

  std::string conninfo_;
  std::unique_ptr<PgConnection> db_;
  std::unique_ptr<JournalBackend> backend_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stopping_ = false;
  Stats stats_;
  std::function<void(bool)> listener_;     // set before the first submit
  std::function<void()> insert_listener_;  // set before the first submit
  std::atomic<bool> healthy_{true};        // the last batch committed (or failed by one operation)
  std::thread thread_;
};

}  // namespace iarelay
