// dispatch_bench: how fast the dispatcher drains a pre-filled journal. For each journal size
// (100k and 1M webhooks by default) and each endpoint (iarelay-sink; nginx answering 204 as the
// transport's reference, with wrk's req/s against the same nginx printed beside), it prints the
// drain rate with every outcome journaled, the time from start to first delivery, and the peak
// RSS of this process (the dispatcher, the writer and their SQLite connections) while draining.
// With --backing-off N, N webhooks of other alerts backing off (next attempt in an hour) sit
// ahead of those to drain (the due ones must be found behind them), and the process's CPU
// while idle afterwards (the walk past the head window, with the N still queued) is printed.
//
// With --chains, one table instead: per-alert ordering at full speed (issue 14). Against nginx
// answering 204, `sync = full`, webhooks of ~1 KiB spread over E alerts (webhook i belongs to
// alert i mod E, so each alert is a chain of N/E webhooks that must go one at a time): E = 1
// (5,000 webhooks), 10, 100 and 1,000 (20,000 each), and 100 alerts with `ordering = none`.
// Each row prints the drain rate and the chain step: the drain's wall time divided by the
// webhooks of one alert (the time one alert needs per webhook, call and journal included).
//
// With --backends, one table instead: the drain on each journal backend (issue 15). The same
// backlog (50,000 webhooks of ~1 KiB by default, in alerts of four as above, ordering = event)
// is drained to nginx answering 204 from the SQLite journal (prefilled as above, the Writer at
// `sync = full` unless --sync says otherwise) and from the PostgreSQL journal of a throwaway
// cluster on this machine (fsync on unless --pg-no-fsync, synchronous_commit = on), prefilled
// through PgWriter in transactions of 2,000 webhooks, then VACUUM ANALYZE and CHECKPOINT (as
// autovacuum would leave a backlog; SQLite's prefill ends with a checkpoint too). Each row prints
// the drain rate (every outcome journaled), the time to first delivery, commits per webhook,
// where the time went on each side of the seam (the dispatcher's reads per webhook and its
// thread's share of the drain in them; the writer thread's share in the dispatcher's operations,
// their statements without COMMIT) and this process's CPU per webhook; each PostgreSQL row its
// ratio to the SQLite row before it, and the median ratio closes the table. --repeat N runs
// the pair N times, alternating, so that the machine's noise shows.
//
// Usage: dispatch_bench [--sizes 100000,1000000] [--max-inflight 64] [--sync normal|full]
//                       [--format ia|raw] [--targets sink,nginx] [--backing-off N] [--dir DIR]
//        dispatch_bench --chains [--sizes 5000,20000] [--max-inflight 64] [--sync full]
//                       [--rows 1,10,100,1000,none]
//        dispatch_bench --backends [--sizes 50000] [--repeat 1] [--pg-no-fsync]
//                       [--max-inflight 64] [--sync full] [--format ia|raw]
#include <SQLiteCpp/SQLiteCpp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/metrics.h"
#include "dispatch/dispatcher.h"
#include "journal/backend.h"
#include "journal/journal.h"
#include "journal/pg/pg_journal.h"
#include "journal/pg/pg_writer.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"

#include "support/pg_cluster.h"
#include "support/process.h"

namespace fs = std::filesystem;
using namespace iarelay;
using Clock = std::chrono::steady_clock;

using iarelay::testing::free_port;
using iarelay::testing::wait_for_port;

namespace {

struct Options {
  std::vector<long> sizes = {100'000, 1'000'000};
  int max_inflight = 64;
  SyncLevel sync = SyncLevel::kNormal;
  AgentFormat format = AgentFormat::kIa;
  std::vector<std::string> targets = {"sink", "nginx"};
  long backing_off = 0;
  std::string dir;
  Ordering ordering = Ordering::kEvent;
  bool chains = false;
  bool backends = false;
  int repeat = 1;        // --backends: the pair of drains this many times, alternating
  bool pg_fsync = true;  // --pg-no-fsync: the cluster without fsync (its ceiling, not the disk's)
  bool sync_given = false;
  bool sizes_given = false;
  std::vector<std::string> rows;  // --chains: only these rows ("1", "10", ..., "none")
};

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& out) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::fopen(out.c_str(), "w");
    if (f) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

void stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int st = 0;
  waitpid(pid, &st, 0);
}

// Webhook i of a backlog: its type, alert and payload. Alerts of four (status,
// deliveryStatus, response, annotation); with `events` > 0, webhook i belongs to alert
// i mod events instead (chains of n / events). `kib`: the payload padded to ~1 KiB.
struct BacklogWebhook {
  std::string type, event_id, payload;
};

