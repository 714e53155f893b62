// iarelayd's command line: --config FILE, --section.key=value overrides (docs/operations.md,
// "Configuration reference"), --help,
// --version and the generated configuration example/reference.
#pragma once

#include <string>

#include "common/config.h"

namespace iarelay {

struct DaemonOptions {
  std::string config_file;
  ConfigOverrides overrides;
  enum class Action {
    kRun,
    kHelp,
    kVersion,
    kPrintExample,
    kPrintReference,
    kCheck
  } action = Action::kRun;
  std::string help_text;
};

// Fails (InvalidArgument) with a one-line message on bad usage.
Result<DaemonOptions> parse_daemon_options(int argc, char** argv);

}  // namespace iarelay
