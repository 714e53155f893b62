// LD_PRELOAD shim that lets a test build the disk a power cut would leave: for the journal's
// files (journal.db, -wal, -journal) it keeps, in a state directory, the content as of each
// file's last fsync/fdatasync (NAME.synced) and every write since then (NAME.pending, an
// append-only log that survives a SIGKILL), and which files were created since the directory's
// last sync (NAME.created). The writes themselves go through to the real files unchanged, so
// the process sees its own writes as the kernel's page cache would show them. disk_image.h
// turns the state directory into a power-cut image. Without the variables it does nothing.
//
//   IARELAY_POWERLOSS_JOURNAL          absolute path of the journal (journal.db)
//   IARELAY_POWERLOSS_STATE            the state directory (shared by every process of a run;
//                                      one flock on STATE/lock orders their writes and syncs)
//   IARELAY_POWERLOSS_STOP_AFTER_SYNCS N: the process stops itself (SIGSTOP) right after its
//                                      Nth sync of a journal file has reached the "disk"
//   IARELAY_POWERLOSS_STOP_AT_WAL_RESTART N: the process stops itself at its first sync of the
//                                      WAL, after its Nth write of a WAL header, that finds
//                                      WAL frames unsynced: before that sync reaches the "disk"
//   IARELAY_POWERLOSS_SYNC_DELAY_US    time a sync takes before it covers the writes (500)
//   IARELAY_POWERLOSS_LIE              "wal-syncer": fsync/fdatasync through a read-only
//                                      descriptor of the WAL (the writer's syncer) succeeds and
//                                      syncs nothing, as if the writer answered before its sync
//   IARELAY_POWERLOSS_TRACE            set: one line per tracked open, close, WAL header and
//                                      sync in STATE/trace (debugging the harness)
//
// The -shm file is not tracked: SQLite rebuilds it from the WAL after a power cut.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "powerloss/pending_record.h"

namespace {

using OpenFn = int (*)(const char*, int, ...);
using OpenAtFn = int (*)(int, const char*, int, ...);
using CloseFn = int (*)(int);
using WriteFn = ssize_t (*)(int, const void*, size_t);
using PwriteFn = ssize_t (*)(int, const void*, size_t, off_t);
using TruncateFn = int (*)(int, off_t);
using SyncFn = int (*)(int);
using UnlinkFn = int (*)(const char*);

template <typename T>
T next(const char* name) {
  return reinterpret_cast<T>(dlsym(RTLD_NEXT, name));
}

struct Real {
  OpenFn open = next<OpenFn>("open");
  OpenFn open64 = next<OpenFn>("open64");
  OpenAtFn openat = next<OpenAtFn>("openat");
  OpenAtFn openat64 = next<OpenAtFn>("openat64");
  CloseFn close = next<CloseFn>("close");
  WriteFn write = next<WriteFn>("write");
  PwriteFn pwrite = next<PwriteFn>("pwrite");
  PwriteFn pwrite64 = next<PwriteFn>("pwrite64");
  TruncateFn ftruncate = next<TruncateFn>("ftruncate");
  TruncateFn ftruncate64 = next<TruncateFn>("ftruncate64");
  SyncFn fsync = next<SyncFn>("fsync");
  SyncFn fdatasync = next<SyncFn>("fdatasync");
  UnlinkFn unlink = next<UnlinkFn>("unlink");
};

Real& real() {
  static Real r;
  return r;
}

constexpr int kMaxFd = 1 << 16;

// One journal file the shim follows.
struct Tracked {
  std::string path;   // the real file
  std::string state;  // STATE/NAME, the prefix of its side files
  int pending_fd = -1;
  int synced_fd = -1;
};

struct Shim {
  bool enabled = false;
  std::string dir;  // the journal's directory, for directory syncs
  std::vector<Tracked> files;
  std::string state_dir;
  long stop_after = 0;
  long stop_at_restart = 0;
  std::atomic<long> wal_headers{0};
  long delay_us = 500;
  bool lie_wal_syncer = false;
  int lock_fd = -1;
  std::mutex mu;  // threads of this process; the flock orders the processes
  std::atomic<long> syncs{0};
  // Descriptor -> index into files + 1 (0: not tracked); bit 7: opened read-only.
  std::atomic<unsigned char> fds[kMaxFd] = {};