BacklogWebhook backlog_webhook(long i, long events, bool kib) {
  static const char* const types[4] = {"status", "deliveryStatus", "response", "annotation"};
  const long event = 4'400'000 + (events > 0 ? i % events : i / 4);
  std::string payload;
  switch (i % 4) {
    case 0:
      payload =
          R"({"eventIdentifier": )" + std::to_string(event) +
          R"(, "date": "2026-11-20T09:14:03Z", "status": "active", "username": "mgarcia", "eventProperties": [{"Incident ID": "INC)" +
          std::to_string(event) + R"("}]})";
      break;
    case 1:
      payload =
          R"({"eventIdentifier": )" + std::to_string(event) +
          R"(, "date": "2026-11-20T09:12:41Z", "recipient": "mgarcia", "device": "Work Email", "deliveryStatus": "Delivered", "eventProperties": [{"Incident ID": "INC)" +
          std::to_string(event) + R"("}]})";
      break;
    case 2:
      payload =
          R"({"eventIdentifier": )" + std::to_string(event) +
          R"(, "date": "2026-11-20T09:13:10Z", "recipient": "mgarcia", "device": "Mobile Phone", "response": "Acknowledge", "eventProperties": [{"Incident ID": "INC)" +
          std::to_string(event) + R"("}]})";
      break;
    default:
      payload =
          R"({"eventIdentifier": )" + std::to_string(event) +
          R"(, "date": "2026-11-20T09:13:55Z", "author": {"firstName": "Maria", "lastName": "Garcia"}, "comment": "Router rebooted", "eventProperties": [{"Incident ID": "INC)" +
          std::to_string(event) + R"("}]})";
  }
  if (kib) {
    // ~1 KiB, as xMatters' status webhooks with a few properties are.
    payload.pop_back();
    payload += R"(, "n": )" + std::to_string(i) + R"(, "message": ")" +
               std::string(1024 - std::min<std::size_t>(payload.size(), 1000) - 24, 'x') + "\"}";
  }
  return {types[i % 4], std::to_string(event), std::move(payload)};
}

