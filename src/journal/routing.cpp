// Routing decisions and agent availability.
#include "journal/routing.h"

#include <mutex>

namespace iarelay {

std::string_view to_string(Availability a) {
  switch (a) {
    case Availability::kUp:
      return "up";
    case Availability::kDown:
      return "down";
    case Availability::kPaused:
      return "paused";
  }
  return "up";
}

AgentDirectory::AgentDirectory(std::vector<AgentConfig> agents, std::vector<ServiceConfig> services,
                               Role role)
    : role_(role) {
  reconfigure(std::move(agents), std::move(services));
}

void AgentDirectory::reconfigure(std::vector<AgentConfig> agents,
                                 std::vector<ServiceConfig> services) {
  std::unique_lock lock(mu_);
  std::map<std::string, Availability> kept;
  for (const auto& a : agents) {
    auto it = availability_.find(a.id);
    kept[a.id] = it == availability_.end() ? Availability::kUp : it->second;
  }
  agents_ = std::move(agents);
  services_ = std::move(services);
  availability_ = std::move(kept);
}

void AgentDirectory::set_availability(const std::string& agent_id, Availability a) {
  std::unique_lock lock(mu_);
  if (auto it = availability_.find(agent_id); it != availability_.end()) it->second = a;
}

Availability AgentDirectory::availability(const std::string& agent_id) const {
  std::shared_lock lock(mu_);
  auto it = availability_.find(agent_id);
  return it == availability_.end() ? Availability::kDown : it->second;
}

std::vector<AgentConfig> AgentDirectory::agents() const {
  std::shared_lock lock(mu_);
  return agents_;
}

std::optional<AgentConfig> AgentDirectory::agent(const std::string& agent_id) const {
  std::shared_lock lock(mu_);
  for (const auto& a : agents_)
    if (a.id == agent_id) return a;
  return std::nullopt;
}

std::optional<std::string> AgentDirectory::configured_id(const std::string& id_or_handle) const {
  std::shared_lock lock(mu_);
  // Identifiers first: a handle that is also another agent's identifier names that agent.
  for (const auto& a : agents_)
    if (a.id == id_or_handle) return a.id;
  for (const auto& a : agents_)
    if (a.handle == id_or_handle) return a.id;
  return std::nullopt;
}

bool AgentDirectory::holds(const std::string& service) const {
  std::shared_lock lock(mu_);
  for (const auto& s : services_)
    if (s.name == service) return s.hold;
  return false;
}

bool AgentDirectory::knows_service(const std::string& service) const {
  std::shared_lock lock(mu_);
  for (const auto& s : services_)
    if (s.name == service) return true;
  for (const auto& a : agents_)
    if (a.hosts(service)) return true;
  return false;
}

std::optional<std::string> AgentDirectory::available_agent_for(const std::string& service,
                                                               const std::string& except,
                                                               const std::string& type) const {
  std::shared_lock lock(mu_);
  for (const auto& a : agents_) {
    if (a.id == except || !a.hosts(service) || (!type.empty() && !a.takes(type))) continue;
    auto it = availability_.find(a.id);
    if (it != availability_.end() && it->second == Availability::kUp) return a.id;
  }
  return std::nullopt;
}

RouteDecision AgentDirectory::route(const std::string& service,
                                    const std::optional<std::string>& agent,
                                    const std::string& type) const {
  std::shared_lock lock(mu_);
  if (role_ == Role::kEdge) return {WebhookState::kStored, std::nullopt, std::nullopt};
  // Rule 1: a named agent's queue, configured or not (a late-configured agent receives it).
  if (agent) return {WebhookState::kQueued, *agent, std::nullopt};
  // No agent at all (the last one removed, say): nothing is discarded for want of a
  // configuration; held for the first agent of the service to come.
  if (agents_.empty()) return {WebhookState::kQueued, std::nullopt, std::nullopt};
  // Rule 2: the first available agent hosting the service, in configuration order.
  bool hosted = false;
  std::string unavailable;
  std::optional<std::string> up_not_taking;  // available, but its kinds leave `type` out
  for (const auto& a : agents_) {
    if (!a.hosts(service)) continue;
    hosted = true;
    auto it = availability_.find(a.id);
    Availability av = it == availability_.end() ? Availability::kDown : it->second;
    if (av == Availability::kUp) {
      if (type.empty() || a.takes(type)) return {WebhookState::kQueued, a.id, std::nullopt};
      if (!up_not_taking) up_not_taking = a.id;
      continue;
    }
    unavailable += (unavailable.empty() ? "" : ", ") + a.id + " " + std::string(to_string(av));
  }
  if (up_not_taking) return {WebhookState::kQueued, *up_not_taking, std::nullopt};
  // Rule 3: discard as xMatters does, unless the service holds. A service that says so holds
  // also while no agent hosts it (its agent retired, its successor not configured yet).
  for (const auto& s : services_)
    if (s.name == service && s.hold) return {WebhookState::kQueued, std::nullopt, std::nullopt};
  // Rule 4: nobody hosts it.
  if (!hosted) return {WebhookState::kDiscarded, std::nullopt, "unknown service"};
  return {WebhookState::kDiscarded, std::nullopt, "no agent available (" + unavailable + ")"};
}

}  // namespace iarelay
