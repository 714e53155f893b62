// Process-wide logging setup over spdlog: stderr, one line per event, text or JSON.
// Call init_logging once from main before starting threads; spdlog's loggers are thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace iarelay {

// level: debug|info|warn|error; format: text|json.
Status init_logging(const std::string& level, const std::string& format);

}  // namespace iarelay
