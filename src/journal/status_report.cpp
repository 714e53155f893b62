// Placeholder until the status document is implemented (issue 2, `iarelay status`).
#include "journal/status_report.h"

namespace iarelay {

std::string status_json(SQLite::Database&, const Config*, const std::string&) {
  return "{}";
}

}  // namespace iarelay
