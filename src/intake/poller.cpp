// The upstream poller: a libcurl long-poll loop on its own thread. Each batch is admitted
// (routed here), stored with the cursor in one Writer operation, confirmed durable, then acked.
#include "intake/poller.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "common/metrics.h"
#include "intake/admission.h"
#include "intake/feed.h"
#include "journal/journal.h"
#include "journal/routing.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay {
namespace {

constexpr Millis kBackoffInitial = 100;
constexpr Millis kBackoffMax = 30'000;
constexpr Millis kConnectTimeout = 10'000;
// Beyond the long-poll itself, how long a feed answer may take to arrive.
constexpr Millis kTransferMargin = 30'000;
// A feed body larger than this is treated as garbage rather than buffered without bound.
constexpr size_t kMaxBody = 512u << 20;
// An upstream that answers an empty long-poll at once (ignoring `wait`) is not hammered.
constexpr Millis kMinEmptyPollInterval = 100;
constexpr Millis kAckInterval = 1000;

size_t write_body(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<std::string*>(user);
  if (body->size() + size * n > kMaxBody) return 0;  // aborts the transfer
  body->append(data, size * n);
  return size * n;
}

struct HttpResult {
  bool aborted = false;  // stop() was called
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string error;  // libcurl's explanation when code != CURLE_OK
};

class CurlPoller final : public Poller {
 public:
  explicit CurlPoller(PollerContext ctx) : ctx_(std::move(ctx)) {
    base_url_ = ctx_.upstream.url;
    while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
    if (ctx_.upstream.batch <= 0) ctx_.upstream.batch = 500;
    rng_.seed(std::random_device{}());
  }

  ~CurlPoller() override {
    stop();
    if (easy_) curl_easy_cleanup(easy_);
    if (multi_) curl_multi_cleanup(multi_);
  }

  Status start() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    multi_ = curl_multi_init();
    easy_ = curl_easy_init();
    if (!multi_ || !easy_) return Status::unavailable("cannot initialise libcurl");
    thread_ = std::thread([this] { run(); });
    return Status::ok();
  }

