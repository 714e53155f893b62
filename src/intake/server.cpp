// The cpp-httplib listener: routes, bearer-token check, intake admission and durable commit,
// the long-polling feed over pooled read connections, admin endpoints and JSON errors.
#include "intake/server.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/metrics.h"
#include "intake/admission.h"
#include "intake/feed.h"
#include "journal/journal.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay {
namespace {

using nlohmann::json;

// One worker per open connection (cpp-httplib serves a keep-alive connection on one thread):
// enough for 64+ senders with keep-alive plus some long-polling feed consumers.
constexpr size_t kWorkerThreads = 128;
// A sender whose webhook the journal has not confirmed by then gets 503 and retries.
constexpr auto kDurableTimeout = std::chrono::seconds(30);
constexpr std::int64_t kMaxFeedWaitSeconds = 60;
constexpr std::int64_t kMaxFeedBatch = 5000;
constexpr std::int64_t kDefaultFeedBatch = 500;
constexpr size_t kIdleReaders = 4;
constexpr int kListenBacklog = 1024;

const char* const kJson = "application/json";

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, json{{"error", message}});
}

std::string default_error_message(const httplib::Request& req, int status) {
  switch (status) {
    case 400:
      return "malformed HTTP request";
    case 404:
      return "no such endpoint: " + req.method + " " + req.path;
    case 413:
      return "request body is larger than max_body";
    case 414:
      return "request URI is too long";
    default:
      return "HTTP " + std::to_string(status);
  }
}

// Splits "host:port" or "[v6]:port".
Result<std::pair<std::string, int>> split_address(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    return Status::invalid_argument("listen address '" + address + "' has no port");
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  int port = 0;
  std::string_view p = std::string_view(address).substr(colon + 1);
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || ptr != p.data() + p.size() || port < 0 || port > 65535)
    return Status::invalid_argument("listen address '" + address + "' has a bad port");
  return std::make_pair(host, port);
}

std::optional<std::int64_t> parse_int(const std::string& s) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// cpp-httplib 0.11 listens with a backlog of 5: 64 senders connecting at once overflow the
// accept queue and wait for SYN retransmits (seconds). listen() again on the bound socket
// raises the backlog (Linux allows it); svr_sock_ is protected, hence the subclass.
template <typename Base>
class WideBacklog : public Base {
 public:
  using Base::Base;
  void widen_backlog() { ::listen(this->svr_sock_, kListenBacklog); }
};

// Read connections for the feed, reused across requests (each is used by one thread at a time).
class ReaderPool {
 public:
  explicit ReaderPool(std::string path) : path_(std::move(path)) {}
  Result<DatabasePtr> take() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        DatabasePtr db = std::move(idle_.back());
        idle_.pop_back();
        return db;
      }
    }
    return open_journal_for_read(path_);
  }
  void give(DatabasePtr db) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kIdleReaders) idle_.push_back(std::move(db));
  }

 private:
  const std::string path_;
  std::mutex mu_;
  std::vector<DatabasePtr> idle_;  // GUARDED_BY(mu_)
};

class HttpServer final : public Server {
 public:
  explicit HttpServer(ServerContext ctx) : ctx_(std::move(ctx)), readers_(ctx_.journal_path) {}
  ~HttpServer() override { stop(); }

