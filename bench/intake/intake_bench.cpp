// intake_bench: durable intake rate of a real iarelayd (sync=full) under iarelay-loadgen (64
// keep-alive connections, ~1 KiB payloads), its p50/p99 acknowledgement latency, then the rate
// at which an inner iarelayd's poller copies the edge's stored webhooks into its own journal,
// and journal_bench's batched-loop figure from the same run as the reference. With --latency
// instead: the time from a webhook's 202 to its delivery at an instant agent (an HTTP server in
// this program) with an idle relay, at a fixed offered rate, for one alert and for 100 (issue 14).
// Prints figures; asserts nothing.
#include <SQLiteCpp/SQLiteCpp.h>
#include <arpa/inet.h>
#include <fcntl.h>
// The stand-in agent accepts bursts of new connections without dropping SYNs (httplib listens
// with a backlog of 5 by default: a dropped SYN is retried after 1 s, a 1 s "call").
#define CPPHTTPLIB_LISTEN_BACKLOG 1024
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "support/process.h"

extern char** environ;

using iarelay::testing::free_port;
using iarelay::testing::read_file;
using iarelay::testing::wait_for_port;

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int count = 50000;
  int concurrency = 64;
  int payload_size = 1024;
  int batch = 1000;
  std::string sync = "full";
  std::string bin_dir = IARELAY_BIN_DIR;
  bool journal_reference = true;
  bool latency = false;  // --latency: 202 -> delivery instead of the intake and feed phases
  double rate = 1000;    // --latency: webhooks per second offered
  bool count_given = false;
};

