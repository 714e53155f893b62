// The status document: `iarelay status --format json` and GET /v1/status (SPEC §8): per agent
// state, queued, inflight, oldest queued age, delivered and failed in the last hour; totals by
// state; upstream cursors and feed consumers' lag; whether a daemon holds the journal.
#pragma once

#include <string>

namespace SQLite {
class Database;
}

namespace iarelay {

struct Config;

// `config` may be null (then only agents known to the journal are listed). Throws
// SQLite::Exception on database errors.
std::string status_json(SQLite::Database& reader, const Config* config,
                        const std::string& journal_path);

}  // namespace iarelay
