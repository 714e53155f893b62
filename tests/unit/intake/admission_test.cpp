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
  AgentDirectory edge({}, {});
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
  AgentDirectory edge({}, {});
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
  AgentDirectory edge({}, {});
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
  auto w = admit_feed_item(item, "edge", dir, 5);
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  EXPECT_EQ(w->source, "edge");
  EXPECT_EQ(w->source_id, "01UPSTREAMID");
  EXPECT_NE(w->id, "01UPSTREAMID");
  EXPECT_EQ(w->type, "deliveryStatus");
  EXPECT_EQ(w->event_id, "9");
  EXPECT_EQ(w->payload, item.payload);
  EXPECT_EQ(w->assigned_agent, "a1");
  item.payload_is_object = false;
  EXPECT_FALSE(admit_feed_item(item, "edge", dir, 5).is_ok());
}

}  // namespace
}  // namespace iarelay
