// journal_bench: rows/s of webhook inserts (insert_webhook, 1 KiB payloads) as single-row
// commits, as a bare SQLite loop of 100 rows per transaction, and through the group-commit
// Writer under concurrent submitters, at sync=full and sync=normal. Ratios compare within a run.
#include <SQLiteCpp/SQLiteCpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/time.h"
#include "journal/journal.h"
#include "journal/statement_cache.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay {
namespace {

struct Options {
  int single_rows = 1000;
  int rows = 20000;  // batched loop and writer
  int threads = 64;
  int batch = 100;
  int repeat = 3;   // each figure is the median of this many interleaved runs
  std::string dir;  // "" : a fresh directory under the current one, removed afterwards
  std::vector<SyncLevel> syncs{SyncLevel::kFull, SyncLevel::kNormal};
};

struct Measurement {
  int rows = 0;
  double seconds = 0;
  std::uint64_t commits = 0;
  double durable_ms = 0;  // writer modes: mean time from COMMIT until durable (the fsync)
  double rate() const { return seconds > 0 ? rows / seconds : 0; }
};

const char* sync_name(SyncLevel s) {
  return s == SyncLevel::kFull ? "full" : "normal";
}

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--rows N] [--single-rows N] [--threads N] [--repeat N] "
      "[--sync full|normal|both] [--dir DIR]\n"
      "  --rows N         rows for the batched loop and the writer (default 20000)\n"
      "  --single-rows N  rows for single-row commits (default 1000)\n"
      "  --threads N      concurrent submitters to the writer (default 64)\n"
      "  --repeat N       runs of each mode, interleaved; the median is shown (default 3)\n"
      "  --sync S         full, normal or both (default both)\n"
      "  --dir DIR        where the journals go (default: a new directory here, removed after)\n",
      argv0);
}

// 1 KiB of realistic JSON, distinct per row.
std::vector<NewWebhook> make_rows(int n) {
  std::vector<NewWebhook> rows;
  rows.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    NewWebhook w;
    w.id = new_webhook_id();
    w.received_at = now_millis();
    w.service = "hpnnmi";
    w.type = "status";
    w.event_id = std::to_string(4400000 + i);
    w.assigned_agent = "ws-198/10.2.0.121:8081";
    std::string p = "{\"eventIdentifier\":" + *w.event_id +
                    ",\"date\":\"2026-11-20T09:14:03Z\",\"status\":\"active\","
                    "\"username\":\"mgarcia\",\"eventProperties\":[{\"Incident ID\":\"INC" +
                    std::to_string(i) + "\"},{\"Notes\":\"";
    while (p.size() < 1024 - 4) p += static_cast<char>('a' + (p.size() + i) % 26);
    p += "\"}]}";
    w.payload = std::move(p);
    rows.push_back(std::move(w));
  }
  return rows;
}

DatabasePtr open_migrated(const std::string& path, SyncLevel sync) {
  auto db = open_journal_for_write(path, sync);
  if (!db) {
    std::fprintf(stderr, "journal_bench: %s\n", db.status().message().c_str());
    std::exit(1);
  }
  if (Status s = migrate(**db); !s) {
    std::fprintf(stderr, "journal_bench: %s\n", s.message().c_str());
    std::exit(1);
  }
  // No checkpoints in the committing thread: the baselines get the advantage the Writer has
  // (its checkpoints run on another thread), so they stay an upper bound.
  (*db)->exec("PRAGMA wal_autocheckpoint=0");
  return std::move(*db);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// (a) one INSERT per transaction, i.e. one commit (an fsync at full) per row.
Measurement bench_single(const std::string& path, SyncLevel sync,
                         const std::vector<NewWebhook>& rows, int n) {
  auto db = open_migrated(path, sync);
  StatementCacheScope cache(*db);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    SQLite::Transaction tx(*db, SQLite::TransactionBehavior::IMMEDIATE);
    insert_webhook(*db, rows[static_cast<size_t>(i)]);
    tx.commit();
  }
  return {n, seconds_since(t0), static_cast<std::uint64_t>(n)};
}

