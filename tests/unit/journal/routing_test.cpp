// Tests of journal/routing.h: every routing rule of docs/architecture.md ("Routing") and agent
// availability.
#include "journal/routing.h"

#include <gtest/gtest.h>

namespace iarelay {
namespace {

AgentConfig agent(const std::string& id, std::vector<std::string> services) {
  AgentConfig a;
  a.handle = id;
  a.id = id;
  a.callback = "http://127.0.0.1:1/apia_callback";
  a.services = std::move(services);
  return a;
}

ServiceConfig service(const std::string& name, bool hold) {
  ServiceConfig s;
  s.name = name;
  s.hold = hold;
  return s;
}

// Three agents in configuration order; "nnmi" is hosted by a1 and a2 (and by the IA-style id).
AgentDirectory directory(std::vector<ServiceConfig> services = {}) {
  return AgentDirectory({agent("a1", {"nnmi", "remedy"}), agent("a2", {"nnmi"}),
                         agent("ws-198/10.2.0.121:8081", {"nnmi", "other"})},
                        std::move(services));
}

TEST(Routing, NewAgentsStartUp) {
  auto d = directory();
  EXPECT_EQ(d.availability("a1"), Availability::kUp);
  EXPECT_EQ(d.availability("ws-198/10.2.0.121:8081"), Availability::kUp);
  EXPECT_EQ(d.availability("unknown"), Availability::kDown);
  EXPECT_FALSE(d.is_edge());
  EXPECT_EQ(to_string(Availability::kPaused), "paused");
}

TEST(Routing, NamedKnownAgentQueuesForItWhateverItsAvailability) {
  auto d = directory();
  for (Availability av : {Availability::kUp, Availability::kDown, Availability::kPaused}) {
    d.set_availability("a2", av);
    RouteDecision r = d.route("nnmi", std::string("a2"));
    EXPECT_EQ(r.state, WebhookState::kQueued) << to_string(av);
    EXPECT_EQ(r.assigned_agent, "a2");
    EXPECT_FALSE(r.reason.has_value());
  }
  // The IA default identifier form works as given.
  RouteDecision ia = d.route("nnmi", std::string("ws-198/10.2.0.121:8081"));
  EXPECT_EQ(ia.assigned_agent, "ws-198/10.2.0.121:8081");
}

TEST(Routing, NamedUnknownAgentIsHeldForIt) {
  auto d = directory();
  RouteDecision r = d.route("nnmi", std::string("late-agent"));
  EXPECT_EQ(r.state, WebhookState::kQueued);
  EXPECT_EQ(r.assigned_agent, "late-agent");
  // Even for a service nobody hosts: the named agent decides.
  EXPECT_EQ(d.route("nobody-hosts", std::string("late-agent")).state, WebhookState::kQueued);
}

TEST(Routing, UnnamedGoesToTheFirstAvailableInConfigurationOrder) {
  auto d = directory();
  EXPECT_EQ(d.route("nnmi", std::nullopt).assigned_agent, "a1");
  EXPECT_EQ(d.route("other", std::nullopt).assigned_agent, "ws-198/10.2.0.121:8081");
  d.set_availability("a1", Availability::kDown);
  EXPECT_EQ(d.route("nnmi", std::nullopt).assigned_agent, "a2");
  d.set_availability("a2", Availability::kPaused);
  RouteDecision r = d.route("nnmi", std::nullopt);
  EXPECT_EQ(r.state, WebhookState::kQueued);
  EXPECT_EQ(r.assigned_agent, "ws-198/10.2.0.121:8081");
  d.set_availability("a1", Availability::kUp);
  EXPECT_EQ(d.route("nnmi", std::nullopt).assigned_agent, "a1");
}

TEST(Routing, NoAvailableAgentDiscardsWithAReason) {
  auto d = directory();
  d.set_availability("a1", Availability::kDown);
  RouteDecision r = d.route("remedy", std::nullopt);
  EXPECT_EQ(r.state, WebhookState::kDiscarded);
  EXPECT_FALSE(r.assigned_agent.has_value());
  ASSERT_TRUE(r.reason.has_value());
  EXPECT_NE(r.reason->find("no agent available"), std::string::npos) << *r.reason;
  EXPECT_NE(r.reason->find("a1 down"), std::string::npos) << *r.reason;
}

TEST(Routing, UnroutedHoldQueuesForAnyAgent) {
  auto d = directory({service("remedy", true), service("nnmi", false)});
  d.set_availability("a1", Availability::kPaused);
  RouteDecision r = d.route("remedy", std::nullopt);
  EXPECT_EQ(r.state, WebhookState::kQueued);
  EXPECT_FALSE(r.assigned_agent.has_value());  // held for whichever agent comes back first
  EXPECT_FALSE(r.reason.has_value());
  // unrouted = discard (explicit) behaves as the default.
  for (const char* id : {"a2", "ws-198/10.2.0.121:8081"})
    d.set_availability(id, Availability::kDown);
  EXPECT_EQ(d.route("nnmi", std::nullopt).state, WebhookState::kDiscarded);
}

TEST(Routing, UnknownServiceIsDiscarded) {
  auto d = directory({service("ghost", false)});
  RouteDecision r = d.route("ghost", std::nullopt);
  EXPECT_EQ(r.state, WebhookState::kDiscarded);
  EXPECT_EQ(r.reason, "unknown service");
  EXPECT_EQ(d.route("hpnnmi", std::nullopt).reason, "unknown service");
}

// Issue 11: a service that says `unrouted = hold` holds while no agent hosts it, as when its
// agent is retired before its successor is configured.
TEST(Routing, AServiceThatHoldsHoldsWhileNoAgentHostsIt) {
  auto d = directory({service("ghost", true)});
  RouteDecision r = d.route("ghost", std::nullopt);
  EXPECT_EQ(r.state, WebhookState::kQueued);
  EXPECT_FALSE(r.assigned_agent.has_value());
}

TEST(Routing, EdgeRelayStoresEverything) {
  AgentDirectory edge({}, {}, Role::kEdge);
  EXPECT_TRUE(edge.is_edge());
  for (const auto& named : {std::optional<std::string>(), std::optional<std::string>("a1")}) {
    RouteDecision r = edge.route("nnmi", named);
    EXPECT_EQ(r.state, WebhookState::kStored);
    EXPECT_FALSE(r.assigned_agent.has_value());
  }
}

// Issue 11 item 4: an edge only by choice. A delivering relay whose last agent is gone (a
// reload removed it) holds every webhook instead of storing it where no agent ever reads it.
TEST(Routing, DeliveringRelayWithoutAgentsHoldsEveryWebhook) {
  AgentDirectory none({}, {});
  EXPECT_FALSE(none.is_edge());
  RouteDecision held = none.route("nnmi", std::nullopt);
  EXPECT_EQ(held.state, WebhookState::kQueued);
  EXPECT_FALSE(held.assigned_agent.has_value());
  RouteDecision named = none.route("nnmi", std::string("a1"));
  EXPECT_EQ(named.state, WebhookState::kQueued);
  EXPECT_EQ(named.assigned_agent, "a1");
  // A reload that removes every agent keeps it a delivering relay.
  AgentDirectory d({agent("a1", {"nnmi"})}, {});
  d.reconfigure({}, {});
  EXPECT_FALSE(d.is_edge());
  EXPECT_EQ(d.route("nnmi", std::nullopt).state, WebhookState::kQueued);
}

TEST(Routing, FailoverSkipsTheFailedAgent) {
  auto d = directory();
  EXPECT_EQ(d.available_agent_for("nnmi", "a1"), "a2");
  d.set_availability("a2", Availability::kDown);
  EXPECT_EQ(d.available_agent_for("nnmi", "a1"), "ws-198/10.2.0.121:8081");
  EXPECT_EQ(d.available_agent_for("nnmi"), "a1");
  EXPECT_FALSE(d.available_agent_for("remedy", "a1").has_value());
  EXPECT_FALSE(d.available_agent_for("nobody").has_value());
}

TEST(Routing, SetAvailabilityIgnoresUnknownAgents) {
  auto d = directory();
  d.set_availability("stranger", Availability::kUp);
  EXPECT_EQ(d.availability("stranger"), Availability::kDown);
  EXPECT_FALSE(d.agent("stranger").has_value());
  ASSERT_TRUE(d.agent("a2").has_value());
  EXPECT_EQ(d.agent("a2")->services, std::vector<std::string>{"nnmi"});
  EXPECT_EQ(d.agents().size(), 3u);
}

TEST(Routing, ReconfigureKeepsAvailabilityOfAgentsThatRemain) {
  auto d = directory();
  d.set_availability("a1", Availability::kPaused);
  d.set_availability("a2", Availability::kDown);
  // a2 leaves, a3 arrives, a1 stays (now first in order after a3).
  d.reconfigure({agent("a3", {"nnmi"}), agent("a1", {"nnmi"})}, {service("nnmi", true)});
  EXPECT_EQ(d.availability("a1"), Availability::kPaused);
  EXPECT_EQ(d.availability("a3"), Availability::kUp);
  EXPECT_EQ(d.availability("a2"), Availability::kDown);  // unknown now
  EXPECT_FALSE(d.agent("a2").has_value());
  EXPECT_EQ(d.route("nnmi", std::nullopt).assigned_agent, "a3");
  d.set_availability("a3", Availability::kDown);
  RouteDecision held = d.route("nnmi", std::nullopt);  // the new service policy applies
  EXPECT_EQ(held.state, WebhookState::kQueued);
  EXPECT_FALSE(held.assigned_agent.has_value());
  // An agent that left and comes back starts up again.
  d.reconfigure({agent("a2", {"nnmi"})}, {});
  EXPECT_EQ(d.availability("a2"), Availability::kUp);
}

}  // namespace
}  // namespace iarelay
