// Child processes and loopback ports for integration and crash tests: spawn a real binary,
// signal it, wait for it, capture its output; find free ports; wait for a listener.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace iarelay::testing {

// Path of a built program: IARELAY_BIN_DIR "/" name.
std::string bin(const std::string& name);
// Path of a fixture in tests/fixtures/xmatters (the project's own sample payloads).
std::string fixture(const std::string& name);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content);

// A running child. Killed with SIGKILL on destruction if still running.
class Process {
 public:
  // stdout and stderr go to the given files ("" : inherited).
  Process(std::vector<std::string> argv, const std::string& stdout_path = "",
          const std::string& stderr_path = "", const std::map<std::string, std::string>& env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits for exit; returns the exit code, or 128+signal. -1 on timeout (child left running).
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  bool running();

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool reaped_ = false;
};

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs to completion (timeout 60 s), capturing stdout and stderr.
CommandResult run(std::vector<std::string> argv, const std::string& stdin_data = "",
                  const std::map<std::string, std::string>& env = {});

// A self-signed certificate for 127.0.0.1 (openssl), written to `cert` with its key to `key`
// (PEM); what openssl said when it failed, else "".
std::string make_self_signed_cert(const std::string& cert, const std::string& key);

// The non-empty lines of `text` (a command's output, a psql answer).
std::vector<std::string> lines_of(const std::string& text);

// A port that was free a moment ago on 127.0.0.1.
int free_port();
// True once something accepts TCP connections on 127.0.0.1:port.
bool wait_for_port(int port, std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Polls `pred` every 20 ms until it holds or `timeout` has passed; true when it held (it is
// asked once more at the end).
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

}  // namespace iarelay::testing
