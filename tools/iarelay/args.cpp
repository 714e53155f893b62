// Command argument parsing and the shared filter and format options.
#include "args.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <string_view>

#include "common/suggest.h"
#include "common/time.h"

namespace iarelay::cli {
namespace {

// "--since -2h" would read "-2h" as an option; join a value-taking long option with the token
// that follows it ("--since=-2h") before Boost sees them. Tokens after "--" are left alone.
std::vector<std::string> join_option_values(const po::options_description& options,
                                            const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.insert(out.end(), args.begin() + static_cast<long>(i), args.end());
      break;
    }
    if (a.size() > 2 && a.compare(0, 2, "--") == 0 && a.find('=') == std::string::npos &&
        i + 1 < args.size()) {
      const po::option_description* d = options.find_nothrow(a.substr(2), false);
      if (d && d->semantic()->max_tokens() > 0) {
        out.push_back(a + "=" + args[i + 1]);
        ++i;
        continue;
      }
    }
    out.push_back(a);
  }
  return out;
}

// Parses `args` into `vm` (through notify unless --help is given). Throws po::error.
void parse_into(const std::vector<std::string>& args, const po::options_description& all,
                const po::positional_options_description& positional, po::variables_map& vm) {
  auto parsed = po::command_line_parser(join_option_values(all, args))
                    .options(all)
                    .positional(positional)
                    .style(po::command_line_style::unix_style)
                    .run();
  po::store(parsed, vm);
  if (!vm.count("help")) po::notify(vm);
}

}  // namespace

std::optional<int> parse_args(const Context& ctx, const CommandHelp& help,
                              po::options_description& options,
                              const po::positional_options_description& positional,
                              po::variables_map& vm) {
  po::options_description all;
  all.add_options()("help,h", "show this help");
  all.add(options);
  po::options_description visible("Options");
  visible.add(all);
  try {
    parse_into(ctx.args, all, positional, vm);
    if (vm.count("help")) {
      std::cout << "Usage: iarelay [--config FILE | --journal PATH] " << help.synopsis << "\n\n"
                << help.description << "\n\n";
      // Positional arguments have hidden option entries; they are described above instead.
      po::options_description shown("Options", 100, 50);
      for (const auto& o : all.options())
        if (!o->description().empty()) shown.add(o);
      std::cout << shown << "\n";
      return kExitOk;
    }
  } catch (const po::error& e) {
    auto parse = [&](const std::vector<std::string>& args) {
      po::variables_map ignored;
      parse_into(args, all, positional, ignored);
    };
    return usage_error(ctx, describe_usage_error(e, ctx.command, all, positional,
                                                 join_option_values(all, ctx.args), parse) +
                                " (see iarelay " + ctx.command + " --help)");
  }
  return std::nullopt;
}

// Boost (1.74) builds the message by replacing each "%name%" of a template with the option or
// value as given, again and again until none is left: an argument holding its own placeholder
// ("--x%canonical_option%") never ends, the message growing until memory runs out (found by the
// cli_filter fuzz target). So when an argument holds a '%' the arguments are parsed again with
// '%' swapped for a byte none of them holds (the same error: '%' means nothing to the parser),
// and the byte swapped back in the message.
std::string usage_message(const po::error& e, const std::vector<std::string>& args,
                          const std::function<void(const std::vector<std::string>&)>& parse) {
  bool percent = false;
  std::array<bool, 256> used{};
  for (const auto& a : args)
    for (char c : a) {
      used[static_cast<unsigned char>(c)] = true;
      percent = percent || c == '%';
    }
  if (!percent) return e.what();
  // A control byte or one past ASCII: none is in Boost's templates.
  int stand_in = 1;
  while (stand_in < 256 &&
         (used[static_cast<std::size_t>(stand_in)] || (stand_in >= 0x20 && stand_in < 0x7f)))
    ++stand_in;
  std::string message = "invalid arguments";
  if (stand_in < 256) {
    std::vector<std::string> swapped = args;
    for (auto& a : swapped) std::replace(a.begin(), a.end(), '%', static_cast<char>(stand_in));
    try {
      parse(swapped);
    } catch (const po::error& again) {
      message = again.what();
      std::replace(message.begin(), message.end(), static_cast<char>(stand_in), '%');
    }
  }
  return message;
}

namespace {

// What a missing positional argument is, for "give ...".
std::string what_to_give(const std::string& command, const std::string& name) {
  static const std::pair<const char*, const char*> kWhat[] = {
      {"agent pause/id", "an agent identifier or handle"},
      {"agent resume/id", "an agent identifier or handle"},
      {"show/id", "a webhook id"},
      {"resend/id", "a webhook id"},
      {"sql/query", "a query (one read-only SELECT)"},
  };
  for (const auto& [key, what] : kWhat)
    if (command + "/" + name == key) return what;
  std::string upper = name;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return upper;
}

bool is_positional(const po::positional_options_description& positional, const std::string& name) {
  unsigned n = positional.max_total_count();
  for (unsigned i = 0; i < n && i < 64; ++i)
    if (positional.name_for_position(i) == name) return true;
  return n > 64 && positional.name_for_position(n - 1) == name;
}

// "--id" or "-h" as Boost names it, without dashes.
std::string bare(std::string name) {
  while (!name.empty() && name.front() == '-') name.erase(0, 1);
  return name;
}

// An option as written on the command line: "--since", "-h".
std::string shown(const std::string& name) {
  std::string b = bare(name);
  return (b.size() == 1 ? "-" : "--") + b;
}

}  // namespace

