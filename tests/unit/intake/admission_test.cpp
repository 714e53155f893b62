// Admission: what a direct or fed webhook becomes before it is journaled.
#include "intake/admission.h"

#include <gtest/gtest.h>

#include "support/process.h"

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

IntakeRequest request(std::string service, std::string body) {
  IntakeRequest r;
  r.service = std::move(service);
  r.body = std::move(body);
  return r;
}

TEST(AdmitDirect, InfersTypeOfEveryFixtureAndKeepsTheBodyByteForByte) {
  AgentDirectory edge({}, {}, Role::kEdge);
  const std::pair<const char*, const char*> cases[] = {
      {"ib_status.json", "status"},     {"ib_delivery.json", "deliveryStatus"},
      {"ib_response.json", "response"}, {"ib_annotation.json", "annotation"},
      {"ia_status.json", "status"},     {"ia_delivery.json", "deliveryStatus"},
      {"ia_response.json", "response"},
  };
  for (auto [file, type] : cases) {
    std::string body = testing::read_file(testing::fixture(file));
    auto w = admit_direct(request("hpnnmi", body), edge, 1000);
    ASSERT_TRUE(w.is_ok()) << file << ": " << w.status().message();
    EXPECT_EQ(w->type, type) << file;
    EXPECT_EQ(w->payload, body) << file;
    EXPECT_TRUE(w->event_id.has_value()) << file;
    EXPECT_EQ(w->state, WebhookState::kStored) << file;
    EXPECT_EQ(w->source, "direct");
    EXPECT_EQ(w->received_at, 1000);
    EXPECT_EQ(w->id.size(), 26u);
  }
}

TEST(AdmitDirect, GivenTypeWinsOverInference) {
  AgentDirectory edge({}, {}, Role::kEdge);
  auto w = admit_direct(
      [] {
        auto r = request("hpnnmi", R"({"status":"active"})");
        r.type = "custom";
        return r;
      }(),
      edge, 0);
  ASSERT_TRUE(w.is_ok());
  EXPECT_EQ(w->type, "custom");
}

TEST(AdmitDirect, RefusesNonObjectsUninferableTypesAndEmptyServices) {
  AgentDirectory edge({}, {}, Role::kEdge);
  auto array = admit_direct(request("hpnnmi", "[1,2]"), edge, 0);
  EXPECT_EQ(array.status().kind(), StatusKind::kInvalidArgument);
  EXPECT_NE(array.status().message().find("not a JSON object"), std::string::npos);
  auto junk = admit_direct(request("hpnnmi", "{nope"), edge, 0);
  EXPECT_NE(junk.status().message().find("not valid JSON"), std::string::npos);
  auto untyped = admit_direct(request("hpnnmi", R"({"foo":1})"), edge, 0);
  EXPECT_NE(untyped.status().message().find("cannot be inferred"), std::string::npos);
  auto unnamed = admit_direct(request("applications| ", R"({"status":"x"})"), edge, 0);
  EXPECT_NE(unnamed.status().message().find("service"), std::string::npos);
  auto long_key = request("hpnnmi", R"({"status":"x"})");
  long_key.idempotency_key = std::string(kMaxIdempotencyKey + 1, 'k');
  EXPECT_FALSE(admit_direct(long_key, edge, 0).is_ok());
}

TEST(AdmitDirect, NormalisesServiceAndAgent) {
  AgentDirectory dir({agent("ws-198/10.2.0.121:8081", {"hpnnmi"})}, {});
  auto r = request("applications|hpnnmi", R"({"status":"active","eventIdentifier":42})");
  r.agent = "  ws-198/10.2.0.121:8081 ";
  r.idempotency_key = "k1";
  auto w = admit_direct(r, dir, 0);
  ASSERT_TRUE(w.is_ok());
  EXPECT_EQ(w->service, "hpnnmi");
  EXPECT_EQ(w->agent, "ws-198/10.2.0.121:8081");
  EXPECT_EQ(w->assigned_agent, "ws-198/10.2.0.121:8081");
  EXPECT_EQ(w->state, WebhookState::kQueued);
  EXPECT_EQ(w->event_id, "42");
  EXPECT_EQ(w->idempotency_key, "k1");
}

