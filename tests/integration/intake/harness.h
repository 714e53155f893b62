// A relay assembled in-process for intake tests: a real Writer on a journal in a temp dir, an
// AgentDirectory, Metrics, and optionally the Server on 127.0.0.1 (ephemeral port) and a Poller.
// Torn down in reverse order (poller, commit listener, server, writer).
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "common/metrics.h"
#include "intake/poller.h"
#include "intake/server.h"
#include "journal/routing.h"
#include "journal/writer.h"

namespace iarelay::testing {

inline AgentConfig make_agent(const std::string& id, std::vector<std::string> services) {
  AgentConfig a;
  a.handle = id;
  a.id = id;
  a.callback = "http://127.0.0.1:1/apia_callback";
  a.services = std::move(services);
  return a;
}

// Without agents it is an edge (role = edge): webhooks are stored for the feed.
class InProcessRelay {
 public:
  InProcessRelay(std::string journal, std::vector<AgentConfig> agents = {},
                 std::vector<ServiceConfig> services = {}, SyncLevel sync = SyncLevel::kNormal)
      : journal_(std::move(journal)),
        directory_(std::make_unique<AgentDirectory>(
            agents, std::move(services), agents.empty() ? Role::kEdge : Role::kDeliver)) {
    auto w = Writer::open(journal_, sync);
    EXPECT_TRUE(w.is_ok()) << w.status().message();
    if (w) writer_ = std::move(*w);
    writer_->set_commit_listener([this](bool) {
      std::lock_guard lock(server_mu_);
      if (server_) server_->notify_committed();
    });
  }

  ~InProcessRelay() {
    if (poller_) poller_->stop();
    poller_.reset();
    stop_server();
    writer_->set_commit_listener(nullptr);
    writer_.reset();
  }

  // Starts the listener (port 0: ephemeral). Returns the port.
  int start_server(int port = 0, std::string token = "", std::int64_t max_body = 1 << 20,
                   std::string tls_cert = "", std::string tls_key = "",
                   int max_connections = 1024) {
    ServerContext ctx;
    ctx.writer = writer_.get();
    ctx.directory = directory_.get();
    ctx.metrics = &metrics_;
    ctx.journal_path = journal_;
    ctx.listen.address = "127.0.0.1:" + std::to_string(port);
    ctx.listen.max_body = max_body;
    ctx.listen.max_connections = max_connections;
    ctx.listen.tls_cert = std::move(tls_cert);
    ctx.listen.tls_key = std::move(tls_key);
    if (!token.empty()) ctx.credentials.tokens = {std::move(token)};
    ctx.status_json = [] { return std::string(R"({"status":"from-context"})"); };
    ctx.ready = [this] { return writer_->healthy(); };
    auto s = Server::start(std::move(ctx));
    EXPECT_TRUE(s.is_ok()) << s.status().message();
    if (!s) return -1;
    std::lock_guard lock(server_mu_);
    server_ = std::move(*s);
    return server_->port();
  }

  // Replaces the running listener's credentials, as a reload does.
  void set_credentials(const ListenCredentials& credentials) {
    std::lock_guard lock(server_mu_);
    server_->set_credentials(credentials);
  }

  void stop_server() {
    std::unique_ptr<Server> server;
    {
      std::lock_guard lock(server_mu_);
      server = std::move(server_);
    }
    if (server) server->stop();
  }

  void start_poller(UpstreamConfig upstream, std::string token = "",
                    size_t max_response_bytes = 512u << 20) {
    PollerContext ctx;
    ctx.writer = writer_.get();
    ctx.directory = directory_.get();
    ctx.metrics = &metrics_;
    ctx.journal_path = journal_;
    ctx.upstream = std::move(upstream);
    ctx.token = std::move(token);
    ctx.max_response_bytes = max_response_bytes;
    auto p = Poller::start(std::move(ctx));
    ASSERT_TRUE(p.is_ok()) << p.status().message();
    poller_ = std::move(*p);
  }

  Writer& writer() { return *writer_; }
  AgentDirectory& directory() { return *directory_; }
  Metrics& metrics() { return metrics_; }
  Poller* poller() { return poller_.get(); }
  const std::string& journal() const { return journal_; }

  // A fresh read connection (the caller owns it).
  std::unique_ptr<SQLite::Database> reader() const {
    return std::make_unique<SQLite::Database>(journal_, SQLite::OPEN_READONLY);
  }
  std::int64_t count(const std::string& where = "1=1") const {
    return reader()->execAndGet("SELECT count(*) FROM webhooks WHERE " + where).getInt64();
  }

 private:
  std::string journal_;
  std::unique_ptr<AgentDirectory> directory_;
  Metrics metrics_;
  std::unique_ptr<Writer> writer_;
  std::mutex server_mu_;
  std::unique_ptr<Server> server_;  // GUARDED_BY(server_mu_)
  std::unique_ptr<Poller> poller_;
};

// Polls `pred` every 20 ms until it holds or `timeout` passes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// The value of one metric line ("name{labels}") in a Prometheus text rendering, 0 if absent.
inline double metric_value(const std::string& text, const std::string& series) {
  auto pos = text.find("\n" + series + " ");
  if (pos == std::string::npos) return 0;
  return std::stod(text.substr(pos + series.size() + 2));
}

}  // namespace iarelay::testing
