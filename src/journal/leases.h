// Which agents this relay delivers to (issue 15, docs/high-availability.md): with several
// relays on one PostgreSQL journal, delivery to each agent is owned by one relay at a time
// through a lease (owner, epoch), and each of the dispatcher's writes for an agent is fenced
// by the epoch it was made under (JournalTx::fence). On SQLite there is no AgentLeases: the one
// relay owns every agent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace iarelay {

class AgentLeases {
 public:
  virtual ~AgentLeases() = default;
  // This relay's name in the lease rows: unique per process (a restarted relay is another
  // owner, so the previous process's calls are taken over, not believed still its own).
  virtual const std::string& owner() const = 0;
  // The epoch under which this relay owns `agent` now; nullopt when another relay holds it, or
  // this one could not renew it in time (then it makes no new call for the agent). Any thread.
  virtual std::optional<std::int64_t> held(const std::string& agent) const = 0;
  // The agents to hold: the configured ones (again after a reload). Any thread.
  virtual void set_agents(std::vector<std::string> agents) = 0;
};

}  // namespace iarelay