// A fast direct bulk insert of backlog_webhook(0..n-1): one transaction, one prepared
// statement, synchronous off; `backing_off` webhooks of other alerts (next attempt in an hour)
// ahead of them.
void prefill(const std::string& path, long n, long backing_off, long events, bool kib) {
  { auto w = Writer::open(path, SyncLevel::kNormal); }  // creates and migrates
  SQLite::Database db(path, SQLite::OPEN_READWRITE);
  db.exec("PRAGMA synchronous=OFF");
  SQLite::Statement ins(db,
                        "INSERT INTO webhooks (id, source, received_at, service, agent, type, "
                        "event_id, state, assigned_agent, payload) VALUES "
                        "(?, 'direct', ?, 'hpnnmi', 'bench', ?, ?, 'queued', 'bench', ?)");
  const std::string received = format_time(now_millis());
  SQLite::Transaction tx(db);
  SQLite::Statement later(db,
                          "INSERT INTO webhooks (id, source, received_at, service, agent, type, "
                          "event_id, state, assigned_agent, next_attempt_at, attempts, payload) "
                          "VALUES (?, 'direct', ?, 'hpnnmi', 'bench', 'status', ?, 'queued', "
                          "'bench', ?, 1, '{\"eventIdentifier\": 1}')");
  const std::string in_an_hour = format_time(now_millis() + 3'600'000);
  for (long i = 0; i < backing_off; ++i) {
    later.bind(1, new_webhook_id());
    later.bind(2, received);
    later.bind(3, "b" + std::to_string(i));
    later.bind(4, in_an_hour);
    later.exec();
    later.reset();
  }
  for (long i = 0; i < n; ++i) {
    BacklogWebhook w = backlog_webhook(i, events, kib);
    ins.bind(1, new_webhook_id());
    ins.bind(2, received);
    ins.bind(3, w.type);
    ins.bind(4, w.event_id);
    ins.bind(5, w.payload);
    ins.exec();
    ins.reset();
  }
  tx.commit();
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

// The same backlog (no backing-off rows) in the PostgreSQL journal at `uri`, through the
// seam: PgWriter, one transaction (one multi-row INSERT) per kBatch webhooks, so memory holds
// one batch. Then VACUUM ANALYZE and CHECKPOINT (see the top of the file).
Status prefill_pg(testing::PgCluster& cluster, const std::string& db, long n, long events,
                  bool kib) {
  constexpr long kBatch = 2000;
  {
    auto writer = PgWriter::open(cluster.uri(db));
    if (!writer) return writer.status();
    const Millis received = now_millis();
    for (long from = 0; from < n; from += kBatch) {
      std::vector<NewWebhook> batch;
      for (long i = from; i < std::min(n, from + kBatch); ++i) {
        BacklogWebhook b = backlog_webhook(i, events, kib);
        NewWebhook w;
        w.id = new_webhook_id();
        w.received_at = received;
        w.service = "hpnnmi";
        w.agent = "bench";
        w.type = std::move(b.type);
        w.event_id = std::move(b.event_id);
        w.assigned_agent = "bench";
        w.payload = std::move(b.payload);
        batch.push_back(std::move(w));
      }
      if (Status s = (*writer)->run([&batch](JournalTx& tx) { tx.insert_webhooks(batch); }); !s)
        return s;
    }
  }
  for (const char* sql : {"VACUUM ANALYZE", "CHECKPOINT"})
    if (std::string out = cluster.psql(sql, db); out.rfind("ERROR: ", 0) == 0)
      return Status::io_error(out);
  return Status::ok();
}

struct Run {
  double rate = 0, first_ms = 0, seconds = 0;
  double idle_cpu = -1;  // share of one core while idle after the drain (--backing-off)
  double cpu_us = 0;     // this process's CPU (user + system) per webhook while draining
  long peak_rss_kib = 0, start_rss_kib = 0;
  std::uint64_t retries = 0, failed = 0;
  long journaled = 0;
  std::uint64_t commits = 0;
  double commit_ms = 0;  // mean time from COMMIT to durable (the fsync at sync = full; SQLite)
  // Of the drain's wall time (SeamTimes): the dispatcher thread in reads, the writer thread
  // running the dispatcher's operations; and reads per webhook.
  double read_share = 0, op_share = 0, reads_per_webhook = 0;
};

[[noreturn]] void fail(const Status& s) {
  std::cerr << "dispatch_bench: " << s.message() << "\n";
  std::exit(1);
}

// Where the drain's time goes, from the dispatcher's side of the seam (TimedWriter,
// TimedReader below): the dispatcher thread's time in its read transactions, and the writer
// thread's time running the dispatcher's operations (their statements; not BEGIN, COMMIT nor
// the wait for durability). Nanoseconds, added to from those threads.
struct SeamTimes {
  std::atomic<std::int64_t> read_ns{0}, reads{0};
  std::atomic<std::int64_t> op_ns{0};
};

std::int64_t nanos_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count();
}

// The dispatcher's writer, each operation timed on the writer's thread; the rest passed on.
class TimedWriter final : public JournalWriter {
 public:
  TimedWriter(JournalWriter& inner, std::shared_ptr<SeamTimes> times)
      : inner_(inner), times_(std::move(times)) {}
  void submit_tx(TxOp op, Done done) override {
    inner_.submit_tx(timed(std::move(op)), std::move(done));
  }
  void submit_quiet_tx(TxOp op, Done done) override {
    inner_.submit_quiet_tx(timed(std::move(op)), std::move(done));
  }
  void submit_append_tx(TxOp op, Done done) override {
    inner_.submit_append_tx(timed(std::move(op)), std::move(done));
  }
  void submit_insert(NewWebhook w, InsertDone done) override {
    inner_.submit_insert(std::move(w), std::move(done));
  }
  Status wait_durable() override { return inner_.wait_durable(); }
  bool healthy() const override { return inner_.healthy(); }
  void set_commit_listener(std::function<void(bool)> listener) override {
    inner_.set_commit_listener(std::move(listener));
  }
  Status permanent_failure() const override { return inner_.permanent_failure(); }

 private:
  TxOp timed(TxOp op) {
    // The times shared: an operation may run after the drain that submitted it returned.
    return [op = std::move(op), times = times_](JournalTx& tx) {
      struct Count {  // counted when the op throws too
        SeamTimes& times;
        Clock::time_point t = Clock::now();
        ~Count() { times.op_ns += nanos_since(t); }
      } count{*times};
      op(tx);
    };
  }
  JournalWriter& inner_;
  std::shared_ptr<SeamTimes> times_;
};

