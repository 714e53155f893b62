// LD_PRELOAD shim for fault tests: fsync() and fdatasync() fail with EIO while the file named by
// $IARELAY_FAIL_SYNC_WHEN exists, as a failing disk makes them fail. Without the variable (or
// without the file) both pass through to the C library.
#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace {

bool should_fail() {
  const char* flag = std::getenv("IARELAY_FAIL_SYNC_WHEN");
  return flag && *flag && ::access(flag, F_OK) == 0;
}

using SyncFunction = int (*)(int);

int call_or_fail(const char* name, int fd) {
  if (should_fail()) {
    errno = EIO;
    return -1;
  }
  auto real = reinterpret_cast<SyncFunction>(dlsym(RTLD_NEXT, name));
  return real(fd);
}

}  // namespace

extern "C" int fdatasync(int fd) {
  return call_or_fail("fdatasync", fd);
}

extern "C" int fsync(int fd) {
  return call_or_fail("fsync", fd);
}
