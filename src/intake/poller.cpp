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
#include "journal/journal_writer.h"
#include "journal/routing.h"
#include "journal/status_report.h"
#include "journal/store.h"

namespace iarelay {
namespace {

constexpr Millis kBackoffInitial = 100;
constexpr Millis kBackoffMax = 30'000;
constexpr Millis kConnectTimeout = 10'000;
// Beyond the long-poll itself, how long a feed answer may take to arrive.
constexpr Millis kTransferMargin = 30'000;
// An upstream that answers an empty long-poll at once (ignoring `wait`) is not hammered.
constexpr Millis kMinEmptyPollInterval = 100;
constexpr Millis kAckInterval = 1000;

// Successful answers in a row before a reduced `max` is doubled back towards [upstream] batch.
constexpr int kGoodAnswersToGrow = 10;

struct HttpResult {
  bool aborted = false;    // stop() was called
  bool too_large = false;  // the body passed max_response_bytes; the transfer was abandoned
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string error;       // libcurl's explanation when code != CURLE_OK
  std::int64_t after = 0;  // the feed request's `after`
};

struct BodySink {
  HttpResult* result;
  size_t limit;
};

size_t write_body(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  if (sink->result->body.size() + size * n > sink->limit) {
    sink->result->too_large = true;
    return 0;  // aborts the transfer
  }
  sink->result->body.append(data, size * n);
  return size * n;
}

class CurlPoller final : public Poller {
 public:
  explicit CurlPoller(PollerContext ctx) : ctx_(std::move(ctx)) {
    base_url_ = ctx_.upstream.url;
    while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
    if (ctx_.upstream.batch <= 0) ctx_.upstream.batch = 500;
    if (ctx_.max_response_bytes < 4096) ctx_.max_response_bytes = 4096;
    max_ = ctx_.upstream.batch;
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
    beat();
    running_.store(true);
    thread_ = std::thread([this] { run(); });
    return Status::ok();
  }

  bool alive() const override {
    return running_.load() &&
           steady_millis() - last_beat_.load() <= Millis{kHeartbeatSeconds} * 1000;
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
    running_.store(false);
  }

