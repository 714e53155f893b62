// Pieces of SQL the operator's PostgreSQL functions share (pg_admin.cpp, pg_maintenance.cpp):
// a WebhookFilter's WHERE clauses with numbered parameters, the webhook columns and their row,
// and a read-only snapshot. Internal to src/journal/pg; not a contract for anything above.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "journal/backend.h"
#include "journal/pg/pg_journal.h"
#include "journal/store.h"

namespace iarelay::pg_parts {

// The value of a Result, or a JournalError (the operations run inside JournalBackend::transact
// or read, which turn it back into the Status).
template <typename T>
T must(Result<T> r) {
  if (!r) throw JournalError(r.status());
  return std::move(*r);
}

inline std::int64_t integer(const std::optional<std::string>& text) {
  return text ? std::stoll(*text) : 0;
}

// A read-only snapshot for the reads of one command, rolled back when it goes (nothing to
// keep, and a failed read leaves nothing open).
class ReadSnapshot {
 public:
  explicit ReadSnapshot(PgConnection& db) : db_(db) {}
  ~ReadSnapshot() {
    // Ignored: a failure here means the connection is gone, and the transaction with it.
    if (open_) (void)db_.exec("ROLLBACK");
  }
  ReadSnapshot(const ReadSnapshot&) = delete;
  ReadSnapshot& operator=(const ReadSnapshot&) = delete;
  Status begin(const std::string& sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
    Status s = db_.exec(sql);
    open_ = s.is_ok();
    return s;
  }

 private:
  PgConnection& db_;
  bool open_ = false;
};

// A statement's WHERE clauses and their parameters, numbered as they are added.
struct Where {
  std::string sql;  // " AND ..." clauses
  PgParams params;
  std::string param(PgValue v) {
    params.push_back(std::move(v));
    return "$" + std::to_string(params.size());
  }
};

// The filter's agent, service, type, event, since and until as maintenance.cpp's extra_filter.
inline void add_filters(Where& w, const WebhookFilter& f) {
  if (f.agent) {
    const std::string p = w.param(*f.agent);
    w.sql += " AND (agent = " + p + " OR assigned_agent = " + p + ")";
  }
  if (f.service) w.sql += " AND service = " + w.param(*f.service);
  if (f.type) w.sql += " AND type = " + w.param(*f.type);
  if (f.event) w.sql += " AND event_id = " + w.param(*f.event);
  if (f.since) w.sql += " AND received_at >= " + w.param(format_time(*f.since));
  if (f.until) w.sql += " AND received_at < " + w.param(format_time(*f.until));
}

// The columns webhook_row() reads, in its order (store.h's kWebhookRowColumns, no payload).
inline constexpr const char* kWebhookColumns =
    "seq, id, source, source_id, received_at, service, agent, type, event_id, state, "
    "assigned_agent, attempts, next_attempt_at, delivered_at, last_status, last_error";

inline WebhookRow webhook_row(const PgRow& r) {
  WebhookRow row;
  row.seq = integer(r[0]);
  row.id = *r[1];
  row.source = *r[2];
  row.source_id = r[3];
  row.received_at = *r[4];
  row.service = *r[5];
  row.agent = r[6];
  row.type = *r[7];
  row.event_id = r[8];
  row.state = *r[9];
  row.assigned_agent = r[10];
  row.attempts = static_cast<int>(integer(r[11]));
  row.next_attempt_at = r[12];
  row.delivered_at = r[13];
  if (r[14]) row.last_status = static_cast<int>(integer(r[14]));
  row.last_error = r[15];
  return row;
}

}  // namespace iarelay::pg_parts
