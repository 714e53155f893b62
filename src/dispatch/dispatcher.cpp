// The dispatcher: one thread driving libcurl's multi interface. It walks each agent's queue in
// bounded windows, claims due webhooks through the Writer (durable before the call), sends them,
// and journals every attempt and outcome asynchronously; agent availability, pauses read from
// the journal, failover and held webhooks are handled here too.
#include "dispatch/dispatcher.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "common/config.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "dispatch/agent_state.h"
#include "dispatch/chain_step.h"
#include "dispatch/ia_format.h"
#include "dispatch/retry_policy.h"
#include "dispatch/scheduler.h"
#include "dispatch/signature.h"
#include "journal/journal.h"
#include "journal/routing.h"
#include "journal/statement_cache.h"
#include "journal/store.h"
#include "journal/writer.h"

namespace iarelay {
namespace {

constexpr int kScanPage = 256;              // rows per scan_queue call
constexpr std::size_t kMaxWalkRows = 4096;  // rows walked per window: bounds time and memory
constexpr std::size_t kMaxCandidates = 1024;
constexpr Millis kAgentsCheckEvery = 250;  // PRAGMA data_version
constexpr Millis kForcedReloadEvery = 1000;
constexpr Millis kWriteRetryDelay = 1000;  // a failed journal write is submitted again
constexpr std::size_t kMaxStreak = 4096;
constexpr Millis kNever = INT64_MAX;
constexpr Millis kReadBackoffMin = 100;  // after a failed read: wait, doubling up to the max
constexpr Millis kReadBackoffMax = 5000;
constexpr int kReopenAfterFailures = 3;  // reads failed in a row: reopen the read connection
// A walk past the head window goes on one window per kResumeEvery (at most ~80k rows/s read
// for a deep queue of backing-off webhooks), and a new pass starts kPassEvery after the last
// one reached the queue's end: the price of finding due webhooks behind them stays bounded.
constexpr Millis kResumeEvery = 50;
constexpr Millis kPassEvery = 1000;
// After commits that only added rows, fill_new_rows checks a new row whose alert has nothing
// in hand against at most this many queued rows before it (nothing earlier of its alert
// queued); past that, the queue is walked from its head instead.
constexpr int kShortQueue = 256;
// Chain steps in a row that may go before due webhooks of other alerts (see Chain).
constexpr int kChainQuantum = 16;
// Chain steps that claimed nothing in a row after which only one in kChainRetryEvery delivered
// webhooks tries one (a queue of many alerts interleaved: the next of an alert is far behind).
constexpr std::size_t kChainMisses = 8;
constexpr std::size_t kChainRetryEvery = 16;
// Queues of agents no longer configured are looked for at every reload and this often.
constexpr Millis kRetiredSweepEvery = 10'000;

// Work handed from the Writer's thread (Done callbacks) and from wake() to the dispatcher
// thread. Outlives the dispatcher thread's use of curl: once closed, posts are dropped.
struct Mailbox {
  std::mutex mu;
  std::vector<std::function<void()>> items;  // GUARDED_BY(mu)
  CURLM* multi = nullptr;                    // GUARDED_BY(mu); null once closed
  void post(std::function<void()> fn) {
    std::lock_guard lock(mu);
    if (!multi) return;  // the dispatcher is gone; its rows are requeued at next start
    items.push_back(std::move(fn));
    // One wakeup per batch: the dispatcher takes every item when it wakes.
    if (items.size() == 1) curl_multi_wakeup(multi);
  }
  void poke() {
    std::lock_guard lock(mu);
    if (multi) curl_multi_wakeup(multi);
  }
};

struct Agent;

// One kind of read (the agents table, held webhooks, one agent's queue scan, one agent's
// failover sweep): after a failure it is not tried again before `retry_at`, the delay doubling
// from 100 ms to 5 s while it keeps failing. Each kind (and each agent) backs off on its own,
// so a read that keeps failing (say an agents table an operator dropped, or one agent's scan)
// does not hold back the others.
struct ReadGate {
  Millis delay = 0;     // 0: the last try went through
  Millis retry_at = 0;  // steady time
};

// One webhook in hand: claimed (or being claimed), in flight, or awaiting its outcome's commit.
struct InHand {
  QueuedWebhook w;
  std::string key;
  int attempt = 0;  // the attempt this claim makes (attempts + 1)
  bool probe = false;
  int chain_steps = 0;  // claimed by that many chain steps in a row (see Chain)
};

using dispatch_internal::AlertMove;
using dispatch_internal::Chain;
using dispatch_internal::ChainBatch;
using dispatch_internal::move_alert_tail;
using dispatch_internal::try_chain_step;

struct Call {
  Agent* agent = nullptr;
  InHand item;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  std::string excerpt;
  std::optional<std::string> retry_after;
  std::optional<std::string> location;  // a 3xx's Location, made safe to store
  Millis started_at = 0;
  Millis steady_start = 0;
  std::string problem;  // set while preparing: why this webhook cannot be sent
  char errbuf[CURL_ERROR_SIZE] = {};
};

struct Agent {
  AgentConfig cfg;
  std::string signing_key;  // empty: unsigned
  bool usable = true;       // false when its secret cannot be read: nothing is sent
  AgentHealth health{5};
  bool removed = false;  // no longer configured (SIGHUP): finishes what it has, takes nothing

  std::unordered_set<std::string> busy_keys;  // keys of webhooks in hand
  std::unordered_set<std::int64_t> in_hand;   // their seqs
  std::deque<QueuedWebhook> candidates;       // picked by the last fill, not yet claimed
  std::deque<InHand> ready;   // claimed by a chain step (see Chain), waiting for a slot
  bool more_to_pick = false;  // the last fill stopped at its cap: more may be due behind
  // Chain steps that claimed nothing in a row (alerts too far apart in the queue, say): past
  // kChainMisses only one outcome in kChainRetryEvery tries, until one claims again.
  std::size_t chain_misses = 0;
  std::size_t chain_skipped = 0;
  bool dirty = true;          // something changed: a fill may find work
  Millis wake_at = kNever;    // earliest not-due row seen by the last fill
  std::size_t claiming = 0;   // claims submitted, not yet committed
  Millis claim_retry_at = 0;  // steady time before which no claim is made (one failed)
  std::size_t calls = 0;      // HTTP calls in flight
  std::unordered_set<std::int64_t> streak;    // backed off during the current failure run
  std::unordered_set<std::int64_t> expedite;  // due at once: backed off before it came back
  std::int64_t failover_cursor = 0;
  std::unordered_set<std::string> failover_skipped;  // alerts the current pass left behind
  bool failover_recheck = false;  // the last sweep left an alert behind: sweep again soon
  bool failover_pending = false;
  ReadGate scan_gate, failover_gate;  // this agent's reads (see ReadGate)
  // Where the next fill's second window starts (0: right after the head window: a new pass),
  // the steady time before which no second window is walked (paced: see kResumeEvery), and
  // whether a fill is due at that time (the walk goes on) rather than only when dirty.
  std::int64_t resume_after = 0;
  Millis next_resume_at = 0;
  bool resume_pending = false;
  std::int64_t head_last = 0;  // the last seq of the head window at the last full fill
  // New rows only were committed since the last fill (Dispatcher::wake(true)): the next fill
  // reads only rows past tail_seen, the highest seq of the agent's queue that a fill has
  // accounted for (walked, or behind the head window and left to the walk past it).
  bool appended = false;
  std::int64_t tail_seen = 0;
  // The ordering under which the keys in hand were computed: after a reload that changes the
  // ordering, nothing new is claimed until those are done (their keys mean something else).
  Ordering keys_ordering = Ordering::kEvent;
  // Errors before a call is made (reading the payload, starting the call): the webhook goes
  // back to queued with its attempt given back, due again after this delay (doubling from
  // kReadBackoffMin to kReadBackoffMax while they go on; 0 after a call started).
  Millis local_backoff = 0;

  Counter* delivered = nullptr;
  Counter* retried = nullptr;
  Counter* failed = nullptr;
  Counter* chained = nullptr;  // webhooks claimed by a chain step (see Chain)
  Histogram* duration = nullptr;
  Gauge* state_gauges[3] = {nullptr, nullptr, nullptr};  // up, down, paused
};

// At most `n` bytes of a reason to store or log, as valid UTF-8 cut on a character boundary:
// reasons quote agents' answers and exceptions' messages, whose bytes can be anything.
std::string truncate(const std::string& s, std::size_t n) {
  return text_excerpt(s, n);
}

// A header value from the journal (id, service, type): control characters (CR and LF above
// all) are dropped, so no stored value can end the header line and add one of its own; bytes
// that are not UTF-8 become U+FFFD.
std::string header_value(std::string_view raw) {
  const std::string v = replace_invalid_utf8(raw);
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7F) out.push_back(c);
  }
  return out;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* call = static_cast<Call*>(user);
  size_t bytes = size * n;
  if (call->excerpt.size() < kBodyBytesKept)
    call->excerpt.append(data, std::min(bytes, kBodyBytesKept - call->excerpt.size()));
  return bytes;  // the rest of the body is read and dropped
}