// The dispatcher's read connection, each read (a transaction, or read_each's statements)
// timed on the dispatcher's thread.
class TimedReader final : public JournalBackend {
 public:
  TimedReader(std::unique_ptr<JournalBackend> inner, std::shared_ptr<SeamTimes> times)
      : inner_(std::move(inner)), times_(std::move(times)) {}
  Status transact(const std::function<void(JournalTx&)>& op) override {
    return inner_->transact(op);
  }
  Status read(const std::function<void(JournalTx&)>& op) override {
    return timed([&] { return inner_->read(op); });
  }
  Status read_each(const std::function<void(JournalTx&)>& op) override {
    return timed([&] { return inner_->read_each(op); });
  }

 private:
  template <typename Fn>
  Status timed(Fn&& fn) {
    const auto t = Clock::now();
    Status s = fn();
    times_->read_ns += nanos_since(t);
    ++times_->reads;
    return s;
  }
  std::unique_ptr<JournalBackend> inner_;
  std::shared_ptr<SeamTimes> times_;
};

// A journal to drain: the writer the dispatcher journals through (no commit listener set yet),
// how the dispatcher opens its read connection (unset: the SQLite journal at `path`), and how
// many of its webhooks are delivered or failed.
struct DrainJournal {
  JournalWriter* writer = nullptr;
  std::string path;
  std::function<Result<std::unique_ptr<JournalBackend>>()> open_reader;
  std::function<long()> finished;
};

// Starts a dispatcher on `j` delivering to `url` and waits until the outcomes of all `n`
// webhooks are journaled; then, with --backing-off, measures the CPU while idle, and stops it.
Run drain_journal(const DrainJournal& j, long n, const std::string& url, const Options& o) {
  Run r;
  AgentConfig a;
  a.handle = a.id = "bench";
  a.callback = url;
  a.services = {"hpnnmi"};
  a.format = o.format;
  a.max_inflight = o.max_inflight;
  a.ordering = o.ordering;
  AgentDirectory directory({a}, {});
  Metrics metrics;
  Counter& delivered = metrics.counter("iarelay_deliveries_total", "",
                                       {{"agent", "bench"}, {"outcome", "delivered"}});
  Counter& retried =
      metrics.counter("iarelay_deliveries_total", "", {{"agent", "bench"}, {"outcome", "retry"}});
  Counter& failed =
      metrics.counter("iarelay_deliveries_total", "", {{"agent", "bench"}, {"outcome", "failed"}});
  auto times = std::make_shared<SeamTimes>();
  TimedWriter writer(*j.writer, times);
  DispatcherContext ctx;
  ctx.writer = &writer;
  ctx.directory = &directory;
  ctx.metrics = &metrics;
  auto open_reader = j.open_reader;
  if (!open_reader) open_reader = [path = j.path] { return open_sqlite_reader(path); };
  ctx.open_reader = [open_reader, times]() -> Result<std::unique_ptr<JournalBackend>> {
    auto reader = open_reader();
    if (!reader) return reader.status();
    return std::unique_ptr<JournalBackend>(new TimedReader(std::move(*reader), times));
  };
  // As iarelayd: each commit wakes the dispatcher. Set before the dispatcher's first submit
  // (JournalWriter's contract); it wakes nothing until the dispatcher is there, nor after.
  auto woken = std::make_shared<std::atomic<Dispatcher*>>(nullptr);
  j.writer->set_commit_listener([woken](bool appends_only) {
    if (Dispatcher* d = woken->load()) d->wake(appends_only);
  });
  const double cpu0 = cpu_seconds();
  auto t0 = Clock::now();
  auto d = Dispatcher::start(ctx);
  if (!d) fail(d.status());
  woken->store(d->get());
  while (delivered.value() == 0 && since(t0) < 60)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  r.first_ms = since(t0) * 1000;
  auto last_sample = Clock::now();
  while (static_cast<long>(delivered.value() + failed.value()) < n && since(t0) < 1800) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (since(last_sample) >= 0.1) {
      r.peak_rss_kib = std::max(r.peak_rss_kib, rss_kib());
      last_sample = Clock::now();
    }
  }
  // Every outcome journaled: wait until the journal says so.
  for (;;) {
    r.journaled = j.finished();
    if (r.journaled >= n || since(t0) > 1800) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.seconds = since(t0);
  r.rate = n / r.seconds;
  r.cpu_us = (cpu_seconds() - cpu0) * 1e6 / static_cast<double>(n);
  r.read_share = static_cast<double>(times->read_ns.load()) / 1e9 / r.seconds;
  r.op_share = static_cast<double>(times->op_ns.load()) / 1e9 / r.seconds;
  r.reads_per_webhook = static_cast<double>(times->reads.load()) / static_cast<double>(n);
  r.peak_rss_kib = std::max(r.peak_rss_kib, rss_kib());
  r.retries = retried.value();
  r.failed = failed.value();
  if (o.backing_off > 0) {
    const double idle0 = cpu_seconds();
    const auto t1 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    r.idle_cpu = (cpu_seconds() - idle0) / since(t1);
  }
  (*d)->stop(1000);
  woken->store(nullptr);
  return r;
}

