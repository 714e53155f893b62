// The feed's wire format: rendering stored rows and parsing them back byte for byte.
#include "intake/feed.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/payload.h"
#include "intake/admission.h"
#include "support/process.h"

namespace iarelay {
namespace {

FeedMessage message(std::int64_t seq, std::string payload) {
  FeedMessage m;
  m.seq = seq;
  m.id = "ID" + std::to_string(seq);
  m.service = "hpnnmi";
  m.type = "status";
  m.agent = "ws-198/10.2.0.121:8081";
  m.received_at = 1'700'000'000'123;
  m.payload = std::move(payload);
  return m;
}

TEST(RenderFeed, EmbedsPayloadTextUnchangedAndSetsNext) {
  std::string odd =
      "{ \"status\" : \"active\",\n \"comment\": \"caf\\u00e9 \xE2\x9C\x93 [}{\\\"\",\n "
      "\"n\": 1.50e2 }";
  std::string body = render_feed({message(3, odd), message(9, R"({"a":[1,{"b":"]"}]})")}, 2);
  auto doc = nlohmann::json::parse(body);
  ASSERT_EQ(doc["messages"].size(), 2u);
  EXPECT_EQ(doc["next"], 9);
  EXPECT_EQ(doc["messages"][0]["seq"], 3);
  EXPECT_EQ(doc["messages"][0]["agent"], "ws-198/10.2.0.121:8081");
  EXPECT_EQ(doc["messages"][0]["received_at"], "2023-11-14T22:13:20.123Z");
  EXPECT_TRUE(doc["messages"][0]["payload"].is_object());
  EXPECT_NE(body.find(odd), std::string::npos);  // byte for byte, not re-serialised
}

TEST(RenderFeed, EmptyFeedKeepsAfterAsNext) {
  auto doc = nlohmann::json::parse(render_feed({}, 41));
  EXPECT_TRUE(doc["messages"].empty());
  EXPECT_EQ(doc["next"], 41);
}

TEST(RenderFeed, InvalidStoredPayloadStillYieldsAValidDocument) {
  auto m = message(1, "{not json");
  m.agent.reset();
  auto doc = nlohmann::json::parse(render_feed({m}, 0));
  EXPECT_EQ(doc["messages"][0]["payload"], "{not json");
  EXPECT_TRUE(doc["messages"][0]["agent"].is_null());
}

TEST(ParseFeed, RoundTripsPayloadBytesExactly) {
  std::vector<FeedMessage> in = {
      message(1, "{\"status\":\"active\"}"),
      message(2, "{ \"comment\" : \"quote \\\" brace } bracket ] \\\\\" ,\n\t\"x\": [ {}, [] ] }"),
      message(5, "{\"k\":\"\xF0\x9F\x9A\xA8 alert\",\"n\":1e3}"),
  };
  auto batch = parse_feed(render_feed(in, 0));
  ASSERT_TRUE(batch.is_ok()) << batch.status().message();
  ASSERT_EQ(batch->messages.size(), 3u);
  EXPECT_EQ(batch->next, 5);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(batch->messages[i].payload, in[i].payload);
    EXPECT_EQ(batch->messages[i].id, in[i].id);
    EXPECT_EQ(batch->messages[i].seq, in[i].seq);
    EXPECT_EQ(batch->messages[i].agent, in[i].agent);
    EXPECT_TRUE(batch->messages[i].payload_is_object);
  }
}

// Found by the feed fuzz target: an edge that stored a body with whitespace around its JSON
// (a final newline, as curl --data-binary @file sends) handed the inner relay the JSON alone,
// not the bytes it acknowledged; a leading byte order mark was dropped too.
TEST(ParseFeed, BytesAroundAStoredPayloadTravelWithIt) {
  std::vector<FeedMessage> in = {
      message(1, " {\"status\":\"active\"}\n"),  // fuzz/regressions/feed-payload-whitespace
      message(2, "{\"status\":\"active\"}\r\n"),
      message(3, "\t\n [1,2]"),
      message(4, "\xEF\xBB\xBF  {\"comment\":\"x\"} \n\n"),
      message(5, "\xEF\xBB\xBF{\"comment\":\"y\"}"),
      message(6, "{\"status\":\"unchanged\"}"),
  };
  std::string body = render_feed(in, 0);
  auto doc = nlohmann::json::parse(body);  // still a valid document
  EXPECT_FALSE(doc["messages"][5].contains("payload_prefix"));
  EXPECT_FALSE(doc["messages"][5].contains("payload_suffix"));
  auto batch = parse_feed(body);
  ASSERT_TRUE(batch.is_ok()) << batch.status().message();
  ASSERT_EQ(batch->messages.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(batch->messages[i].payload, in[i].payload) << i;
    EXPECT_EQ(batch->messages[i].payload_is_object, i != 2) << i;
  }
  // What the inner relay stores is what intake accepted at the edge: still a payload.
  auto inspected = inspect_payload(batch->messages[3].payload, "");
  ASSERT_TRUE(inspected.is_ok()) << inspected.status().message();
  EXPECT_EQ(inspected->type, "annotation");
}