// The trimmed value when `line` is the header `name` (lower case, with its colon).
std::optional<std::string> header_named(std::string_view line, std::string_view name) {
  if (line.size() <= name.size()) return std::nullopt;
  for (size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return std::nullopt;
  std::string v(line.substr(name.size()));
  while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
  while (!v.empty() && v.front() == ' ') v.erase(v.begin());
  return v;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* call = static_cast<Call*>(user);
  std::string_view line(data, size * n);
  if (auto v = header_named(line, "retry-after:")) call->retry_after = std::move(*v);
  // The agent's bytes go to last_error and attempts.error: bounded, UTF-8, no control chars.
  if (auto v = header_named(line, "location:"))
    call->location = header_value(std::string_view(*v).substr(0, 300));
  return size * n;
}

class DispatcherImpl final : public Dispatcher {
 public:
  explicit DispatcherImpl(DispatcherContext ctx)
      : ctx_(std::move(ctx)), mailbox_(std::make_shared<Mailbox>()), rng_(std::random_device{}()) {}

  ~DispatcherImpl() override { stop(0); }

  Status init() {
    multi_ = curl_multi_init();
    if (!multi_) return Status::unavailable("curl_multi_init failed");
    mailbox_->multi = multi_;
    auto db = open_journal_for_read(ctx_.journal_path);
    if (!db) return db.status();
    db_ = std::move(*db);
    configure_agents(ctx_.directory->agents(), /*initial=*/true);
    heartbeat_ = steady_millis();
    running_ = true;
    thread_ = std::thread([this] { run(); });
    return Status::ok();
  }

  bool alive() const override {
    return running_.load() && steady_millis() - heartbeat_.load() <= kHeartbeatWithin;
  }

  void stop(Millis grace) override {
    std::lock_guard lock(stop_mu_);
    if (!thread_.joinable()) return;
    grace_ = grace;
    stopping_ = true;
    mailbox_->poke();
    thread_.join();
  }

  void reconfigured() override {
    mailbox_->post([this] { configure_agents(ctx_.directory->agents(), false); });
  }

  void wake(bool appends_only) override {
    // Called after every journal commit: one wakeup until the dispatcher has seen it.
    std::atomic<bool>& flag = appends_only ? appended_ : woken_;
    if (!flag.exchange(true, std::memory_order_relaxed)) mailbox_->poke();
  }

 private:
  // --- configuration ------------------------------------------------------------------------
  void configure_agents(const std::vector<AgentConfig>& configs, bool initial) {
    std::set<std::string> seen;
    for (const auto& cfg : configs) {
      seen.insert(cfg.id);
      auto& slot = agents_[cfg.id];
      if (!slot) {
        slot = std::make_unique<Agent>();
        AgentHealth::State initial_state = AgentHealth::State::kUp;
        switch (ctx_.directory->availability(cfg.id)) {
          case Availability::kUp:
            break;
          case Availability::kDown:
            initial_state = AgentHealth::State::kDown;
            break;
          case Availability::kPaused:
            initial_state = AgentHealth::State::kPaused;
            break;
        }
        slot->health = AgentHealth(cfg.down_after, initial_state, steady_millis());
        if (ctx_.metrics) {
          const std::string help_d = "Callback attempts by agent and outcome";
          Labels base{{"agent", cfg.id}};
          slot->delivered = &ctx_.metrics->counter("iarelay_deliveries_total", help_d,
                                                   {{"agent", cfg.id}, {"outcome", "delivered"}});
          slot->retried = &ctx_.metrics->counter("iarelay_deliveries_total", help_d,
                                                 {{"agent", cfg.id}, {"outcome", "retry"}});
          slot->failed = &ctx_.metrics->counter("iarelay_deliveries_total", help_d,
                                                {{"agent", cfg.id}, {"outcome", "failed"}});
          slot->chained = &ctx_.metrics->counter(
              "iarelay_chained_claims_total",
              "Webhooks claimed with the outcome of the one before them in their alert", base);
          slot->duration = &ctx_.metrics->histogram(
              "iarelay_attempt_duration_seconds", "Duration of callback attempts",
              {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, base);
          const char* names[3] = {"up", "down", "paused"};
          for (int i = 0; i < 3; ++i)
            slot->state_gauges[i] = &ctx_.metrics->gauge("iarelay_agent_state",
                                                         "1 for the agent's current availability",
                                                         {{"agent", cfg.id}, {"state", names[i]}});
        }
      }
      Agent& a = *slot;
      if (initial) a.keys_ordering = cfg.ordering;
      a.cfg = cfg;
      a.health.set_down_after(cfg.down_after);  // reloadable: the next failure uses it
      a.removed = false;
      a.dirty = true;
      a.candidates.clear();
      // The walk past the head was made under the old configuration (its ordering above all:
      // a pending walk must not go on under fifo): the next fill starts afresh from the head.
      a.resume_after = 0;
      a.next_resume_at = 0;
      a.resume_pending = false;
      a.head_last = 0;
      a.tail_seen = 0;
      a.usable = true;
      auto key = agent_signing_key(cfg);
      if (key) {
        a.signing_key = std::move(*key);
      } else if (!initial && !a.signing_key.empty()) {
        // The daemon refuses such a reload (and such a start); should the secret have gone
        // between its check and this read, the agent keeps signing with the key it had.
        spdlog::error("agent {}: {}; keeping the secret it had", cfg.id, key.status().message());
      } else {
        a.usable = false;
        a.signing_key.clear();
        spdlog::error("agent {}: {}; holding its webhooks until fixed", cfg.id,
                      key.status().message());
      }
      update_gauges(a);
    }
    for (auto& [id, a] : agents_)
      if (!seen.count(id)) a->removed = true;
    max_connections_ = 0;
    for (const auto& cfg : configs) max_connections_ += std::max(cfg.max_inflight, 1);
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(max_connections_ + 4));
    held_dirty_ = true;
    retired_dirty_ = true;
    if (!initial) spdlog::info("dispatcher: {} agents configured", configs.size());
  }

  void update_gauges(Agent& a) {
    int current = static_cast<int>(a.health.state());  // kUp, kDown, kPaused in that order
    for (int i = 0; i < 3; ++i)
      if (a.state_gauges[i]) a.state_gauges[i]->set(i == current ? 1 : 0);
  }

  // --- the loop -------------------------------------------------------------------------------
  void run() {
    try {
      cache_.emplace(*db_);
      loop();
    } catch (const std::exception& e) {
      // Only what the per-item guards below cannot catch (e.g. out of memory) ends up here.
      spdlog::critical("dispatcher stopped: {}", e.what());
    }
    cache_.reset();
    shutdown();
    running_ = false;
  }

  // Runs one step of the loop for one item (a webhook, a call, a mailbox item); an exception
  // fails that step only. Returns whether the step completed.
  template <typename Fn>
  bool guarded(const char* what, Fn&& fn) {
    try {
      fn();
      return true;
    } catch (const SQLite::Exception& e) {
      read_failed(nullptr, what, e.what());
    } catch (const std::exception& e) {
      spdlog::error("dispatcher: {} failed: {}; going on", what, e.what());
    }
    return false;
  }

  // Runs a read step unless its gate is backing off. Returns whether it went through.
  template <typename Fn>
  bool read_step(ReadGate& gate, const char* what, Fn&& fn) {
    if (steady_millis() < gate.retry_at) return false;
    maybe_reopen();
    try {
      fn();
      gate.delay = 0;
      failures_in_a_row_ = 0;
      return true;
    } catch (const SQLite::Exception& e) {
      read_failed(&gate, what, e.what());
    } catch (const std::exception& e) {
      spdlog::error("dispatcher: {} failed: {}; going on", what, e.what());
    }
    return false;
  }

  void read_failed(ReadGate* gate, const char* what, const std::string& error) {
    Millis delay = kReadBackoffMin;
    if (gate) {
      gate->delay = std::clamp<Millis>(gate->delay * 2, kReadBackoffMin, kReadBackoffMax);
      gate->retry_at = steady_millis() + gate->delay;
      delay = gate->delay;
    }
    ++failures_in_a_row_;
    spdlog::error("dispatcher: reading the journal ({}) failed: {}; retrying in {} ms", what, error,
                  delay);
  }

  // Reads failing one after another with none going through between them: the connection
  // itself may be broken (file replaced, I/O error), so it is reopened; the old one is kept
  // if a new one cannot be opened.
  void maybe_reopen() {
    if (failures_in_a_row_ < kReopenAfterFailures) return;
    failures_in_a_row_ = 0;
    auto db = open_journal_for_read(ctx_.journal_path);
    if (!db) {
      spdlog::error("dispatcher: reopening the journal failed: {}", db.status().message());
      return;
    }
    cache_.reset();  // statements are finalized before their connection closes
    db_ = std::move(*db);
    cache_.emplace(*db_);
    data_version_ = -1;
    spdlog::info("dispatcher: journal read connection reopened");
  }

  void loop() {
    Millis stop_deadline = kNever;
    for (;;) {
      heartbeat_ = steady_millis();
      drain_mailbox();
      // Wall time only where it meets times stored in the journal (next_attempt_at,
      // paused_until); every interval and timeout here runs on the monotonic clock, so a clock
      // stepped back or forward neither stalls nor rushes them.
      const Millis now = now_millis();
      const Millis steady = steady_millis();
      if (stopping_) {
        if (stop_deadline == kNever) {
          stop_deadline = steady_millis() + grace_;
          for (auto& [id, a] : agents_) {
            a->candidates.clear();
            start_ready(*a);  // gives them back
          }
        }
        if (outstanding_ == 0 || steady_millis() >= stop_deadline) return;
      } else {
        if (woken_.exchange(false, std::memory_order_relaxed))
          for (auto& [id, a] : agents_) a->dirty = true;
        if (appended_.exchange(false, std::memory_order_relaxed))
          for (auto& [id, a] : agents_) a->appended = true;
        read_step(agents_gate_, "agents table", [&] { check_agents_table(now, steady); });
        guarded("journal retries", [&] { retry_failed_writes(steady); });
        read_step(held_gate_, "held webhooks", [&] { sweep_held(steady); });
        read_step(retired_gate_, "retired agents' queues", [&] { sweep_retired(steady); });
        for (auto& [id, a] : agents_) {
          read_step(a->failover_gate, "failover", [&] { sweep_failover(*a, steady); });
          guarded("scheduling", [&] { schedule(*a, now, steady); });
        }
      }
      int running = 0;
      curl_multi_perform(multi_, &running);
      bool progressed = read_finished_calls();
      guarded("journaling outcomes", [&] { flush_outcomes(); });
      Millis timeout = progressed ? 0 : next_timeout(now_millis());
      if (stopping_) timeout = std::min<Millis>(timeout, 50);
      curl_multi_poll(multi_, nullptr, 0, static_cast<int>(timeout), nullptr);
    }
  }

  Millis next_timeout(Millis now) const {
    Millis at = now + kAgentsCheckEvery;
    for (const auto& [id, a] : agents_) {
      if (a->removed || !a->usable) continue;
      // Times already past are acted on by schedule() when it can; they must not spin here.
      if (a->wake_at > now) at = std::min(at, a->wake_at);
    }
    const Millis steady = steady_millis();
    for (const auto& [id, a] : agents_)
      if (!a->removed && a->usable && a->health.state() == AgentHealth::State::kDown &&
          a->calls + a->claiming == 0 && a->health.next_probe_at() > steady)
        at = std::min(at, now + (a->health.next_probe_at() - steady));
    for (const auto& w : write_retries_)
      at = std::min(at, now + std::max<Millis>(0, w.retry_at - steady));
    for (const auto& u : unclaim_retries_)
      at = std::min(at, now + std::max<Millis>(0, u.retry_at - steady));
    for (const auto& [id, a] : agents_)
      if (a->claim_retry_at > steady) at = std::min(at, now + (a->claim_retry_at - steady));
    for (const auto& [id, a] : agents_)
      if (a->resume_pending && !stopping_ && !a->removed && a->usable &&
          steady >= a->scan_gate.retry_at && steady >= a->claim_retry_at &&
          a->health.state() == AgentHealth::State::kUp &&
          a->calls + a->claiming < static_cast<std::size_t>(std::max(a->cfg.max_inflight, 1)))
        // The walk past the head goes on while there is room to send.
        at = std::min(at, now + std::max<Millis>(0, a->next_resume_at - steady));
    return std::clamp<Millis>(at - now, 0, kAgentsCheckEvery);
  }

  void drain_mailbox() {
    std::vector<std::function<void()>> items;
    {
      std::lock_guard lock(mailbox_->mu);
      items.swap(mailbox_->items);
    }
    for (auto& fn : items) guarded("journal callback", fn);
  }

  // Abandons calls still under way (their rows stay inflight and are requeued at next start)
  // and closes the mailbox so late Writer callbacks are dropped.
  void shutdown() {
    {
      std::lock_guard lock(mailbox_->mu);
      mailbox_->multi = nullptr;
      mailbox_->items.clear();
    }
    for (Call* call : calls_) {
      curl_multi_remove_handle(multi_, call->easy);
      curl_easy_cleanup(call->easy);
      curl_slist_free_all(call->headers);
      delete call;
    }
    if (!calls_.empty())
      spdlog::warn("dispatcher: abandoned {} calls in flight at stop; redelivered at next start",
                   calls_.size());
    calls_.clear();
    for (CURL* e : easy_pool_) curl_easy_cleanup(e);
    easy_pool_.clear();
    curl_multi_cleanup(multi_);
    multi_ = nullptr;
    db_.reset();
  }

  // --- operator changes: pauses, resumes, resends ---------------------------------------------
  // `now` (wall) for paused_until, `steady` for how often.
  void check_agents_table(Millis now, Millis steady) {
    if (steady - last_check_ < kAgentsCheckEvery) return;
    last_check_ = steady;
    std::int64_t version = 0;
    {
      auto q = cached_statement(*db_, "PRAGMA data_version");
      if (q->executeStep()) version = q->getColumn(0).getInt64();
    }
    if (version == data_version_ && steady - last_reload_ < kForcedReloadEvery) return;
    data_version_ = version;
    last_reload_ = steady;
    std::map<std::string, AgentRow> rows;
    for (auto& r : load_agents(*db_)) rows.emplace(r.id, std::move(r));
    for (auto& [id, a] : agents_) {
      // Resends and other outside changes may have queued older rows: walk again from the start.
      a->candidates.clear();
      a->dirty = true;
      auto it = rows.find(id);
      bool paused = it != rows.end() && it->second.state == "paused";
      if (paused && it->second.paused_until && *it->second.paused_until <= now) {
        paused = false;
        end_pause(id, *it->second.paused_until);
      }
      if (a->health.set_paused(paused, steady)) {
        ctx_.directory->set_availability(id, paused ? Availability::kPaused : Availability::kUp);
        update_gauges(*a);
        spdlog::info("agent {} {}", id, paused ? "paused by operator" : "resumed");
        if (!paused) held_dirty_ = true;
      }
    }
    held_dirty_ = true;
  }

  void end_pause(const std::string& id, Millis until) {
    // Only if the pause is still the one that ended (an operator may have paused again).
    ctx_.writer->submit(
        [id, until](SQLite::Database& db) {
          auto row = load_agent(db, id);
          if (row && row->state == "paused" && row->paused_until && *row->paused_until == until)
            set_agent_state(db, id, "up", std::string("pause ended"), std::nullopt, false);
        },
        [](const Status& s) {
          if (!s) spdlog::warn("could not record the end of a pause: {}", s.message());
        });
  }

  // --- held webhooks and failover ---------------------------------------------------------------
  // Held webhooks (assigned_agent NULL, from `unrouted = hold` or a resend) go to an available
  // agent of their service.
  void sweep_held(Millis steady) {
    if (held_pending_) return;
    if (!held_dirty_ && steady - last_held_sweep_ < kForcedReloadEvery) return;
    held_dirty_ = false;
    last_held_sweep_ = steady;
    auto rows = scan_queue(*db_, std::nullopt, held_cursor_, kScanPage);
    held_cursor_ = rows.size() == static_cast<size_t>(kScanPage) ? rows.back().seq : 0;
    if (held_cursor_) held_dirty_ = true;  // more pages: continue on the next turn
    std::vector<std::pair<std::string, std::string>> moves;  // id → agent
    for (const auto& r : rows) {
      // An agent that takes its type first; else any (which discards it with the reason).
      auto target = ctx_.directory->available_agent_for(r.service, "", r.type);
      if (!target) target = ctx_.directory->available_agent_for(r.service);
      if (target) moves.emplace_back(r.id, *target);
    }
    if (moves.empty()) return;
    held_pending_ = true;
    submit_moves(std::move(moves), [this] { held_pending_ = false; });
  }

  // Webhooks without an agent identifier waiting on a down or paused agent move to the next
  // available agent hosting their service.
  void sweep_failover(Agent& a, Millis steady) {
    if (a.failover_pending || a.removed || a.health.state() == AgentHealth::State::kUp) return;
    // An alert left behind because a webhook of it was in hand is looked at again as soon as
    // something was released (not only at the next forced reload).
    if (steady - last_failover_sweep_[a.cfg.id] < kForcedReloadEvery && a.failover_cursor == 0 &&
        !(a.failover_recheck && a.dirty))
      return;
    last_failover_sweep_[a.cfg.id] = steady;
    a.failover_recheck = false;
    std::vector<std::pair<std::string, std::string>> moves;
    std::size_t walked = 0;
    std::int64_t cursor = a.failover_cursor;
    // A webhook behind a held one of its alert stays with it: moved alone, it would wait on
    // the other agent, and once the hold ends the two would be on different agents.
    const bool any_held = a.cfg.ordering == Ordering::kEvent && any_held_webhook(*db_);
    for (;;) {
      auto rows = scan_queue(*db_, a.cfg.id, cursor, kScanPage);
      for (const auto& r : rows) {
        cursor = r.seq;
        if (r.agent || a.in_hand.count(r.seq)) continue;
        // A webhook of an alert with one in hand (a chain step's claim waiting to be given
        // back, say) stays: moved, it could be sent before the one in hand.
        // The walk is paged over loop turns: an alert skipped once stays skipped for the rest
        // of the pass (its key may be released before a later page), so nothing of it is
        // moved ahead of the webhook left behind; the next pass moves them in order.
        if (a.keys_ordering == Ordering::kEvent) {
          std::string key = ordering_key(Ordering::kEvent, r);
          if (a.busy_keys.count(key) || a.failover_skipped.count(key)) {
            a.failover_skipped.insert(std::move(key));
            a.failover_recheck = true;
            continue;
          }
        }
        if (any_held && !r.event_id.empty() &&
            held_before(*db_, a.cfg.id, r.event_id, r.service, r.seq))
          continue;
        // Only to an agent that takes its type, if this one does (else it would be discarded
        // there, where this agent would deliver it once back).
        if (auto target = ctx_.directory->available_agent_for(r.service, a.cfg.id,
                                                              a.cfg.takes(r.type) ? r.type : ""))
          moves.emplace_back(r.id, *target);
      }
      walked += rows.size();
      if (rows.size() < static_cast<size_t>(kScanPage)) {
        cursor = 0;
        break;
      }
      if (walked >= kMaxWalkRows) break;
    }
    a.failover_cursor = cursor;
    if (cursor == 0) a.failover_skipped.clear();  // the pass ended: the next starts afresh
    if (moves.empty()) return;
    a.failover_pending = true;
    a.candidates.clear();
    std::string from = a.cfg.id;
    submit_moves(std::move(moves), [this, from] {
      if (auto it = agents_.find(from); it != agents_.end()) it->second->failover_pending = false;
    });
  }

  // Queued webhooks assigned to an agent that is no longer configured (removed by a reload, or
  // retired while the relay was down). Those addressed to it by identifier keep waiting for it
  // (docs/architecture.md, "Routing" rule 1; status and iarelay_queue_unconfigured show them,
  // `iarelay move` moves them). The others were routed there: one that asked for another agent goes
  // back to that agent's queue; one that asked for none goes to the first available agent hosting
  // its service, else it is held for any agent of its service (never discarded: it was accepted,
  // and its service's other agents may be away for a moment). A reroute applies only while
  // the row still waits on the retired agent.
  void sweep_retired(Millis steady) {
    if (retired_pending_ || ctx_.directory->is_edge()) return;  // an edge calls no agent
    if (!retired_dirty_ && steady - last_retired_sweep_ < kRetiredSweepEvery) return;
    retired_dirty_ = false;
    last_retired_sweep_ = steady;
    std::set<std::string> configured;
    for (const auto& [id, a] : agents_)
      if (!a->removed) configured.insert(id);
    std::vector<Reroute> reroutes;
    std::size_t walked = 0;
    for (const std::string& agent : agents_with_queued(*db_)) {
      if (configured.count(agent)) continue;
      std::int64_t& cursor = retired_cursors_[agent];
      const Agent* busy = nullptr;  // a removed agent still finishing what it has in hand
      if (auto it = agents_.find(agent); it != agents_.end()) busy = it->second.get();
      std::unordered_set<std::string>& skipped = retired_skipped_[agent];
      if (cursor == 0) skipped.clear();  // a new pass
      for (;;) {
        auto rows = scan_queue(*db_, agent, cursor, kScanPage);
        for (const auto& r : rows) {
          cursor = r.seq;
          if (r.agent && *r.agent == agent) continue;  // addressed to it: waits for it
          // Behind a webhook of its alert still in hand (being finished or given back): stays
          // until that one is done, or it could be sent first elsewhere.
          // As in sweep_failover, an alert skipped once stays skipped for the rest of the pass.
          if (busy && busy->keys_ordering == Ordering::kEvent) {
            std::string key = ordering_key(Ordering::kEvent, r);
            if (busy->busy_keys.count(key) || skipped.count(key)) {
              skipped.insert(std::move(key));
              continue;
            }
          }
          // Never discarded here: rule 3 discards on arrival only. Acknowledged long ago, a
          // webhook whose other hosts are down or paused for a moment waits for them (held).
          Reroute to{r.id, agent, std::nullopt};
          if (r.agent)
            to.agent = *r.agent;
          else
            to.agent = ctx_.directory->route(r.service, std::nullopt, r.type).assigned_agent;
          reroutes.push_back(std::move(to));
        }
        walked += rows.size();
        if (rows.size() < static_cast<size_t>(kScanPage)) {
          cursor = 0;
          break;
        }
        if (walked >= kMaxWalkRows) {
          retired_dirty_ = true;  // more to walk: go on at the next turn
          break;
        }
      }
      if (walked >= kMaxWalkRows) break;
    }
    if (reroutes.empty()) return;
    retired_pending_ = true;
    std::size_t n = reroutes.size();
    submit_reroutes(std::move(reroutes), [this, n] {
      retired_pending_ = false;
      spdlog::info("dispatcher: rerouted {} webhooks routed to agents no longer configured", n);
    });
  }

  struct Reroute {
    std::string id;
    std::string from;                  // the agent no longer configured
    std::optional<std::string> agent;  // the new agent; nullopt: held for any agent
  };

  void submit_reroutes(std::vector<Reroute> reroutes, std::function<void()> after) {
    ++outstanding_;
    auto shared = std::make_shared<std::vector<Reroute>>(std::move(reroutes));
    ctx_.writer->submit(
        [shared](SQLite::Database& db) {
          auto where = cached_statement(db, "SELECT assigned_agent FROM webhooks WHERE id=?");
          for (const auto& r : *shared) {
            // Only if it still waits where it was found: a move, a resend or a reload that
            // brought the agent back may have placed it since.
            where->reset();
            where->bind(1, r.id);
            if (!where->executeStep() || where->getColumn(0).isNull() ||
                where->getColumn(0).getString() != r.from)
              continue;
            where->reset();
            TransitionFields f;
            f.assigned_agent.emplace(r.agent);  // nullopt: NULL (held)
            f.next_attempt_at = std::optional<Millis>();
            transition(db, r.id, WebhookState::kQueued, WebhookState::kQueued, f);
          }
        },
        [this, shared, after = std::move(after), mailbox = mailbox_](const Status& s) {
          mailbox->post([this, shared, after, s] {
            --outstanding_;
            if (!s)
              spdlog::warn("rerouting {} webhooks of agents no longer configured failed: {}",
                           shared->size(), s.message());
            for (const auto& r : *shared)
              if (r.agent)
                if (auto it = agents_.find(*r.agent); it != agents_.end()) it->second->dirty = true;
            held_dirty_ = true;
            after();
          });
        });
  }

  // queued → queued with a new assigned agent, one writer op for the batch.
  void submit_moves(std::vector<std::pair<std::string, std::string>> moves,
                    std::function<void()> after) {
    ++outstanding_;
    auto shared =
        std::make_shared<std::vector<std::pair<std::string, std::string>>>(std::move(moves));
    ctx_.writer->submit(
        [shared](SQLite::Database& db) {
          for (const auto& [id, agent] : *shared) {
            TransitionFields f;
            f.assigned_agent = std::optional<std::string>(agent);
            f.next_attempt_at = std::optional<Millis>();
            transition(db, id, WebhookState::kQueued, WebhookState::kQueued, f);
          }
        },
        [this, shared, after = std::move(after), mailbox = mailbox_](const Status& s) {
          mailbox->post([this, shared, after, s] {
            --outstanding_;
            if (!s) spdlog::warn("reassigning {} webhooks failed: {}", shared->size(), s.message());
            for (const auto& [id, agent] : *shared)
              if (auto it = agents_.find(agent); it != agents_.end()) it->second->dirty = true;
            after();
          });
        });
  }

  // --- scheduling and claims
  // ----------------------------------------------------------------------
  void schedule(Agent& a, Millis now, Millis steady) {
    start_ready(a);
    if (a.removed || !a.usable) return;
    // Webhooks are being moved away (failover): a claim now (a probe) could take one whose
    // alert's later webhooks are moved and then sent first elsewhere. Claims wait for the move.
    if (a.failover_pending) return;
    // A claim's commit failed (a full disk): the next waits like any failed write, instead of
    // being made again at once, in a loop, for as long as the journal cannot be written.
    if (steady < a.claim_retry_at) return;
    std::size_t free =
        a.health.may_start(a.calls + a.claiming + a.ready.size(),
                           static_cast<size_t>(std::max(a.cfg.max_inflight, 1)), steady);
    if (free == 0) return;
    if (a.keys_ordering != a.cfg.ordering) {
      // The ordering changed (reload): the keys in hand were computed under the old one.
      if (!a.in_hand.empty()) return;
      a.keys_ordering = a.cfg.ordering;
    }
    const bool probe = a.health.probing();
    if (a.candidates.empty() && a.appended) {
      // New rows only: read those, unless the head window must be walked anyway (a backing-off
      // row came due, a probe) or fifo ordering (its walk stops at the first row: cheap).
      if (a.dirty || probe || now >= a.wake_at || a.cfg.ordering == Ordering::kFifo) {
        a.dirty = true;
        a.appended = false;  // the full fill reads them
      } else if (!read_step(a.scan_gate, "queue scan", [&] { fill_new_rows(a, now); })) {
        return;
      }
    }
    if (a.candidates.empty() && !a.appended) {
      const bool resume_due = a.resume_pending && steady_millis() >= a.next_resume_at;
      // Only the walk past the head is due: nothing changed that the head window would show.
      // Never under fifo: there nothing may go past the head (the head window is walked again
      // once something changes).
      const bool resume_only = !a.dirty && now < a.wake_at && !probe;
      if (resume_only && (!resume_due || a.cfg.ordering == Ordering::kFifo)) return;
      if (!read_step(a.scan_gate, "queue scan", [&] { fill(a, now, probe, resume_only); })) return;
    }
    std::vector<InHand> batch;
    while (free > 0 && !a.candidates.empty()) {
      QueuedWebhook w = std::move(a.candidates.front());
      a.candidates.pop_front();
      InHand item;
      item.key = ordering_key(a.cfg.ordering, w);
      item.attempt = w.attempts + 1;
      item.probe = probe;
      item.w = std::move(w);
      a.busy_keys.insert(item.key);
      a.in_hand.insert(item.w.seq);
      a.expedite.erase(item.w.seq);
      if (!a.cfg.takes(item.w.type)) {
        discard_not_taken(a, std::move(item));
        continue;
      }
      batch.push_back(std::move(item));
      --free;
    }
    if (probe) a.candidates.clear();  // a probe's pick is not kept: the next one walks again
    if (!batch.empty()) claim(a, std::move(batch));
  }

  // Offers the agent's queued rows from `after` on to `ks` (candidates go to a.candidates) until
  // it is saturated, the queue ends or kMaxWalkRows were walked. Returns the last seq walked
  // and whether the queue ended.
  std::pair<std::int64_t, bool> walk_queue(Agent& a, KeyScheduler& ks, std::int64_t after,
                                           bool probe) {
    std::size_t walked = 0;
    for (;;) {
      auto rows = scan_queue(*db_, a.cfg.id, after, kScanPage);
      for (auto& r : rows) {
        after = r.seq;
        ++walked;
        bool ignore_due = probe || a.expedite.count(r.seq);
        if (ks.offer(r, a.in_hand.count(r.seq) > 0, ignore_due))
          a.candidates.push_back(std::move(r));
        if (ks.saturated()) break;
      }
      if (rows.size() < static_cast<size_t>(kScanPage)) return {after, true};
      if (ks.saturated() || walked >= kMaxWalkRows) return {after, false};
    }
  }

  // Whether a webhook stands before `w` in the agent's delivery order held by an operator
  // (event ordering: one of its alert; fifo: any of the agent). `any_held`: any_held_webhook.
  bool held_earlier(const Agent& a, bool any_held, const QueuedWebhook& w) {
    if (!any_held) return false;
    if (a.cfg.ordering == Ordering::kEvent && w.event_id.empty()) return false;
    return held_before(*db_, a.cfg.id,
                       a.cfg.ordering == Ordering::kEvent ? w.event_id : std::string(), w.service,
                       w.seq);
  }

  // After commits that only added rows (wake(true)): reads the agent's queued rows past
  // tail_seen instead of walking the queue from its head again. Each is checked against the
  // rows before it that this read does not see (an earlier queued webhook of its alert, a held
  // one). Event or none ordering (fifo walks in full). A row whose alert has a webhook in hand
  // waits with no check (the usual case under load: an alert's webhooks come in a stream); for
  // any other, the earlier webhook is looked for among the first kShortQueue queued rows, never
  // by the event index, which holds every row the alert ever had (delivered rows stay until
  // retention: reading them for each new row stalled the dispatcher). When the queue is
  // longer, nothing is picked: the queue is walked from its head, as for any other change.
  void fill_new_rows(Agent& a, Millis now) {
    a.candidates.clear();
    std::size_t cap = std::min(kMaxCandidates, std::max<std::size_t>(32, 2 * a.cfg.max_inflight));
    KeyScheduler ks(a.cfg.ordering, now, a.busy_keys, cap);
    std::optional<SQLite::Transaction> snapshot;
    if (sqlite3_get_autocommit(db_->getHandle())) snapshot.emplace(*db_);
    const bool any_held = a.cfg.ordering != Ordering::kNone && any_held_webhook(*db_);
    bool long_queue = false;
    ks.check_earlier([&](const QueuedWebhook& w) {
      if (held_earlier(a, any_held, w)) return true;
      if (a.cfg.ordering != Ordering::kEvent || w.event_id.empty()) return false;
      if (long_queue) return true;  // the queue is walked from its head anyway: no more reads
      auto ahead = queued_of_event_within(*db_, a.cfg.id, w.event_id, w.seq, kShortQueue);
      if (!ahead) long_queue = true;
      return ahead.value_or(true);
    });
    auto [last, ended] = walk_queue(a, ks, a.tail_seen, false);
    if (long_queue) {
      a.candidates.clear();
      a.dirty = true;
      a.appended = false;
      return;
    }
    a.tail_seen = last;
    // Stopped short (saturated, or kMaxWalkRows new rows): the rest is read at the next fill.
    a.appended = !ended;
    if (auto due = ks.earliest_not_due()) a.wake_at = std::min(a.wake_at, *due);
    // What the last full fill left in the head window is still there.
    a.more_to_pick = a.more_to_pick || ks.saturated();
  }

  // Picks candidates from two windows of the queue: the head (at most kMaxWalkRows from the
  // start) and, when the head has nothing more to give, the next kMaxWalkRows from where the
  // previous fill's second window stopped. Without the second window, due webhooks behind 4096
  // backing-off ones would wait for those to come due.
  // `resume_only`: the head window is not walked again (nothing changed there since the last
  // fill); rows past it are still checked against earlier queued webhooks of their key.
  void fill(Agent& a, Millis now, bool probe, bool resume_only) {
    a.candidates.clear();
    const Millis head_wake_at = a.wake_at;
    a.wake_at = kNever;
    std::size_t cap =
        probe ? 1 : std::min(kMaxCandidates, std::max<std::size_t>(32, 2 * a.cfg.max_inflight));
    KeyScheduler ks(a.cfg.ordering, now, a.busy_keys, cap);
    auto walk = [&](std::int64_t after) { return walk_queue(a, ks, after, probe); };
    // One read snapshot for the whole fill: a hold committed between the check for held
    // webhooks and the queue's scan could otherwise let a later webhook of its alert through.
    std::optional<SQLite::Transaction> snapshot;
    if (sqlite3_get_autocommit(db_->getHandle())) snapshot.emplace(*db_);
    // A webhook an operator holds keeps its place: later webhooks of its key wait behind it
    // (event: same alert; fifo: the whole agent), as behind one backing off.
    const bool any_held = a.cfg.ordering != Ordering::kNone && any_held_webhook(*db_);
    auto held_earlier = [this, &a, any_held](const QueuedWebhook& w) {
      return this->held_earlier(a, any_held, w);
    };
    if (any_held) ks.check_earlier(held_earlier);
    std::int64_t head_last = a.head_last;
    bool head_ended = false;
    if (!resume_only) {
      std::tie(head_last, head_ended) = walk(0);
      a.head_last = head_last;
      // Rows past the head window are the walk past it's (below); new ones, past this, are
      // read by fill_new_rows.
      a.tail_seen = head_ended ? head_last : std::max(head_last, last_queued_seq(*db_, a.cfg.id));
      a.appended = false;
    }
    if (head_ended) {
      a.resume_after = 0;
      a.resume_pending = false;
    } else if (ks.saturated() || a.cfg.ordering == Ordering::kFifo) {
      // The head window has work (or, with fifo, its first row holds everything behind it):
      // no walk past it is pending; it resumes from resume_after once the head has nothing.
      a.resume_pending = false;
    } else if (!probe && steady_millis() >= a.next_resume_at) {
      // Rows between the head window and the resume point were not seen by this walk: a row
      // found here is sent only if no earlier webhook of its key is still queued (event
      // ordering; `none` has no constraint; fifo never gets here).
      ks.check_earlier([&](const QueuedWebhook& w) {
        return (a.cfg.ordering == Ordering::kEvent && !w.event_id.empty() &&
                queued_before(*db_, a.cfg.id, w.event_id, w.seq)) ||
               held_earlier(w);
      });
      const std::int64_t from = std::max(a.resume_after, head_last);
      const std::size_t picked = ks.picked(), busy = ks.passed_over_busy();
      auto [last, ended] = walk(from);
      if (ks.picked() > picked || ks.passed_over_busy() > busy) {
        // Work here, now or once what is in hand is done: stay on this window (as the head
        // window is walked again) until it yields nothing; completions make the agent dirty.
        a.resume_after = from;
        a.next_resume_at = 0;
        a.resume_pending = false;
      } else {
        // Nothing here: the pass goes on, paced, until the queue's end; then a new one.
        a.resume_after = ended ? 0 : last;
        a.next_resume_at = steady_millis() + (ended ? kPassEvery : kResumeEvery);
        a.resume_pending = true;
      }
    }
    if (auto due = ks.earliest_not_due()) a.wake_at = *due;
    if (resume_only) a.wake_at = std::min(a.wake_at, head_wake_at);
    a.dirty = false;  // only now: a scan that failed part-way is done again
    a.more_to_pick = ks.saturated();
    // Walked without finding work behind busy keys: completions will mark the agent dirty; the
    // rows not walked are looked at again at the next forced reload.
  }

  // A webhook of a type the agent's `kinds` leave out is not sent: it ends discarded with the
  // reason (terminal, so the next webhook of its alert goes on; `iarelay resend` queues it
  // again, and it ends the same way while its type is still left out). Checked here, with the
  // agent's current configuration, so a reload that adds the type applies to the next pick. No
  // claim and no attempt; its key stays busy until the discard is durable, as a call's would.
  void discard_not_taken(Agent& a, InHand item) {
    const std::string reason = "type \"" + truncate(header_value(item.w.type), 200) +
                               "\" is not in [agent." + a.cfg.handle + "] kinds (" +
                               a.cfg.kinds_text() + ")";
    spdlog::info("webhook {} discarded for {}: {}", item.w.id, a.cfg.id, truncate(reason, 300));
    TransitionFields f;
    f.last_error = std::optional<std::string>(truncate(reason, 1000));
    f.next_attempt_at = std::optional<Millis>();
    const std::string id = item.w.id;
    auto op = std::make_shared<Writer::Op>([id, agent = a.cfg.id, f](SQLite::Database& db) {
      // Only while it is still this agent's: moved meanwhile (iarelay move, a failover) to an
      // agent that may take its type, it is that agent's to decide.
      auto still = cached_statement(
          db, "SELECT 1 FROM webhooks WHERE id=? AND state='queued' AND assigned_agent=?");
      still->bind(1, id);
      still->bind(2, agent);
      const bool its_own = still->executeStep();
      still->reset();
      if (!its_own) return;
      transition(db, id, WebhookState::kQueued, WebhookState::kDiscarded, f);
    });
    pending_outcomes_.push_back(
        {0, a.cfg.id, std::move(item), std::move(op), std::string(), nullptr});
  }

  void claim(Agent& a, std::vector<InHand> batch) {
    a.claiming += batch.size();
    ++outstanding_;
    auto items = std::make_shared<std::vector<InHand>>(std::move(batch));
    auto claimed = std::make_shared<std::vector<bool>>(items->size(), false);
    std::string agent_id = a.cfg.id;
    ctx_.writer->submit_quiet(
        [items, claimed, agent_id](SQLite::Database& db) {
          for (size_t i = 0; i < items->size(); ++i) {
            TransitionFields f;
            f.assigned_agent = std::optional<std::string>(agent_id);
            f.increment_attempts = true;
            (*claimed)[i] =
                transition(db, (*items)[i].w.id, WebhookState::kQueued, WebhookState::kInflight, f);
          }
        },
        [this, items, claimed, agent_id, mailbox = mailbox_](const Status& s) {
          mailbox->post([this, items, claimed, agent_id, s] {
            --outstanding_;
            on_claimed(agent_id, *items, s ? *claimed : std::vector<bool>(items->size(), false), s);
          });
        });
  }

  void on_claimed(const std::string& agent_id, std::vector<InHand>& items,
                  const std::vector<bool>& claimed, const Status& s) {
    Agent& a = *agents_.at(agent_id);
    a.claiming -= items.size();
    if (!s) {
      spdlog::warn("claiming {} webhooks for {} failed: {}", items.size(), agent_id, s.message());
      a.claim_retry_at = steady_millis() + kWriteRetryDelay;
    }
    std::vector<InHand> give_back;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!claimed[i]) {
        release(a, items[i]);  // someone else moved it first, or the write failed
        continue;
      }
      if (stopping_) {
        give_back.push_back(std::move(items[i]));
        continue;
      }
      start_call(a, std::move(items[i]));
    }
    if (!give_back.empty()) unclaim(a, std::move(give_back));
  }

  // Claimed but not sent (stopping, or a chain step's claim the agent can no longer take): back
  // to queued with the attempt not counted. Keys and seqs are released only once that is
  // journaled: should the write fail, the rows stay inflight and in hand (nothing later of
  // their alerts goes first) and the write is made again shortly, as outcomes are.
  void unclaim(Agent& a, std::vector<InHand> items) {
    ++outstanding_;
    auto shared = std::make_shared<std::vector<InHand>>(std::move(items));
    std::string agent_id = a.cfg.id;
    ctx_.writer->submit_quiet(
        [shared](SQLite::Database& db) {
          for (const auto& it : *shared) {
            TransitionFields f;
            f.attempts = it.w.attempts;
            transition(db, it.w.id, WebhookState::kInflight, WebhookState::kQueued, f);
          }
        },
        [this, shared, agent_id, mailbox = mailbox_](const Status& s) {
          mailbox->post([this, shared, agent_id, s] {
            --outstanding_;
            Agent& ag = *agents_.at(agent_id);
            if (!s && !stopping_) {
              spdlog::warn("giving back {} claimed webhooks of {} failed: {}; retrying",
                           shared->size(), agent_id, s.message());
              unclaim_retries_.push_back(
                  {steady_millis() + kWriteRetryDelay, agent_id, std::move(*shared)});
              return;
            }
            // Stopping: rows left inflight are requeued at the next start.
            for (const auto& it : *shared) release(ag, it);
          });
        });
  }

  void release(Agent& a, const InHand& item) {
    a.busy_keys.erase(item.key);
    a.in_hand.erase(item.w.seq);
    a.expedite.erase(item.w.seq);
    a.dirty = true;
  }

  // --- calls
  // --------------------------------------------------------------------------------------
  CURL* take_easy() {
    if (!easy_pool_.empty()) {
      CURL* e = easy_pool_.back();
      easy_pool_.pop_back();
      curl_easy_reset(e);
      return e;
    }
    return curl_easy_init();
  }

  // Prepares and starts the call. Anything that goes wrong before the request is under way
  // fails this webhook alone (or, for a read error, retries it): never the loop.
  void start_call(Agent& a, InHand item) {
    const Millis now = now_millis();
    auto call = std::make_unique<Call>();
    std::string problem;
    bool retry = false;
    try {
      prepare_call(a, item, *call, now);
    } catch (const SQLite::Exception& e) {
      // The read connection, not the webhook: retried with the attempt given back (no call was
      // made; max_attempts counts real attempts), backed off while such errors go on.
      read_failed(nullptr, "payload", e.what());
      problem = std::string("reading the payload failed: ") + e.what();
      retry = true;
    } catch (const std::exception& e) {
      problem = std::string("cannot prepare the call: ") + e.what();
    }
    if (problem.empty() && !call->problem.empty()) problem = std::move(call->problem);
    CURLMcode added = CURLM_OK;
    if (problem.empty()) {
      call->agent = &a;
      call->item = std::move(item);
      call->started_at = now;
      call->steady_start = steady_millis();
      added = curl_multi_add_handle(multi_, call->easy);
      if (added == CURLM_OK) {
        a.local_backoff = 0;
        ++a.calls;
        ++outstanding_;
        calls_.insert(call.release());
        return;
      }
      item = std::move(call->item);
      problem = std::string("cannot start the call: ") + curl_multi_strerror(added);
      retry = true;
    }
    if (call->easy) easy_pool_.push_back(call->easy);
    curl_slist_free_all(call->headers);
    spdlog::warn("webhook {} for {}: {}", item.w.id, a.cfg.id, truncate(problem, 200));
    CallOutcome none;
    RetryDecision d;
    d.reason = problem;
    if (retry) {
      // A local error, no call made: back to queued with the attempt given back (finish does it
      // for calls not made), so the next try sends the same X-Iarelay-Attempt.
      a.local_backoff = std::clamp<Millis>(a.local_backoff * 2, kReadBackoffMin, kReadBackoffMax);
      d.kind = RetryDecision::Kind::kRetryable;
      d.next_attempt_at = now + a.local_backoff;
    } else {
      // A problem of this webhook (no payload, cannot be converted): fail it at once.
      d.kind = RetryDecision::Kind::kPermanent;
    }
    finish(a, std::move(item), none, d, now, 0, /*called=*/false);
  }

  // The body, headers and options of one call; sets call.problem for a webhook that cannot be
  // sent; throws on errors of the read connection (SQLite::Exception) or anything unforeseen.
  void prepare_call(const Agent& a, const InHand& item, Call& call, Millis now) {
    const auto& w = item.w;
    auto payload = load_payload(*db_, w.id);
    if (!payload) {
      call.problem = "payload missing from the journal";
      return;
    }
    if (a.cfg.format == AgentFormat::kIa) {
      auto converted = to_ia_message(w.type, *payload);
      if (!converted) {
        call.problem = "cannot convert payload to the ia format: " + converted.status().message();
        return;
      }
      call.body = std::move(*converted);
    } else {
      call.body = std::move(*payload);
    }
    // The id is signed as sent: both come from the same cleaned value.
    const std::string id = header_value(w.id);
    const std::string ts = std::to_string(now / 1000);
    auto add = [&](const std::string& h) {
      curl_slist* next = curl_slist_append(call.headers, h.c_str());
      if (!next) throw std::runtime_error("out of memory for headers");
      call.headers = next;
    };
    add("Content-Type: application/json");
    add("webhook-id: " + id);
    add("webhook-timestamp: " + ts);
    if (!a.signing_key.empty())
      add("webhook-signature: " + sign_webhook(a.signing_key, id, ts, call.body));
    add("X-Iarelay-Attempt: " + std::to_string(item.attempt));
    add("X-Iarelay-Service: " + header_value(w.service));
    add("X-Iarelay-Type: " + header_value(w.type));
    add("Expect:");
    call.easy = take_easy();
    if (!call.easy) throw std::runtime_error("curl_easy_init failed");
    CURL* e = call.easy;
    // {domain} and {service} filled in for this webhook (libcurl copies the string).
    curl_easy_setopt(e, CURLOPT_URL, callback_url(a.cfg, w.service).c_str());
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, call.body.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call.headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<Millis>(a.cfg.timeout, 1)));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &call);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call.errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &call);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "iarelay/" IARELAY_VERSION);
    // Direct unless the agent names its own proxy: "" keeps libcurl from applying http_proxy,
    // https_proxy or all_proxy (meant for the upstream poller) to agents' payloads; an agent's
    // proxy is explicit, so no_proxy does not bypass it.
    curl_easy_setopt(e, CURLOPT_PROXY, a.cfg.proxy.c_str());
    curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    // Never followed: a signed body must not go elsewhere (a 3xx is retried, see retry_policy).
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  }

  bool read_finished_calls() {
    bool any = false;
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      any = true;
      Call* call = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &call);
      CURLcode rc = msg->data.result;
      curl_multi_remove_handle(multi_, call->easy);
      // Should recording fail, the webhook stays inflight (requeued at next start); the loop
      // goes on.
      guarded("recording a call", [&] { on_call_done(call, rc); });
    }
    return any;
  }

  void on_call_done(Call* call, CURLcode rc) {
    Agent& a = *call->agent;
    const Millis now = now_millis();
    const Millis duration = steady_millis() - call->steady_start;
    CallOutcome outcome;
    if (rc == CURLE_OK) {
      long status = 0;
      curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
      outcome.kind = CallOutcome::Kind::kHttp;
      outcome.status = static_cast<int>(status);
      outcome.retry_after = call->retry_after;
      outcome.location = call->location;
      outcome.body_excerpt = call->excerpt;
    } else {
      outcome.kind = rc == CURLE_OPERATION_TIMEDOUT ? CallOutcome::Kind::kTimeout
                                                    : CallOutcome::Kind::kTransport;
      outcome.error = call->errbuf[0] ? std::string(call->errbuf) : curl_easy_strerror(rc);
    }
    calls_.erase(call);
    easy_pool_.push_back(call->easy);
    curl_slist_free_all(call->headers);
    --a.calls;
    --outstanding_;
    InHand item = std::move(call->item);
    Millis started = call->started_at;
    delete call;

    RetryPolicy policy{a.cfg.max_attempts, a.cfg.backoff_initial, a.cfg.backoff_max};
    RetryDecision d = decide_retry(item.attempt, outcome, now, policy, draw_(rng_));
    if (item.probe && d.kind == RetryDecision::Kind::kPermanent && d.agent_failure &&
        outcome.kind != CallOutcome::Kind::kHttp) {
      // A probe that found the agent unreachable says nothing about the webhook: it keeps
      // waiting for its agent instead of failing on the budget (documented in the header).
      d.kind = RetryDecision::Kind::kRetryable;
      d.next_attempt_at = now;
    }
    if (a.duration) a.duration->observe(static_cast<double>(duration) / 1000.0);
    track_health(a, item, d);
    finish(a, std::move(item), outcome, d, started, duration, /*called=*/true);
  }

  void track_health(Agent& a, const InHand& item, const RetryDecision& d) {
    if (d.kind == RetryDecision::Kind::kRetryable && a.streak.size() < kMaxStreak)
      a.streak.insert(item.w.seq);
    auto change = a.health.on_result(d.agent_failure, item.probe, steady_millis());
    if (!d.agent_failure && change == AgentHealth::Change::kNone) a.streak.clear();
    if (change == AgentHealth::Change::kWentDown) {
      std::string reason = std::to_string(a.health.consecutive_failures()) +
                           " consecutive failures; last: " + truncate(d.reason, 200);
      spdlog::warn("agent {} down: {}", a.cfg.id, reason);
      a.candidates.clear();
      ctx_.directory->set_availability(a.cfg.id, Availability::kDown);
      record_agent_state(a.cfg.id, "down", reason);
      update_gauges(a);
    } else if (change == AgentHealth::Change::kCameUp) {
      spdlog::info("agent {} up again", a.cfg.id);
      // The probe's webhook is done; the others of the outage go at once. (A chain step needs
      // no wait for them: it claims only its alert's first queued webhook, and only when due,
      // so an expedited one of the same alert is never passed.)
      a.streak.erase(item.w.seq);
      a.expedite = std::move(a.streak);
      a.streak.clear();
      a.dirty = true;
      held_dirty_ = true;
      ctx_.directory->set_availability(a.cfg.id, Availability::kUp);
      record_agent_state(a.cfg.id, "up", std::nullopt);
      update_gauges(a);
    }
  }

  void record_agent_state(const std::string& id, const std::string& state,
                          std::optional<std::string> reason) {
    ctx_.writer->submit(
        [id, state, reason](SQLite::Database& db) {
          set_agent_state(db, id, state, reason, std::nullopt, /*unless_paused=*/true);
        },
        [id](const Status& s) {
          if (!s) spdlog::warn("could not record the state of agent {}: {}", id, s.message());
        });
  }

  // Journals the attempt (when a call was made) and the outcome; the key stays busy until the
  // outcome is durable so the next webhook of the key cannot overtake it.
  void finish(Agent& a, InHand item, const CallOutcome& outcome, const RetryDecision& d,
              Millis started, Millis duration, bool called) {
    const Millis now = now_millis();
    auto attempt = std::make_shared<AttemptRecord>();
    attempt->webhook_id = item.w.id;
    attempt->attempt = item.attempt;
    attempt->agent = a.cfg.id;
    attempt->started_at = started;
    attempt->duration_ms = duration;
    if (outcome.kind == CallOutcome::Kind::kHttp && called) attempt->http_status = outcome.status;
    TransitionFields f;
    WebhookState to = WebhookState::kDelivered;
    std::optional<int> status;
    if (called && outcome.kind == CallOutcome::Kind::kHttp) status = outcome.status;
    std::string target;  // failover destination
    switch (d.kind) {
      case RetryDecision::Kind::kDelivered:
        attempt->outcome = "delivered";
        f.delivered_at = now;
        f.last_status = status;
        f.last_error = std::optional<std::string>();
        f.next_attempt_at = std::optional<Millis>();
        if (a.delivered) a.delivered->inc();
        break;
      case RetryDecision::Kind::kRetryable: {
        attempt->outcome = "retry";
        attempt->error = truncate(d.reason, 1000);
        to = WebhookState::kQueued;
        f.last_status = status;
        f.last_error = std::optional<std::string>(truncate(d.reason, 1000));
        f.next_attempt_at = std::optional<Millis>(d.next_attempt_at);
        if (!called) {
          // No call was made (a local error): the claim's attempt is given back, and the
          // webhook stays with this agent (the agent did not fail).
          f.attempts = item.w.attempts;
          break;
        }
        // Under fifo the agent's queue is one sequence: its head stays and is retried here
        // (should the agent go down, the failover sweep moves the queue, in order).
        if (!item.w.agent && a.cfg.ordering != Ordering::kFifo &&
            a.keys_ordering != Ordering::kFifo) {
          if (auto other = ctx_.directory->available_agent_for(
                  item.w.service, a.cfg.id, a.cfg.takes(item.w.type) ? item.w.type : "")) {
            target = *other;
            f.assigned_agent = std::optional<std::string>(target);
            f.next_attempt_at = std::optional<Millis>();
          }
        }
        if (a.retried) a.retried->inc();
        break;
      }
      case RetryDecision::Kind::kPermanent:
        attempt->outcome = "failed";
        attempt->error = truncate(d.reason, 1000);
        to = WebhookState::kFailed;
        f.last_status = status;
        f.last_error = std::optional<std::string>(truncate(d.reason, 1000));
        if (a.failed) a.failed->inc();
        if (d.reason.rfind("attempt budget", 0) == 0)
          spdlog::warn("webhook {} failed for {}: {}", item.w.id, a.cfg.id,
                       truncate(d.reason, 200));
        break;
    }
    if (!called) attempt.reset();
    const std::string id = item.w.id;
    std::shared_ptr<Chain> chain;
    if (d.kind == RetryDecision::Kind::kDelivered && called && may_chain(a, item)) {
      chain = std::make_shared<Chain>();
      chain->agent_id = a.cfg.id;
      chain->key = item.key;
      chain->event_id = item.w.event_id;
      chain->after_seq = item.w.seq;
      chain->now = now;
      chain->kinds = a.cfg.kinds;
      chain->all_kinds = a.cfg.all_kinds;
    }
    // A failover of one webhook of an alert (event ordering) takes the alert's later webhooks
    // queued here along, in the same transaction: left here, they would be sent while it waits
    // on the other agent. When one of them cannot go (see move_alert_tail), none goes: the
    // webhook is retried here.
    std::shared_ptr<AlertMove> alert_move;
    if (!target.empty() && a.keys_ordering == Ordering::kEvent && !item.w.event_id.empty()) {
      alert_move = std::make_shared<AlertMove>();
      alert_move->from = a.cfg.id;
      alert_move->to = target;
      alert_move->event_id = item.w.event_id;
      alert_move->after_seq = item.w.seq;
      if (auto it = agents_.find(target); it != agents_.end()) alert_move->to_cfg = it->second->cfg;
      alert_move->from_cfg = a.cfg;
      alert_move->stay = f;
      alert_move->stay.assigned_agent.reset();
      alert_move->stay.next_attempt_at = std::optional<Millis>(d.next_attempt_at);
    }
    auto op =
        std::make_shared<Writer::Op>([attempt, id, to, f, chain, alert_move](SQLite::Database& db) {
          if (attempt) record_attempt(db, *attempt);
          const bool moved =
              transition(db, id, WebhookState::kInflight, to,
                         alert_move && !move_alert_tail(db, *alert_move) ? alert_move->stay : f);
          if (chain) {
            chain->claimed = false;
            if (moved) try_chain_step(db, *chain);
          }
        });
    pending_outcomes_.push_back(
        {0, a.cfg.id, std::move(item), std::move(op), std::move(target), std::move(chain)});
  }

  // Whether the outcome of `item` (delivered) may claim the next webhook of its alert in the
  // same transaction (see Chain): only under event ordering, for an alert, on an agent that is
  // up and usable, outside reloads of its ordering and of shutdown; past kChainQuantum steps in
  // a row only while nothing else is known to wait for the agent.
  bool may_chain(Agent& a, const InHand& item) const {
    if (item.chain_steps >= kChainQuantum &&
        (!a.candidates.empty() || a.dirty || a.appended || a.more_to_pick || a.resume_pending))
      return false;
    if (a.chain_misses >= kChainMisses && ++a.chain_skipped % kChainRetryEvery != 0) return false;
    return !stopping_ && !a.removed && a.usable && a.cfg.ordering == Ordering::kEvent &&
           a.keys_ordering == Ordering::kEvent && !item.probe && !item.w.event_id.empty() &&
           a.health.state() == AgentHealth::State::kUp && !a.health.probing() &&
           steady_millis() >= a.claim_retry_at;
  }

  // The outcome of `done` claimed the next webhook of its alert: it is sent now (its key stays
  // busy), or once a call ends when the slot the finished call freed was taken meanwhile
  // (max_inflight holds), or, while stopping, given back.
  void continue_chain(Agent& a, const InHand& done, QueuedWebhook next) {
    a.in_hand.erase(done.w.seq);
    InHand item;
    item.key = done.key;
    item.attempt = next.attempts + 1;
    item.chain_steps = done.chain_steps + 1;
    item.w = std::move(next);
    a.in_hand.insert(item.w.seq);
    if (a.chained) a.chained->inc();
    a.ready.push_back(std::move(item));
    start_ready(a);
  }

  // Starts the claimed webhooks waiting for a slot while there is room; gives them back
  // (queued, attempt not counted) when the dispatcher stops, the agent is no longer up, or a
  // reload changed its ordering since the step was decided (a chain step claims the alert's
  // next webhook, not the agent's oldest: under fifo it would pass older webhooks of other
  // alerts).
  void start_ready(Agent& a) {
    if (a.ready.empty()) return;
    if (stopping_ || a.removed || !a.usable || a.health.state() != AgentHealth::State::kUp ||
        a.cfg.ordering != Ordering::kEvent || a.keys_ordering != Ordering::kEvent) {
      std::vector<InHand> back(std::make_move_iterator(a.ready.begin()),
                               std::make_move_iterator(a.ready.end()));
      a.ready.clear();
      unclaim(a, std::move(back));
      return;
    }
    // A reload left its type out of `kinds` since the step was decided: given back, the walk
    // picks it and discards it with the reason, as any webhook of that type.
    std::vector<InHand> not_taken;
    for (auto it = a.ready.begin(); it != a.ready.end();) {
      if (a.cfg.takes(it->w.type)) {
        ++it;
      } else {
        not_taken.push_back(std::move(*it));
        it = a.ready.erase(it);
      }
    }
    if (!not_taken.empty()) unclaim(a, std::move(not_taken));
    const auto max = static_cast<std::size_t>(std::max(a.cfg.max_inflight, 1));
    while (!a.ready.empty() && a.calls + a.claiming < max) {
      InHand item = std::move(a.ready.front());
      a.ready.pop_front();
      start_call(a, std::move(item));
    }
  }

  // An outcome waiting to be journaled (or to be journaled again after a failed write).
  struct PendingOutcome {
    Millis retry_at;  // steady time
    std::string agent_id;
    InHand item;
    std::shared_ptr<Writer::Op> op;
    std::string target;
    std::shared_ptr<Chain> chain;  // set: the op may claim the next webhook of the alert
  };

  // The outcomes of one loop turn go to the Writer as one op.
  void flush_outcomes() {
    if (pending_outcomes_.empty()) return;
    std::vector<PendingOutcome> batch = std::move(pending_outcomes_);
    pending_outcomes_.clear();
    submit_outcomes(std::move(batch));
  }

  void submit_outcomes(std::vector<PendingOutcome> outcomes) {
    ++outstanding_;
    auto batch = std::make_shared<std::vector<PendingOutcome>>(std::move(outcomes));
    ctx_.writer->submit_quiet(
        [batch](SQLite::Database& db) {
          // Afresh at each run: a failed write runs the op again, maybe with another batch.
          auto reads = std::make_shared<ChainBatch>();
          for (auto& o : *batch) {
            if (o.chain) o.chain->batch = reads;
            (*o.op)(db);
          }
        },
        [this, batch, mailbox = mailbox_](const Status& s) {
          mailbox->post([this, batch, s] {
            --outstanding_;
            if (!s) {
              // Not journaled: the keys stay busy and the outcomes are written again shortly,
              // each on its own so that one that cannot be written holds back no other (should
              // the process die first, the rows are requeued as inflight at start).
              spdlog::warn("journaling {} outcomes failed: {}; retrying", batch->size(),
                           s.message());
              for (auto& o : *batch) {
                o.retry_at = steady_millis() + kWriteRetryDelay;
                write_retries_.push_back(std::move(o));
              }
              return;
            }
            for (auto& o : *batch) {
              Agent& a = *agents_.at(o.agent_id);
              if (o.chain) {
                a.chain_misses = o.chain->claimed ? 0 : a.chain_misses + 1;
                if (o.chain->claimed) {
                  continue_chain(a, o.item, std::move(o.chain->next));
                  continue;
                }
              }
              release(a, o.item);
              if (!o.target.empty())
                if (auto it = agents_.find(o.target); it != agents_.end()) it->second->dirty = true;
            }
          });
        });
  }

  void retry_failed_writes(Millis steady) {
    for (auto it = unclaim_retries_.begin(); it != unclaim_retries_.end();) {
      if (it->retry_at <= steady) {
        UnclaimRetry u = std::move(*it);
        it = unclaim_retries_.erase(it);
        unclaim(*agents_.at(u.agent_id), std::move(u.items));
      } else {
        ++it;
      }
    }
    for (auto it = write_retries_.begin(); it != write_retries_.end();) {
      if (it->retry_at <= steady) {
        std::vector<PendingOutcome> one;
        one.push_back(std::move(*it));
        it = write_retries_.erase(it);
        submit_outcomes(std::move(one));
      } else {
        ++it;
      }
    }
  }

  DispatcherContext ctx_;
  std::shared_ptr<Mailbox> mailbox_;
  CURLM* multi_ = nullptr;
  DatabasePtr db_;                            // the dispatcher thread's read connection
  std::optional<StatementCacheScope> cache_;  // db_'s statements; reset before db_ closes
  std::thread thread_;
  std::mutex stop_mu_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> woken_{false};
  std::atomic<bool> appended_{false};  // wake(true): new rows only
  std::atomic<Millis> grace_{0};
  std::atomic<bool> running_{false};  // the thread runs its loop
  std::atomic<Millis> heartbeat_{0};  // steady time of its last turn

  // Everything below belongs to the dispatcher thread.
  std::map<std::string, std::unique_ptr<Agent>> agents_;
  std::unordered_set<Call*> calls_;
  std::vector<CURL*> easy_pool_;
  std::size_t outstanding_ = 0;  // claims, calls and journal writes not yet finished
  std::size_t max_connections_ = 0;
  std::vector<PendingOutcome> pending_outcomes_;
  std::vector<PendingOutcome> write_retries_;
  // Give-backs (unclaim) whose write failed: made again at retry_at (steady), keys kept busy.
  struct UnclaimRetry {
    Millis retry_at;
    std::string agent_id;
    std::vector<InHand> items;
  };
  std::vector<UnclaimRetry> unclaim_retries_;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> draw_{0.0, 1.0};
  Millis last_check_ = 0;
  Millis last_reload_ = 0;
  std::int64_t data_version_ = -1;
  bool held_dirty_ = true;
  bool held_pending_ = false;
  std::int64_t held_cursor_ = 0;
  Millis last_held_sweep_ = 0;
  std::map<std::string, Millis> last_failover_sweep_;
  ReadGate agents_gate_, held_gate_, retired_gate_;
  bool retired_dirty_ = true;  // a reload happened: look for retired agents' queues now
  bool retired_pending_ = false;
  Millis last_retired_sweep_ = 0;
  std::map<std::string, std::int64_t> retired_cursors_;  // where each queue's walk goes on
  // Alerts each queue's current pass left behind (a webhook of theirs in hand).
  std::map<std::string, std::unordered_set<std::string>> retired_skipped_;
  int failures_in_a_row_ = 0;  // reads failed since one last went through
};

}  // namespace

Result<std::unique_ptr<Dispatcher>> Dispatcher::start(DispatcherContext ctx) {
  if (!ctx.writer || !ctx.directory)
    return Status::invalid_argument("dispatcher: missing writer or directory");
  static std::once_flag curl_once;
  std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  auto d = std::make_unique<DispatcherImpl>(std::move(ctx));
  if (Status s = d->init(); !s) return s;
  return std::unique_ptr<Dispatcher>(std::move(d));
}

}  // namespace iarelay
