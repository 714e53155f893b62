// DispatcherImpl, the dispatcher of dispatcher.h, and the state it keeps per agent and per
// webhook in hand; internal to src/dispatch/. Its members are defined by job, in the files the
// class's sections name. Dispatcher thread only, but for the Mailbox and the public calls.
#pragma once

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/time.h"
#include "dispatch/agent_state.h"
#include "dispatch/chain_step.h"
#include "dispatch/dispatcher.h"
#include "dispatch/retry_policy.h"
#include "dispatch/scheduler.h"
#include "journal/journal.h"
#include "journal/journal_writer.h"
#include "journal/leases.h"
#include "journal/statement_cache.h"
#include "journal/store.h"

namespace iarelay::dispatch_internal {

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
  int chain_steps = 0;     // claimed by that many chain steps in a row (see Chain)
  std::int64_t epoch = 0;  // the agent's lease when it was claimed (DispatcherContext::leases)
};

// Checked first in each journal write the dispatcher makes for an agent (a claim, a give-back,
// an outcome): whether this relay still holds the agent's lease at `epoch`
// (JournalTx::fence). When it does not, another relay took the agent, and with it the
// webhooks this one had inflight: the write writes nothing for it. Always held without leases.
inline bool lease_holds(JournalTx& tx, const AgentLeases* leases, const std::string& agent,
                        std::int64_t epoch) {
  return !leases || tx.fence(agent, leases->owner(), epoch);
}
// As lease_holds, asked once per agent and epoch of a batch of outcomes.
inline bool lease_holds(JournalTx& tx, const AgentLeases* leases, OutcomeBatch& batch,
                        const std::string& agent, std::int64_t epoch) {
  return !leases ||
         batch.lease_holds(agent, epoch, [&] { return tx.fence(agent, leases->owner(), epoch); });
}

struct Call;  // http_call.h

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
  // A claim's or outcome's commit was lost with its connection and may have landed: webhooks
  // of the agent may be inflight in the journal that this process does not hold. No claim is
  // made, and nothing of its queue is failed over or rerouted, until nothing of the agent is
  // in hand; then its inflight webhooks go back to the queue (requeue_orphans), each an
  // orphan.
  bool orphans_possible = false;
  std::int64_t orphan_epoch = 0;  // the lease of the lost commit: the requeue's fence
  bool orphan_requeue_pending = false;
  std::size_t calls = 0;                      // HTTP calls in flight
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

class DispatcherImpl final : public Dispatcher {
 public:
  explicit DispatcherImpl(DispatcherContext ctx)
      : ctx_(std::move(ctx)), mailbox_(std::make_shared<Mailbox>()), rng_(std::random_device{}()) {}

  ~DispatcherImpl() override { stop(0); }

  Status init();
  bool alive() const override;
  void stop(Millis grace) override;
  void reconfigured() override;
  void wake(bool appends_only) override;

 private:
  struct Reroute {
    std::string id;
    std::string from;                  // the agent no longer configured
    std::optional<std::string> agent;  // the new agent; nullopt: held for any agent
  };

  // An outcome waiting to be journaled (or to be journaled again after a failed write).
  struct PendingOutcome {
    Millis retry_at;  // steady time
    std::string agent_id;
    InHand item;
    // Run in the loop turn's writer operation: writes at once, or stages its outcome in the
    // batch (OutcomeBatch).
    std::shared_ptr<std::function<void(JournalTx&, OutcomeBatch&)>> op;
    std::string target;
    std::shared_ptr<Chain> chain;  // set: the op may claim the next webhook of the alert
    // Set by the op when the agent's lease moved on (lease_holds): nothing was written, and
    // the relay that took the agent delivers the webhook again.
    std::shared_ptr<bool> fenced = std::make_shared<bool>(false);
  };

