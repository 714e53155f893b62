// Boost.Program_options for the fixed flags; any other --section.key=value is a config override
// checked against the config table by load_config.
#include "daemon/options.h"

#include <boost/program_options.hpp>
#include <sstream>

#include "common/suggest.h"

namespace iarelay {

namespace po = boost::program_options;

Result<DaemonOptions> parse_daemon_options(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help and exit")("version", "print the version and exit")(
      "config,c", po::value<std::string>(), "configuration file (INI; its keys are listed below)")(
      "check",
      "run every check a start makes (configuration, secret and token files, TLS certificate "
      "and key, journal directory and migrations), list every problem, then exit")(
      "print-config-example", "print an example configuration with every key and its default")(
      "print-config-reference", "print the configuration reference as a Markdown table");
  DaemonOptions out;
  std::ostringstream help;
  help << "Usage: iarelayd [--config FILE] [--SECTION.KEY=VALUE ...]\n\n"
          "The iarelay daemon: takes xMatters outbound-integration webhooks (HTTP intake or\n"
          "polling an upstream relay), journals them durably in SQLite, and calls each\n"
          "Integration Agent's apia_callback with retries.\n\n"
       << desc
       << "\nEvery configuration key can be given as --key=VALUE (top level) or\n"
          "--SECTION.KEY=VALUE, e.g. --listen.address=127.0.0.1:8080 --agent.nnmi1.timeout=5s;\n"
          "these win over the file. Secrets only from files or IARELAY_* variables.\n\n"
          "Signals: SIGTERM/SIGINT stop cleanly (a second one exits at once); SIGHUP reloads\n"
          "the configuration file: the keys marked * take effect; each other key that changed\n"
          "is logged as needing a restart and keeps its value (GET /v1/status: in_use).\n\n"
          "Configuration keys (file section, key, default; * = reloadable on SIGHUP):\n";
  std::string section = "-";
  for (const ConfigKey& k : config_keys()) {
    if (section != k.section) {
      section = k.section;
      help << "  " << (section.empty() ? "(top level)" : "[" + section + "]") << "\n";
    }
    std::string name = std::string(k.key) + (k.reloadable ? " *" : "");
    std::string value = *k.choices ? k.choices : k.type;
    if (*k.default_value) value += " = " + std::string(k.default_value);
    help << "    " << name << std::string(name.size() < 18 ? 18 - name.size() : 1, ' ') << value
         << "\n      " << k.help << "\n";
  }
  out.help_text = help.str();
  try {
    po::parsed_options parsed =
        po::command_line_parser(argc, argv).options(desc).allow_unregistered().run();
    po::variables_map vm;
    po::store(parsed, vm);
    for (const auto& opt : parsed.options) {
      // A bare word ("iarelayd foo") is not an option: Boost keeps it as a positional one,
      // which nothing would read.
      if (opt.position_key != -1 || opt.string_key.empty()) {
        std::string tok = opt.original_tokens.empty() ? opt.value.empty() ? "" : opt.value.front()
                                                      : opt.original_tokens.front();
        return Status::invalid_argument("unexpected argument '" + tok +
                                        "': iarelayd takes options only (--config FILE, "
                                        "--check, --SECTION.KEY=VALUE)");
      }
      if (!opt.unregistered) continue;
      // Unregistered tokens arrive as "--name=value" or "--name" "value".
      std::string name = opt.string_key;
      if (name.rfind("--", 0) == 0) name = name.substr(2);
      std::string value;
      if (!opt.value.empty()) value = opt.value.front();
      if (opt.original_tokens.size() == 1) {
        const std::string& tok = opt.original_tokens.front();
        size_t eq = tok.find('=');
        if (tok.rfind("--", 0) != 0 || eq == std::string::npos) {
          std::vector<std::string> known;
          for (const auto& o : desc.options()) known.push_back("--" + o->long_name());
          std::string hint = did_you_mean(tok, known);
          return Status::invalid_argument(
              "unexpected argument '" + tok + "'" +
              (hint.empty() ? " (options are --config FILE, --check, ...; configuration "
                              "overrides are --section.key=value)"
                            : hint));
        }
        name = tok.substr(2, eq - 2);
        value = tok.substr(eq + 1);
      }
      out.overrides.emplace_back(name, value);
    }
    if (vm.count("config")) out.config_file = vm["config"].as<std::string>();
    if (vm.count("help"))
      out.action = DaemonOptions::Action::kHelp;
    else if (vm.count("version"))
      out.action = DaemonOptions::Action::kVersion;
    else if (vm.count("print-config-example"))
      out.action = DaemonOptions::Action::kPrintExample;
    else if (vm.count("print-config-reference"))
      out.action = DaemonOptions::Action::kPrintReference;
    else if (vm.count("check"))
      out.action = DaemonOptions::Action::kCheck;
  } catch (const po::invalid_command_line_syntax& e) {
    // In our words, not Boost's ("the required argument for option '--config' is missing").
    std::string name = e.get_option_name();
    if (name.rfind("--", 0) != 0) name = "--" + name;
    return Status::invalid_argument(e.kind() == po::invalid_syntax::missing_parameter
                                        ? name + " needs a value (--config FILE)"
                                        : name + " takes no value");
  } catch (const po::multiple_occurrences& e) {
    std::string name = e.get_option_name();
    if (name.rfind("--", 0) != 0) name = "--" + name;
    return Status::invalid_argument(name + " is given more than once (give it once)");
  } catch (const po::error& e) {
    return Status::invalid_argument(e.what());
  }
  return out;
}

}  // namespace iarelay
