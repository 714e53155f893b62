// iarelay: the operator's tool. main() parses the global options, builds the context (journal
// path, configuration) and runs one command; it only wires, the commands live in commands_*.
#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/program_options.hpp>
#include <cstring>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "common/config.h"
#include "common/suggest.h"
#include "pg_commands.h"

namespace po = boost::program_options;
using namespace iarelay;
using namespace iarelay::cli;

namespace {

struct CommandEntry {
  const char* name;
  int (*run)(Context&);
  const char* summary;
};

constexpr CommandEntry kCommands[] = {
    {"status", cmd_status, "agents, queues, totals, cursors and whether a daemon runs"},
    {"list", cmd_list, "webhooks, newest first, by state, agent, service, type, event, time"},
    {"show", cmd_show, "one webhook: every field, why it waits, its payload and every attempt"},
    {"resend", cmd_resend, "failed, discarded or delivered webhooks (a replay) back to queued"},
    {"retry", cmd_retry, "webhooks backing off become due now (postqueue -i)"},
    {"hold", cmd_hold, "hold queued webhooks: never sent until released (postsuper -h)"},
    {"release", cmd_release, "release held webhooks back to their queue (postsuper -H)"},
    {"delete", cmd_delete,
     "delete webhooks in any state but inflight, with --force (postsuper -d)"},
    {"move", cmd_move, "queued webhooks of one agent (or unassigned, or stored) to another agent"},
    {"sql", cmd_sql, "run one read-only SQL query on the journal"},
    {"agent", cmd_agent, "agent list | pause ID [--until T] [--reason R] | resume ID"},
    {"purge", cmd_purge, "delete old delivered (or other finished) webhooks"},
    {"migrate", cmd_migrate, "create the journal or apply pending migrations"},
    {"check", cmd_check, "integrity of the journal, its migrations, and the configuration"},
};

void print_usage(std::ostream& out) {
  out << "Usage: iarelay [--config FILE | --journal PATH] COMMAND [ARGS...]\n\n"
         "The operator's tool for an iarelay journal; works whether or not iarelayd runs.\n\n"
         "Commands:\n";
  for (const auto& c : kCommands) {
    std::string name = c.name;
    out << "  " << name << std::string(10 - name.size(), ' ') << c.summary << "\n";
  }
  out << "\nGlobal options:\n"
         "  --config FILE   read the journal path and agents from this configuration\n"
         "  --journal PATH  the journal file (default: the configuration's, else "
         "var/journal.db),\n"
         "                  or a PostgreSQL journal's postgresql://... connection string\n"
         "                  (docs/high-availability.md)\n"
         "  --help          this help; 'iarelay COMMAND --help' for a command's\n"
         "  --version       print the version\n\n"
         "Times are RFC 3339 with an offset (2026-11-29T14:00:00Z; one without an offset is\n"
         "refused as ambiguous) or relative to now (-2h, -30m, -7d in the past; +2h in the\n"
         "future, as for --until). Exit status: 0 success, 1 failure, 2 bad usage.\n";
}

// Tokens before the command name are global options; "--config X" takes the next token.
std::size_t find_command(const std::vector<std::string>& args) {
  std::size_t i = 0;
  while (i < args.size() && args[i].size() > 1 && args[i][0] == '-') {
    if ((args[i] == "--config" || args[i] == "--journal") && i + 1 < args.size()) ++i;
    ++i;
  }
  return i;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::size_t at = find_command(args);
  std::vector<std::string> global(args.begin(), args.begin() + static_cast<long>(at));
  Context ctx;
  // "iarelay list --journal X" works too: --config and --journal after the command name are
  // taken out of the command's arguments (up to a "--").
  for (std::size_t i = at + 1; i < args.size();) {
    const std::string& a = args[i];
    if (a == "--") break;
    bool separate = (a == "--config" || a == "--journal") && i + 1 < args.size();
    bool joined = a.rfind("--config=", 0) == 0 || a.rfind("--journal=", 0) == 0;
    if (!separate && !joined) {
      ++i;
      continue;
    }
    std::size_t n = separate ? 2 : 1;
    global.insert(global.end(), args.begin() + static_cast<long>(i),
                  args.begin() + static_cast<long>(i + n));
    args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i + n));
  }

  po::options_description options;
  options.add_options()("config", po::value<std::string>())("journal", po::value<std::string>())(
      "help,h", "")("version", "");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(global).options(options).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    auto parse = [&](const std::vector<std::string>& tokens) {
      po::variables_map ignored;
      po::store(po::command_line_parser(tokens).options(options).run(), ignored);
      po::notify(ignored);
    };
    return usage_error(
        ctx, describe_usage_error(e, "", options, {}, global, parse) + " (see iarelay --help)");
  }
  if (vm.count("version")) {
    std::cout << "iarelay " << IARELAY_VERSION << "\n";
    return kExitOk;
  }
  if (vm.count("help")) {
    print_usage(std::cout);
    return kExitOk;
  }
  if (at == args.size()) {
    print_usage(std::cerr);
    return kExitUsage;
  }
  std::string name = args[at];
  ctx.args.assign(args.begin() + static_cast<long>(at) + 1, args.end());
  if (name == "help") {
    if (ctx.args.empty()) {
      print_usage(std::cout);
      return kExitOk;
    }
    name = ctx.args.front();
    ctx.args = {"--help"};
  }
  const CommandEntry* command = nullptr;
  for (const auto& c : kCommands)
    if (name == c.name) command = &c;
  if (!command) {
    std::vector<std::string> names;
    for (const auto& c : kCommands) names.push_back(c.name);
    return usage_error(ctx, "unknown command '" + name + "'" + did_you_mean(name, names) +
                                " (see iarelay --help)");
  }
  ctx.command = name;

  bool wants_help = false;
  for (const auto& a : ctx.args) wants_help |= a == "--help" || a == "-h";
  if (vm.count("config") && !wants_help) {
    auto config = load_config(vm["config"].as<std::string>());
    if (!config) return fail(ctx, config.status().message());
    ctx.config = std::move(*config);
    ctx.journal = ctx.config->journal;
  } else {
    ctx.journal = Config{}.journal;
  }
  if (vm.count("journal")) ctx.journal = vm["journal"].as<std::string>();
  if (ctx.journal.empty()) return usage_error(ctx, "--journal: empty path");
  const bool postgresql = is_postgresql_journal(ctx.journal);
  // A PostgreSQL journal has no file whose owner to become.
  if (!wants_help && !postgresql) {
    std::vector<std::string> command_line{"iarelay"};
    command_line.insert(command_line.end(), argv + 1, argv + argc);
    if (Status s = run_as_journal_owner(ctx, command_line); !s) return fail(ctx, s.message());
  }
  try {
    return command->run(ctx);
  } catch (const SQLite::Exception& e) {
    // Database errors met mid-command (a damaged page, a busy timeout): name the journal.
    return fail(ctx, journal_for_display(ctx.journal) + ": " + e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // The journal library logs through spdlog; keep stdout for the command's output.
  auto logger = spdlog::stderr_logger_st("iarelay");
  logger->set_level(spdlog::level::warn);
  logger->set_pattern("iarelay: %v");
  spdlog::set_default_logger(logger);
  Context ctx;
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    return fail(ctx, e.what());
  }
}