// (b) the practical limit: one thread, `batch` rows per transaction, no coordination at all.
Measurement bench_batched(const std::string& path, SyncLevel sync,
                          const std::vector<NewWebhook>& rows, int batch) {
  auto db = open_migrated(path, sync);
  StatementCacheScope cache(*db);
  int n = static_cast<int>(rows.size());
  std::uint64_t commits = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; i += batch) {
    SQLite::Transaction tx(*db, SQLite::TransactionBehavior::IMMEDIATE);
    for (int j = i; j < n && j < i + batch; ++j) insert_webhook(*db, rows[static_cast<size_t>(j)]);
    tx.commit();
    ++commits;
  }
  return {n, seconds_since(t0), commits};
}

std::unique_ptr<Writer> open_writer_or_exit(const std::string& path, SyncLevel sync) {
  auto w = Writer::open(path, sync);
  if (!w) {
    std::fprintf(stderr, "journal_bench: %s\n", w.status().message().c_str());
    std::exit(1);
  }
  return std::move(*w);
}

// What a writer run measured, from its stats before and after; exits if any operation failed.
Measurement writer_measurement(const Writer& writer, const Writer::Stats& before, size_t rows,
                               double seconds, int failures) {
  if (failures) {
    std::fprintf(stderr, "journal_bench: %d writer operations failed\n", failures);
    std::exit(1);
  }
  auto after = writer.stats();
  std::uint64_t commits = after.commits - before.commits;
  double durable_ms = commits ? (after.commit_seconds_total - before.commit_seconds_total) * 1000 /
                                    static_cast<double>(commits)
                              : 0;
  return {static_cast<int>(rows), seconds, commits, durable_ms};
}

// (c) the Writer: `threads` submitters, each waiting for its row to be durable before the next.
Measurement bench_writer(const std::string& path, SyncLevel sync,
                         const std::vector<NewWebhook>& rows, int threads) {
  auto w = open_writer_or_exit(path, sync);
  Writer& writer = *w;
  std::atomic<size_t> next{0};
  std::atomic<int> failures{0};
  auto before = writer.stats();
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (;;) {
        size_t i = next.fetch_add(1);
        if (i >= rows.size()) return;
        const NewWebhook* row = &rows[i];
        Status s = writer.run([row](SQLite::Database& db) { insert_webhook(db, *row); });
        if (!s) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : pool) t.join();
  return writer_measurement(writer, before, rows.size(), seconds_since(t0), failures.load());
}

// (d) the Writer as an event-loop server drives it: `submitters` asynchronous submitters (one
// per connection, each with one row outstanding) on ONE thread. A commit callback only posts the
// submitter back to that thread, which then submits its next row: no thread per submitter.
Measurement bench_writer_async(const std::string& path, SyncLevel sync,
                               const std::vector<NewWebhook>& rows, int submitters) {
  auto w = open_writer_or_exit(path, sync);
  Writer& writer = *w;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> ready;  // GUARDED_BY(mu): submitters whose last row is durable
  int failures = 0;        // GUARDED_BY(mu)
  auto before = writer.stats();
  auto t0 = std::chrono::steady_clock::now();
  size_t next = 0, done = 0;
  std::vector<int> runnable;
  for (int s = 0; s < submitters; ++s) runnable.push_back(s);
  while (done < rows.size()) {
    for (int s : runnable) {
      if (next >= rows.size()) continue;
      const NewWebhook* row = &rows[next++];
      writer.submit([row](SQLite::Database& db) { insert_webhook(db, *row); },
                    [&, s](const Status& st) {
                      std::lock_guard lock(mu);
                      if (!st) ++failures;
                      ready.push_back(s);
                      if (ready.size() == 1) cv.notify_one();
                    });
    }
    runnable.clear();
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return !ready.empty(); });
    runnable.swap(ready);
    done += runnable.size();
  }
  return writer_measurement(writer, before, rows.size(), seconds_since(t0), failures);
}

Measurement median(std::vector<Measurement> runs) {
  std::sort(runs.begin(), runs.end(),
            [](const Measurement& x, const Measurement& y) { return x.rate() < y.rate(); });
  return runs[runs.size() / 2];
}

void print_row(const char* sync, const std::string& mode, const Measurement& m) {
  std::printf("%-7s %-36s %8d %9.3f %10.0f %8llu %11.1f", sync, mode.c_str(), m.rows, m.seconds,
              m.rate(), static_cast<unsigned long long>(m.commits),
              m.commits ? static_cast<double>(m.rows) / static_cast<double>(m.commits) : 0.0);
  if (m.durable_ms > 0) std::printf("  %.2f ms commit->durable", m.durable_ms);
  std::printf("\n");
}

