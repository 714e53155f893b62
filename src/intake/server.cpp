// The routes of iarelayd's listener: the token check (auth.h), intake admission and durable commit,
// the long-polling feed over pooled read connections, admin endpoints and JSON errors. The
// transport is http_listener.h (one event-loop thread). A webhook is answered from the writer's
// commit callback, without a thread waiting for it; requests that block (the feed's long-poll,
// journal reads for /metrics and /v1/status) run on a small pool of worker threads.
#include "intake/server.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/metrics.h"
#include "intake/admission.h"
#include "intake/feed.h"
#include "intake/http_listener.h"
#include "journal/journal.h"
#include "journal/journal_writer.h"
#include "journal/routing.h"
#include "journal/store.h"

namespace iarelay {
namespace {

using nlohmann::json;

// Worker threads for requests that block; more start when all are busy (a long-poll holds
// one for up to kMaxFeedWaitSeconds), up to this many, and stay until the server stops.
constexpr size_t kMaxWorkers = 64;
// Requests still unanswered when the listener stops get this long to be answered.
constexpr int kStopGraceSeconds = 10;
constexpr std::int64_t kMaxFeedWaitSeconds = 60;
// A waiting feed request reads again this often (another relay's commits wake nothing here).
constexpr auto kFeedRecheck = std::chrono::milliseconds(250);
constexpr std::int64_t kMaxFeedBatch = 5000;
constexpr std::int64_t kDefaultFeedBatch = 500;
// One feed answer's size (bytes of body; one message larger than this still goes out alone).
constexpr std::int64_t kDefaultFeedBytes = 4 << 20;
constexpr std::int64_t kMaxFeedBytes = 64 << 20;
constexpr size_t kIdleReaders = 4;
constexpr int kIdleConnectionSeconds = 5;
// The metric label of services not in the configuration.
constexpr std::string_view kOtherService = "other";

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, json{{"error", message}});
}

HttpResponse retry_later(const std::string& message) {
  HttpResponse r = error_response(503, message);
  r.headers.emplace_back("Retry-After", "1");
  return r;
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

// Threads for blocking requests: one is started whenever a task arrives and none is idle.
class WorkerPool {
 public:
  ~WorkerPool() { stop(); }
  void run(std::function<void()> task) {
    std::lock_guard lock(mu_);
    tasks_.push_back(std::move(task));
    if (idle_ == 0 && threads_.size() < kMaxWorkers && !stopping_)
      threads_.emplace_back([this] { work(); });
    else
      cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

 private:
  // Runs tasks until stop(); what was queued before stop() still runs.
  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      --idle_;
      if (tasks_.empty()) return;  // stopping
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;         // GUARDED_BY(mu_)
  size_t idle_ = 0;                          // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
};

// Read connections for the feed, reused across requests (each is used by one thread at a time).
using ReaderPtr = std::unique_ptr<JournalBackend>;
class ReaderPool {
 public:
  explicit ReaderPool(std::function<Result<ReaderPtr>()> open) : open_(std::move(open)) {}
  Result<ReaderPtr> take() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        ReaderPtr db = std::move(idle_.back());
        idle_.pop_back();
        return db;
      }
    }
    return open_();
  }
  void give(ReaderPtr db) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kIdleReaders) idle_.push_back(std::move(db));
  }

 private:
  const std::function<Result<ReaderPtr>()> open_;
  std::mutex mu_;
  std::vector<ReaderPtr> idle_;  // GUARDED_BY(mu_)
};

class HttpServer final : public Server {
 public:
  explicit HttpServer(ServerContext ctx)
      : ctx_(std::move(ctx)),
        readers_(ctx_.open_reader
                     ? ctx_.open_reader
                     : [path = ctx_.journal_path] {
                       return open_sqlite_reader(path, /*cache_statements=*/false);
                     }),
        auth_(std::make_shared<const Authenticator>(ctx_.credentials)) {
    ctx_.credentials = {};  // kept only as digests, in auth_
  }
  ~HttpServer() override { stop(); }

