// Group commit on the PostgreSQL journal.
#include "journal/pg/pg_writer.h"

#include <algorithm>

#include "journal/pg/pg_journal.h"

namespace iarelay {
namespace {
constexpr std::size_t kMaxBatch = 4096;
}  // namespace

Result<std::unique_ptr<PgWriter>> PgWriter::open(const std::string& conninfo) {
  auto db = PgConnection::connect(conninfo);
  if (!db) return db.status();
  if (Status s = pg_migrate(**db); !s) return s;
  return std::unique_ptr<PgWriter>(new PgWriter(conninfo, std::move(*db)));
}

PgWriter::PgWriter(std::string conninfo, std::unique_ptr<PgConnection> db)
    : conninfo_(std::move(conninfo)), db_(std::move(db)), backend_(pg_backend(*db_)) {
  thread_ = std::thread([this] { run_loop(); });
}

PgWriter::~PgWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void PgWriter::submit(Op op, Done done) {
  enqueue_op(std::move(op), std::move(done), false);
}

void PgWriter::submit_append_tx(TxOp op, Done done) {
  enqueue_op(std::move(op), std::move(done), /*inserts=*/true);
}

void PgWriter::submit_quiet_tx(TxOp op, Done done) {
  enqueue_op(std::move(op), std::move(done), false, /*quiet=*/true);
}

void PgWriter::set_commit_listener(std::function<void(bool appends_only)> listener) {
  listener_ = std::move(listener);
}

void PgWriter::enqueue_op(Op op, Done done, bool inserts, bool quiet) {
  Pending p;
  p.op = std::move(op);
  p.done = std::move(done);
  p.inserts = inserts;
  p.quiet = quiet;
  enqueue(std::move(p));
}

void PgWriter::submit_insert(NewWebhook w, InsertDone done) {
  Pending p;
  p.insert = std::move(w);
  p.insert_done = std::move(done);
  p.inserts = true;
  enqueue(std::move(p));
}

// Takes in what was submitted since the batch was formed.
void PgWriter::top_up(std::deque<Pending>& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  while (!pending_.empty() && batch.size() < kMaxBatch) {
    batch.push_back(std::move(pending_.front()));
    pending_.pop_front();
  }
}

void PgWriter::enqueue(Pending p) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(p));
  }
  cv_.notify_one();
}

// Runs the batch in order inside `tx`; consecutive inserts go as one statement.
void PgWriter::run_in(JournalTx& tx, std::deque<Pending>& batch) {
  std::vector<NewWebhook> inserts;
  std::vector<Pending*> inserting;
  auto flush = [&] {
    if (inserts.empty()) return;
    auto outcomes = tx.insert_webhooks(inserts);
    for (std::size_t i = 0; i < outcomes.size(); ++i) inserting[i]->outcome = outcomes[i];
    inserts.clear();
    inserting.clear();
  };
  for (auto& p : batch) {
    if (p.op) {
      flush();
      p.op(tx);
    } else {
      inserts.push_back(p.insert);
      inserting.push_back(&p);
    }
  }
  flush();
}

Status PgWriter::run(Op op) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  submit(std::move(op), [promise](const Status& s) { promise->set_value(s); });
  return future.get();
}

PgWriter::Stats PgWriter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void PgWriter::run_loop() {
  for (;;) {
    std::deque<Pending> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping, and everything submitted was run
      while (!pending_.empty() && batch.size() < kMaxBatch) {
        batch.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
    }
    Status s = run_batch(batch);
    bool loud = false, appends_only = true, inserted = false;
    for (const auto& p : batch) {
      inserted = inserted || p.inserts;
      if (!p.quiet) {
        loud = true;
        appends_only = appends_only && p.inserts;
      }
    }
    for (auto& p : batch) p.tell(s);
    if (s && loud && listener_) listener_(appends_only);
    if (s && inserted && insert_listener_) insert_listener_();
  }
}

Status PgWriter::run_batch(std::deque<Pending>& batch) {
  auto count = [this](std::uint64_t Stats::*field, std::uint64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.*field += n;
  };
  if (!db_) {
    // The connection was lost: opened again (libpq tries every host of the string).
    auto db = PgConnection::connect(conninfo_);
    if (!db) {
      healthy_ = false;
      return db.status();
    }
    db_ = std::move(*db);
    backend_ = pg_backend(*db_);
    count(&Stats::reconnects, 1);
  }
  const bool inserts =
      std::any_of(batch.begin(), batch.end(), [](const Pending& p) { return p.inserts; });
  Status s = backend_->transact([&](JournalTx& tx) {
    if (inserts) {
      // The turn to take seqs first (other relays' inserting transactions commit meanwhile:
      // JournalTx::lock_seq_order), then everything submitted while it waited: a relay that
      // waited commits one batch of all of it, not a batch formed before the wait.
      tx.lock_seq_order();
      top_up(batch);
    }
    run_in(tx, batch);
  });
  count(&Stats::ops, batch.size());
  healthy_ = s.is_ok() || s.kind() != StatusKind::kUnavailable;
  if (s) {
    count(&Stats::commits, 1);
    return s;
  }
  if (s.kind() == StatusKind::kUnavailable || batch.size() == 1) {
    // A lost connection (whether the COMMIT took effect is not known: a caller that tries
    // again with the same Idempotency-Key gets the stored webhook, if it was): reconnect next.
    if (s.kind() == StatusKind::kUnavailable) db_.reset();
    count(&Stats::failed_ops, batch.size());
    return s;
  }
  // One operation failed the batch: each runs again alone, so only it fails.
  for (auto& p : batch) {
    std::deque<Pending> alone;
    alone.push_back(std::move(p));
    Status own = backend_->transact([&](JournalTx& tx) { run_in(tx, alone); });
    count(own ? &Stats::commits : &Stats::failed_ops, 1);
    if (own.kind() == StatusKind::kUnavailable) db_.reset();
    alone.front().tell(own);
    p = std::move(alone.front());
    if (!db_) {
      // The rest fail as the connection did (not run on a connection that is gone).
      for (auto& rest : batch)
        if (!rest.told()) {
          count(&Stats::failed_ops, 1);
          rest.tell(own);
        }
      break;
    }
  }
  return Status::ok();
}

}  // namespace iarelay
