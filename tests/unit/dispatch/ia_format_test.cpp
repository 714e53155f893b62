// format = ia: every fixture of tests/fixtures/xmatters converted to the apia_callback
// message (lower-cased keys, string values, additionalTokens, the "annotation": "null" quirk).
#include "dispatch/ia_format.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/payload.h"
#include "support/process.h"

namespace iarelay {
namespace {

using Json = nlohmann::json;

Json convert(const std::string& type, const std::string& fixture_name) {
  auto out = to_ia_message(type, testing::read_file(testing::fixture(fixture_name)));
  EXPECT_TRUE(out) << out.status().message();
  return out ? Json::parse(*out) : Json();
}

// Every key but additionalTokens is lower-case and every value a string.
void expect_ia_shape(const Json& m) {
  ASSERT_TRUE(m.is_object());
  for (const auto& [k, v] : m.items()) {
    if (k == "additionalTokens") {
      ASSERT_TRUE(v.is_object());
      for (const auto& [tk, tv] : v.items()) EXPECT_TRUE(tv.is_string()) << tk;
      continue;
    }
    for (char c : k) EXPECT_FALSE(std::isupper(static_cast<unsigned char>(c))) << k;
    EXPECT_TRUE(v.is_string()) << k;
  }
}

TEST(IaFormat, IntegrationBuilderStatus) {
  Json m = convert("status", "ib_status.json");
  expect_ia_shape(m);
  EXPECT_EQ(m, Json::parse(R"({
    "xmatters_callback_type": "status", "eventidentifier": "6120448",
    "date": "2026-10-07T22:43:18Z", "status": "terminated_external", "username": "tnakamura",
    "additionalTokens": {"Incident ID": "INC0107356", "Severity": "1 - Critical"}})"));
}

TEST(IaFormat, IntegrationBuilderDelivery) {
  Json m = convert("deliveryStatus", "ib_delivery.json");
  expect_ia_shape(m);
  EXPECT_EQ(m, Json::parse(R"({
    "xmatters_callback_type": "deliveryStatus", "eventidentifier": "6120448",
    "date": "2026-10-07T22:39:52Z", "recipient": "tnakamura", "device": "Work Email",
    "deliverystatus": "Delivered", "additionalTokens": {"Incident ID": "INC0107356"}})"));
}

TEST(IaFormat, IntegrationBuilderResponseWithoutCommentCarriesAnnotationNullString) {
  Json m = convert("response", "ib_response.json");
  expect_ia_shape(m);
  EXPECT_EQ(m, Json::parse(R"({
    "xmatters_callback_type": "response", "eventidentifier": "6120448",
    "date": "2026-10-07T22:40:27Z", "recipient": "tnakamura", "device": "Mobile Phone",
    "response": "Acknowledge", "annotation": "null",
    "additionalTokens": {"Incident ID": "INC0107356", "Assignment Group": "Core Network"}})"));
}

TEST(IaFormat, IntegrationBuilderAnnotationFlattensAuthor) {
  Json m = convert("annotation", "ib_annotation.json");
  expect_ia_shape(m);
  EXPECT_EQ(m, Json::parse(R"({
    "xmatters_callback_type": "annotation", "eventidentifier": "6120448",
    "date": "2026-10-07T22:41:09Z", "author": "Tomas Nakamura",
    "comment": "Failover link up, watching BGP sessions",
    "additionalTokens": {"Incident ID": "INC0107356"}})"));
}

TEST(IaFormat, IntegrationAgentDialectPassesThrough) {
  for (auto [type, name] :
       {std::pair{"status", "ia_status.json"}, std::pair{"deliveryStatus", "ia_delivery.json"},
        std::pair{"response", "ia_response.json"}}) {
    Json m = convert(type, name);
    expect_ia_shape(m);
    EXPECT_EQ(m, Json::parse(testing::read_file(testing::fixture(name)))) << name;
  }
}

TEST(IaFormat, ResponseWithCommentUsesItAsAnnotation) {
  auto out = to_ia_message("response", R"({"eventIdentifier": 7, "response": "Ack",
                                            "comment": "on my way"})");
  ASSERT_TRUE(out);
  Json m = Json::parse(*out);
  EXPECT_EQ(m["annotation"], "on my way");
  EXPECT_EQ(m["eventidentifier"], "7");
}

TEST(IaFormat, ScalarsBecomeText) {
  auto out = to_ia_message("status", R"({"eventIdentifier": 1, "Count": 2.5, "Flag": true,
                                          "Gone": null, "List": [1, "a"], "Obj": {"k": 1}})");
  ASSERT_TRUE(out);
  Json m = Json::parse(*out);
  EXPECT_EQ(m["count"], "2.5");
  EXPECT_EQ(m["flag"], "true");
  EXPECT_EQ(m["gone"], "null");
  EXPECT_EQ(m["list"], R"([1,"a"])");
  EXPECT_EQ(m["obj"], R"({"k":1})");
}

TEST(IaFormat, RejectsNonObjects) {
  EXPECT_FALSE(to_ia_message("status", "[1,2]"));
  EXPECT_FALSE(to_ia_message("status", "not json"));
}

// Rows may hold bytes intake would refuse (feed, older version, operator SQL): the conversion
// replaces them with U+FFFD instead of throwing (nlohmann's dump throws type_error.316).
TEST(IaFormat, InvalidUtf8BecomesReplacementCharacters) {
  auto out = to_ia_message(
      "st\xFF"
      "atus",
      "{\"eventIdentifier\": \"4\xC3\", \"Name\": \"a\xED\xA0\x80z\", "
      "\"Obj\": {\"k\": \"\xFE\"}}");
  ASSERT_TRUE(out) << out.status().message();
  Json m = Json::parse(*out);
  EXPECT_EQ(m["xmatters_callback_type"],
            "st\xEF\xBF\xBD"
            "atus");
  EXPECT_EQ(m["eventidentifier"], "4\xEF\xBF\xBD");
  EXPECT_EQ(m["name"], "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz");  // a surrogate: 3 bad bytes
  EXPECT_EQ(m["obj"], "{\"k\":\"\xEF\xBF\xBD\"}");
}

TEST(IaFormat, ReplaceInvalidUtf8KeepsValidText) {
  EXPECT_EQ(replace_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(replace_invalid_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(replace_invalid_utf8("\xF4\x90\x80\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");                // above U+10FFFF
  EXPECT_EQ(replace_invalid_utf8("ab\xE2\x82"), "ab\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated
}

// Found by fuzz/ia_format_fuzzer.cpp (with the payload 100,000 arrays deep): the conversion
// overflowed the stack (dump() recurses per level). Such a row, stored before intake refused
// them or taken from a feed, fails alone with the reason.
TEST(IaFormat, DeeplyNestedPayloadFailsInsteadOfOverflowingTheStack) {
  std::string deep =
      "{\"status\":\"x\",\"a\":" + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  auto out = to_ia_message("status", deep);
  ASSERT_FALSE(out.is_ok());
  EXPECT_NE(out.status().message().find("nested deeper than"), std::string::npos);
  std::string ok = "{\"status\":\"x\",\"a\":" + std::string(kMaxPayloadDepth - 1, '[') +
                   std::string(kMaxPayloadDepth - 1, ']') + "}";
  EXPECT_TRUE(to_ia_message("status", ok).is_ok());
}

}  // namespace
}  // namespace iarelay