std::string describe_usage_error(
    const po::error& e, const std::string& command, const po::options_description& options,
    const po::positional_options_description& positional, const std::vector<std::string>& args,
    const std::function<void(const std::vector<std::string>&)>& parse) {
  std::vector<std::string> known;  // the options a user can give, as "--name"
  for (const auto& o : options.options())
    if (!o->long_name().empty() && !is_positional(positional, o->long_name()))
      known.push_back("--" + o->long_name());
  if (!command.empty()) {
    known.push_back("--config");
    known.push_back("--journal");
  }
  if (const auto* missing = dynamic_cast<const po::required_option*>(&e)) {
    std::string name = bare(missing->get_option_name());
    if (is_positional(positional, name)) return "give " + what_to_give(command, name);
    const po::option_description* d = options.find_nothrow(name, false);
    std::string value = d ? d->semantic()->name() : "";
    return "--" + name + " is required (give --" + name +
           (value.empty() || value == "arg" ? std::string("") : " " + value) + ")";
  }
  if (const auto* unknown = dynamic_cast<const po::unknown_option*>(&e)) {
    std::string token = unknown->get_option_name();
    std::string name = token.substr(0, token.find('='));
    return "unknown option '" + name + "'" + did_you_mean(name, known);
  }
  if (const auto* ambiguous = dynamic_cast<const po::ambiguous_option*>(&e)) {
    std::set<std::string> alternatives(ambiguous->alternatives().begin(),
                                       ambiguous->alternatives().end());
    std::string list;
    for (const auto& a : alternatives) list += (list.empty() ? "" : ", ") + shown(a);
    return "option '" + ambiguous->get_option_name() + "' is ambiguous: " + list +
           " (give the whole name)";
  }
  if (const auto* syntax = dynamic_cast<const po::invalid_command_line_syntax*>(&e)) {
    std::string name = shown(syntax->get_option_name());
    switch (syntax->kind()) {
      case po::invalid_syntax::missing_parameter:
        return name + " needs a value";
      case po::invalid_syntax::extra_parameter:
        return name + " takes no value";
      default:
        return "'" + name + "' is not an option this command takes";
    }
  }
  if (const auto* twice = dynamic_cast<const po::multiple_occurrences*>(&e))
    return shown(twice->get_option_name()) + " is given more than once (give it once)";
  if (dynamic_cast<const po::too_many_positional_options_error*>(&e)) {
    unsigned most = positional.max_total_count();
    // The arguments that are not options (after join_option_values, an option's value is
    // joined to it); those past `most` are the extra ones.
    std::vector<std::string> plain;
    bool rest = false;
    for (const auto& a : args) {
      if (!rest && a == "--") {
        rest = true;
        continue;
      }
      if (rest || a.empty() || a[0] != '-' || a == "-") plain.push_back(a);
    }
    std::string extra = plain.size() > most ? " ('" + plain[most] + "' is one too many)" : "";
    if (most == 0) return "takes no arguments" + extra;
    return "takes at most " + std::to_string(most) + (most == 1 ? " argument" : " arguments") +
           extra;
  }
  if (const auto* bad = dynamic_cast<const po::validation_error*>(&e))
    return shown(bad->get_option_name()) + ": the value given is not valid";
  // Any other kind: Boost's text, the only description there is.
  return usage_message(e, args, parse);
}

void add_filter_options(po::options_description& options, bool with_limit) {
  auto text = [](const char* name) { return po::value<std::string>()->value_name(name); };
  options.add_options()(
      "state", po::value<std::vector<std::string>>()->composing()->value_name("S"),
      "stored|queued|inflight|delivered|failed|discarded|held (repeat or comma-separate)")(
      "agent", text("A"), "assigned or requested agent (identifier or handle)")(
      "service", text("S"), "integration service")("type", text("T"),
                                                   "trigger type (status, deliveryStatus, ...)")(
      "event", text("E"), "event identifier")("since", text("T"),
                                              "received at or after T (RFC 3339, or -2h, -30m)")(
      "until", text("T"), "received before T (RFC 3339, or -2h, -30m)");
  if (with_limit)
    options.add_options()("limit", po::value<std::string>()->value_name("N"),
                          "at most N rows (default 50 for table, all for csv and json; 0: all)");
}

