// backend_bench: the journal's intake write path on both backends (issue 15). Webhooks of
// ~1 KiB are inserted through the group-commit writer of each backend by T concurrent callers,
// each waiting until its webhook is durable before sending the next (as intake answers 202
// only then): the SQLite Writer at sync=full, and PostgreSQL (a throwaway cluster on this
// machine, fsync on, synchronous_commit on) through one PgWriter and through two (two relays
// on one database, the callers split between them). Each figure is the median of --repeat
// interleaved runs; compare them as ratios within one run. Journal level: no HTTP.
//   backend_bench [--rows 20000] [--threads 64] [--repeat 3]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "journal/backend.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_writer.h"
#include "journal/store.h"
#include "journal/writer.h"

#include "support/pg_cluster.h"

namespace iarelay {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int rows = 20000;
  int threads = 64;
  int repeat = 3;
};

struct Figure {
  double rows_per_second = 0;
  double rows_per_commit = 0;
};

NewWebhook webhook(int n) {
  NewWebhook w;
  w.id = new_webhook_id();
  w.received_at = 1'800'000'000'000 + n;
  w.service = "hpnnmi";
  w.type = "status";
  w.event_id = "ev-" + std::to_string(n % 100);
  w.assigned_agent = "a1";
  w.payload = R"({"status":"active","eventIdentifier":)" + std::to_string(n) + R"(,"pad":")" +
              std::string(960, 'x') + "\"}";
  return w;
}

// Runs `rows` inserts over `threads` callers; `insert(caller, n)` returns once durable.
template <typename Insert>
double drive(int rows, int threads, Insert insert) {
  std::atomic<int> next{0}, failed{0};
  auto start = Clock::now();
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t)
    callers.emplace_back([&, t] {
      for (int n; (n = next++) < rows;)
        if (!insert(t, n)) ++failed;
    });
  for (auto& c : callers) c.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed) std::fprintf(stderr, "backend_bench: %d inserts failed\n", failed.load());
  return rows / seconds;
}

Figure sqlite_run(const Options& o, const std::string& dir, int run) {
  std::string path = dir + "/journal-" + std::to_string(run) + ".db";
  auto writer = Writer::open(path, SyncLevel::kFull);
  if (!writer) {
    std::fprintf(stderr, "backend_bench: %s\n", writer.status().message().c_str());
    std::exit(1);
  }
  Figure f;
  f.rows_per_second = drive(o.rows, o.threads, [&](int, int n) {
    NewWebhook w = webhook(n);
    return static_cast<bool>((*writer)->run([&](SQLite::Database& db) { insert_webhook(db, w); }));
  });
  auto stats = (*writer)->stats();
  f.rows_per_commit = stats.commits ? static_cast<double>(stats.ops) / stats.commits : 0;
  writer->reset();
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  return f;
}

Figure pg_run(const Options& o, testing::PgCluster& cluster, int writers, int run) {
  std::string db = "bench_" + std::to_string(writers) + "_" + std::to_string(run);
  if (std::string e = cluster.create_database(db); !e.empty()) {
    std::fprintf(stderr, "backend_bench: %s\n", e.c_str());
    std::exit(1);
  }
  std::vector<std::unique_ptr<PgWriter>> relays;
  for (int i = 0; i < writers; ++i) {
    auto w = PgWriter::open(cluster.uri(db));
    if (!w) {
      std::fprintf(stderr, "backend_bench: %s\n", w.status().message().c_str());
      std::exit(1);
    }
    relays.push_back(std::move(*w));
  }
  Figure f;
  f.rows_per_second = drive(o.rows, o.threads, [&](int caller, int n) {
    NewWebhook w = webhook(n);
    std::promise<Status> done;
    relays[caller % writers]->submit_insert(
        std::move(w), [&done](const Status& s, const InsertOutcome&) { done.set_value(s); });
    return static_cast<bool>(done.get_future().get());
  });
  std::uint64_t ops = 0, commits = 0;
  for (auto& r : relays) {
    ops += r->stats().ops;
    commits += r->stats().commits;
  }
  f.rows_per_commit = commits ? static_cast<double>(ops) / commits : 0;
  return f;
}

Figure median(std::vector<Figure> v) {
  std::sort(v.begin(), v.end(),
            [](const Figure& a, const Figure& b) { return a.rows_per_second < b.rows_per_second; });
  return v[v.size() / 2];
}

}  // namespace
}  // namespace iarelay

int main(int argc, char** argv) {
  using namespace iarelay;
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "backend_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoi(argv[++i]);
    };
    if (a == "--rows")
      o.rows = value();
    else if (a == "--threads")
      o.threads = value();
    else if (a == "--repeat")
      o.repeat = value();
    else {
      std::fprintf(stderr, "usage: backend_bench [--rows N] [--threads T] [--repeat R]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (o.rows <= 0 || o.threads <= 0 || o.repeat <= 0) {
    std::fprintf(stderr, "backend_bench: --rows, --threads and --repeat must be positive\n");
    return 2;
  }
  testing::PgCluster cluster(/*fsync=*/true);
  if (!cluster.error().empty()) {
    std::fprintf(stderr, "backend_bench: %s\n", cluster.error().c_str());
    return 1;
  }
  char tmpl[] = "backend-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  std::string dir = tmpl;
  std::vector<Figure> lite, pg1, pg2;
  for (int r = 0; r < o.repeat; ++r) {
    lite.push_back(sqlite_run(o, dir, r));
    pg1.push_back(pg_run(o, cluster, 1, r));
    pg2.push_back(pg_run(o, cluster, 2, r));
  }
  std::filesystem::remove_all(dir);
  double load[3] = {};
  if (getloadavg(load, 3) < 0) load[0] = load[1] = load[2] = -1;
  std::printf(
      "backend_bench: %d webhooks of ~1 KiB, %d callers each waiting for durability, "
      "median of %d; load average %.2f %.2f %.2f\n",
      o.rows, o.threads, o.repeat, load[0], load[1], load[2]);
  std::printf("| journal | writers | webhooks/s | webhooks per commit | vs SQLite |\n");
  std::printf("|---|---|---|---|---|\n");
  Figure l = median(lite), p1 = median(pg1), p2 = median(pg2);
  auto row = [&](const char* name, int writers, const Figure& f) {
    std::printf("| %s | %d | %.0f | %.1f | %.2f |\n", name, writers, f.rows_per_second,
                f.rows_per_commit, f.rows_per_second / l.rows_per_second);
  };
  row("SQLite, sync = full", 1, l);
  row("PostgreSQL, synchronous_commit = on", 1, p1);
  row("PostgreSQL, synchronous_commit = on", 2, p2);
  return 0;
}