  Status start() {
    auto address = split_address(ctx_.listen.address);
    if (!address) return address.status();
    const auto& l = ctx_.listen;
    HttpListenerOptions o;
    o.host = address->first;
    o.port = address->second;
    if (!l.tls_cert.empty() && !l.tls_key.empty()) {
      o.tls_cert = l.tls_cert;
      o.tls_key = l.tls_key;
    }
    o.max_body = static_cast<size_t>(l.max_body);
    o.body_too_large = body_too_large_message(l.max_body);
    o.idle_seconds = kIdleConnectionSeconds;
    o.max_connections = static_cast<size_t>(l.max_connections);
    // The token is checked on the head, so a 401 never waits for (or reads) the body.
    o.check_head = [this](const HttpRequest& head) -> std::optional<HttpResponse> {
      if (!needs_token(head.method, head.path)) return std::nullopt;
      return unauthorized(head);
    };
    o.on_refused = [this](const std::string& path, int status) { count_status(path, status); };
    auto listener = HttpListener::start(
        std::move(o), [this](HttpRequest req, HttpReply reply) { route(std::move(req), reply); });
    if (!listener) return listener.status();
    listener_ = std::move(*listener);
    return Status::ok();
  }

  void stop() override {
    {
      std::lock_guard lock(feed_mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    feed_cv_.notify_all();
    if (listener_) listener_->stop(kStopGraceSeconds);
    workers_.stop();
  }

  int port() const override { return listener_ ? listener_->port() : 0; }

  void set_credentials(const ListenCredentials& credentials) override {
    auto fresh = std::make_shared<const Authenticator>(credentials);
    std::lock_guard lock(auth_mu_);
    auth_ = std::move(fresh);
  }

  void notify_committed() override {
    {
      std::lock_guard lock(feed_mu_);
      ++generation_;
    }
    feed_cv_.notify_all();
  }

 private:
  void route(HttpRequest req, const HttpReply& reply) {
    try {
      // Checked on the head already; again here (credentials may have been reloaded since) and
      // then the token parameter is dropped, so no handler can store, log or echo it.
      if (needs_token(req.method, req.path))
        if (auto denied = unauthorized(req)) return reply(count(req, std::move(*denied)));
      strip_token_param(req);
      const std::string& path = req.path;
      const std::string& m = req.method;
      if (path.rfind("/v1/webhooks/", 0) == 0) {
        if (m != "POST") return reply(not_allowed(req, "POST"));
        return handle_webhook(std::move(req), reply);
      }
      if (path == "/v1/feed/ack") {
        if (m != "POST") return reply(not_allowed(req, "POST"));
        return handle_ack(req, reply);
      }
      if (path == "/healthz") {
        if (m != "GET") return reply(not_allowed(req, "GET"));
        return reply(json_response(200, json{{"status", "ok"}}));
      }
      if (path == "/readyz") {
        if (m != "GET") return reply(not_allowed(req, "GET"));
        bool ready = ctx_.ready ? ctx_.ready() : (ctx_.writer && ctx_.writer->healthy());
        return reply(ready ? json_response(200, json{{"status", "ready"}})
                           : error_response(503, "journal not writable or not migrated"));
      }
      if (path == "/v1/feed" || path == "/metrics" || path == "/v1/status") {
        if (m != "GET") return reply(not_allowed(req, "GET"));
        // These read the journal (and the feed may wait for news): not on the event loop.
        return workers_.run([this, req = std::move(req), reply] {
          try {
            reply(blocking_get(req));
          } catch (const std::exception& e) {
            reply(internal_error(req, e));
          }
        });
      }
      if (path == "/v1/webhooks" && m == "POST")
        return reply(count(req, error_response(400, "the service name in the path is empty")));
      reply(count(req, error_response(404, "no such endpoint: " + m + " " + path)));
    } catch (const std::exception& e) {
      reply(internal_error(req, e));
    }
  }

  // Behind route()'s token check.
  HttpResponse blocking_get(const HttpRequest& req) {
    if (req.path == "/v1/feed") return handle_feed(req);
    if (req.path == "/metrics") {
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = ctx_.metrics ? ctx_.metrics->render() : std::string();
      return r;
    }
    if (!ctx_.status_json) return error_response(503, "status is not available");
    HttpResponse r;
    r.body = ctx_.status_json();
    return r;
  }

  HttpResponse not_allowed(const HttpRequest& req, const char* allowed) {
    HttpResponse r = error_response(
        405, req.method + " is not allowed on " + req.path + " (use " + allowed + ")");
    r.headers.emplace_back("Allow", allowed);
    return count(req, std::move(r));
  }

  HttpResponse internal_error(const HttpRequest& req, const std::exception& e) {
    spdlog::error("{} {}: handler failed: {}", req.method, req.path, e.what());
    return count(req, error_response(500, std::string("internal error: ") + e.what()));
  }

  // Senders choose service names: only configured ones get their own series, so /metrics stays
  // bounded whatever they send.
  std::string service_label(const std::string& service) const {
    return ctx_.directory->knows_service(service) ? service : std::string(kOtherService);
  }

  // Intake requests by status, counted before the answer is sent (so a client that got its
  // answer sees it counted).
  HttpResponse count(const HttpRequest& req, HttpResponse r) {
    count_status(req.path, r.status);
    return r;
  }
  void count_status(const std::string& path, int status) {
    if (ctx_.metrics && path.rfind("/v1/webhooks", 0) == 0)
      ctx_.metrics
          ->counter("iarelay_intake_requests_total", "Intake requests by HTTP status",
                    {{"code", std::to_string(status)}})
          .inc();
  }

  // Requests route() would serve behind the token (a wrong method still gets its 405).
  static bool needs_token(const std::string& method, const std::string& path) {
    if (method == "POST") return path.rfind("/v1/webhooks/", 0) == 0 || path == "/v1/feed/ack";
    return method == "GET" && (path == "/v1/feed" || path == "/v1/status");
  }

  // A 401 response unless the request carries a listen token (auth.h), saying what is accepted.
  std::optional<HttpResponse> unauthorized(const HttpRequest& req) {
    std::shared_ptr<const Authenticator> auth;
    {
      std::lock_guard lock(auth_mu_);
      auth = auth_;
    }
    auto why = auth->refusal(req);
    if (!why) return std::nullopt;
    HttpResponse r = error_response(401, *why);
    r.headers.emplace_back("WWW-Authenticate", std::string(kWwwAuthenticate));
    return r;
  }

  // Behind route()'s token check.
  void handle_webhook(HttpRequest req, const HttpReply& reply) {
    IntakeRequest in;
    in.service = req.path.substr(std::string_view("/v1/webhooks/").size());
    in.agent = std::string(req.param("agent").value_or(""));
    in.type = std::string(req.param("type").value_or(""));
    in.idempotency_key = std::string(req.header("Idempotency-Key").value_or(""));
    in.body = std::move(req.body);
    auto admitted = admit_direct(std::move(in), *ctx_.directory, now_millis());
    if (!admitted) return reply(count(req, error_response(400, admitted.status().message())));

    auto webhook = std::make_shared<NewWebhook>(std::move(*admitted));
    // Answered from the writer (after the commit is durable), not from a waiting thread.
    ctx_.writer->submit_insert(*webhook, [this, webhook, reply](const Status& s,
                                                                const InsertOutcome& outcome) {
      if (!s) {
        spdlog::warn("webhook for {} not stored: {}", webhook->service, s.message());
        count_status("/v1/webhooks", 503);
        return reply(retry_later("journal not writable: " + s.message()));
      }
      if (!outcome.duplicate) unconfigured_.note(*webhook, *ctx_.directory);
      std::string state = outcome.duplicate ? "duplicate" : std::string(to_string(outcome.state));
      if (ctx_.metrics)
        ctx_.metrics
            ->counter("iarelay_intake_webhooks_total",
                      "Webhooks taken in, by service (\"other\": not configured) and state",
                      {{"service", service_label(webhook->service)}, {"state", state}})
            .inc();
      count_status("/v1/webhooks", 202);
      reply(json_response(202, json{{"id", outcome.id},
                                    {"state", std::string(to_string(outcome.state))},
                                    {"duplicate", outcome.duplicate}}));
    });
  }

  HttpResponse handle_feed(const HttpRequest& req) {
    std::int64_t after = 0, max = kDefaultFeedBatch, wait = 0, max_bytes = kDefaultFeedBytes;
    for (auto [name, target, low] :
         {std::tuple{"after", &after, std::int64_t{0}}, std::tuple{"max", &max, std::int64_t{1}},
          std::tuple{"wait", &wait, std::int64_t{0}},
          std::tuple{"max_bytes", &max_bytes, std::int64_t{1}}}) {
      auto value = req.param(name);
      if (!value) continue;
      auto v = parse_int(std::string(*value));
      if (!v || *v < low)
        return error_response(400, std::string("query parameter '") + name +
                                       "' must be an integer >= " + std::to_string(low));
      *target = *v;
    }
    max = std::min(max, kMaxFeedBatch);
    wait = std::min(wait, kMaxFeedWaitSeconds);
    max_bytes = std::min(max_bytes, kMaxFeedBytes);
    auto reader = readers_.take();
    if (!reader) return error_response(503, "journal not readable: " + reader.status().message());
    // Return the connection to the pool however this handler ends.
    struct Lease {
      ReaderPool& pool;
      ReaderPtr db;
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
      Status read = lease.db->read([&](JournalTx& tx) {
        messages =
            tx.feed_after_bounded(after, static_cast<int>(max), static_cast<size_t>(max_bytes));
      });
      if (!read) return retry_later("journal not readable: " + read.message());
      if (!messages.empty()) break;
      // Woken by this relay's commits; another relay's (a shared PostgreSQL journal) are
      // seen by reading again every kFeedRecheck.
      std::unique_lock lock(feed_mu_);
      auto until = std::min(deadline, std::chrono::steady_clock::now() + kFeedRecheck);
      bool woke = feed_cv_.wait_until(lock, until, [&] { return stopped_ || generation_ != seen; });
      if (stopped_ || (!woke && until == deadline)) break;
    }
    // Read after the messages, so it is at least the last one's seq.
    std::int64_t newest = 0;
    Status read = lease.db->read([&](JournalTx& tx) { newest = tx.newest_seq(); });
    if (!read) return retry_later("journal not readable: " + read.message());
    // A reader sees a commit before its fsync (sync=full pipelines it): serve nothing a crash
    // could still take back, or a consumer would skip the seq numbers reused after it.
    if (!messages.empty()) {
      if (Status s = ctx_.writer->wait_durable(); !s)
        return retry_later("journal not writable: " + s.message());
    }
    HttpResponse r;
    r.body = render_feed(messages, after, newest, static_cast<size_t>(max_bytes));
    return r;
  }

  // Behind route()'s token check.
  void handle_ack(const HttpRequest& req, const HttpReply& reply) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return reply(
          error_response(400, "body must be a JSON object {\"consumer\": ..., \"seq\": ...}"));
    auto consumer = body.find("consumer");
    auto seq = body.find("seq");
    if (consumer == body.end() || !consumer->is_string() || consumer->get<std::string>().empty())
      return reply(error_response(400, "\"consumer\" must be a non-empty string"));
    if (seq == body.end() || !seq->is_number_integer() || seq->get<std::int64_t>() < 0)
      return reply(error_response(400, "\"seq\" must be an integer >= 0"));
    std::string name = consumer->get<std::string>();
    std::int64_t acked = seq->get<std::int64_t>();
    ctx_.writer->submit_tx([name, acked](JournalTx& tx) { tx.ack_consumer(name, acked); },
                           [reply](const Status& s) {
                             if (!s)
                               return reply(retry_later("journal not writable: " + s.message()));
                             HttpResponse r;
                             r.status = 204;
                             reply(std::move(r));
                           });
  }

  ServerContext ctx_;
  ReaderPool readers_;
  WorkerPool workers_;
  std::unique_ptr<HttpListener> listener_;
  UnconfiguredAgentLog unconfigured_;
  std::mutex auth_mu_;
  std::shared_ptr<const Authenticator> auth_;  // GUARDED_BY(auth_mu_); replaced, never changed

  std::mutex feed_mu_;
  std::condition_variable feed_cv_;
  std::uint64_t generation_ = 0;  // GUARDED_BY(feed_mu_): commits seen so far
  bool stopped_ = false;          // GUARDED_BY(feed_mu_)
};

}  // namespace

std::string body_too_large_message(std::int64_t max_body) {
  // As the key would be written (parse_size's units), and as a reader would say it.
  std::string key = std::to_string(max_body), human = key + " bytes";
  for (auto [shift, unit] : {std::pair{30, "GiB"}, std::pair{20, "MiB"}, std::pair{10, "KiB"}})
    if (max_body > 0 && max_body % (std::int64_t{1} << shift) == 0) {
      key = std::to_string(max_body >> shift) + unit;
      human = std::to_string(max_body >> shift) + " " + unit;
      break;
    }
  return "body is larger than " + human + " ([listen] max_body = " + key + ")";
}

Result<std::unique_ptr<Server>> Server::start(ServerContext ctx) {
  if (!ctx.writer || !ctx.directory)
    return Status::invalid_argument("server needs a writer and an agent directory");
  auto server = std::make_unique<HttpServer>(std::move(ctx));
  if (Status s = server->start(); !s) return s;
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace iarelay
