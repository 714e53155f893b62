// CutProxy: a thread per direction of each connection, poll()-free blocking copies.
#include "support/cut_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

namespace iarelay::testing {
namespace {

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool write_all(int fd, const char* p, ssize_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, static_cast<size_t>(n), MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= w;
  }
  return true;
}

}  // namespace

CutProxy::CutProxy(int target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(listen_fd_, 64);
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

CutProxy::~CutProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    threads = std::move(threads_);
  }
  for (auto& t : threads) t.join();
  for (int fd : fds_) ::close(fd);
}

void CutProxy::accept_loop() {
  while (!stopping_) {
    int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) return;
    int server = connect_to(target_port_);
    if (server < 0) {
      ::close(client);
      continue;
    }
    std::lock_guard lock(mu_);
    fds_.push_back(client);
    fds_.push_back(server);
    threads_.emplace_back([this, client, server] { pump(client, server); });
  }
}

// Client to server on this thread, server to client on another; a cut stops both.
void CutProxy::pump(int client, int server) {
  auto cut = std::make_shared<std::atomic<bool>>(false);
  std::thread back([client, server, cut] {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(server, buf, sizeof buf, 0);
      if (n <= 0) break;
      if (*cut) continue;  // the answer to the COMMIT (and anything later) is dropped
      if (!write_all(client, buf, n)) break;
    }
    ::shutdown(client, SHUT_RDWR);
  });
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(client, buf, sizeof buf, 0);
    if (n <= 0) break;
    const bool commit =
        std::string_view(buf, static_cast<size_t>(n)).find(std::string_view("COMMIT\0", 7)) !=
        std::string_view::npos;  // NUL-terminated: "READ COMMITTED" of a BEGIN is not one
    bool expected = true;
    if (commit && armed_.compare_exchange_strong(expected, false)) {
      *cut = true;  // before the server can answer
      ++cuts_;
      write_all(server, buf, n);
      ::shutdown(client, SHUT_RDWR);  // the client sees the connection lost, no answer
      break;
    }
    if (!write_all(server, buf, n)) break;
  }
  // The server reads everything sent before this end (the COMMIT is processed), then EOF.
  ::shutdown(server, SHUT_WR);
  back.join();
}

}  // namespace iarelay::testing