  Status start() {
    auto address = split_address(ctx_.listen.address);
    if (!address) return address.status();
    const auto& l = ctx_.listen;
    if (!l.tls_cert.empty() && !l.tls_key.empty()) {
      auto tls =
          std::make_unique<WideBacklog<httplib::SSLServer>>(l.tls_cert.c_str(), l.tls_key.c_str());
      widen_backlog_ = [s = tls.get()] { s->widen_backlog(); };
      http_ = std::move(tls);
      if (!http_->is_valid())
        return Status::invalid_argument("cannot load TLS certificate " + l.tls_cert + " / key " +
                                        l.tls_key);
    } else {
      auto plain = std::make_unique<WideBacklog<httplib::Server>>();
      widen_backlog_ = [s = plain.get()] { s->widen_backlog(); };
      http_ = std::move(plain);
    }
    http_->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
    http_->set_payload_max_length(static_cast<size_t>(l.max_body));
    http_->set_keep_alive_max_count(1'000'000);
    http_->set_keep_alive_timeout(5);
    http_->set_tcp_nodelay(true);
    install_routes();

    auto [host, port] = *address;
    if (port == 0) {
      port_ = http_->bind_to_any_port(host);
      if (port_ < 0) return Status::unavailable("cannot listen on " + host + ": bind failed");
    } else {
      if (!http_->bind_to_port(host, port))
        return Status::unavailable("cannot listen on " + ctx_.listen.address +
                                   ": bind failed (address in use or not local?)");
      port_ = port;
    }
    widen_backlog_();
    thread_ = std::thread([this] {
      if (!http_->listen_after_bind()) spdlog::error("HTTP listener on port {} stopped", port_);
    });
    // stop() is only effective once the accept loop runs; wait for it.
    for (int i = 0; i < 1000 && !http_->is_running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return Status::ok();
  }

  void stop() override {
    {
      std::lock_guard lock(feed_mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    feed_cv_.notify_all();
    if (http_) http_->stop();
    if (thread_.joinable()) thread_.join();
  }

  int port() const override { return port_; }

  void notify_committed() override {
    {
      std::lock_guard lock(feed_mu_);
      ++generation_;
    }
    feed_cv_.notify_all();
  }

 private:
  void install_routes() {
    http_->Post(
        R"(/v1/webhooks/(.+))",
        [this](const httplib::Request& req, httplib::Response& res) { handle_webhook(req, res); });
    http_->Post("/v1/webhooks/", [this](const httplib::Request&, httplib::Response& res) {
      send_error(res, 400, "the service name in the path is empty");
    });
    http_->Get("/v1/feed", [this](const httplib::Request& req, httplib::Response& res) {
      handle_feed(req, res);
    });
    http_->Post("/v1/feed/ack", [this](const httplib::Request& req, httplib::Response& res) {
      handle_ack(req, res);
    });
    http_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json{{"status", "ok"}});
    });
    http_->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      bool ready = ctx_.ready ? ctx_.ready() : (ctx_.writer && ctx_.writer->healthy());
      if (ready)
        send_json(res, 200, json{{"status", "ready"}});
      else
        send_error(res, 503, "journal not writable or not migrated");
    });
    http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(ctx_.metrics ? ctx_.metrics->render() : std::string(),
                      "text/plain; version=0.0.4");
    });
    http_->Get("/v1/status", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      if (!ctx_.status_json) return send_error(res, 503, "status is not available");
      res.set_content(ctx_.status_json(), kJson);
    });
    http_->set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          count_request(req, res.status);
          // Called for every status >= 400: fill in a JSON error only where no handler wrote one.
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          send_error(res, res.status, default_error_message(req, res.status));
          return httplib::Server::HandlerResponse::Handled;
        }));
    http_->set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
            // `what` keeps its generic text.
          }
          spdlog::error("{} {}: handler failed: {}", req.method, req.path, what);
          send_error(res, 500, "internal error: " + what);
        });
  }

  // Counted before the response is written (so a client that got its answer sees it counted):
  // 2xx in the webhook handler, >= 400 in the error handler, which sees every error response.
  void count_request(const httplib::Request& req, int status) {
    if (ctx_.metrics && req.path.rfind("/v1/webhooks", 0) == 0)
      ctx_.metrics
          ->counter("iarelay_intake_requests_total", "Intake requests by HTTP status",
                    {{"code", std::to_string(status)}})
          .inc();
  }

  // 401 unless the request carries the configured bearer token (compared in constant time).
  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (ctx_.token.empty()) return true;
    const std::string& header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.empty()) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "missing bearer token (Authorization: Bearer <token>)");
      return false;
    }
    bool bearer = header.compare(0, kBearer.size(), kBearer) == 0;
    if (!bearer ||
        !constant_time_equal(std::string_view(header).substr(kBearer.size()), ctx_.token)) {
      res.set_header("WWW-Authenticate", "Bearer error=\"invalid_token\"");
      send_error(res, 401, bearer ? "bad bearer token" : "Authorization is not a bearer token");
      return false;
    }
    return true;
  }

  void handle_webhook(const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    IntakeRequest in;
    in.service = req.matches[1];
    in.agent = req.get_param_value("agent");
    in.type = req.get_param_value("type");
    in.idempotency_key = req.get_header_value("Idempotency-Key");
    in.body = req.body;
    auto admitted = admit_direct(std::move(in), *ctx_.directory, now_millis());
    if (!admitted) return send_error(res, 400, admitted.status().message());

    auto webhook = std::make_shared<NewWebhook>(std::move(*admitted));
    auto outcome = std::make_shared<InsertOutcome>();
    auto done = ctx_.writer->submit(
        [webhook, outcome](SQLite::Database& db) { *outcome = insert_webhook(db, *webhook); });
    if (done.wait_for(kDurableTimeout) != std::future_status::ready) {
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "the journal did not confirm the write in time; retry");
    }
    Status s = done.get();
    if (!s) {
      spdlog::warn("webhook for {} not stored: {}", webhook->service, s.message());
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "journal not writable: " + s.message());
    }
    std::string state = outcome->duplicate ? "duplicate" : std::string(to_string(outcome->state));
    if (ctx_.metrics)
      ctx_.metrics
          ->counter("iarelay_intake_webhooks_total", "Webhooks taken in, by service and state",
                    {{"service", webhook->service}, {"state", state}})
          .inc();
    count_request(req, 202);
    send_json(res, 202,
              json{{"id", outcome->id},
                   {"state", std::string(to_string(outcome->state))},
                   {"duplicate", outcome->duplicate}});
  }

  void handle_feed(const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    std::int64_t after = 0, max = kDefaultFeedBatch, wait = 0;
    for (auto [name, target, low, high] : {std::tuple{"after", &after, std::int64_t{0}, INT64_MAX},
                                           std::tuple{"max", &max, std::int64_t{1}, INT64_MAX},
                                           std::tuple{"wait", &wait, std::int64_t{0}, INT64_MAX}}) {
      if (!req.has_param(name)) continue;
      auto v = parse_int(req.get_param_value(name));
      if (!v || *v < low || *v > high)
        return send_error(res, 400,
                          std::string("query parameter '") + name +
                              "' must be an integer >= " + std::to_string(low));
      *target = *v;
    }
    max = std::min(max, kMaxFeedBatch);
    wait = std::min(wait, kMaxFeedWaitSeconds);
    auto reader = readers_.take();
    if (!reader) return send_error(res, 503, "journal not readable: " + reader.status().message());
    // Return the connection to the pool however this handler ends.
    struct Lease {
      ReaderPool& pool;
      DatabasePtr db;
      ~Lease() { pool.give(std::move(db)); }
    } lease{readers_, std::move(*reader)};

    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
    std::vector<FeedMessage> messages;
    for (;;) {
      std::uint64_t seen;
      {
        std::lock_guard lock(feed_mu_);
        seen = generation_;
      }
      messages = feed_after(*lease.db, after, static_cast<int>(max));
      if (!messages.empty()) break;
      std::unique_lock lock(feed_mu_);
      bool woke =
          feed_cv_.wait_until(lock, deadline, [&] { return stopped_ || generation_ != seen; });
      if (!woke || stopped_) break;
    }
    // A reader sees a commit before its fsync (sync=full pipelines it): serve nothing a crash
    // could still take back, or a consumer would skip the seq numbers reused after it.
    if (!messages.empty()) {
      if (Status s = ctx_.writer->wait_durable(); !s) {
        res.set_header("Retry-After", "1");
        return send_error(res, 503, "journal not writable: " + s.message());
      }
    }
    res.set_content(render_feed(messages, after), kJson);
  }

  void handle_ack(const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return send_error(res, 400, "body must be a JSON object {\"consumer\": ..., \"seq\": ...}");
    auto consumer = body.find("consumer");
    auto seq = body.find("seq");
    if (consumer == body.end() || !consumer->is_string() || consumer->get<std::string>().empty())
      return send_error(res, 400, "\"consumer\" must be a non-empty string");
    if (seq == body.end() || !seq->is_number_integer() || seq->get<std::int64_t>() < 0)
      return send_error(res, 400, "\"seq\" must be an integer >= 0");
    std::string name = consumer->get<std::string>();
    std::int64_t acked = seq->get<std::int64_t>();
    auto done =
        ctx_.writer->submit([name, acked](SQLite::Database& db) { ack_consumer(db, name, acked); });
    if (done.wait_for(kDurableTimeout) != std::future_status::ready) {
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "the journal did not confirm the write in time; retry");
    }
    if (Status s = done.get(); !s) {
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "journal not writable: " + s.message());
    }
    res.status = 204;
  }

  ServerContext ctx_;
  ReaderPool readers_;
  std::unique_ptr<httplib::Server> http_;
  std::function<void()> widen_backlog_;
  std::thread thread_;
  int port_ = 0;

  std::mutex feed_mu_;
  std::condition_variable feed_cv_;
  std::uint64_t generation_ = 0;  // GUARDED_BY(feed_mu_): commits seen so far
  bool stopped_ = false;          // GUARDED_BY(feed_mu_)
};

}  // namespace

Result<std::unique_ptr<Server>> Server::start(ServerContext ctx) {
  if (!ctx.writer || !ctx.directory)
    return Status::invalid_argument("server needs a writer and an agent directory");
  auto server = std::make_unique<HttpServer>(std::move(ctx));
  if (Status s = server->start(); !s) return s;
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace iarelay