TEST(AdmitDirect, RoutesPerSpecRules) {
  AgentDirectory dir({agent("a1", {"hpnnmi"}), agent("a2", {"hpnnmi", "remedy"})},
                     {ServiceConfig{"remedy", true}});
  std::string body = R"({"status":"active"})";
  // Rule 2: first available agent in configuration order.
  auto first = admit_direct(request("hpnnmi", body), dir, 0);
  EXPECT_EQ(first->assigned_agent, "a1");
  dir.set_availability("a1", Availability::kDown);
  EXPECT_EQ(admit_direct(request("hpnnmi", body), dir, 0)->assigned_agent, "a2");
  // Rule 3: nobody available: discarded with a reason, or held when the service holds.
  dir.set_availability("a2", Availability::kPaused);
  auto discarded = admit_direct(request("hpnnmi", body), dir, 0);
  EXPECT_EQ(discarded->state, WebhookState::kDiscarded);
  ASSERT_TRUE(discarded->reason.has_value());
  EXPECT_NE(discarded->reason->find("no agent available"), std::string::npos);
  auto held = admit_direct(request("remedy", body), dir, 0);
  EXPECT_EQ(held->state, WebhookState::kQueued);
  EXPECT_FALSE(held->assigned_agent.has_value());
  // Rule 4: unknown service.
  auto unknown = admit_direct(request("nobody", body), dir, 0);
  EXPECT_EQ(unknown->state, WebhookState::kDiscarded);
  EXPECT_EQ(unknown->reason, "unknown service");
  // Rule 1: a named agent, even unknown, gets its own queue.
  auto named = request("hpnnmi", body);
  named.agent = "late/10.0.0.1:8081";
  EXPECT_EQ(admit_direct(named, dir, 0)->assigned_agent, "late/10.0.0.1:8081");
}

TEST(AdmitFeedItem, KeepsUpstreamIdentityAndRoutesLocally) {
  AgentDirectory dir({agent("a1", {"hpnnmi"})}, {});
  FeedItem item;
  item.seq = 7;
  item.id = "01UPSTREAMID";
  item.service = "hpnnmi";
  item.type = "";
  item.payload = R"({ "deliveryStatus" : "Delivered", "eventIdentifier": 9 })";
  item.payload_is_object = true;
  auto w = admit_feed_item(FeedItem(item), "edge", dir, 5);
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  EXPECT_EQ(w->source, "edge");
  EXPECT_EQ(w->source_id, "01UPSTREAMID");
  EXPECT_NE(w->id, "01UPSTREAMID");
  EXPECT_EQ(w->type, "deliveryStatus");
  EXPECT_EQ(w->event_id, "9");
  EXPECT_EQ(w->payload, item.payload);
  EXPECT_EQ(w->assigned_agent, "a1");
  item.payload_is_object = false;
  EXPECT_FALSE(admit_feed_item(FeedItem(item), "edge", dir, 5).is_ok());
}

// ?agent=HANDLE (the [agent.HANDLE] section's name) is that agent's webhook, under its
// identifier; an identifier wins over a handle that spells it; anything else is kept as given.
TEST(AdmitDirect, AHandleBecomesItsAgentsIdentifier) {
  AgentConfig nnmi1 = agent("ws-198/10.2.0.121:8081", {"hpnnmi"});
  nnmi1.handle = "nnmi1";
  AgentConfig confusing = agent("nnmi1-b", {"hpnnmi"});
  confusing.handle = "ws-198/10.2.0.121:8081";  // a handle equal to another agent's id
  AgentDirectory dir({nnmi1, confusing}, {});
  auto admit = [&](const std::string& name) {
    IntakeRequest r = request("hpnnmi", R"({"status":"active"})");
    r.agent = name;
    auto w = admit_direct(r, dir, 1);
    EXPECT_TRUE(w.is_ok()) << w.status().message();
    return w.is_ok() ? *w : NewWebhook{};
  };
  NewWebhook by_handle = admit("nnmi1");
  EXPECT_EQ(by_handle.agent, "ws-198/10.2.0.121:8081");
  EXPECT_EQ(by_handle.assigned_agent, "ws-198/10.2.0.121:8081");
  EXPECT_EQ(admit("ws-198/10.2.0.121:8081").agent, "ws-198/10.2.0.121:8081");
  EXPECT_EQ(admit("nnmi2").agent, "nnmi2");
  EXPECT_EQ(admit("nnmi2").assigned_agent, "nnmi2");

  FeedItem item;
  item.id = "01UPSTREAMID";
  item.service = "hpnnmi";
  item.agent = "nnmi1";
  item.payload = R"({"status":"active"})";
  item.payload_is_object = true;
  auto fed = admit_feed_item(std::move(item), "edge", dir, 5);
  ASSERT_TRUE(fed.is_ok()) << fed.status().message();
  EXPECT_EQ(fed->agent, "ws-198/10.2.0.121:8081");
}

// The warning for an identifier no agent has: once per identifier, none for configured ones.
TEST(UnconfiguredAgentLog, LogsOncePerIdentifier) {
  AgentDirectory dir({agent("a1", {"hpnnmi"})}, {});
  UnconfiguredAgentLog log;
  auto admitted = [&](const std::string& name) {
    IntakeRequest r = request("hpnnmi", R"({"status":"active"})");
    r.agent = name;
    return *admit_direct(r, dir, 1);
  };
  EXPECT_TRUE(log.note(admitted("ghost"), dir));
  EXPECT_FALSE(log.note(admitted("ghost"), dir));
  EXPECT_TRUE(log.note(admitted("ghost2"), dir));
  EXPECT_FALSE(log.note(admitted("a1"), dir));
  AgentDirectory edge({}, {}, Role::kEdge);
  EXPECT_FALSE(log.note(admitted("other"), edge));
}

