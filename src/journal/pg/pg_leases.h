// Agent leases on the PostgreSQL journal (issue 15, docs/high-availability.md): several relays
// on one journal, delivery to each agent owned by one of them at a time.
//
// - take_lease: an agent's lease is taken when nobody holds it or its holder let it expire
//   (the database's clock); the epoch goes up by one at each taking, and the agent's inflight
//   webhooks (the calls of the previous owner, abandoned) go back to queued in the same
//   transaction: delivered again, at least once.
// - renew_lease: the owner extends it while its epoch is current.
// - fence: inside an outcome's or claim's transaction, locks the lease row FOR SHARE while it
//   holds this owner's epoch; a takeover (an UPDATE of that row) waits for the transaction's
//   commit. When the lease moved on, the transaction must write nothing (Fenced).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/time.h"

namespace iarelay {

class PgConnection;

struct Lease {
  std::string agent;
  std::string owner;
  std::int64_t epoch = 0;
};

// Takes the lease of `agent` for `owner` for `ttl` when it is free or expired; one already this
// owner's, live or lapsed with nobody taking it since, is only renewed (same epoch). Returns the
// lease held after the call: the caller owns the agent when lease.owner == owner (owner empty:
// another transaction holds the row; not waited for). Runs its own transaction.
Result<Lease> take_lease(PgConnection& db, const std::string& agent, const std::string& owner,
                         Millis ttl, int* requeued = nullptr);
// Takes every lease of `agents` that is free or expired (FOR UPDATE SKIP LOCKED: relays
// taking at once never wait on each other), and renews those this owner holds (lapsed ones
// too while nobody took them). Returns the
// leases this owner holds afterwards. One transaction.
Result<std::vector<Lease>> take_leases(PgConnection& db, const std::vector<std::string>& agents,
                                       const std::string& owner, Millis ttl);
// Extends the owner's lease while it holds `epoch`; false when it moved on (fenced).
Result<bool> renew_lease(PgConnection& db, const Lease& lease, Millis ttl);
// Within an open transaction: whether `lease` is still current, locking it FOR SHARE until the
// transaction ends. False: another relay took the agent; roll back. A transaction that fences
// several leases fences them in byte order of their agents (take_leases returns them so and
// locks them so, whatever the database's collation), or two could deadlock.
Result<bool> fence(PgConnection& db, const Lease& lease);
// Every lease, by agent (iarelay status).
Result<std::vector<Lease>> all_leases(PgConnection& db);

}  // namespace iarelay
