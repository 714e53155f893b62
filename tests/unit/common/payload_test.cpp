// Tests of common/payload.h: the type inference of docs/architecture.md ("Payload dialects") on
// every xMatters fixture, the given type winning, refusal of bodies that are not JSON objects, and
// name normalisation.
#include "common/payload.h"

#include <gtest/gtest.h>

#include "support/process.h"

namespace iarelay {
namespace {

struct FixtureCase {
  const char* file;
  const char* type;
};

TEST(Payload, InfersTheTypeOfEveryFixture) {
  const FixtureCase cases[] = {
      {"ia_delivery.json", "deliveryStatus"}, {"ia_response.json", "response"},
      {"ia_status.json", "status"},           {"ib_annotation.json", "annotation"},
      {"ib_delivery.json", "deliveryStatus"}, {"ib_response.json", "response"},
      {"ib_status.json", "status"},
  };
  for (const auto& c : cases) {
    std::string body = testing::read_file(testing::fixture(c.file));
    ASSERT_FALSE(body.empty()) << c.file;
    auto info = inspect_payload(body, "");
    ASSERT_TRUE(info.is_ok()) << c.file << ": " << info.status().message();
    EXPECT_EQ(info->type, c.type) << c.file;
    // Both dialects name the same alert: a number in IB JSON, a string in the IA message.
    EXPECT_EQ(info->event_id, "6120448") << c.file;
  }
}

TEST(Payload, GivenTypeWinsOverInference) {
  std::string body = testing::read_file(testing::fixture("ib_status.json"));
  auto info = inspect_payload(body, "response");
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->type, "response");
  auto other = inspect_payload(body, " escalation ");  // other types are kept as given
  ASSERT_TRUE(other.is_ok());
  EXPECT_EQ(other->type, "escalation");
  auto ia = inspect_payload(testing::read_file(testing::fixture("ia_delivery.json")), "status");
  ASSERT_TRUE(ia.is_ok());
  EXPECT_EQ(ia->type, "status");  // even over xmatters_callback_type
}

TEST(Payload, InferenceOrderFollowsTheSpec) {
  struct Case {
    const char* body;
    const char* type;
  } cases[] = {
      {R"({"xmatters_callback_type":"annotation","status":"active","response":"Ack"})",
       "annotation"},
      {R"({"xmatters_callback_type":"","status":"active"})", "status"},
      {R"({"status":"active","comment":"c","response":"Ack","deliveryStatus":"Failed"})",
       "deliveryStatus"},
      {R"({"deliverystatus":"Failed"})", "deliveryStatus"},
      {R"({"status":"active","comment":"c","response":"Ack"})", "response"},
      {R"({"status":"active","comment":"c"})", "annotation"},
      {R"({"status":"terminated_external","username":"tnakamura"})", "status"},
  };
  for (const auto& c : cases) {
    auto info = inspect_payload(c.body, "");
    ASSERT_TRUE(info.is_ok()) << c.body << ": " << info.status().message();
    EXPECT_EQ(info->type, c.type) << c.body;
  }
}

TEST(Payload, UninferableTypeIsRefusedUnlessGiven) {
  auto info = inspect_payload(R"({"eventIdentifier": 1, "foo": "bar"})", "");
  ASSERT_FALSE(info.is_ok());
  EXPECT_EQ(info.status().kind(), StatusKind::kInvalidArgument);
  EXPECT_NE(info.status().message().find("type"), std::string::npos);
  auto given = inspect_payload(R"({"eventIdentifier": 1, "foo": "bar"})", "status");
  ASSERT_TRUE(given.is_ok());
  EXPECT_EQ(given->event_id, "1");
}

TEST(Payload, BodyThatIsNotAJsonObjectIsRefused) {
  for (const char* body : {"", "not json", "[]", R"([{"status":"active"}])", "\"status\"", "42",
                           "null", R"({"status": )"}) {
    auto info = inspect_payload(body, "status");
    ASSERT_FALSE(info.is_ok()) << body;
    EXPECT_EQ(info.status().kind(), StatusKind::kInvalidArgument) << body;
  }
}

TEST(Payload, EventIdentifierIsOptional) {
  auto info = inspect_payload(R"({"status":"active"})", "");
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->event_id, "");
}

