// Per-command argument parsing over Boost.Program_options: --help for every command, negative
// relative times as option values ("--since -2h"), and the options shared by several commands
// (webhook filters, --format) turned into checked values.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "journal/maintenance.h"
#include "journal/store.h"
#include "output.h"

namespace iarelay::cli {

namespace po = boost::program_options;

struct CommandHelp {
  const char* synopsis;     // "list [--state S]... [--limit N]"
  const char* description;  // a few lines: what it does, what it prints
};

// Parses ctx.args. Returns nullopt when the command should run (vm filled); otherwise the
// exit code: 0 after printing --help, 2 after a usage error (already reported).
std::optional<int> parse_args(const Context& ctx, const CommandHelp& help,
                              po::options_description& options,
                              const po::positional_options_description& positional,
                              po::variables_map& vm);

// What a po::error thrown by `parse` on `args` says, without the endless loop Boost's message
// falls into when an argument holds its own placeholder ("--x%canonical_option%"): `parse` is
// called again on the arguments with '%' swapped out to make the message.
std::string usage_message(const po::error& e, const std::vector<std::string>& args,
                          const std::function<void(const std::vector<std::string>&)>& parse);

// What a po::error thrown while parsing `args` against `options` means, in the tool's words
// (Boost's own text never reaches the operator): a missing argument says what to give, an
// unknown option names the nearest known one, a bad value or an extra argument says which.
// `command` ("agent pause", "" for the global options) picks the wording of what to give.
std::string describe_usage_error(const po::error& e, const std::string& command,
                                 const po::options_description& options,
                                 const po::positional_options_description& positional,
                                 const std::vector<std::string>& args,
                                 const std::function<void(const std::vector<std::string>&)>& parse);

// --state --agent --service --type --event --since --until [--limit]
void add_filter_options(po::options_description& options, bool with_limit);
// InvalidArgument (a usage error) for unknown states, bad times or limits. `now` anchors
// relative times. Agent handles of the configuration are turned into identifiers.
Result<WebhookFilter> filter_from(const Context& ctx, const po::variables_map& vm, Millis now);
// "failed,discarded" or repeated --state options; InvalidArgument listing the valid states.
Result<std::vector<WebhookState>> states_from(const std::vector<std::string>& names);
// A time option: InvalidArgument naming the option.
Result<Millis> time_from(const std::string& option, const std::string& text, Millis now);

// --format with `default_format`; `allowed` e.g. "table|csv|json".
void add_format_option(po::options_description& options, const char* default_format,
                       const char* allowed);
Result<Format> format_from(const po::variables_map& vm, const char* allowed);

// The selection as audit rows record it: ids (the first 20), states, filters, times absolute.
std::string selection_detail(const WebhookFilter& filter);
// "1 webhook", "2 webhooks".
std::string rows_text(std::int64_t n);
// The selection of a resend for its audit row, and the agent it sends to.
std::string resend_detail(const WebhookFilter& filter, const std::optional<std::string>& to_agent);
// Reports progress on stderr ("iarelay WHAT: N rows so far...") each time the running total
// passes another 10,000 rows.
ProgressFn progress_printer(const std::string& what);

}  // namespace iarelay::cli