  Shim() {
    const char* journal = std::getenv("IARELAY_POWERLOSS_JOURNAL");
    const char* state = std::getenv("IARELAY_POWERLOSS_STATE");
    if (!journal || !*journal || !state || !*state) return;
    std::string j = journal;
    auto slash = j.rfind('/');
    dir = slash == 0 ? "/" : j.substr(0, slash);
    state_dir = state;
    std::string name = j.substr(slash + 1);
    for (const char* suffix : {"", "-wal", "-journal"})
      files.push_back(Tracked{j + suffix, state_dir + "/" + name + suffix, -1, -1});
    if (const char* s = std::getenv("IARELAY_POWERLOSS_STOP_AFTER_SYNCS")) stop_after = atol(s);
    if (const char* s = std::getenv("IARELAY_POWERLOSS_SYNC_DELAY_US")) delay_us = atol(s);
    if (const char* s = std::getenv("IARELAY_POWERLOSS_STOP_AT_WAL_RESTART"))
      stop_at_restart = atol(s);
    if (const char* s = std::getenv("IARELAY_POWERLOSS_LIE"))
      lie_wal_syncer = std::strcmp(s, "wal-syncer") == 0;
    lock_fd = real().open((state_dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    enabled = lock_fd >= 0;
  }
};

Shim& shim() {
  static Shim s;
  return s;
}

// Debugging aid: IARELAY_POWERLOSS_TRACE=1 appends one line per tracked call to STATE/trace.
void trace(const std::string& what) {
  static const bool on = std::getenv("IARELAY_POWERLOSS_TRACE") != nullptr;
  if (!on || !shim().enabled) return;
  std::string line =
      std::to_string(::getpid()) + " " + std::to_string(::gettid()) + " " + what + "\n";
  int fd = real().open((shim().state_dir + "/trace").c_str(),
                       O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  real().write(fd, line.data(), line.size());
  real().close(fd);
}

// Holds the shim: no thread of any process of the run writes or syncs a journal file meanwhile.
class Guard {
 public:
  Guard() : lock_(shim().mu) {
    while (::flock(shim().lock_fd, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~Guard() { ::flock(shim().lock_fd, LOCK_UN); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

 private:
  std::lock_guard<std::mutex> lock_;
};

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// A side file's descriptor, opened once per process (never a descriptor of a journal file).
int side_fd(int& fd, const std::string& path, int flags) {
  if (fd < 0) fd = real().open(path.c_str(), flags | O_CLOEXEC, 0644);
  return fd;
}

void write_all(int fd, const char* data, size_t size, off_t offset) {
  while (size > 0) {
    ssize_t n = real().pwrite(fd, data, size, offset);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
}

void copy_file(const std::string& from, const std::string& to) {
  int in = real().open(from.c_str(), O_RDONLY | O_CLOEXEC);
  int out = real().open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  char buffer[1 << 16];
  off_t at = 0;
  for (ssize_t n; in >= 0 && out >= 0 && (n = ::read(in, buffer, sizeof buffer)) > 0; at += n)
    write_all(out, buffer, static_cast<size_t>(n), at);
  if (in >= 0) real().close(in);
  if (out >= 0) real().close(out);
}

int index_of(const char* path) {
  Shim& s = shim();
  if (!s.enabled || !path) return -1;
  std::string p = path;
  if (p.empty()) return -1;
  if (p[0] != '/') {
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) return -1;
    p = std::string(cwd) + "/" + p;
  }
  for (size_t i = 0; i < s.files.size(); ++i)
    if (s.files[i].path == p) return static_cast<int>(i);
  return -1;
}

int tracked_fd(int fd, bool* read_only = nullptr) {
  if (fd < 0 || fd >= kMaxFd || !shim().enabled) return -1;
  unsigned char v = shim().fds[fd].load(std::memory_order_acquire);
  if (read_only) *read_only = (v & 0x80) != 0;
  return (v & 0x7f) ? (v & 0x7f) - 1 : -1;
}

void append_record(Tracked& t, std::uint32_t kind, std::uint64_t offset, const void* data,
                   std::uint64_t length) {
  int fd = side_fd(t.pending_fd, t.state + ".pending", O_RDWR | O_APPEND | O_CREAT);
  if (fd < 0) return;
  iarelay::powerloss::RecordHeader h{iarelay::powerloss::kRecordMagic, kind, offset, length};
  std::string buffer(reinterpret_cast<const char*>(&h), sizeof h);
  if (data) buffer.append(static_cast<const char*>(data), length);
  // One write() per record: a SIGKILL leaves a record whole or a torn tail the reader drops.
  for (size_t done = 0; done < buffer.size();) {
    ssize_t n = real().write(fd, buffer.data() + done, buffer.size() - done);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    done += static_cast<size_t>(n);
  }
}

// Called with the Guard held around the real open of a journal file.
void note_open(int index, bool created) {
  Tracked& t = shim().files[static_cast<size_t>(index)];
  std::string synced = t.state + ".synced";
  std::string gone = t.state + ".gone";
  if (exists(gone)) {
    // Removed earlier in this run and now created again (its side files are empty).
    real().unlink(gone.c_str());
    if (created) copy_file("/dev/null", t.state + ".created");
    return;
  }
  if (exists(synced)) return;
  if (created) {
    // A new file: empty on the disk, and its name durable only at the directory's next sync.
    copy_file("/dev/null", synced);
    copy_file("/dev/null", t.state + ".created");
  } else {
    // A file that was there before the shim saw it is durable as it is (the driver puts only
    // durable images in place).
    trace("first open of existing " + t.path);
    copy_file(t.path, synced);
  }
}

int open_tracked(const char* path, int flags, mode_t mode, int dirfd, bool at, bool large) {
  int index = (at && dirfd != AT_FDCWD && path && path[0] != '/') ? -1 : index_of(path);
  auto call = [&] {
    if (at) return (large ? real().openat64 : real().openat)(dirfd, path, flags, mode);
    return (large ? real().open64 : real().open)(path, flags, mode);
  };
  if (index < 0) return call();
  Guard g;
  bool existed = exists(shim().files[static_cast<size_t>(index)].path);
  int fd = call();
  if (fd < 0) return fd;
  note_open(index, !existed);
  if ((flags & O_TRUNC) && existed)
    append_record(shim().files[static_cast<size_t>(index)], iarelay::powerloss::kTruncate, 0,
                  nullptr, 0);
  trace("open " + std::to_string(index) + " fd " + std::to_string(fd) + " flags " +
        std::to_string(flags));
  if (fd < kMaxFd) {
    bool read_only = (flags & O_ACCMODE) == O_RDONLY;
    shim().fds[fd].store(static_cast<unsigned char>((index + 1) | (read_only ? 0x80 : 0)),
                         std::memory_order_release);
  }
  return fd;
}

// Makes everything pending of file `index` durable: applied to NAME.synced, log emptied.
void apply_pending(Tracked& t) {
  int pending = side_fd(t.pending_fd, t.state + ".pending", O_RDWR | O_APPEND | O_CREAT);
  int synced = side_fd(t.synced_fd, t.state + ".synced", O_RDWR | O_CREAT);
  if (pending < 0 || synced < 0) return;
  struct stat st;
  if (::fstat(pending, &st) != 0 || st.st_size == 0) return;
  std::string log(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < log.size()) {
    ssize_t n = ::pread(pending, log.data() + got, log.size() - got, static_cast<off_t>(got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  log.resize(got);
  for (const auto& r : iarelay::powerloss::parse_records(log)) {
    if (r.header.kind == iarelay::powerloss::kWrite)
      write_all(synced, log.data() + r.data_offset, r.header.length,
                static_cast<off_t>(r.header.offset));
    else
      real().ftruncate(synced, static_cast<off_t>(r.header.offset));
  }
  real().ftruncate(pending, 0);
}

// Whether the WAL's pending writes include frames (anything past its 32-byte header).
bool frames_pending(Tracked& t) {
  int pending = side_fd(t.pending_fd, t.state + ".pending", O_RDWR | O_APPEND | O_CREAT);
  struct stat st;
  if (pending < 0 || ::fstat(pending, &st) != 0) return false;
  std::string log(static_cast<size_t>(st.st_size), '\0');
  ssize_t n = ::pread(pending, log.data(), log.size(), 0);
  if (n <= 0) return false;
  log.resize(static_cast<size_t>(n));
  for (const auto& r : iarelay::powerloss::parse_records(log))
    if (r.header.kind == iarelay::powerloss::kWrite && r.header.offset >= 32) return true;
  return false;
}

int sync_common(int fd, SyncFn real_sync) {
  Shim& s = shim();
  bool read_only = false;
  int index = tracked_fd(fd, &read_only);
  if (index < 0) {
    if (s.enabled) {
      char link[4096];
      std::string proc = "/proc/self/fd/" + std::to_string(fd);
      ssize_t n = ::readlink(proc.c_str(), link, sizeof link - 1);
      std::string target = n > 0 ? std::string(link, static_cast<size_t>(n)) : "?";
      if (target.find("journal.db") != std::string::npos)
        trace("UNTRACKED sync fd " + std::to_string(fd) + " " + target);
    }
    // A sync of the journal's directory makes the names of files created before it durable.
    struct stat st;
    if (s.enabled && ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
      char link[4096];
      std::string proc = "/proc/self/fd/" + std::to_string(fd);
      ssize_t n = ::readlink(proc.c_str(), link, sizeof link - 1);
      if (n > 0 && std::string(link, static_cast<size_t>(n)) == s.dir) {
        Guard g;
        for (const Tracked& t : s.files) real().unlink((t.state + ".created").c_str());
      }
    }
    return real_sync(fd);
  }
  // The disk is simulated: the real sync is not needed for a SIGKILL, which keeps the page
  // cache. A sync takes time, and covers what was written while it ran.
  if (s.delay_us > 0) ::usleep(static_cast<useconds_t>(s.delay_us));
  if (s.lie_wal_syncer && read_only && index == 1) return 0;
  bool stop = false;
  {
    Guard g;
    Tracked& t = s.files[static_cast<size_t>(index)];
    if (index == 1 && s.stop_at_restart > 0 && s.wal_headers.load() >= s.stop_at_restart)
      stop = frames_pending(t);
    if (!stop) apply_pending(t);
  }
  trace("sync " + std::to_string(index) + " fd " + std::to_string(fd) + (stop ? " STOP" : "") +
        " headers " + std::to_string(s.wal_headers.load()));
  if (stop) {
    s.stop_at_restart = 0;
    // The whole process stops; this sync never reaches the disk and never returns (a SIGSTOP
    // sent to the process may be taken by another thread a moment later, and this one must
    // not answer anybody meanwhile). The driver SIGKILLs the process.
    ::tgkill(::getpid(), ::gettid(), SIGSTOP);
    for (;;) ::pause();
  }
  if (s.stop_after > 0 && s.syncs.fetch_add(1) + 1 == s.stop_after)
    ::tgkill(::getpid(), ::gettid(), SIGSTOP);
  return 0;
}

ssize_t pwrite_common(int fd, const void* data, size_t size, off_t offset, PwriteFn real_write) {
  int index = tracked_fd(fd);
  if (index < 0) return real_write(fd, data, size, offset);
  Guard g;
  ssize_t n = real_write(fd, data, size, offset);
  if (n > 0 && index == 1 && offset == 0) {
    shim().wal_headers.fetch_add(1);
    trace("wal header fd " + std::to_string(fd));
    // A new WAL header: the WAL restarts. Counted for the harness's report (STATE/wal-headers
    // grows by one byte each time).
    int count = real().open((shim().state_dir + "/wal-headers").c_str(),
                            O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (count >= 0) {
      real().write(count, "h", 1);
      real().close(count);
    }
  }
  if (n > 0)
    append_record(shim().files[static_cast<size_t>(index)], iarelay::powerloss::kWrite,
                  static_cast<std::uint64_t>(offset), data, static_cast<std::uint64_t>(n));
  return n;
}

int truncate_common(int fd, off_t length, TruncateFn real_truncate) {
  int index = tracked_fd(fd);
  if (index < 0) return real_truncate(fd, length);
  Guard g;
  int rc = real_truncate(fd, length);
  if (rc == 0)
    append_record(shim().files[static_cast<size_t>(index)], iarelay::powerloss::kTruncate,
                  static_cast<std::uint64_t>(length), nullptr, 0);
  return rc;
}

mode_t mode_arg(int flags, va_list args) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(args, mode_t) : 0;
}

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_arg(flags, args);
  va_end(args);
  return open_tracked(path, flags, mode, AT_FDCWD, false, false);
}

int open64(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_arg(flags, args);
  va_end(args);
  return open_tracked(path, flags, mode, AT_FDCWD, false, true);
}

int openat(int dirfd, const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_arg(flags, args);
  va_end(args);
  return open_tracked(path, flags, mode, dirfd, true, false);
}

int openat64(int dirfd, const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_arg(flags, args);
  va_end(args);
  return open_tracked(path, flags, mode, dirfd, true, true);
}

int close(int fd) {
  if (tracked_fd(fd) >= 0) {
    trace("close fd " + std::to_string(fd));
    shim().fds[fd].store(0, std::memory_order_release);
  }
  return real().close(fd);
}

ssize_t write(int fd, const void* data, size_t size) {
  if (tracked_fd(fd) < 0) return real().write(fd, data, size);
  off_t at = ::lseek(fd, 0, SEEK_CUR);
  if (at < 0) return real().write(fd, data, size);
  // Through pwrite at the current offset, then the offset moves as write() would move it.
  ssize_t n = pwrite_common(fd, data, size, at, real().pwrite);
  if (n > 0) ::lseek(fd, at + n, SEEK_SET);
  return n;
}

ssize_t pwrite(int fd, const void* data, size_t size, off_t offset) {
  return pwrite_common(fd, data, size, offset, real().pwrite);
}

ssize_t pwrite64(int fd, const void* data, size_t size, off_t offset) {
  return pwrite_common(fd, data, size, offset, real().pwrite64);
}

int ftruncate(int fd, off_t length) {
  return truncate_common(fd, length, real().ftruncate);
}

int ftruncate64(int fd, off_t length) {
  return truncate_common(fd, length, real().ftruncate64);
}

int fsync(int fd) {
  return sync_common(fd, real().fsync);
}

int fdatasync(int fd) {
  return sync_common(fd, real().fdatasync);
}

int unlink(const char* path) {
  int index = index_of(path);
  if (index < 0) return real().unlink(path);
  // Simplification (docs/reliability.md): a journal file's removal is durable at once. SQLite
  // removes the rollback journal while the journal is created and the WAL at the last clean
  // close; neither precedes an acknowledgement the harness checks.
  Guard g;
  int rc = real().unlink(path);
  trace("unlink " + std::to_string(index) + " rc " + std::to_string(rc));
  if (rc == 0) {
    // The side files stay (other processes keep descriptors of them): emptied, and NAME.gone
    // says the file is absent until it is created again.
    Tracked& t = shim().files[static_cast<size_t>(index)];
    int synced = side_fd(t.synced_fd, t.state + ".synced", O_RDWR | O_CREAT);
    int pending = side_fd(t.pending_fd, t.state + ".pending", O_RDWR | O_APPEND | O_CREAT);
    if (synced >= 0) real().ftruncate(synced, 0);
    if (pending >= 0) real().ftruncate(pending, 0);
    real().unlink((t.state + ".created").c_str());
    copy_file("/dev/null", t.state + ".gone");
  }
  return rc;
}

}  // extern "C"
