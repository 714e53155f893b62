// Command-line handling shared by the test stand-ins (iarelay-sink, iarelay-loadgen): parse,
// then --help and --version, with one-line usage errors.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <optional>
#include <string>

namespace iarelay::tools {

// Prints "program: message (see --help)" and returns the usage exit code, 2.
inline int usage_error(const std::string& program, const std::string& message) {
  std::cerr << program << ": " << message << " (see --help)\n";
  return 2;
}

// Parses argv into vm. Returns the exit code when the program is done (0 after --help or
// --version, 2 on a bad command line), nothing when it should go on.
inline std::optional<int> parse_options(int argc, char** argv,
                                        const boost::program_options::options_description& desc,
                                        boost::program_options::variables_map& vm,
                                        const std::string& program) {
  namespace po = boost::program_options;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    return usage_error(program, e.what());
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << program << " " << IARELAY_VERSION << "\n";
    return 0;
  }
  return std::nullopt;
}

}  // namespace iarelay::tools
