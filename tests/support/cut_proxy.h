// A TCP proxy on loopback that can lose a PostgreSQL COMMIT's answer (issue 15's review risk:
// a COMMIT whose connection drops may have taken effect although its caller is told it failed).
// Armed, the next client message holding "COMMIT" is passed to the server, whose answer is then
// read and dropped, and the client's connection is closed: the server committed, the client
// sees the connection lost. Each accepted connection is proxied on threads of its own.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace iarelay::testing {

class CutProxy {
 public:
  // Listens on 127.0.0.1 (an ephemeral port) and forwards to 127.0.0.1:target_port.
  explicit CutProxy(int target_port);
  ~CutProxy();
  CutProxy(const CutProxy&) = delete;
  CutProxy& operator=(const CutProxy&) = delete;

  int port() const { return port_; }
  // The next COMMIT on any connection lands on the server and its answer is lost.
  void arm() { armed_ = true; }
  // COMMITs whose answers were lost so far.
  int cuts() const { return cuts_; }

 private:
  void accept_loop();
  void pump(int client, int server);

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> armed_{false};
  std::atomic<int> cuts_{0};
  std::mutex mu_;
  std::vector<int> fds_;              // GUARDED_BY(mu_): closed at destruction
  std::vector<std::thread> threads_;  // GUARDED_BY(mu_)
  std::thread acceptor_;
};

}  // namespace iarelay::testing