// Anything else around the value would change what the payload is. No iarelay edge sends it;
// from another upstream, that message alone is set aside (admission stores it as failed with
// the reason, its value as the payload) and the rest of the batch goes on: refusing the whole
// document would stop the feed for good (the poller asks for the same batch again).
TEST(ParseFeed, ABadFrameAroundOnePayloadSetsThatMessageAsideNotTheFeed) {
  for (const char* bad : {R"("payload_prefix":"x ",)", R"("payload_suffix":" ,",)",
                          R"("payload_prefix":1,)", R"("payload_suffix":null,)"}) {
    std::string body = R"({"messages":[{"seq":1,"id":"a","service":"hpnnmi",)" + std::string(bad) +
                       R"("payload":{"status":"x"}},{"seq":2,"id":"b","service":"hpnnmi",)"
                       R"("payload_suffix":"\n","payload":{"status":"y"}}],"next":2})";
    auto batch = parse_feed(body);
    ASSERT_TRUE(batch.is_ok()) << body << ": " << batch.status().message();
    ASSERT_EQ(batch->messages.size(), 2u);
    const FeedItem& a = batch->messages[0];
    EXPECT_NE(a.framing_error, "") << body;
    EXPECT_EQ(a.payload, R"({"status":"x"})");
    EXPECT_EQ(batch->messages[1].framing_error, "");
    EXPECT_EQ(batch->messages[1].payload, "{\"status\":\"y\"}\n");
    AgentDirectory none({}, {});
    auto admitted = admit_feed_item(FeedItem(a), "edge", none, 5);
    ASSERT_FALSE(admitted.is_ok());
    EXPECT_NE(admitted.status().message().find("is not whitespace"), std::string::npos)
        << admitted.status().message();
  }
}

// The depth is checked before the payload is inspected: an event identifier that is an array
// nested 500,000 deep would otherwise be turned back into text, one recursion per level.
TEST(ParseFeed, APayloadNestedTooDeepIsNotInspected) {
  std::string deep = std::string(500000, '[') + std::string(500000, ']');
  std::string body = R"({"messages":[{"seq":1,"id":"a","service":"hpnnmi","payload":)"
                     R"({"status":"x","eventIdentifier":)" +
                     deep + "}}],\"next\":1}";
  auto batch = parse_feed(body);
  ASSERT_TRUE(batch.is_ok()) << batch.status().message();
  ASSERT_EQ(batch->messages.size(), 1u);
  EXPECT_TRUE(batch->messages[0].too_deep);
  EXPECT_EQ(batch->messages[0].event_id, "");
}

