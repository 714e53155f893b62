// The routing rules (docs/architecture.md, "Routing") over the configured agents and their current
// availability. Shared by intake (where a webhook goes on arrival) and dispatch (failover, held
// webhooks, and the availability it observes). Thread-safe: readers and writers may be on any
// thread.
#pragma once

#include <map>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/config.h"
#include "journal/store.h"

namespace iarelay {

enum class Availability { kUp, kDown, kPaused };
std::string_view to_string(Availability a);

struct RouteDecision {
  WebhookState state;
  std::optional<std::string> assigned_agent;
  std::optional<std::string> reason;  // why discarded
};

class AgentDirectory {
 public:
  // `role` stays for the directory's life (a reload cannot turn a relay into an edge).
  AgentDirectory(std::vector<AgentConfig> agents, std::vector<ServiceConfig> services,
                 Role role = Role::kDeliver);

  // SIGHUP: new agents and services; availability of agents that remain is kept.
  void reconfigure(std::vector<AgentConfig> agents, std::vector<ServiceConfig> services);
  // Agents unknown to the configuration are ignored.
  void set_availability(const std::string& agent_id, Availability a);
  Availability availability(const std::string& agent_id) const;
  std::vector<AgentConfig> agents() const;
  std::optional<AgentConfig> agent(const std::string& agent_id) const;
  // The identifier of the configured agent `id_or_handle` names: its identifier, or the handle
  // (section name) of an agent whose identifier differs; nullopt when no agent has either.
  std::optional<std::string> configured_id(const std::string& id_or_handle) const;

  // Where a webhook arriving now goes ("Routing" rules 1-4; edge relays store everything; a
  // delivering relay with no agent configured holds every webhook: rule 1 for those with an
  // agent identifier, held for any agent of their service otherwise).
  // Rule 2 prefers an agent whose `kinds` take `type` (when given); with none available, the
  // first available one (which ends the webhook discarded with the reason, visibly).
  RouteDecision route(const std::string& service, const std::optional<std::string>& agent,
                      const std::string& type = "") const;
  // Failover: the first available agent hosting `service` other than `except`, in
  // configuration order; given a `type`, only one whose `kinds` take it (failing over to an
  // agent that leaves the type out would discard a webhook that `except` would deliver).
  std::optional<std::string> available_agent_for(const std::string& service,
                                                 const std::string& except = "",
                                                 const std::string& type = "") const;
  // True when the configuration says role = edge: the relay stores for its feed.
  bool is_edge() const { return role_ == Role::kEdge; }
  // Whether the service's section says `unrouted = hold`.
  bool holds(const std::string& service) const;
  // Whether the configuration names `service` (a [service.*] section or an agent's services).
  bool knows_service(const std::string& service) const;

 private:
  const Role role_;
  mutable std::shared_mutex mu_;
  std::vector<AgentConfig> agents_;                   // GUARDED_BY(mu_)
  std::vector<ServiceConfig> services_;               // GUARDED_BY(mu_)
  std::map<std::string, Availability> availability_;  // GUARDED_BY(mu_)
};

}  // namespace iarelay
