// The INI reader and configuration validation (load_config). The input is a configuration
// file (written to a memory file or a private temporary file, as load_config reads a path); its
// lines of the form "--name=value" are also given as command-line overrides to a second load.
// Invariants:
// - no crash, no exception;
// - every error about the file is one line naming the file and a line number within it
//   ("FILE:N: ..."); every error about an override names the command line;
// - an accepted configuration is valid: unique agent ids, http(s) callbacks (still so with
//   {service} and {domain} filled in), at least one type in kinds, positive timeouts,
//   backoff_initial <= backoff_max, a listener address with a port, max_body > 0.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/config.h"
#include "common/utf8.h"
#include "fuzz_check.h"

using namespace iarelay;
using iarelay::fuzz::show;

namespace {

// The file load_config reads, open for the whole run and rewritten in place for each input.
// A memory file (memfd, read through /proc/self/fd) when the system has one, else a private
// temporary file. Not truncated to zero then rewritten and closed: ext4 flushes a file so
// replaced to disk at its close (auto_da_alloc), which made this target wait for the disk at
// every execution (about a third of its time).
struct ConfigFile {
  int fd = -1;
  std::string path;
};

const ConfigFile& config_file() {
  static const ConfigFile file = [] {
    ConfigFile f;
    f.fd = memfd_create("iarelay-fuzz-config", 0);
    if (f.fd >= 0) {
      f.path = "/proc/self/fd/" + std::to_string(f.fd);
      if (access(f.path.c_str(), R_OK) == 0) return f;
      close(f.fd);
    }
    const char* dir = std::getenv("TMPDIR");
    f.path = std::string(dir && *dir ? dir : "/tmp") + "/iarelay-fuzz-config.XXXXXX";
    f.fd = mkstemp(f.path.data());
    if (f.fd < 0) std::abort();
    return f;
  }();
  return file;
}

void write_file(const ConfigFile& file, std::string_view content) {
  std::size_t size = content.size();
  off_t at = 0;
  while (!content.empty()) {
    ssize_t n = pwrite(file.fd, content.data(), content.size(), at);
    if (n <= 0) std::abort();
    content.remove_prefix(static_cast<std::size_t>(n));
    at += n;
  }
  if (ftruncate(file.fd, static_cast<off_t>(size)) != 0) std::abort();
}

void check_valid(const Config& c) {
  for (std::size_t i = 0; i < c.agents.size(); ++i) {
    const AgentConfig& a = c.agents[i];
    for (std::size_t j = 0; j < i; ++j)
      FUZZ_CHECK(c.agents[j].id != a.id, "duplicate agent id '%s'", show(a.id).c_str());
    FUZZ_CHECK(a.callback.rfind("http://", 0) == 0 || a.callback.rfind("https://", 0) == 0,
               "callback '%s'", show(a.callback).c_str());
    // Filled in for any service, the callback is still an http(s) URL without braces (every
    // placeholder was a known one) and with its host unchanged.
    const std::string url = callback_url(a, "x|y {z}/");
    FUZZ_CHECK(url.rfind(a.callback.substr(0, a.callback.find_first_of("/?#{", 8)), 0) == 0 &&
                   url.find_first_of("{}") == std::string::npos,
               "callback '%s' filled in as '%s'", show(a.callback).c_str(), show(url).c_str());
    FUZZ_CHECK(!a.kinds.empty() || a.all_kinds, "agent '%s' takes no type", show(a.id).c_str());
    FUZZ_CHECK(!a.id.empty() && a.timeout > 0 && a.backoff_initial > 0 &&
                   a.backoff_initial <= a.backoff_max && a.max_inflight >= 1 && a.down_after >= 1 &&
                   a.max_attempts >= 1,
               "agent '%s' has an invalid setting", show(a.id).c_str());
  }
  if (c.listen) {
    FUZZ_CHECK(c.listen->max_body > 0, "max_body %lld", static_cast<long long>(c.listen->max_body));
    FUZZ_CHECK(c.listen->address.rfind(':') != std::string::npos, "listen address");
  }
  if (c.upstream) FUZZ_CHECK(c.upstream->poll_wait >= 0 && c.upstream->batch >= 1, "upstream");
  FUZZ_CHECK(!c.journal.empty() && c.drain_grace >= 0 && c.retain_delivered >= 0,
             "journal/drain_grace/retain_delivered");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view text = fuzz::as_view(data, size);
  const ConfigFile& file = config_file();
  const std::string& path = file.path;
  write_file(file, text);
  std::size_t lines = 1;
  for (char c : text) lines += c == '\n';

  auto config = load_config(path);
  if (config) {
    check_valid(*config);
  } else {
    // One line per mistake (the file's are all listed at once), each naming the file and a
    // line of it, in the order of the file.
    const std::string& all = config.status().message();
    std::size_t previous = 0;
    for (std::string_view one : fuzz::split(all, '\n')) {
      std::string m(one);
      FUZZ_CHECK(m.rfind(path + ":", 0) == 0, "the error does not name the file: %s",
                 show(all).c_str());
      std::size_t at = path.size() + 1;
      std::size_t line = 0, digits = 0;
      while (at < m.size() && m[at] >= '0' && m[at] <= '9' && digits < 9)
        line = line * 10 + static_cast<std::size_t>(m[at++] - '0'), ++digits;
      FUZZ_CHECK(digits > 0 && line >= 1 && line <= lines && m.compare(at, 2, ": ") == 0,
                 "the error does not name a line of the file (%zu lines): %s", lines,
                 show(all).c_str());
      FUZZ_CHECK(line >= previous, "the errors are not in the file's order: %s", show(all).c_str());
      previous = line;
    }
  }

  ConfigOverrides overrides;
  for (std::string_view line : fuzz::split(text, '\n')) {
    if (line.rfind("--", 0) != 0) continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    overrides.emplace_back(std::string(line.substr(2, eq - 2)), std::string(line.substr(eq + 1)));
  }
  if (overrides.empty()) return 0;
  auto overridden = load_config(path, overrides);
  if (overridden) {
    check_valid(*overridden);
  } else if (config) {
    // The file alone was fine: the fault is on the command line.
    const std::string& m = overridden.status().message();
    FUZZ_CHECK(m.rfind("command line: ", 0) == 0, "override error does not say so: %s",
               show(m).c_str());
  }
  return 0;
}