int parse_positive(const char* flag, const char* v) {
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (!*v || *end || n <= 0 || n > 100'000'000) {
    std::fprintf(stderr, "journal_bench: %s needs a positive number, got '%s'\n", flag, v);
    std::exit(2);
  }
  return static_cast<int>(n);
}

int main_impl(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "journal_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    } else if (a == "--rows") {
      o.rows = parse_positive("--rows", value());
    } else if (a == "--single-rows") {
      o.single_rows = parse_positive("--single-rows", value());
    } else if (a == "--threads") {
      o.threads = parse_positive("--threads", value());
    } else if (a == "--repeat") {
      o.repeat = parse_positive("--repeat", value());
    } else if (a == "--dir") {
      o.dir = value();
    } else if (a == "--sync") {
      std::string v = value();
      if (v == "full")
        o.syncs = {SyncLevel::kFull};
      else if (v == "normal")
        o.syncs = {SyncLevel::kNormal};
      else if (v == "both")
        o.syncs = {SyncLevel::kFull, SyncLevel::kNormal};
      else {
        std::fprintf(stderr, "journal_bench: --sync full|normal|both, got '%s'\n", v.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "journal_bench: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  bool remove_dir = o.dir.empty();
  if (remove_dir) o.dir = "journal_bench." + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::create_directories(o.dir, ec);
  if (ec) {
    std::fprintf(stderr, "journal_bench: %s: %s\n", o.dir.c_str(), ec.message().c_str());
    return 1;
  }

  auto rows = make_rows(std::max(o.rows, o.single_rows));
  std::vector<NewWebhook> main_rows(rows.begin(), rows.begin() + o.rows);
  std::printf(
      "journal_bench: insert_webhook, %zu-byte payloads, journals in %s, median of %d runs\n",
      rows[0].payload.size(), o.dir.c_str(), o.repeat);
  std::printf("%-7s %-36s %8s %9s %10s %8s %11s\n", "sync", "mode", "rows", "seconds", "rows/s",
              "commits", "rows/commit");
  for (SyncLevel sync : o.syncs) {
    // Interleave the modes so that a slow moment of a shared machine hits all of them alike.
    std::vector<Measurement> single, batched, writer, async;
    for (int r = 0; r < o.repeat; ++r) {
      std::string base = o.dir + "/" + sync_name(sync) + "-" + std::to_string(r);
      single.push_back(bench_single(base + "-single.db", sync, rows, o.single_rows));
      batched.push_back(bench_batched(base + "-batched.db", sync, main_rows, o.batch));
      writer.push_back(bench_writer(base + "-writer.db", sync, main_rows, o.threads));
      async.push_back(bench_writer_async(base + "-async.db", sync, main_rows, o.threads));
      for (const char* mode : {"-single.db", "-batched.db", "-writer.db", "-async.db"})
        for (const char* suffix : {"", "-wal", "-shm", ".lock"})
          std::filesystem::remove(base + mode + suffix, ec);
    }
    Measurement s1 = median(single), b = median(batched), w = median(writer), a = median(async);
    print_row(sync_name(sync), "(a) single-row commits", s1);
    print_row(sync_name(sync), "(b) bare loop, 100 rows/transaction", b);
    print_row(sync_name(sync), "(c) writer, " + std::to_string(o.threads) + " submitters", w);
    print_row(sync_name(sync), "(d) writer, " + std::to_string(o.threads) + " async, 1 thread", a);
    std::printf("%-7s ratios: (c) threads: writer/batched = %.2f, writer/single = %.1f\n",
                sync_name(sync), w.rate() / b.rate(), w.rate() / s1.rate());
    std::printf("%-7s ratios: (d) async:   writer/batched = %.2f, writer/single = %.1f\n",
                sync_name(sync), a.rate() / b.rate(), a.rate() / s1.rate());
    std::fflush(stdout);
  }
  if (remove_dir) std::filesystem::remove_all(o.dir, ec);
  return 0;
}

}  // namespace
}  // namespace iarelay

int main(int argc, char** argv) {
  return iarelay::main_impl(argc, argv);
}
