// The journal's group-commit writer as the seam sees it (issue 15): what intake and the poller
// submit their journal operations to, whichever backend holds the journal (the SQLite Writer,
// writer.h; PostgreSQL's PgWriter, pg/pg_writer.h). An operation runs in one group transaction
// with others; its Done is called once that transaction is durable, or with why it failed.
// Every method may be called from any thread.
#pragma once

#include <functional>

#include "common/status.h"
#include "journal/backend.h"

namespace iarelay {

class JournalWriter {
 public:
  // Runs on the writer's thread inside the group transaction. Throw (any std::exception) to
  // fail this operation alone. Operations must only write the journal (PostgreSQL may run one
  // again after a deadlock).
  using TxOp = std::function<void(JournalTx&)>;
  // Called once, on a writer thread, when the transaction is durable (ok) or failed. Short.
  using Done = std::function<void(const Status&)>;
  using InsertDone = std::function<void(const Status&, const InsertOutcome&)>;

  virtual ~JournalWriter() = default;

  virtual void submit_tx(TxOp op, Done done) = 0;
  // As submit_tx, for an operation that creates no work for anyone the commit wakes: the
  // dispatcher's own claims and outcomes, which it acts on from their Done (Writer::submit_quiet).
  virtual void submit_quiet_tx(TxOp op, Done done) = 0;
  // As submit_tx, for an operation that only inserts new rows (and moves cursors): the
  // dispatcher then reads only the rows past those it has seen (Writer::submit_append).
  virtual void submit_append_tx(TxOp op, Done done) = 0;
  // Inserts one webhook (idempotent on its id), told the outcome once it is durable. An
  // append; PostgreSQL sends a batch's inserts as one statement.
  virtual void submit_insert(NewWebhook w, InsertDone done) = 0;
  // Waits until every transaction committed when it was called is durable: a reader that saw
  // rows calls it before handing them on. Not ok once durability has failed for good.
  virtual Status wait_durable() = 0;
  // Whether the last commit succeeded (/readyz, and 503 on intake).
  virtual bool healthy() const = 0;
  // Called on a writer thread after each commit that holds an operation not submitted quiet
  // (to wake feed long-polls and the dispatcher); `appends_only`: each such operation was an
  // insert or an append. Set before the first submit.
  virtual void set_commit_listener(std::function<void(bool appends_only)> listener) = 0;
  // Ok while the writer is usable; not ok, saying why, once it has failed for good (the
  // process must restart). A failed commit alone is not permanent.
  virtual Status permanent_failure() const { return Status::ok(); }
  // Whether a commit reported failed with Unavailable may have taken effect all the same: on
  // PostgreSQL a COMMIT whose connection was lost before its answer (the server may have
  // committed it). On SQLite a failed commit stored nothing.
  virtual bool failed_commits_may_have_landed() const { return false; }
};

}  // namespace iarelay