TEST(AdmitDirect, RefusesInvalidTextFieldsNamingTheField) {
  AgentDirectory dir({agent("a1", {"hpnnmi"})}, {});
  const std::string body = R"({"status":"active","eventIdentifier":1})";
  struct Case {
    const char* name;
    IntakeRequest request;
    const char* says;
  };
  auto with = [&](auto set) {
    IntakeRequest r = request("hpnnmi", body);
    set(r);
    return r;
  };
  std::vector<Case> cases = {
      {"type not UTF-8", with([](IntakeRequest& r) { r.type = "\xFF"; }),
       "type is not valid UTF-8"},
      {"agent not UTF-8", with([](IntakeRequest& r) { r.agent = "ws-1/\xC3"; }),
       "agent is not valid UTF-8"},
      {"service control", with([](IntakeRequest& r) { r.service = "hp\nnmi"; }),
       "service contains a control character"},
      {"key control", with([](IntakeRequest& r) { r.idempotency_key = "k\x7F"; }),
       "Idempotency-Key contains a control character"},
      {"service long", with([](IntakeRequest& r) { r.service = std::string(257, 's'); }),
       "service is longer than 256 bytes"},
      {"agent long", with([](IntakeRequest& r) { r.agent = std::string(257, 'a'); }),
       "agent is longer than 256 bytes"},
      {"type long", with([](IntakeRequest& r) { r.type = std::string(257, 't'); }),
       "type is longer than 256 bytes"},
      {"key long", with([](IntakeRequest& r) { r.idempotency_key = std::string(257, 'k'); }),
       "Idempotency-Key is longer than 256 bytes"},
      {"inferred type control",
       with([](IntakeRequest& r) { r.body = R"({"xmatters_callback_type":"st\u0001"})"; }),
       "type contains a control character"},
  };
  for (auto& c : cases) {
    auto w = admit_direct(c.request, dir, 0);
    ASSERT_FALSE(w.is_ok()) << c.name;
    EXPECT_EQ(w.status().kind(), StatusKind::kInvalidArgument) << c.name;
    EXPECT_NE(w.status().message().find(c.says), std::string::npos)
        << c.name << ": " << w.status().message();
  }
  // At the limits, and beyond ASCII, all is well.
  auto ok = with([](IntakeRequest& r) {
    r.service = std::string(256, 's');
    r.agent = "caf\xC3\xA9/127.0.0.1:1";
    r.idempotency_key = std::string(256, 'k');
  });
  EXPECT_TRUE(admit_direct(ok, dir, 0).is_ok());
}

TEST(AdmitFeedItem, RefusesInvalidFieldsAndQuarantinesThemSafely) {
  AgentDirectory dir({agent("a1", {"hpnnmi"})}, {});
  FeedItem item;
  item.seq = 3;
  item.id = "01UP";
  item.service = "hpnnmi";
  item.agent = std::string("ws-1\x01/127.0.0.1:1");
  item.type = "status";
  item.payload = R"({"status":"active"})";
  item.payload_is_object = true;
  auto w = admit_feed_item(FeedItem(item), "edge", dir, 5);
  ASSERT_FALSE(w.is_ok());
  EXPECT_NE(w.status().message().find("agent contains a control character"), std::string::npos)
      << w.status().message();
  NewWebhook q = quarantine_feed_item(item, "edge", w.status().message(), 5);
  EXPECT_EQ(q.state, WebhookState::kFailed);
  EXPECT_EQ(q.source, "edge");
  EXPECT_EQ(q.source_id, "01UP");
  EXPECT_EQ(q.agent, "ws-1\xEF\xBF\xBD/127.0.0.1:1");
  EXPECT_EQ(q.type, "status");
  EXPECT_EQ(q.payload, item.payload);
  ASSERT_TRUE(q.reason.has_value());
  EXPECT_NE(q.reason->find("agent contains a control character"), std::string::npos);
  // An id that is not safe text becomes a safe one that still tells ids apart.
  FeedItem odd = item;
  odd.id = std::string(300, 'x');
  FeedItem odder = item;
  odder.id = std::string(300, 'x') + "y";
  auto a = quarantine_feed_item(odd, "edge", "why", 5);
  auto b = quarantine_feed_item(odder, "edge", "why", 5);
  EXPECT_LE(a.source_id->size(), kMaxSourceId);
  EXPECT_NE(a.source_id, b.source_id);
  EXPECT_EQ(a.source_id, quarantine_feed_item(odd, "edge", "why", 6).source_id);
}

}  // namespace
}  // namespace iarelay
