// LD_PRELOAD shim for tests that must show a program reaches no other host: every connect() to
// an IPv4 or IPv6 address and every getaddrinfo() of a name is appended, one line each, to the
// file named by $IARELAY_CONNECT_LOG ("connect 127.0.0.1:8081", "resolve edge.example.net"),
// then the C library's function runs. Without the variable both just pass through.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

void log_line(const char* what, const char* detail) {
  const char* path = std::getenv("IARELAY_CONNECT_LOG");
  if (!path || !*path) return;
  const int saved = errno;
  char line[600];
  int n = std::snprintf(line, sizeof line, "%s %s\n", what, detail);
  if (n > static_cast<int>(sizeof line) - 1) n = sizeof line - 1;
  // O_APPEND: lines of concurrent threads do not interleave (one write each).
  int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ssize_t ignored = ::write(fd, line, n);
    (void)ignored;
    ::close(fd);
  }
  errno = saved;
}

}  // namespace

extern "C" int connect(int fd, const sockaddr* addr, socklen_t len) {
  if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    char host[INET6_ADDRSTRLEN] = "?";
    char text[INET6_ADDRSTRLEN + 16];
    if (addr->sa_family == AF_INET) {
      auto* in = reinterpret_cast<const sockaddr_in*>(addr);
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      std::snprintf(text, sizeof text, "%s:%u", host, ntohs(in->sin_port));
    } else {
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
      std::snprintf(text, sizeof text, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
    log_line("connect", text);
  }
  using Connect = int (*)(int, const sockaddr*, socklen_t);
  static auto real = reinterpret_cast<Connect>(dlsym(RTLD_NEXT, "connect"));
  return real(fd, addr, len);
}

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** res) {
  if (node) log_line("resolve", node);
  using GetAddrInfo = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static auto real = reinterpret_cast<GetAddrInfo>(dlsym(RTLD_NEXT, "getaddrinfo"));
  return real(node, service, hints, res);
}