pid_t spawn(const std::vector<std::string>& argv, const std::string& out, const std::string& err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!out.empty())
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!err.empty())
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int wait_exit(pid_t pid, double* cpu_seconds = nullptr) {
  int status = 0;
  rusage usage{};
  if (wait4(pid, &status, 0, &usage) < 0) return -1;
  if (cpu_seconds)
    *cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                   static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string field(const std::string& summary, const std::string& key) {
  auto pos = summary.find(key + ": ");
  if (pos == std::string::npos) return "?";
  auto end = summary.find('\n', pos);
  return summary.substr(pos + key.size() + 2, end - pos - key.size() - 2);
}

long count_rows(const std::string& journal) {
  try {
    SQLite::Database db(journal, SQLite::OPEN_READONLY);
    db.setBusyTimeout(1000);
    return db.execAndGet("SELECT count(*) FROM webhooks").getInt64();
  } catch (const std::exception&) {
    return -1;
  }
}

// CPU seconds (user + system) a live process has used so far.
double cpu_seconds(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i)
    if (i == 14 || i == 15) ticks += std::atof(f.c_str());
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int usage() {
  std::fprintf(stderr,
               "usage: intake_bench [--count N] [--concurrency C] [--payload-size B] [--batch N] "
               "[--sync full|normal] [--bin-dir DIR] [--no-journal-reference]\n"
               "       intake_bench --latency [--rate R] [--count N] [--sync full|normal] "
               "[--bin-dir DIR]\n");
  return 2;
}

long long wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The machine's load averages (1, 5, 15 min), as uptime shows them.
std::string load_averages() {
  std::istringstream in(read_file("/proc/loadavg"));
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + ", " + five + ", " + fifteen;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// The instant agent: answers 204 to every POST at once and remembers, per webhook-id, when the
// first call for it arrived (wall clock, microseconds) and how many calls came.
class InstantAgent {
 public:
  InstantAgent() {
    // A thread per connection the relay may keep open (max_inflight 64 and a few), each kept
    // for as long as the relay keeps it: with fewer threads, or httplib's default of closing a
    // connection after 5 requests, a new connection waits for a thread to come free.
    server_.new_task_queue = [] { return new httplib::ThreadPool(128); };
    server_.set_keep_alive_max_count(1'000'000);
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
      long long now = wall_us();
      std::string id = req.get_header_value("webhook-id");
      {
        std::lock_guard lock(mu_);
        ++calls_;
        auto [it, fresh] = first_us_.emplace(id, now);
        if (!fresh) ++repeats_;
      }
      res.status = 204;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~InstantAgent() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  size_t distinct() {
    std::lock_guard lock(mu_);
    return first_us_.size();
  }
  bool has(const std::string& id) {
    std::lock_guard lock(mu_);
    return first_us_.count(id) > 0;
  }
  // Receive time of `id`, or -1.
  long long first_us(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = first_us_.find(id);
    return it == first_us_.end() ? -1 : it->second;
  }
  long repeats() {
    std::lock_guard lock(mu_);
    return repeats_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
  std::mutex mu_;
  std::unordered_map<std::string, long long> first_us_;
  long calls_ = 0, repeats_ = 0;
};

struct Record {
  std::string id;
  long long accepted_at_us = 0;
};

// The ids and 2xx times iarelay-loadgen recorded.
std::vector<Record> read_record(const std::string& file) {
  std::vector<Record> out;
  std::istringstream lines(read_file(file));
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    out.push_back({j.value("id", ""), j.value("accepted_at_us", 0LL)});
  }
  return out;
}

// One measurement: a fresh iarelayd (one agent: the instant one, ordering = event, format = ia),
// warmed up with a few webhooks and then left idle, then iarelay-loadgen at o.rate for o.count
// webhooks over `events` alerts; each recorded 202 is joined with the agent's receive time.
// The relay's histogram of COMMIT-until-durable times (iarelay_journal_commit_seconds), by
// bucket bound in ms (cumulative counts), from its /metrics.
std::vector<std::pair<std::string, double>> commit_buckets(int port) {
  httplib::Client client("127.0.0.1", port);
  std::vector<std::pair<std::string, double>> out;
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return out;
  std::istringstream lines(res->body);
  const std::string prefix = "iarelay_journal_commit_seconds_bucket{le=\"";
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    auto end = line.find('"', prefix.size());
    if (end == std::string::npos) continue;
    out.emplace_back(line.substr(prefix.size(), end - prefix.size()),
                     std::atof(line.c_str() + line.rfind(' ') + 1));
  }
  return out;
}

// "p50 <= B1 ms, p99 <= B2 ms (N commits)" from two readings of commit_buckets.
std::string commit_summary(const std::vector<std::pair<std::string, double>>& before,
                           const std::vector<std::pair<std::string, double>>& after) {
  if (before.size() != after.size() || after.empty()) return "not read";
  const double total = after.back().second - before.back().second;
  auto bound = [&](double q) {
    for (size_t i = 0; i < after.size(); ++i)
      if (after[i].second - before[i].second >= q * total)
        return after[i].first == "+Inf" ? std::string("> 100 ms")
                                        : "<= " +
                                              std::to_string(static_cast<int>(
                                                  std::atof(after[i].first.c_str()) * 1000 + 0.5)) +
                                              " ms";
    return std::string("?");
  };
  return "p50 " + bound(0.5) + ", p99 " + bound(0.99) + " (" +
         std::to_string(static_cast<long long>(total)) + " commits)";
}

bool measure_latency(const Options& o, int events, const std::string& dir) {
  auto path = [&](const std::string& name) { return dir + "/" + name; };
  std::string daemon = o.bin_dir + "/iarelayd", loadgen = o.bin_dir + "/iarelay-loadgen";
  InstantAgent agent;
  if (agent.port() <= 0) {
    std::fprintf(stderr, "intake_bench: the agent could not listen on 127.0.0.1\n");
    return false;
  }
  const std::string agent_id = "bench/127.0.0.1:" + std::to_string(agent.port());
  int port = free_port();
  std::ofstream(path("relay.conf"))
      << "journal = " << path("relay.db") << "\nsync = " << o.sync
      << "\nlog_level = warn\n[listen]\naddress = 127.0.0.1:" << port
      << "\n[agent.bench]\nid = " << agent_id << "\ncallback = http://127.0.0.1:" << agent.port()
      << "/http/{domain}_{service}\nservices = hpnnmi\nformat = ia\nordering = event\n";
  pid_t relay = spawn({daemon, "--config", path("relay.conf")}, "", path("relay.log"));
  if (relay < 0 || !wait_for_port(port)) {
    std::fprintf(stderr, "intake_bench: iarelayd did not start: %s\n",
                 read_file(path("relay.log")).c_str());
    if (relay > 0) kill(relay, SIGTERM), wait_exit(relay);
    return false;
  }
  auto send = [&](int count, double rate, const std::string& name) {
    pid_t lg =
        spawn({loadgen, "--url", "http://127.0.0.1:" + std::to_string(port), "--service", "hpnnmi",
               "--agent", agent_id, "--count", std::to_string(count), "--rate",
               std::to_string(rate), "--concurrency", "16", "--events", std::to_string(events),
               "--no-idempotency-key", "--record", path(name + ".jsonl")},
              path(name + ".out"), path(name + ".err"));
    return wait_exit(lg);
  };
  auto delivered_all = [&](const std::vector<Record>& rec, std::chrono::seconds timeout) {
    auto until = Clock::now() + timeout;
    for (;;) {
      bool all =
          std::all_of(rec.begin(), rec.end(), [&](const Record& r) { return agent.has(r.id); });
      if (all || Clock::now() > until) return all;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  // Warm-up (connections, caches, the agent known up), then nothing in flight for a moment:
  // the measurement starts on an idle relay.
  int warm_exit = send(20, 0, "warmup");
  bool warm =
      warm_exit == 0 && delivered_all(read_record(path("warmup.jsonl")), std::chrono::seconds(30));
  if (!warm) {
    std::fprintf(stderr, "intake_bench: the warm-up was not delivered (loadgen exit %d): %s\n",
                 warm_exit, read_file(path("relay.log")).c_str());
    kill(relay, SIGTERM);
    wait_exit(relay);
    return false;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  double relay_cpu0 = cpu_seconds(relay);
  auto commits0 = commit_buckets(port);
  int lg_exit = send(o.count, o.rate, "measure");
  std::vector<Record> rec = read_record(path("measure.jsonl"));
  delivered_all(rec, std::chrono::seconds(60));
  double relay_cpu = cpu_seconds(relay) - relay_cpu0;
  std::string commits = commit_summary(commits0, commit_buckets(port));
  kill(relay, SIGTERM);
  wait_exit(relay);

  std::vector<double> ms;
  long missing = 0;
  for (const auto& r : rec) {
    long long at = agent.first_us(r.id);
    if (at < 0) {
      ++missing;
      continue;
    }
    ms.push_back(static_cast<double>(at - r.accepted_at_us) / 1000.0);
  }
  std::sort(ms.begin(), ms.end());
  auto over_100ms = ms.end() - std::upper_bound(ms.begin(), ms.end(), 100.0);
  std::string summary = read_file(path("measure.out"));
  std::printf(
      "latency  events %-4d offered/s %.0f  delivered %zu/%zu  202->delivery p50 %.2f ms  "
      "p90 %.2f ms  p99 %.2f ms  max %.2f ms  over 100 ms %ld  missing %ld\n",
      events, o.rate, ms.size(), rec.size(), percentile(ms, 0.50), percentile(ms, 0.90),
      percentile(ms, 0.99), ms.empty() ? 0.0 : ms.back(), static_cast<long>(over_100ms), missing);
  std::printf(
      "latency  events %-4d loadgen exit %d, accepted %s of %d at %s/s, request->202 p50 %s ms "
      "p99 %s ms; repeated calls %ld; iarelayd CPU %.0f us per webhook\n",
      events, lg_exit, field(summary, "accepted").c_str(), o.count,
      field(summary, "throughput_per_s").c_str(), field(summary, "latency_p50_ms").c_str(),
      field(summary, "latency_p99_ms").c_str(), agent.repeats(),
      rec.empty() ? 0.0 : relay_cpu * 1e6 / static_cast<double>(rec.size()));
  // A webhook is claimed by a commit of its own, made durable before its call: each 202 and
  // each delivery waits for at least one COMMIT-until-durable.
  std::printf("latency  events %-4d journal COMMIT until durable (the fsync): %s\n", events,
              commits.c_str());
  std::fflush(stdout);
  return true;
}

int run_latency(Options o) {
  if (!o.count_given) o.count = 10000;
  if (o.rate <= 0) return usage();
  char tmpl[] = "intake_bench.XXXXXX";
  std::string dir = std::filesystem::absolute(mkdtemp(tmpl)).string();
  std::printf(
      "intake_bench --latency: iarelayd sync=%s, one agent (ordering = event, format = ia) that "
      "answers 204 at once; iarelay-loadgen %d webhooks at %.0f/s; work dir %s\n",
      o.sync.c_str(), o.count, o.rate, dir.c_str());
  std::printf("machine  load average (1, 5, 15 min) at the start: %s\n", load_averages().c_str());
  std::fflush(stdout);
  bool ok = true;
  for (int events : {1, 100}) {
    std::string sub = dir + "/events-" + std::to_string(events);
    std::filesystem::create_directories(sub);
    ok = measure_latency(o, events, sub) && ok;
  }
  std::printf("machine  load average (1, 5, 15 min) at the end: %s\n", load_averages().c_str());
  std::filesystem::remove_all(dir);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--count")
      o.count = std::atoi(next().c_str()), o.count_given = true;
    else if (a == "--latency")
      o.latency = true;
    else if (a == "--rate")
      o.rate = std::atof(next().c_str());
    else if (a == "--concurrency")
      o.concurrency = std::atoi(next().c_str());
    else if (a == "--payload-size")
      o.payload_size = std::atoi(next().c_str());
    else if (a == "--batch")
      o.batch = std::atoi(next().c_str());
    else if (a == "--sync")
      o.sync = next();
    else if (a == "--bin-dir")
      o.bin_dir = next();
    else if (a == "--no-journal-reference")
      o.journal_reference = false;
    else
      return usage();
  }
  if (o.count <= 0 || o.concurrency <= 0) return usage();
  std::string daemon = o.bin_dir + "/iarelayd", loadgen = o.bin_dir + "/iarelay-loadgen";
  if (access(daemon.c_str(), X_OK) != 0 || access(loadgen.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "intake_bench: needs %s and %s\n", daemon.c_str(), loadgen.c_str());
    return 1;
  }
  if (o.latency) return run_latency(o);
  char tmpl[] = "intake_bench.XXXXXX";
  std::string dir = std::filesystem::absolute(mkdtemp(tmpl)).string();
  auto path = [&](const std::string& name) { return dir + "/" + name; };

  // 1. Durable intake: an edge relay (no agents: every webhook is stored for the feed).
  int edge_port = free_port();
  std::ofstream(path("edge.conf"))
      << "journal = " << path("edge.db") << "\nsync = " << o.sync
      << "\nlog_level = warn\nrole = edge\n[listen]\naddress = 127.0.0.1:" << edge_port << "\n";
  pid_t edge = spawn({daemon, "--config", path("edge.conf")}, "", path("edge.log"));
  if (edge < 0 || !wait_for_port(edge_port)) {
    std::fprintf(stderr, "intake_bench: iarelayd did not start: %s\n",
                 read_file(path("edge.log")).c_str());
    return 1;
  }
  std::printf(
      "intake_bench: iarelayd sync=%s, iarelay-loadgen %d webhooks, %d connections, "
      "~%d-byte payloads; work dir %s\n",
      o.sync.c_str(), o.count, o.concurrency, o.payload_size, dir.c_str());
  double edge_cpu0 = cpu_seconds(edge);
  pid_t lg = spawn({loadgen, "--url", "http://127.0.0.1:" + std::to_string(edge_port), "--service",
                    "applications|hpnnmi", "--count", std::to_string(o.count), "--concurrency",
                    std::to_string(o.concurrency), "--payload-size", std::to_string(o.payload_size),
                    "--no-idempotency-key"},
                   path("loadgen.out"), path("loadgen.err"));
  double lg_cpu = 0;
  int lg_exit = wait_exit(lg, &lg_cpu);
  double edge_cpu1 = cpu_seconds(edge);
  std::string summary = read_file(path("loadgen.out"));
  long stored = count_rows(path("edge.db"));
  std::printf("intake   accepted %s of %d (loadgen exit %d), journal rows %ld\n",
              field(summary, "accepted").c_str(), o.count, lg_exit, stored);
  std::printf("intake   accepted/s %s   ack latency p50 %s ms   p99 %s ms   (elapsed %s s)\n",
              field(summary, "throughput_per_s").c_str(), field(summary, "latency_p50_ms").c_str(),
              field(summary, "latency_p99_ms").c_str(), field(summary, "elapsed_s").c_str());
  // CPU per webhook is the figure that stays comparable when other work shares the machine.
  std::printf("intake   iarelayd CPU %.0f us per webhook (%.2f s user+sys)\n",
              stored > 0 ? (edge_cpu1 - edge_cpu0) * 1e6 / static_cast<double>(stored) : 0.0,
              edge_cpu1 - edge_cpu0);
  // The sender shares the machine: its CPU is what the relay could not use.
  std::printf("intake   iarelay-loadgen CPU %.0f us per webhook (%.2f s user+sys)\n",
              stored > 0 ? lg_cpu * 1e6 / static_cast<double>(stored) : 0.0, lg_cpu);

  // 2. Feed to inner: the inner relay polls the edge's stored webhooks into its journal.
  int inner_port = free_port();
  std::ofstream(path("inner.conf"))
      << "journal = " << path("inner.db") << "\nsync = " << o.sync
      << "\nlog_level = warn\n[listen]\naddress = 127.0.0.1:" << inner_port
      << "\n[upstream]\nurl = http://127.0.0.1:" << edge_port
      << "\nname = edge\nconsumer = inner-1\npoll_wait = 1s\nbatch = " << o.batch << "\n";
  double edge_cpu2 = cpu_seconds(edge);
  auto t0 = Clock::now();
  pid_t inner = spawn({daemon, "--config", path("inner.conf")}, "", path("inner.log"));
  Clock::time_point first{}, last{};
  long copied = 0;
  while (Clock::now() - t0 < std::chrono::seconds(300)) {
    copied = count_rows(path("inner.db"));
    if (copied > 0 && first == Clock::time_point{}) first = Clock::now();
    if (copied >= stored) {
      last = Clock::now();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  double inner_cpu = cpu_seconds(inner), edge_cpu3 = cpu_seconds(edge);
  double total_s = std::chrono::duration<double>(last - t0).count();
  double steady_s = std::chrono::duration<double>(last - first).count();
  if (last == Clock::time_point{}) {
    std::printf("feed     inner has %ld of %ld after 300 s (gave up)\n", copied, stored);
  } else {
    std::printf(
        "feed     %ld webhooks edge->inner (batch %d, sync=%s) in %.3f s from inner start: "
        "%.0f webhooks/s (%.0f/s after the first row)\n",
        stored, o.batch, o.sync.c_str(), total_s, static_cast<double>(stored) / total_s,
        steady_s > 0 ? static_cast<double>(stored) / steady_s : 0.0);
    std::printf("feed     CPU per webhook: inner %.0f us, edge %.0f us (%.2f s and %.2f s)\n",
                inner_cpu * 1e6 / static_cast<double>(stored),
                (edge_cpu3 - edge_cpu2) * 1e6 / static_cast<double>(stored), inner_cpu,
                edge_cpu3 - edge_cpu2);
  }
  std::string loadavg = read_file("/proc/loadavg");
  std::printf("machine  load average (1 min) at the end of the feed phase: %s\n",
              loadavg.substr(0, loadavg.find(' ')).c_str());
  kill(inner, SIGTERM);
  kill(edge, SIGTERM);
  wait_exit(inner);
  wait_exit(edge);

  // 3. The journal's own limit, measured now on the same machine.
  std::string jb = o.bin_dir + "/journal_bench";
  if (o.journal_reference && access(jb.c_str(), X_OK) == 0) {
    pid_t j = spawn({jb, "--repeat", "1", "--sync", o.sync, "--dir", path("jb")},
                    path("journal_bench.out"), path("journal_bench.err"));
    wait_exit(j);
    std::istringstream lines(read_file(path("journal_bench.out")));
    std::string line;
    while (std::getline(lines, line))
      if (line.find("bare loop") != std::string::npos || line.find("writer,") != std::string::npos)
        std::printf("journal  %s\n", line.c_str());
  } else if (o.journal_reference) {
    std::printf("journal  (journal_bench not built in %s)\n", o.bin_dir.c_str());
  }
  std::filesystem::remove_all(dir);
  return 0;
}