// inspect_payload scans the top level without building a tree; these are the cases where a
// scan could differ from reading the parsed document.
TEST(Payload, ReadsOnlyTopLevelMembersAndTheLastOfRepeatedOnes) {
  struct Case {
    const char* body;
    const char* type;
    const char* event_id;
  } cases[] = {
      {R"({"alert":{"eventIdentifier":7,"response":"Ack"},"status":"active"})", "status", ""},
      {R"({"eventIdentifier":1,"eventIdentifier":"2","status":"a"})", "status", "2"},
      {R"({"eventIdentifier":"1","eventIdentifier":null,"status":"a"})", "status", ""},
      {R"({"eventidentifier":3,"eventIdentifier":4,"status":"a"})", "status", "4"},
      {R"({"eventIdentifier":18446744073709551615,"status":"a"})", "status", "-1"},
      {R"({"eventIdentifier":-5,"status":"a"})", "status", "-5"},
      {R"({"eventIdentifier":1.5,"status":"a"})", "status", "1.5"},
      {R"({"eventIdentifier":true,"status":"a"})", "status", "true"},
      {R"({"eventIdentifier":{"b":1,"a":[2]},"status":"a"})", "status", R"({"a":[2],"b":1})"},
      {R"({"xmatters_callback_type":"response","xmatters_callback_type":5,"status":"a"})", "status",
       ""},
      {R"({"xmatters_callback_type":1,"xmatters_callback_type":"response","status":"a"})",
       "response", ""},
      {R"({"xmatters_callback_type":["response"],"comment":"c"})", "annotation", ""},
      {R"({"list":[{"status":"a"}],"comment":"c"})", "annotation", ""},
  };
  for (const auto& c : cases) {
    auto info = inspect_payload(c.body, "");
    ASSERT_TRUE(info.is_ok()) << c.body << ": " << info.status().message();
    EXPECT_EQ(info->type, c.type) << c.body;
    EXPECT_EQ(info->event_id, c.event_id) << c.body;
  }
  EXPECT_FALSE(inspect_payload(R"({"nested":{"status":"active"}})", "").is_ok());
  EXPECT_FALSE(inspect_payload(R"({"status":"active"} trailing)", "").is_ok());
}

TEST(Payload, NormalizesServicesAndAgents) {
  EXPECT_EQ(normalize_service("applications|hpnnmi"), "hpnnmi");
  EXPECT_EQ(normalize_service("  hpnnmi "), "hpnnmi");
  EXPECT_EQ(normalize_service(" applications| hpnnmi"), "hpnnmi");
  EXPECT_EQ(normalize_service("other|hpnnmi"), "other|hpnnmi");
  EXPECT_EQ(normalize_service("Applications|hpnnmi"), "Applications|hpnnmi");  // case kept
  EXPECT_EQ(normalize_agent("  ws-198/10.2.0.121:8081\t"), "ws-198/10.2.0.121:8081");
  EXPECT_EQ(normalize_agent("Host/1.2.3.4:80"), "Host/1.2.3.4:80");  // case kept
}

// Found writing the payload fuzz target's idempotence invariant: an edge turned
// "applications|applications|x" into "applications|x", and the inner relay, normalising the
// edge's row again when it admitted it from the feed, into "x": the two routed it differently.
TEST(Payload, NormalizeServiceIsIdempotent) {
  EXPECT_EQ(normalize_service("applications|applications|x"), "x");
  EXPECT_EQ(normalize_service(" applications| applications|\tapplications|x "), "x");
  EXPECT_EQ(normalize_service("applications|"), "");
  EXPECT_EQ(normalize_service("applications|applications"), "applications");
  EXPECT_EQ(normalize_service("x|applications|y"), "x|applications|y");
  for (std::string s : {"applications|applications|x", "applications| applications|hpnnmi",
                        " applications|\napplications| ", "applications|x|applications|y",
                        "applicationsapplications|x", "hpnnmi"}) {
    std::string once = normalize_service(s);
    EXPECT_EQ(normalize_service(once), once) << s;
  }
  std::string many;
  for (int i = 0; i < 5000; ++i) many += "applications|";
  EXPECT_EQ(normalize_service(many + "x"), "x");
}

// Found while fuzzing format = ia: a 200 KB body nesting 100,000 arrays was accepted, and
// turning it back into text (nlohmann's dump(), recursive) overflowed the dispatcher's stack on
// every delivery attempt, after every restart. Intake refuses it (400) with the reason.
TEST(Payload, DeeplyNestedBodyIsRefused) {
  auto nest = [](std::size_t levels) {  // the top-level object is level 1
    return "{\"status\":\"x\",\"a\":" + std::string(levels - 1, '[') +
           std::string(levels - 1, ']') + "}";
  };
  EXPECT_TRUE(inspect_payload(nest(kMaxPayloadDepth), "").is_ok());
  auto deep = inspect_payload(nest(kMaxPayloadDepth + 1), "");
  ASSERT_FALSE(deep.is_ok());
  EXPECT_NE(deep.status().message().find("nested deeper than"), std::string::npos);
  EXPECT_FALSE(inspect_payload(nest(100'000), "status").is_ok());
  auto array = inspect_payload(std::string(100'000, '['), "");
  ASSERT_FALSE(array.is_ok());
  EXPECT_EQ(array.status().message(), "body is not a JSON object");
}

// Found by fuzz/feed_fuzzer.cpp: nlohmann stops at a NUL byte, so `{...}<NUL>junk` was
// accepted and stored; the edge then embedded it raw in GET /v1/feed, an invalid document that
// no consumer could read past.
TEST(Payload, BodyWithANulByteIsRefused) {
  using namespace std::string_literals;
  EXPECT_FALSE(inspect_payload("{\"status\":\"x\"}\0junk"s, "").is_ok());
  EXPECT_FALSE(inspect_payload("{\"status\":\"x\"}\0"s, "status").is_ok());
}

}  // namespace
}  // namespace iarelay
