// journal_crash_child JOURNAL [THREADS]: the crash test's victim. Opens a Writer (sync=full) on
// JOURNAL and runs THREADS submitters that insert webhooks forever; each id whose commit was
// acknowledged is written to stdout as "<id>\n" (one write(2) per id, so lines never interleave),
// after a first line "ready" once the writer is open.
// It never exits by itself: the test kills it with SIGKILL.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/log.h"
#include "common/time.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace {

void write_line(const std::string& line) {
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(STDOUT_FILENO, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::_Exit(3);  // the reader is gone: nothing left to prove
    off += static_cast<size_t>(n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace iarelay;
  if (argc < 2) {
    std::fprintf(stderr, "usage: journal_crash_child JOURNAL [THREADS]\n");
    return 2;
  }
  int threads = argc > 2 ? std::atoi(argv[2]) : 8;
  if (threads <= 0) threads = 8;
  // Logs go to stderr: stdout carries nothing but acknowledged ids.
  if (Status s = init_logging("warn", "text"); !s) {
    std::fprintf(stderr, "journal_crash_child: %s\n", s.message().c_str());
    return 1;
  }
  auto writer = Writer::open(argv[1], SyncLevel::kFull);
  if (!writer) {
    std::fprintf(stderr, "journal_crash_child: %s\n", writer.status().message().c_str());
    return 1;
  }
  // The test times its kill from here, so that every round is killed while committing.
  write_line("ready\n");
  std::string filler(900, 'x');
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (long i = 0;; ++i) {
        NewWebhook w;
        w.id = new_webhook_id();
        w.received_at = now_millis();
        w.service = "hpnnmi";
        w.type = "status";
        w.event_id = std::to_string(t * 1'000'000 + i);
        w.assigned_agent = "a1";
        // Every few rows carries a source id, so the dedup index is written too.
        if (i % 4 == 0) {
          w.source = "edge";
          w.source_id = w.id;
        }
        w.payload = "{\"eventIdentifier\":" + *w.event_id + ",\"status\":\"active\",\"n\":\"" +
                    filler + "\"}";
        Status s = (*writer)->run([&w](SQLite::Database& db) { insert_webhook(db, w); });
        if (s) write_line(w.id + "\n");
      }
    });
  }
  for (auto& t : pool) t.join();  // never: the threads run until the process is killed
  return 0;
}
