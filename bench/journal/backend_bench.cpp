// backend_bench: the journal's intake write path on both backends (issue 15). Webhooks of
// ~1 KiB are inserted through the group-commit writer of each backend by T concurrent callers,
// each waiting until its webhook is durable before sending the next (as intake answers 202
// only then): the SQLite Writer at sync=full, and PostgreSQL (a throwaway cluster on this
// machine, fsync on, synchronous_commit on) through one PgWriter and through two (two relays
// on one database, the callers split between them). Each figure is the median of --repeat
// interleaved runs; compare them as ratios within one run. Journal level: no HTTP.
// --http: the same writers each behind an intake server (iarelayd's, in this process), and
// iarelay-loadgen sending to them over HTTP (two relays: one loadgen each, the connections
// split): the rate at which 202s come back, each after its webhook's durable commit.
//   backend_bench [--http] [--pg-no-fsync] [--rows 20000] [--threads 64] [--repeat 3]
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

#include "common/config.h"
#include "common/crypto.h"
#include "intake/server.h"
#include "journal/backend.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_writer.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"

#include "support/pg_cluster.h"
#include "support/process.h"

namespace iarelay {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int rows = 20000;
  int threads = 64;
  int repeat = 3;
  bool http = false;     // through intake servers and iarelay-loadgen, not at the journal level
  bool pg_fsync = true;  // --pg-no-fsync: the cluster without fsync (its ceiling, not the disk's)
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

// The writers of one figure: one SQLite Writer, or `relays` PgWriters on one database.
std::vector<std::unique_ptr<JournalWriter>> open_writers(const std::string& backend, int relays,
                                                         const std::string& dir,
                                                         testing::PgCluster& cluster, int run) {
  std::vector<std::unique_ptr<JournalWriter>> writers;
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "backend_bench: %s\n", s.message().c_str());
    std::exit(1);
  };
  if (backend == "sqlite") {
    auto w = Writer::open(dir + "/journal-" + std::to_string(run) + ".db", SyncLevel::kFull);
    if (!w) fail(w.status());
    writers.push_back(std::move(*w));
    return writers;
  }
  std::string db = "bench_" + std::to_string(relays) + "_" + std::to_string(run);
  if (std::string e = cluster.create_database(db); !e.empty()) fail(Status::io_error(e));
  for (int i = 0; i < relays; ++i) {
    auto w = PgWriter::open(cluster.uri(db));
    if (!w) fail(w.status());
    writers.push_back(std::move(*w));
  }
  return writers;
}

// Webhooks per commit over the writers, from their own counters.
double per_commit(const std::vector<std::unique_ptr<JournalWriter>>& writers) {
  std::uint64_t ops = 0, commits = 0;
  for (const auto& w : writers) {
    if (auto* lite = dynamic_cast<Writer*>(w.get())) {
      ops += lite->stats().ops;
      commits += lite->stats().commits;
    } else if (auto* pg = dynamic_cast<PgWriter*>(w.get())) {
      ops += pg->stats().ops;
      commits += pg->stats().commits;
    }
  }
  return commits ? static_cast<double>(ops) / static_cast<double>(commits) : 0;
}

// Journal level: callers insert through JournalWriter::submit_insert, split over the writers.
Figure journal_run(const Options& o, std::vector<std::unique_ptr<JournalWriter>> writers) {
  Figure f;
  const int n = static_cast<int>(writers.size());
  f.rows_per_second = drive(o.rows, o.threads, [&](int caller, int i) {
    std::promise<Status> done;
    writers[caller % n]->submit_insert(
        webhook(i), [&done](const Status& s, const InsertOutcome&) { done.set_value(s); });
    return static_cast<bool>(done.get_future().get());
  });
  f.rows_per_commit = per_commit(writers);
  return f;
}

