// PgLeaseKeeper: one round every ttl / 4 takes and renews this relay's agent leases.
#include "journal/pg/pg_lease_keeper.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "journal/pg/pg_journal.h"

namespace iarelay {

Result<std::unique_ptr<PgLeaseKeeper>> PgLeaseKeeper::start(std::string conninfo, std::string owner,
                                                            Millis ttl,
                                                            std::vector<std::string> agents,
                                                            std::function<void()> changed) {
  if (ttl < 100) return Status::invalid_argument("lease must be at least 100ms");
  std::unique_ptr<PgLeaseKeeper> k(new PgLeaseKeeper(std::move(conninfo), std::move(owner), ttl,
                                                     std::move(agents), std::move(changed)));
  if (Status s = k->connect(); !s) return s;
  k->round();
  k->thread_ = std::thread([p = k.get()] { p->run(); });
  return k;
}

PgLeaseKeeper::PgLeaseKeeper(std::string conninfo, std::string owner, Millis ttl,
                             std::vector<std::string> agents, std::function<void()> changed)
    : conninfo_(std::move(conninfo)),
      owner_(std::move(owner)),
      ttl_(ttl),
      changed_(std::move(changed)),
      agents_(std::move(agents)) {}

PgLeaseKeeper::~PgLeaseKeeper() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::optional<std::int64_t> PgLeaseKeeper::held(const std::string& agent) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(agent);
  if (it == held_.end() || steady_millis() >= it->second.valid_until) return std::nullopt;
  return it->second.epoch;
}

void PgLeaseKeeper::set_agents(std::vector<std::string> agents) {
  {
    std::lock_guard lock(mu_);
    agents_ = std::move(agents);
  }
  cv_.notify_all();  // a round at once: new agents are taken now
}

std::uint64_t PgLeaseKeeper::taken() const {
  std::lock_guard lock(mu_);
  return taken_;
}

std::uint64_t PgLeaseKeeper::lost() const {
  std::lock_guard lock(mu_);
  return lost_;
}

void PgLeaseKeeper::release_all() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // After the last round: what it took is let go too.
  std::map<std::string, Held> mine;
  {
    std::lock_guard lock(mu_);
    mine = std::move(held_);
    held_.clear();
  }
  if (!db_) return;
  for (const auto& [agent, h] : mine) {
    auto n = db_->command(
        "UPDATE agent_leases SET expires_at = '-infinity' WHERE agent = $1 AND owner = $2 AND "
        "epoch = $3",
        {agent, owner_, std::to_string(h.epoch)});
    if (!n) {
      spdlog::warn(
          "leases: could not let go of agent {}: {} (another relay takes it when it "
          "expires)",
          agent, n.status().message());
      if (n.status().kind() == StatusKind::kUnavailable) return;
    }
  }
  if (!mine.empty()) spdlog::info("leases: let go of {} agents", mine.size());
}

Status PgLeaseKeeper::connect() {
  auto db = PgConnection::connect(conninfo_);
  if (!db) return db.status();
  // A lock held elsewhere (an outcome's FOR SHARE of a relay stopped mid-transaction) never
  // holds up a round past the time its renewals are due.
  const std::string wait = std::to_string(std::max<Millis>(ttl_ / 4, 25));
  if (Status s = (*db)->exec("SET lock_timeout = '" + wait + "ms'"); !s) return s;
  db_ = std::move(*db);
  return Status::ok();
}

void PgLeaseKeeper::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait_for(lock, std::chrono::milliseconds(std::max<Millis>(ttl_ / 4, 25)));
    if (stopping_) return;
    lock.unlock();
    round();
    lock.lock();
  }
}

void PgLeaseKeeper::round() {
  std::vector<std::string> agents;
  std::map<std::string, Held> before;
  {
    std::lock_guard lock(mu_);
    agents = agents_;
    before = held_;
  }
  if (!db_) {
    if (Status s = connect(); !s) {
      spdlog::warn("leases: {}; the leases held lapse unless renewed in time", s.message());
      return;
    }
  }
  std::sort(agents.begin(), agents.end());
  std::map<std::string, Held> now_held;
  std::uint64_t took = 0, gone = 0;
  for (const std::string& agent : agents) {
    const Millis started = steady_millis();
    auto it = before.find(agent);
    if (it != before.end() && started < it->second.valid_until) {
      auto renewed = renew_lease(*db_, Lease{agent, owner_, it->second.epoch}, ttl_);
      if (!renewed) {
        spdlog::warn("leases: renewing agent {}: {}", agent, renewed.status().message());
        if (renewed.status().kind() == StatusKind::kUnavailable) db_.reset();
        now_held.emplace(agent, it->second);  // still held until its validity runs out
        if (!db_) break;
        continue;
      }
      if (*renewed) {
        now_held[agent] = {it->second.epoch, started + ttl_ * 3 / 4};
        continue;
      }
      spdlog::warn("leases: agent {} was taken by another relay", agent);
    }
    int requeued = 0;
    auto lease = take_lease(*db_, agent, owner_, ttl_, &requeued);
    if (!lease) {
      spdlog::warn("leases: taking agent {}: {}", agent, lease.status().message());
      if (lease.status().kind() == StatusKind::kUnavailable) db_.reset();
      if (!db_) break;
      continue;
    }
    if (lease->owner != owner_) continue;
    now_held[agent] = {lease->epoch, started + ttl_ * 3 / 4};
    if (it == before.end() || it->second.epoch != lease->epoch) {
      ++took;
      spdlog::info("leases: delivering to agent {} (epoch {}{})", agent, lease->epoch,
                   requeued ? ", " + std::to_string(requeued) + " inflight webhooks requeued" : "");
    }
  }
  // The connection went down part way: the leases not reached are held until their
  // validity runs out, as if renewed late.
  if (!db_)
    for (const auto& [agent, h] : before)
      if (std::find(agents.begin(), agents.end(), agent) != agents.end())
        now_held.emplace(agent, h);
  for (const auto& [agent, h] : before) {
    auto it = now_held.find(agent);
    if (it == now_held.end() || it->second.epoch != h.epoch) ++gone;
  }
  const bool changed = took || gone;
  bool stopping;
  {
    std::lock_guard lock(mu_);
    held_ = std::move(now_held);  // also when stopping: release_all lets go of all of it
    taken_ += took;
    lost_ += gone;
    stopping = stopping_;
  }
  if (changed && changed_ && !stopping) changed_();
}

}  // namespace iarelay