  // Runs one step of the loop for one item (a webhook, a call, a mailbox item); an exception
  // fails that step only. Returns whether the step completed.
  template <typename Fn>
  bool guarded(const char* what, Fn&& fn) {
    try {
      fn();
      return true;
    } catch (const JournalError& e) {
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
    // One read snapshot for the whole step: a hold committed between the check for held
    // webhooks and a queue's scan could otherwise let a later webhook of its alert through.
    // A failure in the step (the journal's or another) fails the read, which backs off.
    Status s = read_journal(fn);
    if (s) {
      gate.delay = 0;
      failures_in_a_row_ = 0;
      return true;
    }
    read_failed(&gate, what, s.message());
    return false;
  }
  // Runs `fn` in a read transaction of reader_ (journal() is it meanwhile).
  template <typename Fn>
  Status read_journal(Fn&& fn) {
    return reader_->read([&](JournalTx& tx) {
      reading_ = &tx;
      struct Done {
        JournalTx*& reading;
        ~Done() { reading = nullptr; }
      } done{reading_};
      fn();
    });
  }
  // The read transaction of the step running now (inside read_step or with_reader only).
  JournalTx& journal() {
    if (!reading_) throw std::logic_error("dispatcher: a journal read outside a read step");
    return *reading_;
  }
  // Runs `fn`'s reads in the step's read transaction, or outside a step without one (each
  // statement its own: a single read, as a call's payload). Throws JournalError when the
  // read fails.
  template <typename Fn>
  void with_reader(Fn&& fn) {
    if (reading_) return fn(*reading_);
    if (Status s = reader_->read_each([&](JournalTx& tx) { fn(tx); }); !s) throw JournalError(s);
  }

  // The epoch under which this relay delivers to `a` now (0 without leases); nullopt: another
  // relay's, or its lease could not be renewed in time.
  std::optional<std::int64_t> owned(const Agent& a) const {
    if (!ctx_.leases) return std::int64_t{0};
    return ctx_.leases->held(a.cfg.id);
  }

  // --- dispatcher.cpp: configuration and the loop ---
  void configure_agents(const std::vector<AgentConfig>& configs, bool initial);
  void update_gauges(Agent& a);
  void run();
  void read_failed(ReadGate* gate, const char* what, const std::string& error);
  void maybe_reopen();
  void loop();
  Millis next_timeout(Millis now) const;
  void drain_mailbox();
  void shutdown();

  // --- sweeps.cpp: operator pauses, held webhooks, failover, retired agents' queues ---
  void check_agents_table(Millis now, Millis steady);
  void end_pause(const std::string& id, Millis until);
  void sweep_held(Millis steady);
  void sweep_failover(Agent& a, Millis steady);
  void sweep_retired(Millis steady);
  // `after` is told how many were rerouted.
  void submit_reroutes(std::vector<Reroute> reroutes, std::function<void(std::size_t)> after);
  // Assigns each webhook (id → agent) queued at `from` (nullopt: held for any agent) to its
  // agent; a failover's (from an agent) only while this relay holds `from` at `epoch`.
  void submit_moves(std::optional<std::string> from, std::int64_t epoch,
                    std::vector<QueuedMove> moves, std::function<void()> after);

  // --- lanes.cpp: scheduling and claims ---
  void schedule(Agent& a, Millis now, Millis steady);
  std::pair<std::int64_t, bool> walk_queue(Agent& a, KeyScheduler& ks, std::int64_t after,
                                           bool probe);
  bool held_earlier(const Agent& a, bool any_held, const QueuedWebhook& w);
  void fill_new_rows(Agent& a, Millis now);
  void fill(Agent& a, Millis now, bool probe, bool resume_only);
  void discard_not_taken(Agent& a, InHand item);
  void claim(Agent& a, std::vector<InHand> batch);
  void on_claimed(const std::string& agent_id, std::vector<InHand>& items,
                  const std::vector<bool>& claimed, const Status& s);
  void unclaim(Agent& a, std::vector<InHand> items);
  void release(Agent& a, const InHand& item);
  void continue_chain(Agent& a, const InHand& done, QueuedWebhook next);
  void start_ready(Agent& a);
  void note_lost_commit(Agent& a, const Status& s, std::int64_t epoch);
  void requeue_orphans(Agent& a, std::int64_t epoch);

  // --- http_call.cpp: calls ---
  CURL* take_easy();
  void start_call(Agent& a, InHand item);
  void prepare_call(const Agent& a, const InHand& item, Call& call, Millis now);
  bool read_finished_calls();
  void on_call_done(Call* call, CURLcode rc);

  // --- outcomes.cpp: agent health, outcomes and their journal writes ---
  void track_health(Agent& a, const InHand& item, const RetryDecision& d);
  void record_agent_state(const std::string& id, const std::string& state,
                          std::optional<std::string> reason);
  void finish(Agent& a, InHand item, const CallOutcome& outcome, const RetryDecision& d,
              Millis started, Millis duration, bool called);
  bool may_chain(Agent& a, const InHand& item) const;
  void flush_outcomes();
  void submit_outcomes(std::vector<PendingOutcome> outcomes);
  void retry_failed_writes(Millis steady);

  DispatcherContext ctx_;
  std::shared_ptr<Mailbox> mailbox_;
  CURLM* multi_ = nullptr;
  // The dispatcher thread's own read connection (either backend), and the read transaction
  // of the step running now (read_step, with_reader); null outside one.
  std::unique_ptr<JournalBackend> reader_;
  JournalTx* reading_ = nullptr;
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

}  // namespace iarelay::dispatch_internal
