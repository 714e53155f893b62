// The dispatcher's thread (dispatcher_impl.h): start and stop, the agents configured, the read
// connection and its backoff, and the loop that runs each job in turn.
#include "dispatch/dispatcher.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/metrics.h"
#include "dispatch/dispatcher_impl.h"
#include "dispatch/http_call.h"
#include "dispatch/signature.h"
#include "journal/routing.h"

namespace iarelay::dispatch_internal {

Status DispatcherImpl::init() {
  multi_ = curl_multi_init();
  if (!multi_) return Status::unavailable("curl_multi_init failed");
  mailbox_->multi = multi_;
  if (!ctx_.open_reader) {
    std::string path = ctx_.journal_path;
    ctx_.open_reader = [path] { return open_sqlite_reader(path); };
  }
  auto reader = ctx_.open_reader();
  if (!reader) return reader.status();
  reader_ = std::move(*reader);
  configure_agents(ctx_.directory->agents(), /*initial=*/true);
  heartbeat_ = steady_millis();
  running_ = true;
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

bool DispatcherImpl::alive() const {
  return running_.load() && steady_millis() - heartbeat_.load() <= kHeartbeatWithin;
}

void DispatcherImpl::stop(Millis grace) {
  std::lock_guard lock(stop_mu_);
  if (!thread_.joinable()) return;
  grace_ = grace;
  stopping_ = true;
  mailbox_->poke();
  thread_.join();
}

void DispatcherImpl::reconfigured() {
  mailbox_->post([this] { configure_agents(ctx_.directory->agents(), false); });
}

void DispatcherImpl::wake(bool appends_only) {
  // Called after every journal commit: one wakeup until the dispatcher has seen it.
  std::atomic<bool>& flag = appends_only ? appended_ : woken_;
  if (!flag.exchange(true, std::memory_order_relaxed)) mailbox_->poke();
}

void DispatcherImpl::configure_agents(const std::vector<AgentConfig>& configs, bool initial) {
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
          slot->state_gauges[i] =
              &ctx_.metrics->gauge("iarelay_agent_state", "1 for the agent's current availability",
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

void DispatcherImpl::update_gauges(Agent& a) {
  int current = static_cast<int>(a.health.state());  // kUp, kDown, kPaused in that order
  for (int i = 0; i < 3; ++i)
    if (a.state_gauges[i]) a.state_gauges[i]->set(i == current ? 1 : 0);
}

void DispatcherImpl::run() {
  try {
    loop();
  } catch (const std::exception& e) {
    // Only what the per-item guards below cannot catch (e.g. out of memory) ends up here.
    spdlog::critical("dispatcher stopped: {}", e.what());
  }
  shutdown();
  running_ = false;
}

void DispatcherImpl::read_failed(ReadGate* gate, const char* what, const std::string& error) {
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
void DispatcherImpl::maybe_reopen() {
  if (failures_in_a_row_ < kReopenAfterFailures) return;
  failures_in_a_row_ = 0;
  auto reader = ctx_.open_reader();
  if (!reader) {
    spdlog::error("dispatcher: reopening the journal failed: {}", reader.status().message());
    return;
  }
  reader_ = std::move(*reader);
  data_version_ = -1;
  spdlog::info("dispatcher: journal read connection reopened");
}

void DispatcherImpl::loop() {
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
      for (auto& entry : agents_) {
        Agent& a = *entry.second;  // not a structured binding: clang 14 cannot capture one
        read_step(a.failover_gate, "failover", [&] { sweep_failover(a, steady); });
        guarded("scheduling", [&] { schedule(a, now, steady); });
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

Millis DispatcherImpl::next_timeout(Millis now) const {
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

void DispatcherImpl::drain_mailbox() {
  std::vector<std::function<void()>> items;
  {
    std::lock_guard lock(mailbox_->mu);
    items.swap(mailbox_->items);
  }
  for (auto& fn : items) guarded("journal callback", fn);
}

// Abandons calls still under way (their rows stay inflight and are requeued at next start)
// and closes the mailbox so late Writer callbacks are dropped.
void DispatcherImpl::shutdown() {
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
  reader_.reset();  // on this thread: its statements were prepared here
}

}  // namespace iarelay::dispatch_internal

namespace iarelay {

using dispatch_internal::DispatcherImpl;

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
