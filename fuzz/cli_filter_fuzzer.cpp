// `iarelay list`'s argument parsing as the command does it (parse_args with the filter and
// format options, then filter_from and format_from). The input's lines are the arguments.
// Invariants:
// - no crash and no exception escapes (Boost errors become usage errors);
// - an accepted --since/--until is what parse_time makes of its text; --limit is absent or
//   positive; every --state named is one of the states; an agent handle of the configuration
//   becomes its identifier; --format is one of the allowed.
#include <iostream>
#include <sstream>

#include "args.h"
#include "common/time.h"
#include "fuzz_check.h"

using namespace iarelay;
using namespace iarelay::cli;
using iarelay::fuzz::show;

namespace {

constexpr Millis kNow = 1'796'000'000'123;
const CommandHelp kHelp = {"list [filters]", "fuzzed"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  // Usage errors and --help are printed; nobody reads them here.
  static std::ostringstream sink;
  static auto* quiet = [] {
    std::cerr.rdbuf(sink.rdbuf());
    std::cout.rdbuf(sink.rdbuf());
    return &sink;
  }();
  quiet->str("");

  Context ctx;
  ctx.command = "list";
  for (std::string_view a : fuzz::split(fuzz::as_view(data, size), '\n')) ctx.args.emplace_back(a);
  if (ctx.args.back().empty()) ctx.args.pop_back();  // a final newline ends the last argument
  Config config;
  AgentConfig agent;
  agent.handle = "nnmi1";
  agent.id = "ws-198/10.2.0.121:8081";
  config.agents.push_back(agent);
  ctx.config = config;

  po::options_description options;
  add_filter_options(options, true);
  add_format_option(options, "table", "table|csv|json");
  po::variables_map vm;
  if (parse_args(ctx, kHelp, options, {}, vm)) return 0;  // help or usage error
  auto format = format_from(vm, "table|csv|json");
  if (format)
    FUZZ_CHECK(*format == Format::kTable || *format == Format::kCsv || *format == Format::kJson,
               "format");
  auto filter = filter_from(ctx, vm, kNow);
  if (!filter) {
    FUZZ_CHECK(!filter.status().message().empty(), "an error without a message");
    return 0;
  }
  for (const char* name : {"since", "until"}) {
    const std::optional<Millis>& got =
        std::string_view(name) == "since" ? filter->since : filter->until;
    if (!vm.count(name)) {
      FUZZ_CHECK(!got, "--%s set without being given", name);
      continue;
    }
    auto expected = parse_time(vm[name].as<std::string>(), kNow);
    FUZZ_CHECK(got && expected && *got == *expected, "--%s '%s'", name,
               show(vm[name].as<std::string>()).c_str());
  }
  if (filter->limit)
    FUZZ_CHECK(*filter->limit > 0, "limit %lld", static_cast<long long>(*filter->limit));
  if (filter->agent && *filter->agent == agent.id) {
    auto given = vm["agent"].as<std::string>();
    FUZZ_CHECK(given == agent.id || given == agent.handle, "agent");
  }
  if (filter->agent && vm["agent"].as<std::string>() == agent.handle)
    FUZZ_CHECK(*filter->agent == agent.id, "a handle was not turned into its identifier");
  return 0;
}
