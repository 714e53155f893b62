// The status document: `iarelay status --format json` and GET /v1/status: per agent
// state, queued, inflight, oldest queued age, delivered and failed in the last hour; totals by
// state; upstream cursors and feed consumers' lag; whether a daemon holds the journal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "journal/store.h"

namespace SQLite {
class Database;
}

namespace iarelay {

struct Config;

// The audit action of a poller's cursor rewind (filter: the upstream's name; affected: how far
// back; detail: {"from": seq, "to": seq}).
inline constexpr std::string_view kCursorRewindAction = "cursor_rewind";

// The document is one JSON object (times RFC 3339 UTC text, ages and durations integer ms,
// absent values null):
//   "generated_at"  when the document was made
//   "journal"       the journal path
//   "daemon"        {"running": bool, "pid": int|null}  an iarelayd holds "<journal>.lock"
//   "role"          "deliver" | "edge" (the configuration's role), null without a configuration
//   "totals"        {"stored","queued","inflight","delivered","failed","discarded","held": int}
//   "held"          {"queued": int, "oldest_queued_at", "oldest_queued_age_ms"}: queued webhooks
//                   with no assigned agent (waiting for any agent of their service); the
//                   older name of "unassigned", kept for compatibility
//   "unassigned"    the same object as "held"
//   "held_by_operator" {"webhooks": int, "oldest_received_at", "oldest_received_age_ms"}:
//                   webhooks in the state `held` (iarelay hold), the oldest by arrival
//   "agents"        array, configured agents first in configuration order, then agents known
//                   only to the journal (agents table, or queued/inflight/recent work):
//                   {"id", "handle" (config section name or null), "configured": bool,
//                    "state": "up"|"down"|"paused"|null (null: unconfigured, no agents row;
//                    a configured agent without a row is "up"), "state_since", "reason",
//                    "paused_until", "queued", "inflight", "oldest_queued_at",
//                    "oldest_queued_age_ms", "delivered_last_hour", "failed_last_hour",
//                    "retried_last_hour"}  (the *_last_hour counts are attempts started in
//                    the last hour by outcome: delivered, failed (permanent), retry)
//   "unconfigured"  {"queued": int, "agents": [id...]}: queued webhooks assigned to agents the
//                   configuration does not have (a retired agent's, or addressed to an unknown
//                   identifier); null when no configuration was given
//   "upstream"      array of {"name", "seq", "updated_at", "configured": bool, "rewound"}:
//                   the cursors of polled upstream feeds (the configured one listed even before
//                   its first batch, with seq 0); "rewound" is null, or the last time the
//                   upstream's newest seq was found below the cursor: {"at", "from", "to"}
//                   (the cursor was set back from `from` to the upstream's newest, `to`; from
//                   the audit row the poller writes with action kCursorRewindAction)
//   "feed"          {"max_seq": int (newest stored webhook's seq, 0 if none),
//                    "consumers": [{"name", "acked_seq", "acked_at", "lag"}]} where lag is
//                   max_seq - acked_seq (never negative)
// The text is always valid UTF-8: bytes of the journal that are not (an older version or an
// operator's SQL could store them in any text column) are shown as U+FFFD.
// `config` may be null (then only agents known to the journal are listed). Reads run on
// `reader` (a read-only connection owned by the caller's thread). Throws SQLite::Exception on
// database errors.
std::string status_json(SQLite::Database& reader, const Config* config,
                        const std::string& journal_path);

// The operator's backlog (store.h's OperatorBacklog), counted on SQLite.
OperatorBacklog operator_backlog(SQLite::Database& reader);
// The query operator_backlog runs (tests check its plan).
extern const char* const kOperatorBacklogSql;

}  // namespace iarelay