// The drain on the SQLite journal at `path` (prefilled), its Writer at o.sync.
Run drain(const std::string& path, long n, const std::string& url, const Options& o) {
  const long start_rss = rss_kib();
  auto writer = Writer::open(path, o.sync);
  if (!writer) fail(writer.status());
  DatabasePtr counter;  // opened at the first count, once the deliveries are in
  DrainJournal j;
  j.writer = writer->get();
  j.path = path;
  j.finished = [&]() -> long {
    if (!counter) {
      auto reader = open_journal_for_read(path);
      if (!reader) fail(reader.status());
      counter = std::move(*reader);
    }
    SQLite::Statement q(*counter,
                        "SELECT count(*) FROM webhooks WHERE state IN ('delivered','failed')");
    q.executeStep();
    return q.getColumn(0).getInt64();
  };
  Run r = drain_journal(j, n, url, o);
  r.start_rss_kib = start_rss;
  const Writer::Stats ws = (*writer)->stats();
  r.commits = ws.commits;
  r.commit_ms = ws.commits ? ws.commit_seconds_total * 1000 / static_cast<double>(ws.commits) : 0;
  return r;
}

// The drain on the PostgreSQL journal at `uri` (prefilled): a PgWriter, the dispatcher's
// reader by open_pg_reader, no leases (this relay owns the agent). Nothing requeues inflight
// rows at start on this journal (a lease taken does, per agent): the backlog is all queued.
Run drain_pg(const std::string& uri, long n, const std::string& url, const Options& o) {
  const long start_rss = rss_kib();
  auto writer = PgWriter::open(uri);
  if (!writer) fail(writer.status());
  auto counter = PgConnection::connect(uri);
  if (!counter) fail(counter.status());
  DrainJournal j;
  j.writer = writer->get();
  j.open_reader = [uri] { return open_pg_reader(uri); };
  j.finished = [&]() -> long {
    auto rows =
        (*counter)->query("SELECT count(*) FROM webhooks WHERE state IN ('delivered', 'failed')");
    if (!rows) fail(rows.status());
    return std::stol(*(*rows)[0][0]);
  };
  Run r = drain_journal(j, n, url, o);
  r.start_rss_kib = start_rss;
  r.commits = (*writer)->stats().commits;
  return r;
}

std::string wrk(int port) {
  std::string cmd = "wrk -t1 -c64 -d5s http://127.0.0.1:" + std::to_string(port) + "/ 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "n/a";
  char buf[512];
  std::string out;
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  auto at = out.find("Requests/sec:");
  if (at == std::string::npos) return "n/a";
  std::istringstream in(out.substr(at + 13));
  double v = 0;
  in >> v;
  return std::to_string(static_cast<long>(v));
}