  void stop() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    stop_flag_.store(true);
    if (multi_) curl_multi_wakeup(multi_);
    cv_.notify_all();
    std::lock_guard join_lock(join_mu_);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    try {
      loop();
    } catch (const std::exception& e) {
      // Everything inside is meant to be handled; this is the last line of defence.
      spdlog::error("poller of {} stopped by an unexpected error: {}", ctx_.upstream.name,
                    e.what());
    }
  }

  void loop() {
    std::int64_t cursor = 0;
    for (;;) {
      if (stopping()) return;
      auto loaded = read_cursor();
      if (loaded) {
        cursor = *loaded;
        break;
      }
      error("journal", "cannot read the stored cursor: " + loaded.status().message());
      if (!back_off()) return;
    }
    spdlog::info("polling {} from seq {}", base_url_, cursor);
    set_cursor_gauge(cursor);
    const Millis wait_s = std::max<Millis>(0, ctx_.upstream.poll_wait / 1000);
    auto feed_url = [&](std::int64_t after) {
      return base_url_ + "/v1/feed?after=" + std::to_string(after) +
             "&max=" + std::to_string(ctx_.upstream.batch) + "&wait=" + std::to_string(wait_s);
    };
    // The answer to the next poll, fetched while the writer commits the current batch.
    std::optional<HttpResult> prefetched;
    Millis last_ack = 0;
    std::int64_t acked = -1;
    while (!stopping()) {
      Millis started = steady_millis();
      HttpResult r;
      if (prefetched) {
        r = std::move(*prefetched);
        prefetched.reset();
      } else {
        r = perform(feed_url(cursor), nullptr, wait_s * 1000 + kTransferMargin);
      }
      if (r.aborted) return;
      if (r.code != CURLE_OK) {
        error(r.code == CURLE_OPERATION_TIMEDOUT ? "timeout" : "connect",
              "GET " + base_url_ + "/v1/feed: " + r.error);
        if (!back_off()) return;
        continue;
      }
      if (r.status != 200) {
        error("http", "GET " + base_url_ + "/v1/feed answered HTTP " + std::to_string(r.status) +
                          ": " + excerpt(r.body));
        if (!back_off()) return;
        continue;
      }
      auto batch = parse_feed(r.body);
      if (!batch) {
        error("parse", base_url_ + ": " + batch.status().message() + ": " + excerpt(r.body));
        if (!back_off()) return;
        continue;
      }
      if (batch->messages.empty()) {
        recovered();
        // Caught up: a good moment to tell the upstream how far we are.
        if (acked < cursor) {
          ack(cursor);
          acked = cursor;
          last_ack = steady_millis();
        }
        if (steady_millis() - started < kMinEmptyPollInterval && !sleep_for(kMinEmptyPollInterval))
          return;
        continue;
      }
      std::int64_t next = batch->next;
      bool full = batch->messages.size() >= static_cast<size_t>(ctx_.upstream.batch);
      auto stored = store(std::move(*batch));
      // More is probably waiting: fetch it while the writer commits this batch (the fsync).
      // Should the commit fail, the prefetched answer is dropped and the batch fetched again.
      if (full && next > cursor)
        prefetched = perform(feed_url(next), nullptr, wait_s * 1000 + kTransferMargin);
      Status s = stored.get();
      if (!s) {
        prefetched.reset();
        error("journal", "storing a batch from " + base_url_ + " failed: " + s.message());
        if (!back_off()) return;
        continue;
      }
      recovered();
      cursor = std::max(cursor, next);
      set_cursor_gauge(cursor);
      // Acks are for lag reporting and retention: once a second while streaming, and whenever
      // caught up, instead of a round trip (and an upstream commit) per batch.
      if (!full || steady_millis() - last_ack >= kAckInterval) {
        ack(cursor);
        acked = cursor;
        last_ack = steady_millis();
      }
    }
  }

  Result<std::int64_t> read_cursor() {
    auto db = open_journal_for_read(ctx_.journal_path);
    if (!db) return db.status();
    try {
      return load_cursor(**db, ctx_.upstream.name);
    } catch (const std::exception& e) {
      return Status::io_error(e.what());
    }
  }

  // Admits every message, then submits their inserts and the cursor as one operation (one
  // transaction). The future tells when it is durable.
  std::future<Status> store(FeedBatch batch) {
    auto webhooks = std::make_shared<std::vector<NewWebhook>>();
    webhooks->reserve(batch.messages.size());
    Millis now = now_millis();
    for (auto& item : batch.messages) {
      auto w = admit_feed_item(std::move(item), ctx_.upstream.name, *ctx_.directory, now);
      if (!w) {
        // A message that can never be stored must not block the feed; it is skipped loudly.
        error("message", w.status().message());
        continue;
      }
      webhooks->push_back(std::move(*w));
    }
    std::string name = ctx_.upstream.name;
    std::int64_t next = batch.next;
    Counter* stored = nullptr;
    Counter* duplicates = nullptr;
    if (ctx_.metrics) {
      stored = &ctx_.metrics->counter("iarelay_poll_webhooks_total",
                                      "Webhooks taken from the upstream's feed",
                                      {{"upstream", name}, {"outcome", "stored"}});
      duplicates = &ctx_.metrics->counter("iarelay_poll_webhooks_total",
                                          "Webhooks taken from the upstream's feed",
                                          {{"upstream", name}, {"outcome", "duplicate"}});
    }
    auto counts = std::make_shared<std::pair<std::uint64_t, std::uint64_t>>(0, 0);
    auto promise = std::make_shared<std::promise<Status>>();
    auto future = promise->get_future();
    ctx_.writer->submit(
        [webhooks, counts, name, next](SQLite::Database& db) {
          counts->first = counts->second = 0;
          for (const auto& w : *webhooks) {
            InsertOutcome o = insert_webhook(db, w);
            ++(o.duplicate ? counts->second : counts->first);
          }
          save_cursor(db, name, next);
        },
        [promise, counts, stored, duplicates, name](const Status& s) {
          if (s.is_ok()) {
            if (stored) stored->inc(counts->first);
            if (duplicates) duplicates->inc(counts->second);
            if (counts->second)
              spdlog::info("{} webhooks from {} were already stored (redelivered batch)",
                           counts->second, name);
          }
          promise->set_value(s);
        });
    return future;
  }

  void ack(std::int64_t seq) {
    if (ctx_.upstream.consumer.empty()) return;
    std::string body = nlohmann::json{{"consumer", ctx_.upstream.consumer}, {"seq", seq}}.dump();
    HttpResult r = perform(base_url_ + "/v1/feed/ack", &body, kConnectTimeout + kTransferMargin);
    if (r.aborted) return;
    // A lost ack only delays the upstream's lag report; the cursor here is already durable.
    if (r.code != CURLE_OK)
      error("ack", "POST " + base_url_ + "/v1/feed/ack: " + r.error);
    else if (r.status / 100 != 2)
      error("ack", "POST " + base_url_ + "/v1/feed/ack answered HTTP " + std::to_string(r.status) +
                       ": " + excerpt(r.body));
  }

  HttpResult perform(const std::string& url, const std::string* post_body, Millis timeout) {
    HttpResult r;
    char error_buffer[CURL_ERROR_SIZE] = {0};
    curl_slist* headers = nullptr;
    if (!ctx_.token.empty())
      headers = curl_slist_append(headers, ("Authorization: Bearer " + ctx_.token).c_str());
    if (post_body) headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(easy_, CURLOPT_URL, url.c_str());
    if (post_body) {
      curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, post_body->c_str());
      curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE, static_cast<long>(post_body->size()));
    } else {
      curl_easy_setopt(easy_, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, write_body);
    curl_easy_setopt(easy_, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(easy_, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(easy_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy_, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout));
    curl_easy_setopt(easy_, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(kConnectTimeout));
    curl_easy_setopt(easy_, CURLOPT_TCP_NODELAY, 1L);
    // Without `proxy`, libcurl applies the usual *_proxy environment variables itself.
    if (!ctx_.upstream.proxy.empty())
      curl_easy_setopt(easy_, CURLOPT_PROXY, ctx_.upstream.proxy.c_str());
    if (!ctx_.upstream.ca_file.empty())
      curl_easy_setopt(easy_, CURLOPT_CAINFO, ctx_.upstream.ca_file.c_str());

    curl_multi_add_handle(multi_, easy_);
    for (;;) {
      int running = 0;
      CURLMcode mc = curl_multi_perform(multi_, &running);
      if (mc != CURLM_OK) {
        r.code = CURLE_FAILED_INIT;
        r.error = curl_multi_strerror(mc);
        break;
      }
      if (running == 0) {
        int left = 0;
        while (CURLMsg* m = curl_multi_info_read(multi_, &left))
          if (m->msg == CURLMSG_DONE && m->easy_handle == easy_) r.code = m->data.result;
        break;
      }
      if (stopping()) {
        r.aborted = true;
        break;
      }
      curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    }
    curl_multi_remove_handle(multi_, easy_);
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &r.status);
    if (r.code != CURLE_OK && r.error.empty())
      r.error = error_buffer[0] ? error_buffer : curl_easy_strerror(r.code);
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(easy_, CURLOPT_ERRORBUFFER, nullptr);
    curl_slist_free_all(headers);
    return r;
  }

  static std::string excerpt(const std::string& body) {
    std::string out = body.substr(0, 200);
    for (char& c : out)
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    return out;
  }

  void error(const std::string& kind, const std::string& message) {
    if (ctx_.metrics)
      ctx_.metrics
          ->counter("iarelay_poll_errors_total", "Upstream polling errors by kind",
                    {{"kind", kind}})
          .inc();
    ++consecutive_errors_;
    // The first error of a streak and every tenth after it: enough to see, not a flood.
    if (consecutive_errors_ == 1 || consecutive_errors_ % 10 == 0)
      spdlog::warn("upstream {}: {} (error {} in a row, next try in {} ms)", ctx_.upstream.name,
                   message, consecutive_errors_, std::min(backoff_ * 2, kBackoffMax));
  }

  void recovered() {
    if (consecutive_errors_)
      spdlog::info("upstream {} reachable again after {} errors", ctx_.upstream.name,
                   consecutive_errors_);
    consecutive_errors_ = 0;
    backoff_ = kBackoffInitial / 2;
  }

  // Sleeps the next backoff step with jitter (50-100% of it). False when stopping.
  bool back_off() {
    backoff_ = std::min(backoff_ * 2, kBackoffMax);
    std::uniform_int_distribution<Millis> jitter(backoff_ / 2, backoff_);
    return sleep_for(jitter(rng_));
  }

  bool sleep_for(Millis ms) {
    std::unique_lock lock(mu_);
    return !cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stopping_; });
  }

  bool stopping() const { return stop_flag_.load(); }

  void set_cursor_gauge(std::int64_t cursor) {
    if (ctx_.metrics)
      ctx_.metrics
          ->gauge("iarelay_poll_cursor", "Last upstream seq stored here",
                  {{"upstream", ctx_.upstream.name}})
          .set(static_cast<double>(cursor));
  }

  PollerContext ctx_;
  std::string base_url_;
  CURLM* multi_ = nullptr;  // used by the poll thread; curl_multi_wakeup from stop()
  CURL* easy_ = nullptr;    // used by the poll thread only
  std::thread thread_;
  std::mutex join_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::atomic<bool> stop_flag_{false};
  // Poll thread only:
  std::mt19937_64 rng_;
  Millis backoff_ = kBackoffInitial / 2;
  std::uint64_t consecutive_errors_ = 0;
};

}  // namespace

Result<std::unique_ptr<Poller>> Poller::start(PollerContext ctx) {
  if (!ctx.writer || !ctx.directory)
    return Status::invalid_argument("poller needs a writer and an agent directory");
  if (ctx.upstream.url.empty()) return Status::invalid_argument("[upstream] url is empty");
  auto poller = std::make_unique<CurlPoller>(std::move(ctx));
  if (Status s = poller->start(); !s) return s;
  return std::unique_ptr<Poller>(std::move(poller));
}

}  // namespace iarelay