// Through HTTP: each writer behind an intake server (as iarelayd's, on 127.0.0.1), and one
// iarelay-loadgen per server sending its share over its share of the connections, at once.
Figure http_run(const Options& o, std::vector<std::unique_ptr<JournalWriter>> writers,
                const std::string& dir, int run) {
  AgentConfig agent;
  agent.handle = agent.id = "a1";
  agent.callback = "http://127.0.0.1:9/unused";  // nothing is delivered in this bench
  agent.services = {"hpnnmi"};
  AgentDirectory directory({agent}, {ServiceConfig{"hpnnmi"}});
  std::vector<std::unique_ptr<Server>> servers;
  for (auto& w : writers) {
    ServerContext ctx;
    ctx.writer = w.get();
    ctx.directory = &directory;
    ctx.journal_path = dir + "/unused.db";  // the feed's reads: not used here
    ctx.listen.address = "127.0.0.1:0";
    auto server = Server::start(std::move(ctx));
    if (!server) {
      std::fprintf(stderr, "backend_bench: %s\n", server.status().message().c_str());
      std::exit(1);
    }
    servers.push_back(std::move(*server));
  }
  const int n = static_cast<int>(servers.size());
  auto start = Clock::now();
  std::vector<std::unique_ptr<testing::Process>> senders;
  for (int i = 0; i < n; ++i) {
    std::string out = dir + "/loadgen-" + std::to_string(run) + "-" + std::to_string(i);
    senders.push_back(std::make_unique<testing::Process>(
        std::vector<std::string>{testing::bin("iarelay-loadgen"), "--url",
                                 "http://127.0.0.1:" + std::to_string(servers[i]->port()),
                                 "--service", "hpnnmi", "--count", std::to_string(o.rows / n),
                                 "--concurrency", std::to_string(std::max(1, o.threads / n)),
                                 "--payload-size", "1024", "--no-idempotency-key"},
        out + ".out", out + ".err"));
  }
  for (auto& s : senders)
    if (int rc = s->wait(std::chrono::minutes(10)); rc != 0)
      std::fprintf(stderr, "backend_bench: iarelay-loadgen exit %d\n", rc);
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& s : servers) s->stop();
  Figure f;
  f.rows_per_second = (o.rows / n) * n / seconds;
  f.rows_per_commit = per_commit(writers);
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
    if (a == "--http")
      o.http = true;
    else if (a == "--pg-no-fsync")
      o.pg_fsync = false;
    else if (a == "--rows")
      o.rows = value();
    else if (a == "--threads")
      o.threads = value();
    else if (a == "--repeat")
      o.repeat = value();
    else {
      std::fprintf(
          stderr,
          "usage: backend_bench [--http] [--pg-no-fsync] [--rows N] [--threads T] [--repeat R]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (o.rows <= 0 || o.threads <= 0 || o.repeat <= 0) {
    std::fprintf(stderr, "backend_bench: --rows, --threads and --repeat must be positive\n");
    return 2;
  }
  testing::PgCluster cluster(o.pg_fsync);
  if (!cluster.error().empty()) {
    std::fprintf(stderr, "backend_bench: %s\n", cluster.error().c_str());
    return 1;
  }
  char tmpl[] = "backend-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  std::string dir = tmpl;
  std::vector<Figure> lite, pg1, pg2;
  auto one = [&](const std::string& backend, int relays, int r) {
    auto writers = open_writers(backend, relays, dir, cluster, r);
    return o.http ? http_run(o, std::move(writers), dir, r) : journal_run(o, std::move(writers));
  };
  for (int r = 0; r < o.repeat; ++r) {
    lite.push_back(one("sqlite", 1, r));
    pg1.push_back(one("postgresql", 1, r));
    pg2.push_back(one("postgresql", 2, r));
  }
  std::filesystem::remove_all(dir);
  double load[3] = {};
  if (getloadavg(load, 3) < 0) load[0] = load[1] = load[2] = -1;
  std::printf(
      "backend_bench%s: %d webhooks of ~1 KiB, %d %s each waiting for durability, "
      "median of %d; load average %.2f %.2f %.2f\n",
      o.http ? " --http" : "", o.rows, o.threads,
      o.http ? "connections of iarelay-loadgen (the relays' intake servers answer 202 then)"
             : "callers",
      o.repeat, load[0], load[1], load[2]);
  if (!o.pg_fsync) std::printf("PostgreSQL WITHOUT fsync (--pg-no-fsync): not durable\n");
  std::printf("| journal | relays | webhooks/s | webhooks per commit | vs SQLite |\n");
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