  void beat() { last_beat_.store(steady_millis()); }

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
    // Never more than our own limit can take: a quarter of it leaves room for one message over
    // max_bytes (the edge always sends the first one) and an old edge's overshoot.
    const size_t max_bytes = ctx_.max_response_bytes / 4;
    auto fetch = [&](std::int64_t after) {
      HttpResult r = perform(
          base_url_ + "/v1/feed?after=" + std::to_string(after) + "&max=" + std::to_string(max_) +
              "&max_bytes=" + std::to_string(max_bytes) + "&wait=" + std::to_string(wait_s),
          nullptr, wait_s * 1000 + kTransferMargin);
      r.after = after;
      return r;
    };
    // The answer to the next poll, fetched while the writer commits the current batch.
    std::optional<HttpResult> prefetched;
    Millis last_ack = 0;
    std::int64_t acked = -1;
    while (!stopping()) {
      beat();
      Millis started = steady_millis();
      HttpResult r;
      if (prefetched && prefetched->after == cursor) {
        r = std::move(*prefetched);
        prefetched.reset();
      } else {
        prefetched.reset();
        r = fetch(cursor);
      }
      if (r.aborted) return;
      if (r.too_large) {
        // Retrying the same request would fail the same way forever: ask for fewer.
        error("too_large",
              "GET " + base_url_ + "/v1/feed: the answer to max=" + std::to_string(max_) +
                  " is larger than " + std::to_string(ctx_.max_response_bytes) + " bytes");
        good_answers_ = 0;
        if (max_ > 1) {
          max_ = std::max(1, max_ / 2);
          continue;
        }
        // One message alone is over the limit: nothing here can take it. Loud, and retried.
        spdlog::error(
            "upstream {}: the message after seq {} is larger than {} bytes; it cannot "
            "be taken until the limit is raised",
            ctx_.upstream.name, cursor, ctx_.max_response_bytes);
        if (!back_off()) return;
        continue;
      }
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
      if (max_ < ctx_.upstream.batch && ++good_answers_ >= kGoodAnswersToGrow) {
        max_ = std::min(ctx_.upstream.batch, max_ * 2);
        good_answers_ = 0;
      }
      if (batch->newest) set_newest_gauge(*batch->newest);
      if (batch->newest && *batch->newest < cursor) {
        // The upstream went back (journal restored from a backup, or commits lost at
        // sync=normal): what it assigns next reuses seqs at or below our cursor, and would be
        // skipped. Rewind to its newest; re-reading is safe (dedup on source and id).
        Status s = rewind(cursor, *batch->newest);
        if (!s) {
          error("journal", "rewinding the cursor of " + base_url_ + " failed: " + s.message());
          if (!back_off()) return;
          continue;
        }
        cursor = *batch->newest;
        set_cursor_gauge(cursor);
        acked = -1;
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
      if (full && next > cursor) prefetched = fetch(next);
      Status s = wait_beating(stored);
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
    auto db = ctx_.open_reader ? ctx_.open_reader()
                               : open_sqlite_reader(ctx_.journal_path, /*cache_statements=*/false);
    if (!db) return db.status();
    std::int64_t cursor = 0;
    if (Status s = (*db)->read([&](JournalTx& tx) { cursor = tx.load_cursor(ctx_.upstream.name); });
        !s)
      return s;
    return cursor;
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
        // A message that can never be admitted must not block the feed, nor be lost once the
        // upstream is acked past it: it is stored as failed with the reason, loudly.
        error("message", w.status().message() + " (stored as failed)");
        webhooks->push_back(
            quarantine_feed_item(item, ctx_.upstream.name, w.status().message(), now));
        continue;
      }
      unconfigured_.note(*w, *ctx_.directory);
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
    ctx_.writer->submit_append_tx(
        [webhooks, counts, name, next](JournalTx& tx) {
          counts->first = counts->second = 0;
          for (const InsertOutcome& o : tx.insert_webhooks(*webhooks))
            ++(o.duplicate ? counts->second : counts->first);
          tx.save_cursor(name, next);
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

  // Sets the stored cursor back to `newest` with an audit row (what `iarelay status` shows),
  // logged as an error and counted. Waits until it is durable.
  Status rewind(std::int64_t cursor, std::int64_t newest) {
    spdlog::error(
        "upstream {}: its newest seq {} is below our cursor {} (its journal went back: "
        "restored from a backup, or commits lost at sync=normal); rewinding the "
        "cursor to {} so that nothing it stores from now on is skipped",
        ctx_.upstream.name, newest, cursor, newest);
    if (ctx_.metrics)
      ctx_.metrics
          ->counter("iarelay_upstream_behind_total",
                    "Times the upstream's newest seq was found below the cursor (rewound)",
                    {{"upstream", ctx_.upstream.name}})
          .inc();
    std::string name = ctx_.upstream.name;
    std::string detail = nlohmann::json{{"from", cursor}, {"to", newest}}.dump();
    auto promise = std::make_shared<std::promise<Status>>();
    auto future = promise->get_future();
    ctx_.writer->submit_tx(
        [name, cursor, newest, detail](JournalTx& tx) {
          tx.rewind_cursor(name, newest);
          tx.add_audit("iarelayd", kCursorRewindAction, name, cursor - newest, detail);
        },
        [promise](const Status& s) { promise->set_value(s); });
    return wait_beating(future);
  }

  // Waits for a journal commit, beating meanwhile: a slow disk is not a dead poller (the
  // watchdog would restart the daemon for nothing).
  Status wait_beating(std::future<Status>& future) {
    while (future.wait_for(std::chrono::seconds(1)) != std::future_status::ready) beat();
    beat();
    return future.get();
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
    BodySink sink{&r, ctx_.max_response_bytes};
    curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, write_body);
    curl_easy_setopt(easy_, CURLOPT_WRITEDATA, &sink);
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
      beat();
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

  // In slices of at most a second, beating between them.
  bool sleep_for(Millis ms) {
    Millis until = steady_millis() + ms;
    std::unique_lock lock(mu_);
    for (;;) {
      beat();
      Millis left = until - steady_millis();
      if (left <= 0) return !stopping_;
      if (cv_.wait_for(lock, std::chrono::milliseconds(std::min<Millis>(left, 1000)),
                       [&] { return stopping_; }))
        return false;
    }
  }

  bool stopping() const { return stop_flag_.load(); }

  void set_newest_gauge(std::int64_t newest) {
    if (ctx_.metrics)
      ctx_.metrics
          ->gauge("iarelay_poll_upstream_newest", "The upstream's newest seq, as its feed says",
                  {{"upstream", ctx_.upstream.name}})
          .set(static_cast<double>(newest));
  }

  void set_cursor_gauge(std::int64_t cursor) {
    if (ctx_.metrics)
      ctx_.metrics
          ->gauge("iarelay_poll_cursor", "Last upstream seq stored here",
                  {{"upstream", ctx_.upstream.name}})
          .set(static_cast<double>(cursor));
  }

  PollerContext ctx_;
  UnconfiguredAgentLog unconfigured_;
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
  int max_ = 500;  // `max` asked for: [upstream] batch, halved while answers are too large
  int good_answers_ = 0;
  // Heartbeat (any thread reads):
  std::atomic<Millis> last_beat_{0};
  std::atomic<bool> running_{false};
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