Result<std::vector<WebhookState>> states_from(const std::vector<std::string>& names) {
  std::vector<WebhookState> out;
  for (const auto& list : names) {
    std::size_t start = 0;
    while (start <= list.size()) {
      std::size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      std::string name = list.substr(start, comma - start);
      start = comma + 1;
      if (name.empty()) continue;
      auto s = parse_state(name);
      if (!s)
        return Status::invalid_argument(
            "unknown state '" + name +
            "' (valid: stored, queued, inflight, delivered, failed, discarded, held)");
      out.push_back(*s);
    }
  }
  return out;
}

Result<Millis> time_from(const std::string& option, const std::string& text, Millis now) {
  auto t = parse_time(text, now);
  if (!t) return Status::invalid_argument("--" + option + ": " + t.status().message());
  return *t;
}

Result<WebhookFilter> filter_from(const Context& ctx, const po::variables_map& vm, Millis now) {
  WebhookFilter f;
  if (vm.count("state")) {
    auto states = states_from(vm["state"].as<std::vector<std::string>>());
    if (!states) return states.status();
    f.states = std::move(*states);
  }
  auto text = [&](const char* name) -> std::optional<std::string> {
    if (!vm.count(name)) return std::nullopt;
    return vm[name].as<std::string>();
  };
  f.agent = text("agent");
  if (f.agent && ctx.config) {
    // A handle names the agent it configures; an identifier is taken as given.
    if (const AgentConfig* a = ctx.config->find_agent(*f.agent)) f.agent = a->id;
  }
  f.service = text("service");
  if (f.service && f.service->rfind("applications|", 0) == 0) f.service = f.service->substr(13);
  f.type = text("type");
  f.event = text("event");
  for (const char* name : {"since", "until"}) {
    if (auto v = text(name)) {
      auto t = time_from(name, *v, now);
      if (!t) return t.status();
      (std::string(name) == "since" ? f.since : f.until) = *t;
    }
  }
  if (auto v = text("limit")) {
    char* end = nullptr;
    long long n = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0' || n < 0)
      return Status::invalid_argument("--limit: '" + *v + "' is not a count (0 or more)");
    if (n > 0)
      f.limit = n;
    else
      f.limit = std::nullopt;
  }
  return f;
}

void add_format_option(po::options_description& options, const char* default_format,
                       const char* allowed) {
  std::string help = std::string("output format: ") + allowed;
  if (std::string_view(allowed).find("table") != std::string_view::npos)
    help += "; a table shows control characters and bytes not UTF-8 escaped (\\x1b)";
  if (std::string_view(allowed).find("csv") != std::string_view::npos)
    help +=
        "; a csv cell beginning with = + - @, tab or CR gets a leading ' (so that a "
        "spreadsheet does not run it as a formula)";
  options.add_options()("format",
                        po::value<std::string>()->default_value(default_format)->value_name("F"),
                        help.c_str());
}

Result<Format> format_from(const po::variables_map& vm, const char* allowed) {
  std::string text = vm["format"].as<std::string>();
  auto f = parse_format(text);
  std::string allowed_list = allowed;
  if (!f || ("|" + allowed_list + "|").find("|" + text + "|") == std::string::npos)
    return Status::invalid_argument("--format: '" + text + "' is not one of " + allowed_list);
  return *f;
}

std::string rows_text(std::int64_t n) {
  return std::to_string(n) + (n == 1 ? " webhook" : " webhooks");
}

std::string resend_detail(const WebhookFilter& f, const std::optional<std::string>& to_agent) {
  std::string out = selection_detail(f);
  if (to_agent) out += (out.empty() ? "" : " ") + std::string("to_agent=") + *to_agent;
  return out;
}

ProgressFn progress_printer(const std::string& what) {
  constexpr std::int64_t kProgressEvery = 10'000;
  auto next = std::make_shared<std::int64_t>(kProgressEvery);
  return [what, next](std::int64_t done) {
    if (done < *next) return;
    std::cerr << "iarelay " << what << ": " << done << " rows so far..." << std::endl;
    while (*next <= done) *next += kProgressEvery;
  };
}

std::string selection_detail(const WebhookFilter& f) {
  std::string out;
  auto add = [&](const std::string& key, const std::string& value) {
    out += (out.empty() ? "" : " ") + key + "=" + value;
  };
  if (!f.ids.empty()) {
    std::string ids;
    for (std::size_t i = 0; i < f.ids.size() && i < 20; ++i) ids += (i ? "," : "") + f.ids[i];
    if (f.ids.size() > 20) ids += ",... (" + std::to_string(f.ids.size()) + ")";
    add("ids", ids);
  }
  std::string states;
  for (auto s : f.states) states += (states.empty() ? "" : ",") + std::string(to_string(s));
  if (!states.empty()) add("states", states);
  if (f.agent) add("agent", *f.agent);
  if (f.service) add("service", *f.service);
  if (f.type) add("type", *f.type);
  if (f.event) add("event", *f.event);
  if (f.since) add("since", format_time(*f.since));
  if (f.until) add("until", format_time(*f.until));
  return out;
}

}  // namespace iarelay::cli