// Starts iarelay-sink ("sink") or an nginx answering 204 to everything ("nginx") on `port`.
pid_t start_target(const std::string& target, const std::string& dir, int port) {
  if (target == "sink")
    return spawn({std::string(IARELAY_BIN_DIR) + "/iarelay-sink",
                  "--listen=127.0.0.1:" + std::to_string(port)},
                 dir + "/sink.out");
  fs::create_directories(dir + "/nginx");
  std::ofstream conf(dir + "/nginx/nginx.conf");
  conf << "worker_processes 1;\ndaemon off;\npid " << dir << "/nginx/nginx.pid;\n"
       << "error_log " << dir << "/nginx/error.log;\nevents { worker_connections 4096; }\n"
       << "http {\n  access_log off;\n  client_body_temp_path " << dir << "/nginx;\n"
       << "  keepalive_requests 10000000;\n  server {\n    listen 127.0.0.1:" << port
       << ";\n    location / { return 204; }\n  }\n}\n";
  conf.close();
  return spawn({"nginx", "-p", dir + "/nginx", "-e", dir + "/nginx/error.log", "-c",
                dir + "/nginx/nginx.conf"},
               dir + "/nginx.out");
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// The --chains table (see the top of the file).
int chains(const Options& given, const std::string& dir, const std::string& self) {
  Options o = given;
  if (!o.sync_given) o.sync = SyncLevel::kFull;
  const long one = o.sizes_given ? o.sizes.front() : 5'000;
  const long many = o.sizes_given ? o.sizes.back() : 20'000;
  struct Row {
    long events, n;
    Ordering ordering;
  };
  const std::vector<Row> rows = {{1, one, Ordering::kEvent},
                                 {10, many, Ordering::kEvent},
                                 {100, many, Ordering::kEvent},
                                 {1000, many, Ordering::kEvent},
                                 {100, many, Ordering::kNone}};
  int port = free_port();
  pid_t server = start_target("nginx", dir, port);
  if (!wait_for_port(port)) {
    std::printf("nginx could not start (see %s)\n", dir.c_str());
    stop(server);
    return 1;
  }
  std::printf(
      "dispatch_bench --chains: nginx answering 204, max_inflight=%d sync=%s format=%s, "
      "~1 KiB webhooks; load average %s\n",
      o.max_inflight, o.sync == SyncLevel::kFull ? "full" : "normal",
      o.format == AgentFormat::kIa ? "ia" : "raw", load_average().c_str());
  std::printf(
      "| alerts (E) | webhooks | ordering | drained/s | chain step (ms) | commits per webhook "
      "| commit to durable (ms) |\n|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  double none_rate = 0, hundred_rate = 0;
  for (const Row& row : rows) {
    const std::string name =
        row.ordering == Ordering::kNone ? std::string("none") : std::to_string(row.events);
    if (!o.rows.empty() && std::find(o.rows.begin(), o.rows.end(), name) == o.rows.end()) continue;
    std::string path = dir + "/journal-chains.db";
    for (auto suffix : {"", "-wal", "-shm", ".lock"}) fs::remove(path + suffix);
    pid_t child = spawn(
        {self, "--prefill", path, std::to_string(row.n), "0", std::to_string(row.events), "1"},
        dir + "/prefill.out");
    int st = 0;
    waitpid(child, &st, 0);
    o.ordering = row.ordering;
    Run r = drain(path, row.n, "http://127.0.0.1:" + std::to_string(port) + "/apia_callback", o);
    const bool ordered = row.ordering == Ordering::kEvent;
    const double step_ms = r.seconds * 1000 / (static_cast<double>(row.n) / row.events);
    char step[32] = "-";
    if (ordered) std::snprintf(step, sizeof step, "%.2f", step_ms);
    std::printf("| %ld | %ld | %s | %.0f | %s | %.2f | %.2f |%s\n", row.events, row.n,
                ordered ? "event" : "none", r.rate, step,
                static_cast<double>(r.commits) / static_cast<double>(row.n), r.commit_ms,
                r.journaled < row.n || r.failed || r.retries ? "  (not all delivered!)" : "");
    std::fflush(stdout);
    if (!ordered) none_rate = r.rate;
    if (ordered && row.events == 100) hundred_rate = r.rate;
    for (auto suffix : {"", "-wal", "-shm", ".lock"}) fs::remove(path + suffix);
  }
  if (none_rate > 0)
    std::printf("100 alerts ordered / ordering none: %.2f\n", hundred_rate / none_rate);
  stop(server);
  return 0;
}

// The --backends table (see the top of the file).
int backends(const Options& given, const std::string& dir, const std::string& self) {
  Options o = given;
  if (!o.sync_given) o.sync = SyncLevel::kFull;
  if (!o.sizes_given) o.sizes = {50'000};
  o.backing_off = 0;
  o.ordering = Ordering::kEvent;
  testing::PgCluster cluster(o.pg_fsync);
  if (!cluster.error().empty()) {
    std::printf("PostgreSQL could not start: %s\n", cluster.error().c_str());
    return 1;
  }
  const std::string pg_version = cluster.psql("SHOW server_version");
  int port = free_port();
  pid_t server = start_target("nginx", dir, port);
  if (!wait_for_port(port)) {
    std::printf("nginx could not start (see %s)\n", dir.c_str());
    stop(server);
    return 1;
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/apia_callback";
  const std::string lite_name =
      std::string("SQLite, sync = ") + (o.sync == SyncLevel::kFull ? "full" : "normal");
  const std::string pg_name = "PostgreSQL " + pg_version.substr(0, pg_version.find(' ')) +
                              (o.pg_fsync ? ", fsync on" : ", fsync OFF");
  std::printf(
      "dispatch_bench --backends: nginx answering 204, max_inflight=%d format=%s, ~1 KiB "
      "webhooks in alerts of four, ordering=event; load average %s\n",
      o.max_inflight, o.format == AgentFormat::kIa ? "ia" : "raw", load_average().c_str());
  if (!o.pg_fsync) std::printf("PostgreSQL WITHOUT fsync (--pg-no-fsync): not durable\n");
  std::printf(
      "| run | journal | webhooks | drained/s | first delivery (ms) | commits per webhook | "
      "dispatcher reads per webhook | dispatcher thread in reads | writer thread in the "
      "dispatcher's ops | CPU per webhook, this process (us) | load (1 min) | PostgreSQL / "
      "SQLite |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  auto row = [&](int run, const std::string& name, long n, const Run& r, const std::string& ratio) {
    double load[1] = {-1};
    if (getloadavg(load, 1) < 1) load[0] = -1;
    std::printf(
        "| %d | %s | %ld | %.0f | %.1f | %.2f | %.2f | %.0f%% | %.0f%% | %.0f | %.2f | %s |%s\n",
        run, name.c_str(), n, r.rate, r.first_ms,
        static_cast<double>(r.commits) / static_cast<double>(n), r.reads_per_webhook,
        r.read_share * 100, r.op_share * 100, r.cpu_us, load[0], ratio.c_str(),
        r.journaled < n || r.failed || r.retries ? "  (not all delivered!)" : "");
    std::fflush(stdout);
  };
  std::vector<std::vector<double>> ratios(o.sizes.size());
  for (int run = 1; run <= o.repeat; ++run) {
    for (std::size_t k = 0; k < o.sizes.size(); ++k) {
      const long n = o.sizes[k];
      const std::string path = dir + "/journal-backends.db";
      for (auto suffix : {"", "-wal", "-shm", ".lock"}) fs::remove(path + suffix);
      pid_t child =
          spawn({self, "--prefill", path, std::to_string(n), "0", "0", "1"}, dir + "/prefill.out");
      int st = 0;
      waitpid(child, &st, 0);
      const Run lite = drain(path, n, url, o);
      for (auto suffix : {"", "-wal", "-shm", ".lock"}) fs::remove(path + suffix);
      row(run, lite_name, n, lite, "");

      const std::string db = "drain_" + std::to_string(run) + "_" + std::to_string(n);
      if (std::string e = cluster.create_database(db); !e.empty()) fail(Status::io_error(e));
      if (Status s = prefill_pg(cluster, db, n, 0, true); !s) fail(s);
      const Run pg = drain_pg(cluster.uri(db), n, url, o);
      // Each run on a database of its own, dropped after it: the next starts as this one did.
      if (std::string out = cluster.psql("DROP DATABASE " + db); out.rfind("ERROR: ", 0) == 0)
        std::fprintf(stderr, "dispatch_bench: %s\n", out.c_str());
      char ratio[32];
      std::snprintf(ratio, sizeof ratio, "%.2f", pg.rate / lite.rate);
      row(run, pg_name, n, pg, ratio);
      ratios[k].push_back(pg.rate / lite.rate);
    }
  }
  for (std::size_t k = 0; k < o.sizes.size(); ++k) {
    std::vector<double>& v = ratios[k];
    std::sort(v.begin(), v.end());
    std::printf("%ld webhooks: PostgreSQL / SQLite, median of %zu: %.2f\n", o.sizes[k], v.size(),
                v[v.size() / 2]);
  }
  stop(server);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "dispatch_bench: " << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--prefill") {  // internal: run in a child so its memory is not counted
      std::string path = next();
      long n = std::stol(next());
      long backing_off = std::stol(next());
      long events = std::stol(next());
      prefill(path, n, backing_off, events, next() == "1");
      return 0;
    } else if (arg == "--sizes") {
      o.sizes_given = true;
      o.sizes.clear();
      std::stringstream ss(next());
      std::string s;
      while (std::getline(ss, s, ',')) o.sizes.push_back(std::stol(s));
    } else if (arg == "--max-inflight") {
      o.max_inflight = std::stoi(next());
    } else if (arg == "--sync") {
      o.sync = next() == "full" ? SyncLevel::kFull : SyncLevel::kNormal;
      o.sync_given = true;
    } else if (arg == "--chains") {
      o.chains = true;
    } else if (arg == "--backends") {
      o.backends = true;
    } else if (arg == "--repeat") {
      o.repeat = std::stoi(next());
      if (o.repeat < 1) {
        std::cerr << "dispatch_bench: --repeat must be at least 1\n";
        return 2;
      }
    } else if (arg == "--pg-no-fsync") {
      o.pg_fsync = false;
    } else if (arg == "--rows") {
      std::stringstream ss(next());
      std::string r;
      while (std::getline(ss, r, ',')) o.rows.push_back(r);
    } else if (arg == "--format") {
      o.format = next() == "raw" ? AgentFormat::kRaw : AgentFormat::kIa;
    } else if (arg == "--targets") {
      o.targets.clear();
      std::stringstream ss(next());
      std::string s;
      while (std::getline(ss, s, ',')) o.targets.push_back(s);
    } else if (arg == "--backing-off") {
      o.backing_off = std::stol(next());
    } else if (arg == "--dir") {
      o.dir = next();
    } else {
      std::cerr << "usage: dispatch_bench [--sizes N,N] [--max-inflight N] [--sync normal|full] "
                   "[--format ia|raw] [--targets sink,nginx] [--backing-off N] [--dir DIR]\n"
                   "       dispatch_bench --chains [--sizes 5000,20000] [--max-inflight N] "
                   "[--sync normal|full] [--rows 1,10,100,1000,none]\n"
                   "       dispatch_bench --backends [--sizes 50000] [--repeat N] [--pg-no-fsync] "
                   "[--max-inflight N] [--sync normal|full] [--format ia|raw]\n";
      return arg == "--help" ? 0 : 2;
    }
  }
  std::string dir =
      o.dir.empty()
          ? (fs::temp_directory_path() / ("dispatch_bench." + std::to_string(getpid()))).string()
          : o.dir;
  fs::create_directories(dir);
  const std::string self = fs::read_symlink("/proc/self/exe");
  if (o.chains || o.backends) {
    int rc = o.chains ? chains(o, dir, self) : backends(o, dir, self);
    fs::remove_all(dir);
    return rc;
  }
  std::printf("dispatch_bench: max_inflight=%d sync=%s format=%s ordering=event (alerts of 4)\n",
              o.max_inflight, o.sync == SyncLevel::kFull ? "full" : "normal",
              o.format == AgentFormat::kIa ? "ia" : "raw");
  std::vector<std::pair<std::string, std::vector<Run>>> results;
  for (const auto& target : o.targets) {
    int port = free_port();
    pid_t server = start_target(target, dir, port);
    std::string note;
    if (!wait_for_port(port)) {
      std::printf("%-6s could not start (see %s)\n", target.c_str(), dir.c_str());
      stop(server);
      continue;
    }
    if (target == "nginx") note = "  wrk -t1 -c64 against the same nginx: " + wrk(port) + " req/s";
    std::vector<Run> runs;
    for (long n : o.sizes) {
      std::string path = dir + "/journal-" + target + "-" + std::to_string(n) + ".db";
      for (auto suffix : {"", "-wal", "-shm", ".lock"}) fs::remove(path + suffix);
      auto t = Clock::now();
      pid_t child = spawn(
          {self, "--prefill", path, std::to_string(n), std::to_string(o.backing_off), "0", "0"},
          dir + "/prefill.out");
      int st = 0;
      waitpid(child, &st, 0);
      double prefill_s = since(t);
      Run r = drain(path, n, "http://127.0.0.1:" + std::to_string(port) + "/apia_callback", o);
      std::printf(
          "%-6s n=%-8ld rate=%8.0f deliveries/s  first_delivery=%6.1f ms  peak_rss=%6.1f MiB "
          "(before start %5.1f MiB)  drain=%6.1f s  journaled=%ld retries=%lu failed=%lu "
          "(prefill %.1f s)\n",
          target.c_str(), n, r.rate, r.first_ms, r.peak_rss_kib / 1024.0, r.start_rss_kib / 1024.0,
          r.seconds, r.journaled, static_cast<unsigned long>(r.retries),
          static_cast<unsigned long>(r.failed), prefill_s);
      if (r.idle_cpu >= 0)
        std::printf("%-6s behind %ld backing off: idle CPU afterwards %.1f%% of a core\n",
                    target.c_str(), o.backing_off, r.idle_cpu * 100);
      std::fflush(stdout);
      runs.push_back(r);
      for (auto suffix : {"", "-wal", "-shm", ".lock"}) fs::remove(path + suffix);
    }
    if (!note.empty()) std::printf("%s\n", note.c_str());
    if (runs.size() >= 2)
      std::printf("%-6s rate at %ld / rate at %ld = %.2f\n", target.c_str(), o.sizes.back(),
                  o.sizes.front(), runs.back().rate / runs.front().rate);
    std::fflush(stdout);
    stop(server);
    results.emplace_back(target, runs);
  }
  fs::remove_all(dir);
  return 0;
}
