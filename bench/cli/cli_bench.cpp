// cli_bench: an operator's write command on a big journal (issue 11 item 11). Builds a journal
// of --gib GiB (delivered webhooks with --payload-kib KiB payloads, as months of traffic would
// leave), then times, on the same file with a cold and a warm page cache where the machine
// allows: `PRAGMA quick_check` (the guard every write command ran before) and `iarelay agent
// pause` / `resume` as built. Ratios compare within one run.
//   build/bin/cli_bench [--gib 5] [--payload-kib 16] [--dir DIR] [--keep]
#include <SQLiteCpp/SQLiteCpp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/crypto.h"
#include "common/time.h"
#include "journal/journal.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay {
namespace {

struct Options {
  double gib = 5;
  int payload_kib = 16;
  std::string dir;
  bool keep = false;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Runs argv, returns (exit code, seconds).
std::pair<int, double> timed_run(const std::vector<std::string>& args) {
  std::fflush(stdout);  // else the child's freopen writes the parent's buffered lines again
  auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::freopen("/dev/null", "w", stdout);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, seconds_since(start)};
}

void drop_caches() {
  // Root on Linux: the next reads come from the disk, as after a reboot or a busy day.
  sync();
  if (FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w")) {
    std::fputs("3\n", f);
    std::fclose(f);
  }
}

int run(const Options& o) {
  std::string dir =
      o.dir.empty() ? std::filesystem::current_path().string() + "/cli_bench.tmp" : o.dir;
  std::filesystem::create_directories(dir);
  std::string journal = dir + "/journal.db";
  const std::uintmax_t target = static_cast<std::uintmax_t>(o.gib * (1ull << 30));
  std::error_code ec;
  if (std::filesystem::file_size(journal, ec) < target || ec) {
    std::filesystem::remove(journal);
    {
      auto w = Writer::open(journal, SyncLevel::kNormal);  // the schema, by the migrations
      if (!w) {
        std::fprintf(stderr, "cli_bench: %s\n", w.status().message().c_str());
        return 1;
      }
    }
    SQLite::Database db(journal, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA synchronous=OFF");
    std::string pad(static_cast<std::size_t>(o.payload_kib) * 1024 - 64, 'x');
    auto start = std::chrono::steady_clock::now();
    std::int64_t rows = 0;
    Millis t0 = now_millis() - 90LL * 86'400'000;
    while (std::filesystem::file_size(journal) + std::filesystem::file_size(journal + "-wal", ec) <
           target) {
      SQLite::Transaction tx(db);
      for (int i = 0; i < 2000; ++i, ++rows) {
        NewWebhook w;
        w.id = new_webhook_id();
        w.received_at = t0 + rows * 20;
        w.service = "hpnnmi";
        w.type = "status";
        w.event_id = std::to_string(rows / 7);
        w.state = WebhookState::kDelivered;
        w.assigned_agent = "nnmi1";
        w.payload =
            "{\"eventIdentifier\":" + std::to_string(rows / 7) + ",\"pad\":\"" + pad + "\"}";
        insert_webhook(db, w);
      }
      tx.commit();
      if (rows % 100'000 == 0)
        std::fprintf(stderr, "cli_bench: %lld rows, %.1f GiB...\n", static_cast<long long>(rows),
                     static_cast<double>(std::filesystem::file_size(journal)) / (1ull << 30));
    }
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    std::fprintf(stderr, "cli_bench: built %lld rows in %.0f s\n", static_cast<long long>(rows),
                 seconds_since(start));
  }
  const double gib = static_cast<double>(std::filesystem::file_size(journal)) / (1ull << 30);
  std::string iarelay = std::string(IARELAY_BIN_DIR) + "/iarelay";
  std::printf("journal  %.2f GiB (%d KiB payloads)\n", gib, o.payload_kib);
  for (const char* cache : {"cold", "warm"}) {
    if (std::string(cache) == "cold") drop_caches();
    double check = 0;
    {
      auto start = std::chrono::steady_clock::now();
      SQLite::Database db(journal, SQLite::OPEN_READONLY);
      SQLite::Statement q(db, "PRAGMA quick_check(1)");
      q.executeStep();
      check = seconds_since(start);
    }
    if (std::string(cache) == "cold") drop_caches();
    auto pause = timed_run(
        {iarelay, "--journal", journal, "agent", "pause", "nnmi1", "--reason", "cli_bench"});
    auto resume = timed_run({iarelay, "--journal", journal, "agent", "resume", "nnmi1"});
    std::printf(
        "%s cache  quick_check %.2f s   iarelay agent pause %.3f s (exit %d)   resume %.3f s "
        "(exit %d)   quick_check / pause %.0fx\n",
        cache, check, pause.second, pause.first, resume.second, resume.first, check / pause.second);
  }
  if (!o.keep && o.dir.empty()) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace iarelay

int main(int argc, char** argv) {
  iarelay::Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "cli_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--gib")
      o.gib = std::atof(next().c_str());
    else if (a == "--payload-kib")
      o.payload_kib = std::atoi(next().c_str());
    else if (a == "--dir")
      o.dir = next();
    else if (a == "--keep")
      o.keep = true;
    else {
      std::printf(
          "usage: cli_bench [--gib 5] [--payload-kib 16] [--dir DIR (kept)] [--keep]\n"
          "Builds a journal of GIB GiB and times quick_check against iarelay agent pause.\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (o.gib <= 0 || o.payload_kib < 1) {
    std::fprintf(stderr, "cli_bench: --gib and --payload-kib must be positive\n");
    return 2;
  }
  return iarelay::run(o);
}
