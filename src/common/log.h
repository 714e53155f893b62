// Process-wide logging setup over spdlog: stderr, one line per event, text or JSON.
// Call init_logging once from main before starting threads; spdlog's loggers are thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace iarelay {

// level: debug|info|warn|error; format: text|json. When stderr is journald's stream (see
// stderr_is_journald) every line starts with its syslog priority ("<4>" for a warning) and a
// text line has no timestamp (journald adds its own); a JSON line keeps its "time" field.
Status init_logging(const std::string& level, const std::string& format);

// True when JOURNAL_STREAM names the device and inode stderr is open on (the sd-daemon(3)
// convention: systemd connected stderr to the journal).
bool stderr_is_journald();

}  // namespace iarelay
