// iarelayd: parses options and configuration, starts the Relay, and turns signals into
// stop (SIGTERM/SIGINT; a second one exits at once) and reload (SIGHUP). Only wiring here.
#include <SQLiteCpp/Database.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <thread>

#include "common/config.h"
#include "common/log.h"
#include "daemon/checks.h"
#include "daemon/options.h"
#include "daemon/relay.h"
#include "daemon/systemd_notify.h"
#include "journal/journal.h"

using namespace iarelay;

namespace {

// --check: every check a start makes (daemon/checks.h, the same as `iarelay check --config`),
// every problem on its own line; exit 2 when there is any.
int check_only(const Config& config) {
  std::vector<std::string> problems = start_problems(config);
  for (const auto& p : problems) std::cerr << "iarelayd: " << p << "\n";
  if (!problems.empty()) return 2;
  if (is_postgresql_journal(config.journal)) {
    std::cout << "configuration ok; journal " << journal_for_display(config.journal) << " ok\n";
    return 0;
  }
  auto db = open_journal_for_read(config.journal);
  if (!db) {
    std::cout << "configuration ok; journal " << config.journal << " will be created\n";
    return 0;
  }
  std::vector<std::string> pending;
  if (Status s = verify_migrations(**db, &pending); !s) {  // start_problems checked it
    std::cerr << "iarelayd: journal " << config.journal << ": " << s.message() << "\n";
    return 2;
  }
  std::cout << "configuration ok; journal " << config.journal << " ok, " << pending.size()
            << " migrations pending\n";
  return 0;
}

// Migrations run in Relay::start, before READY=1. One that rebuilds a table (0002_held_state
// copies every webhook: ~25 s per GB measured) can outlast systemd's start timeout (90 s by
// default), and a unit killed mid-migration rolls it back and starts it again, for ever. So when
// any is pending: say so, and ask systemd for time (EXTEND_TIMEOUT_USEC, one request for six
// hours; READY=1 ends the wait as soon as the migrations are done).
void announce_pending_migrations(const std::string& journal) {
  if (is_postgresql_journal(journal)) return;  // PgWriter::open applies them, under a lock
  auto db = open_journal_for_read(journal);
  if (!db) return;  // no journal yet: the empty schema is made at once
  std::vector<std::string> pending;
  if (!verify_migrations(**db, &pending) || pending.empty()) return;
  std::string names;
  for (const auto& name : pending) names += (names.empty() ? "" : ", ") + name;
  spdlog::warn(
      "applying {} journal migration(s) before serving: {}; on a large journal this takes "
      "minutes (docs/operations.md \"Upgrade\")",
      pending.size(), names);
  sd_notify("EXTEND_TIMEOUT_USEC=21600000000\nSTATUS=applying journal migrations: " + names);
}

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_daemon_options(argc, argv);
  if (!options) {
    std::cerr << "iarelayd: " << options.status().message() << " (see --help)\n";
    return 2;
  }
  switch (options->action) {
    case DaemonOptions::Action::kHelp:
      std::cout << options->help_text;
      return 0;
    case DaemonOptions::Action::kVersion:
      std::cout << "iarelayd " << IARELAY_VERSION << "\n";
      return 0;
    case DaemonOptions::Action::kPrintExample:
      std::cout << config_example();
      return 0;
    case DaemonOptions::Action::kPrintReference:
      std::cout << config_reference_markdown();
      return 0;
    default:
      break;
  }
  auto config = load_config(options->config_file, options->overrides);
  if (!config) {
    std::cerr << "iarelayd: " << config.status().message() << "\n";
    return 2;
  }
  if (options->action == DaemonOptions::Action::kCheck) return check_only(*config);
  // An agent secret that cannot be read is a configuration error too, at start and at --check
  // (otherwise the agent would be held without a word, and still chosen by routing).
  if (Status s = check_agent_secrets(*config); !s) {
    std::cerr << "iarelayd: " << s.message() << "\n";
    return 2;
  }
  // So is a listen token file without a token (no one could be let in).
  if (std::string problem = listen_token_problem(*config); !problem.empty()) {
    std::cerr << "iarelayd: " << problem << "\n";
    return 2;
  }
  if (Status s = init_logging(config->log_level, config->log_format); !s) {
    std::cerr << "iarelayd: " << s.message() << "\n";
    return 2;
  }

  // Signals are taken synchronously by this thread; every thread started later inherits the
  // blocked mask, so none of them is interrupted.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  announce_pending_migrations(config->journal);
  Relay relay(*config);
  if (Status s = relay.start(); !s) {
    spdlog::error("cannot start: {}", s.message());
    relay.stop();
    return 1;
  }
  sd_notify("READY=1\nSTATUS=relaying");

  // The monitor: logs when the relay stops being ready, pings the systemd watchdog only while
  // it is live (a dead dispatcher or poller thread, or a failed writer, lets systemd's
  // WatchdogSec restart us; a transient commit failure such as a full disk does not), and turns a
  // writer that can never write again into a stop with exit code 1 (systemd restarts the
  // daemon and SQLite recovers the WAL on the next open).
  std::atomic<bool> done{false};
  std::atomic<int> exit_code{0};
  const std::int64_t watchdog_ms = watchdog_interval_ms();
  std::thread monitor([&relay, &done, &exit_code, watchdog_ms] {
    std::string last_problem;
    std::int64_t since_ping = watchdog_ms;  // ping at once
    while (!done) {
      Status health = relay.health();
      if (!health.is_ok() && health.message() != last_problem)
        spdlog::error("not ready: {}", health.message());
      last_problem = health.is_ok() ? "" : health.message();
      if (watchdog_ms > 0 && relay.liveness().is_ok() && since_ping >= watchdog_ms / 2) {
        sd_notify("WATCHDOG=1");
        since_ping = 0;
      }
      if (relay.writer_failed_for_good() && exit_code.exchange(1) == 0) {
        spdlog::critical("the journal writer cannot write again: stopping with exit code 1");
        ::kill(::getpid(), SIGTERM);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      since_ping += 100;
    }
  });

  std::thread stopper;
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      // The stopper is taking the relay's parts down: a reload would reconfigure parts that
      // are being destroyed.
      if (stopper.joinable()) {
        spdlog::warn("SIGHUP ignored: stopping");
        continue;
      }
      spdlog::info("SIGHUP: reloading {}", config->file.empty() ? "(no file)" : config->file);
      if (Status s = relay.reload(options->overrides); !s)
        spdlog::error("reload failed, keeping the running configuration: {}", s.message());
      continue;
    }
    if (stopper.joinable()) {
      spdlog::warn("second {}: exiting at once", sig == SIGINT ? "SIGINT" : "SIGTERM");
      std::_Exit(1);
    }
    spdlog::info("{}: stopping (intake first, then in-flight calls, then the journal)",
                 sig == SIGINT ? "SIGINT" : "SIGTERM");
    sd_notify("STOPPING=1");
    stopper = std::thread([&] {
      done = true;
      monitor.join();  // it reads the relay's parts, which stop() destroys
      relay.stop();
      int code = exit_code.load();
      if (code == 0) spdlog::info("stopped cleanly");
      spdlog::shutdown();
      std::fflush(stderr);
      std::_Exit(code);
    });
  }
}
