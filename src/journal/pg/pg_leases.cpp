// Agent leases on PostgreSQL: taken, renewed and checked (fenced) in the database, on its clock.
// Rows are always locked in agent order (take_leases, fence), so transactions that lock several
// never deadlock.
#include "journal/pg/pg_leases.h"

#include <algorithm>

#include "journal/pg/pg_journal.h"

namespace iarelay {
namespace {

// The agents as a text[] literal, in byte order (the order rows are locked in).
std::string text_array(std::vector<std::string> items) {
  std::sort(items.begin(), items.end());
  return pg_text_array(items);
}

std::string ttl_text(Millis ttl) {
  return std::to_string(ttl);
}

// Runs `body` in a transaction: COMMIT when it returns ok, ROLLBACK otherwise.
template <typename T, typename Body>
Result<T> in_transaction(PgConnection& db, Body body) {
  if (Status s = db.exec("BEGIN"); !s) return s;
  Result<T> out = body();
  if (!out) {
    (void)db.exec("ROLLBACK");
    return out;
  }
  if (Status s = db.exec("COMMIT"); !s) return s;
  return out;
}

// Within a transaction holding the row of `agent` FOR UPDATE: makes `owner` its holder with a
// new epoch, and puts the agent's inflight webhooks (calls of an owner that lost it, or of
// this one before its lease lapsed: their outcomes would be fenced) back in the queue.
Result<Lease> take_locked(PgConnection& db, const std::string& agent, const std::string& owner,
                          Millis ttl, int* requeued) {
  auto rows = db.query(
      "UPDATE agent_leases SET owner = $2, epoch = epoch + 1, expires_at = now() + $3 * "
      "interval '1 millisecond' WHERE agent = $1 RETURNING epoch",
      {agent, owner, ttl_text(ttl)});
  if (!rows) return rows.status();
  auto back = db.command(
      "UPDATE webhooks SET state = 'queued' WHERE assigned_agent = $1 AND state = 'inflight'",
      {agent});
  if (!back) return back.status();
  if (requeued) *requeued += static_cast<int>(*back);
  return Lease{agent, owner, std::stoll(*(*rows)[0][0])};
}

}  // namespace

Result<Lease> take_lease(PgConnection& db, const std::string& agent, const std::string& owner,
                         Millis ttl, int* requeued) {
  return in_transaction<Lease>(db, [&]() -> Result<Lease> {
    // A row to lock, expired from the start (epoch 0: the first taking makes it 1).
    auto made = db.command(
        "INSERT INTO agent_leases VALUES ($1, '', 0, '-infinity') ON CONFLICT DO NOTHING", {agent});
    if (!made) return made.status();
    // SKIP LOCKED: a row another transaction holds (a relay's fenced write, perhaps of a relay
    // stopped mid-transaction) is not waited for: tried again at the next call.
    auto rows = db.query(
        "SELECT owner, epoch, expires_at > now() FROM agent_leases WHERE agent = $1 FOR UPDATE "
        "SKIP LOCKED",
        {agent});
    if (!rows) return rows.status();
    if (rows->empty()) return Lease{agent, "", 0};
    const PgRow& row = (*rows)[0];
    const bool live = row[2] == "t";
    Lease held{agent, *row[0], std::stoll(*row[1])};
    if (live && held.owner != owner) return held;  // another relay's
    if (held.owner == owner) {
      // This relay's, live or lapsed with nobody taking it since: renewed, same epoch (as
      // renew_lease), its calls under way still its own.
      auto renewed = db.command(
          "UPDATE agent_leases SET expires_at = now() + $2 * interval '1 millisecond' WHERE "
          "agent = $1",
          {agent, ttl_text(ttl)});
      if (!renewed) return renewed.status();
      return held;
    }
    return take_locked(db, agent, owner, ttl, requeued);
  });
}

Result<std::vector<Lease>> take_leases(PgConnection& db, const std::vector<std::string>& agents,
                                       const std::string& owner, Millis ttl) {
  const std::string array = text_array(agents);
  return in_transaction<std::vector<Lease>>(db, [&]() -> Result<std::vector<Lease>> {
    auto made = db.command(
        "INSERT INTO agent_leases SELECT a, '', 0, '-infinity' FROM unnest($1::text[]) a "
        "ORDER BY a COLLATE \"C\" ON CONFLICT DO NOTHING",
        {array});
    if (!made) return made.status();
    // This owner's leases are renewed, lapsed ones too while nobody took them (same epoch, as
    // renew_lease), waiting for the outcomes that hold them FOR SHARE (brief); free and expired
    // ones of other relays are taken unless another relay is at them (SKIP LOCKED). Rows are
    // locked in byte order (COLLATE "C", the order of std::sort and of fence's callers),
    // whatever the database's collation: two transactions locking several never deadlock.
    auto mine = db.query(
        "SELECT agent, epoch FROM agent_leases WHERE agent = ANY($1::text[]) AND owner = $2 "
        "ORDER BY agent COLLATE \"C\" FOR UPDATE",
        {array, owner});
    if (!mine) return mine.status();
    std::vector<Lease> held;
    for (const PgRow& r : *mine) held.push_back({*r[0], owner, std::stoll(*r[1])});
    if (!held.empty()) {
      auto renewed = db.command(
          "UPDATE agent_leases SET expires_at = now() + $3 * interval '1 millisecond' WHERE "
          "agent = ANY($1::text[]) AND owner = $2",
          {array, owner, ttl_text(ttl)});
      if (!renewed) return renewed.status();
    }
    auto free = db.query(
        "SELECT agent FROM agent_leases WHERE agent = ANY($1::text[]) AND owner <> $2 AND "
        "expires_at <= now() ORDER BY agent COLLATE \"C\" FOR UPDATE SKIP LOCKED",
        {array, owner});
    if (!free) return free.status();
    for (const PgRow& r : *free) {
      auto taken = take_locked(db, *r[0], owner, ttl, nullptr);
      if (!taken) return taken.status();
      held.push_back(std::move(*taken));
    }
    // Byte order: the order a transaction fencing several of them must lock them in.
    std::sort(held.begin(), held.end(),
              [](const Lease& a, const Lease& b) { return a.agent < b.agent; });
    return held;
  });
}

Result<bool> renew_lease(PgConnection& db, const Lease& lease, Millis ttl) {
  // Current while nobody took it since, expired or not: nobody else has worked for the agent.
  auto n = db.command(
      "UPDATE agent_leases SET expires_at = now() + $4 * interval '1 millisecond' WHERE agent = "
      "$1 AND owner = $2 AND epoch = $3",
      {lease.agent, lease.owner, std::to_string(lease.epoch), ttl_text(ttl)});
  if (!n) return n.status();
  return *n == 1;
}

Result<bool> fence(PgConnection& db, const Lease& lease) {
  auto rows = db.query(
      "SELECT 1 FROM agent_leases WHERE agent = $1 AND owner = $2 AND epoch = $3 FOR SHARE",
      {lease.agent, lease.owner, std::to_string(lease.epoch)});
  if (!rows) return rows.status();
  return !rows->empty();
}

Result<std::vector<Lease>> all_leases(PgConnection& db) {
  auto rows =
      db.query("SELECT agent, owner, epoch FROM agent_leases WHERE epoch > 0 ORDER BY agent");
  if (!rows) return rows.status();
  std::vector<Lease> out;
  for (const PgRow& r : *rows) out.push_back({*r[0], *r[1], std::stoll(*r[2])});
  return out;
}

}  // namespace iarelay
