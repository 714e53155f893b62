// iarelayd as a process and its agents' configuration: secrets that cannot be read are
// configuration errors at start, at --check and at a reload (which keeps the running
// configuration); handles sharing a secret variable; a reload that stops signing warns; agent
// callbacks go direct whatever the *_proxy variables say, or through the agent's own `proxy`.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using namespace std::chrono_literals;

// The line of the file at `path` that contains `needle`, once there is one ("" on timeout).
std::string wait_for_line(const std::string& path, const std::string& needle,
                          std::chrono::milliseconds timeout = 10s) {
  std::string found;
  wait_until(
      [&] {
        std::istringstream lines(read_file(path));
        std::string line;
        while (std::getline(lines, line))
          if (line.find(needle) != std::string::npos) {
            found = line;
            return true;
          }
        return false;
      },
      timeout);
  return found;
}

std::string state_of(const std::string& journal, const std::string& id) {
  try {
    SQLite::Database db(journal);
    SQLite::Statement q(db, "SELECT state FROM webhooks WHERE id=?");
    q.bind(1, id);
    return q.executeStep() ? q.getColumn(0).getString() : "<none>";
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string id_from(const std::string& body) {
  size_t at = body.find("\"id\":\"");
  return at == std::string::npos ? "" : body.substr(at + 6, body.find('"', at + 6) - at - 6);
}

std::vector<nlohmann::json> records(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// An iarelay-sink on loopback recording to dir/<name>.jsonl, verifying with `secret_file`.
class Sink {
 public:
  Sink(const TempDir& dir, const std::string& name, const std::string& secret_file = "")
      : port_(free_port()), record_(dir.file(name + ".jsonl")) {
    std::vector<std::string> argv = {
        bin("iarelay-sink"), "--listen=127.0.0.1:" + std::to_string(port_), "--record=" + record_};
    if (!secret_file.empty()) argv.push_back("--secret-file=" + secret_file);
    process_ = std::make_unique<Process>(argv, dir.file(name + ".out"), dir.file(name + ".err"));
    EXPECT_TRUE(wait_for_port(port_));
  }
  ~Sink() {
    process_->signal(SIGTERM);
    process_->wait();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/apia_callback"; }
  std::vector<nlohmann::json> received() const { return records(record_); }

 private:
  int port_;
  std::string record_;
  std::unique_ptr<Process> process_;
};

// A stand-in HTTP proxy on loopback: records the request line of every request it gets (a
// proxied request names the whole target URL) and answers 204 itself.
class ProxyRecorder {
 public:
  ProxyRecorder() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~ProxyRecorder() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> request_lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) continue;
      timeval tv{2, 0};
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string in;
      char buf[4096];
      size_t head_end = std::string::npos;
      while (head_end == std::string::npos) {
        ssize_t n = ::recv(conn, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        head_end = in.find("\r\n\r\n");
      }
      if (head_end != std::string::npos) {
        {
          std::lock_guard lock(mu_);
          lines_.push_back(in.substr(0, in.find("\r\n")));
        }
        // Read the body (Content-Length) so that the client sees a clean exchange.
        std::string head = in.substr(0, head_end);
        for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        size_t cl = head.find("content-length:");
        size_t want = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15));
        while (in.size() - head_end - 4 < want) {
          ssize_t n = ::recv(conn, buf, sizeof buf, 0);
          if (n <= 0) break;
          in.append(buf, static_cast<size_t>(n));
        }
        const std::string answer =
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        ::send(conn, answer.data(), answer.size(), MSG_NOSIGNAL);
      }
      ::close(conn);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> lines_;  // GUARDED_BY(mu_)
};

std::string base_config(const TempDir& dir, int port) {
  return "journal = " + dir.file("journal.db") +
         "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) + "\n";
}

std::string agent_section(const std::string& handle, const std::string& callback,
                          const std::string& extra = "") {
  return "[agent." + handle + "]\ncallback = " + callback + "\nservices = svc\n" + extra;
}

// Posts one webhook for `svc`; returns its id.
std::string post(int port, const std::string& event) {
  httplib::Client client("127.0.0.1", port);
  auto res =
      client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":)" + event + "}",
                  "application/json");
  EXPECT_TRUE(res);
  if (!res) return "";
  EXPECT_EQ(res->status, 202) << res->body;
  return id_from(res->body);
}

// Runs iarelayd on dir/relay.conf with `args`; it must exit within 10 s (a daemon that started
// instead is stopped and reported as such).
CommandResult run_relayd(const TempDir& dir, std::vector<std::string> args = {}) {
  std::vector<std::string> argv{bin("iarelayd"), "--config", dir.file("relay.conf")};
  argv.insert(argv.end(), args.begin(), args.end());
  std::remove(dir.file("relayd.out").c_str());
  std::remove(dir.file("relayd.err").c_str());
  Process p(argv, dir.file("relayd.out"), dir.file("relayd.err"));
  CommandResult r;
  r.exit_code = p.wait(10s);
  if (r.exit_code == -1) {
    p.signal(SIGKILL);
    p.wait();
  }
  r.out = read_file(dir.file("relayd.out"));
  r.err = read_file(dir.file("relayd.err"));
  return r;
}

// An agent whose secret_file cannot be read would be held forever (and still be chosen by
// routing and failover): the daemon refuses to start, naming the agent, the file and the
// variable that could have served instead.
TEST(AgentSecret, UnreadableOrEmptySecretRefusesTheStart) {
  TempDir dir;
  write_file(
      dir.file("relay.conf"),
      base_config(dir, free_port()) + agent_section("a1", "http://127.0.0.1:1/cb",
                                                    "secret_file = " + dir.file("absent") + "\n"));
  CommandResult r = run_relayd(dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("[agent.a1]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir.file("absent")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("IARELAY_AGENT_A1_SECRET"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  write_file(dir.file("empty.secret"), "\n");
  write_file(dir.file("relay.conf"),
             base_config(dir, free_port()) +
                 agent_section("a1", "http://127.0.0.1:1/cb",
                               "secret_file = " + dir.file("empty.secret") + "\n"));
  r = run_relayd(dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(dir.file("empty.secret")), std::string::npos) << r.err;
}

TEST(AgentSecret, CheckReportsAnUnreadableSecret) {
  TempDir dir;
  write_file(
      dir.file("relay.conf"),
      base_config(dir, free_port()) + agent_section("a1", "http://127.0.0.1:1/cb",
                                                    "secret_file = " + dir.file("absent") + "\n"));
  CommandResult r = run_relayd(dir, {"--check"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("[agent.a1]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir.file("absent")), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("configuration ok"), std::string::npos) << r.out;
  // Readable: --check passes.
  write_file(dir.file("secret"), "s3cret\n");
  write_file(
      dir.file("relay.conf"),
      base_config(dir, free_port()) + agent_section("a1", "http://127.0.0.1:1/cb",
                                                    "secret_file = " + dir.file("secret") + "\n"));
  r = run_relayd(dir, {"--check"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// [agent.nnmi-1] and [agent.nnmi_1] would both read IARELAY_AGENT_NNMI_1_SECRET.
TEST(AgentSecret, HandlesSharingASecretVariableAreAConfigurationError) {
  TempDir dir;
  write_file(dir.file("relay.conf"), base_config(dir, free_port()) +
                                         agent_section("nnmi-1", "http://127.0.0.1:1/cb") +
                                         agent_section("nnmi_1", "http://127.0.0.1:2/cb"));
  CommandResult r = run_relayd(dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("IARELAY_AGENT_NNMI_1_SECRET"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir.file("relay.conf") + ":"), std::string::npos) << r.err;
  r = run_relayd(dir, {"--check"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

// A reload whose agent secret cannot be read is refused as a whole: the log says why (an
// error naming the agent and the file) and the agent goes on signing with the secret it had.
TEST(AgentSecret, ReloadLosingASecretIsRefusedAndTheOldSecretStillSigns) {
  TempDir dir;
  write_file(dir.file("secret"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
  Sink sink(dir, "sink", dir.file("secret"));
  int port = free_port();
  write_file(dir.file("relay.conf"),
             base_config(dir, port) +
                 agent_section("a1", sink.url(), "secret_file = " + dir.file("secret") + "\n"));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  std::string first = post(port, "1");
  ASSERT_TRUE(wait_until([&] { return sink.received().size() == 1; }, 10s));
  EXPECT_EQ(sink.received()[0]["signature"], "valid");

  // The new file points at a secret that is not there (and adds a service, which must not
  // take effect either).
  write_file(dir.file("relay.conf"),
             base_config(dir, port) +
                 agent_section("a1", sink.url(), "secret_file = " + dir.file("absent") + "\n") +
                 "[service.other]\nunrouted = hold\n");
  relay.signal(SIGHUP);
  std::string line = wait_for_line(dir.file("relay.log"), "reload failed");
  ASSERT_NE(line, "") << read_file(dir.file("relay.log"));
  EXPECT_NE(line.find(" error "), std::string::npos) << line;
  EXPECT_NE(line.find("[agent.a1]"), std::string::npos) << line;
  EXPECT_NE(line.find(dir.file("absent")), std::string::npos) << line;
  EXPECT_EQ(read_file(dir.file("relay.log")).find("reloaded"), std::string::npos);

  std::string second = post(port, "2");
  ASSERT_TRUE(wait_until([&] { return sink.received().size() == 2; }, 10s))
      << read_file(dir.file("relay.log"));
  EXPECT_EQ(sink.received()[1]["webhook_id"], second);
  EXPECT_EQ(sink.received()[1]["signature"], "valid");
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

// Dropping secret_file from an agent that signed is allowed, but not silently.
TEST(AgentSecret, ReloadThatTurnsSigningOffWarns) {
  TempDir dir;
  write_file(dir.file("secret"), "s3cret\n");
  Sink sink(dir, "sink", dir.file("secret"));
  int port = free_port();
  write_file(dir.file("relay.conf"),
             base_config(dir, port) +
                 agent_section("a1", sink.url(), "secret_file = " + dir.file("secret") + "\n"));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  write_file(dir.file("relay.conf"), base_config(dir, port) + agent_section("a1", sink.url()));
  relay.signal(SIGHUP);
  ASSERT_NE(wait_for_line(dir.file("relay.log"), "reloaded"), "")
      << read_file(dir.file("relay.log"));
  std::string line = wait_for_line(dir.file("relay.log"), "no longer signs", 1s);
  ASSERT_NE(line, "") << read_file(dir.file("relay.log"));
  EXPECT_NE(line.find(" warning "), std::string::npos) << line;
  EXPECT_NE(line.find("a1"), std::string::npos) << line;
  std::string id = post(port, "3");
  ASSERT_TRUE(wait_until([&] { return sink.received().size() == 1; }, 10s));
  EXPECT_EQ(sink.received()[0]["signature"], "unsigned");
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

// http_proxy / all_proxy are documented for the upstream poller; libcurl would apply them to
// agent callbacks (and their payloads) too. Callbacks go direct.
TEST(AgentProxy, CallbacksIgnoreTheProxyEnvironmentVariables) {
  TempDir dir;
  ProxyRecorder proxy;
  Sink sink(dir, "sink");
  int port = free_port();
  write_file(dir.file("relay.conf"), base_config(dir, port) + agent_section("a1", sink.url()));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"),
                {{"http_proxy", proxy.url()},
                 {"https_proxy", proxy.url()},
                 {"all_proxy", proxy.url()},
                 {"HTTPS_PROXY", proxy.url()},
                 {"ALL_PROXY", proxy.url()},
                 {"no_proxy", ""},
                 {"NO_PROXY", ""}});
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  std::string id = post(port, "4");
  ASSERT_TRUE(wait_until([&] { return state_of(dir.file("journal.db"), id) == "delivered"; }, 10s))
      << read_file(dir.file("relay.log"));
  EXPECT_EQ(sink.received().size(), 1u);
  auto lines = proxy.request_lines();
  EXPECT_EQ(lines.size(), 0u) << "the callback went through the proxy: "
                              << (lines.empty() ? "" : lines[0]);
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

// An agent's own `proxy` routes its callbacks through that proxy, even for a host no_proxy
// names (the key is explicit).
TEST(AgentProxy, TheAgentsProxyKeyRoutesItsCallbacksThroughIt) {
  TempDir dir;
  ProxyRecorder proxy;
  Sink sink(dir, "sink");
  int port = free_port();
  write_file(
      dir.file("relay.conf"),
      base_config(dir, port) + agent_section("a1", sink.url(), "proxy = " + proxy.url() + "\n"));
  Process relay({bin("iarelayd"), "--config", dir.file("relay.conf")}, "", dir.file("relay.log"),
                {{"no_proxy", "127.0.0.1,localhost"}, {"NO_PROXY", "127.0.0.1,localhost"}});
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  std::string id = post(port, "5");
  ASSERT_TRUE(wait_until([&] { return state_of(dir.file("journal.db"), id) == "delivered"; }, 10s))
      << read_file(dir.file("relay.log"));
  auto lines = proxy.request_lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "POST " + sink.url() + " HTTP/1.1");
  EXPECT_EQ(sink.received().size(), 0u);
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

}  // namespace
}  // namespace iarelay::testing