TEST(RenderFeed, StoredPayloadWithANulIsSentAsAString) {
  // Rows stored before intake refused a NUL: nlohmann stops reading at it.
  for (std::string stored : {std::string("{\"status\":\"a\"}\0junk", 19), std::string("1\0x", 3)}) {
    std::string body = render_feed({message(1, stored)}, 0);
    auto doc = nlohmann::json::parse(body, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << body;
    EXPECT_TRUE(doc["messages"][0]["payload"].is_string());
  }
}

TEST(ParseFeed, FindsPayloadWhateverTheFieldOrderAndWhitespace) {
  std::string body =
      "\n{ \"next\" : 8 , \"messages\" : [ { \"payload\" : {\"a\" : \"}\"} , \"id\":\"x\", "
      "\"seq\": 8, \"extra\": [\"payload\"] } ] }\n";
  auto batch = parse_feed(body);
  ASSERT_TRUE(batch.is_ok()) << batch.status().message();
  EXPECT_EQ(batch->messages[0].payload, "{\"a\" : \"}\"}");
}

TEST(ParseFeed, RejectsGarbageSayingWhatIsWrong) {
  EXPECT_NE(parse_feed("<html>502</html>").status().message().find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(parse_feed("[]").status().message().find("not a JSON object"), std::string::npos);
  EXPECT_NE(parse_feed(R"({"next":1})").status().message().find("messages"), std::string::npos);
  EXPECT_NE(parse_feed(R"({"messages":[]})").status().message().find("next"), std::string::npos);
  EXPECT_FALSE(parse_feed(R"({"messages":[{"seq":1,"payload":{}}],"next":1})").is_ok());
  EXPECT_FALSE(parse_feed(R"({"messages":[{"seq":1,"id":"a"}],"next":1})").is_ok());
  EXPECT_FALSE(parse_feed(R"({"messages":[{"seq":3,"id":"a","payload":{}}],"next":1})").is_ok());
}

TEST(ParseFeed, FlagsNonObjectPayloads) {
  auto batch = parse_feed(R"({"messages":[{"seq":1,"id":"a","payload":"text"}],"next":1})");
  ASSERT_TRUE(batch.is_ok());
  EXPECT_FALSE(batch->messages[0].payload_is_object);
  EXPECT_EQ(batch->messages[0].payload, "\"text\"");
}

TEST(ParseFeed, InspectsPayloadsExactlyAsInspectPayloadDoes) {
  std::vector<std::string> bodies;
  for (const char* f :
       {"ib_status.json", "ib_delivery.json", "ib_response.json", "ib_annotation.json",
        "ia_status.json", "ia_delivery.json", "ia_response.json"})
    bodies.push_back(testing::read_file(testing::fixture(f)));
  bodies.push_back(R"({"eventIdentifier":"E-1","comment":"c","status":"x"})");
  bodies.push_back(R"({"eventidentifier":12345678901234,"xmatters_callback_type":""})");
  bodies.push_back(R"({"eventIdentifier":null,"deliverystatus":"Failed"})");
  bodies.push_back(R"({"eventIdentifier":1.5,"nothing":"to infer"})");
  for (const std::string given : {"", "custom", " status "}) {
    std::vector<FeedMessage> in;
    for (size_t i = 0; i < bodies.size(); ++i) {
      in.push_back(message(static_cast<std::int64_t>(i + 1), bodies[i]));
      in.back().type = given;
    }
    auto batch = parse_feed(render_feed(in, 0));
    ASSERT_TRUE(batch.is_ok()) << batch.status().message();
    for (size_t i = 0; i < bodies.size(); ++i) {
      const FeedItem& item = batch->messages[i];
      ASSERT_TRUE(item.inspected);
      auto expected = inspect_payload(bodies[i], given);
      if (expected) {
        EXPECT_EQ(item.inferred_type, expected->type) << bodies[i];
        EXPECT_EQ(item.event_id, expected->event_id) << bodies[i];
      } else {
        EXPECT_EQ(item.inferred_type, "") << bodies[i];
      }
    }
  }
}

TEST(JsonValueSpan, CoversNestedValuesAndScalars) {
  std::string t = R"(  {"a":[1,"]",{"b":"}"}]} , 12.5e3, "s\"x")";
  auto [b, e] = json_value_span(t, 0);
  EXPECT_EQ(t.substr(b, e - b), R"({"a":[1,"]",{"b":"}"}]})");
  auto [b2, e2] = json_value_span(t, t.find(',', e) + 1);
  EXPECT_EQ(t.substr(b2, e2 - b2), "12.5e3");
  auto [b3, e3] = json_value_span(t, t.find(',', e2) + 1);
  EXPECT_EQ(t.substr(b3, e3 - b3), R"("s\"x")");
}

TEST(RenderFeed, CarriesNewestAndParseFeedReadsIt) {
  auto body = render_feed({message(3, "{}")}, 2, 41);
  auto doc = nlohmann::json::parse(body);
  EXPECT_EQ(doc["next"], 3);
  EXPECT_EQ(doc["newest"], 41);
  auto batch = parse_feed(body);
  ASSERT_TRUE(batch.is_ok()) << batch.status().message();
  EXPECT_EQ(batch->newest, 41);
  // An older edge sends no "newest": the consumer cannot tell, and carries on as before.
  auto old = parse_feed(R"({"messages":[],"next":7})");
  ASSERT_TRUE(old.is_ok());
  EXPECT_FALSE(old->newest.has_value());
  EXPECT_FALSE(parse_feed(R"({"messages":[],"next":7,"newest":"x"})").is_ok());
}

TEST(RenderFeed, StaysWithinMaxBytesButAlwaysSendsTheFirstMessage) {
  std::vector<FeedMessage> in;
  for (int i = 1; i <= 10; ++i)
    in.push_back(message(i, R"({"pad":")" + std::string(1000, 'x') + "\"}"));
  std::string body = render_feed(in, 0, 10, 3000);  // room for two of ~1150 bytes
  EXPECT_LE(body.size(), 3000u);
  auto doc = nlohmann::json::parse(body);
  ASSERT_EQ(doc["messages"].size(), 2u);
  EXPECT_EQ(doc["next"], 2);  // the consumer resumes after the last one sent
  EXPECT_EQ(doc["newest"], 10);
  // One message larger than max_bytes still goes, alone: a consumer can always move on.
  auto one = nlohmann::json::parse(render_feed(in, 0, 10, 100));
  ASSERT_EQ(one["messages"].size(), 1u);
  EXPECT_EQ(one["next"], 1);
}

}  // namespace
}  // namespace iarelay
