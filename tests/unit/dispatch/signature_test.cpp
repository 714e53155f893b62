// Standard Webhooks signing: the scheme's published test vector, verification, secrets.
#include "dispatch/signature.h"

#include <gtest/gtest.h>

namespace iarelay {
namespace {

// The example of the Standard Webhooks specification.
constexpr const char* kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* kId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr const char* kTimestamp = "1614265330";
constexpr const char* kBody = R"({"test": 2432232314})";
constexpr const char* kExpected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

TEST(Signature, MatchesTheStandardWebhooksVector) {
  auto key = signing_key(kSecret);
  ASSERT_TRUE(key) << key.status().message();
  EXPECT_EQ(sign_webhook(*key, kId, kTimestamp, kBody), kExpected);
}

TEST(Signature, VerifiesAnyOfSeveralSignaturesAndRejectsTampering) {
  auto key = *signing_key(kSecret);
  EXPECT_TRUE(verify_webhook(key, kId, kTimestamp, kBody, kExpected));
  EXPECT_TRUE(verify_webhook(key, kId, kTimestamp, kBody, std::string("v1,bm90IGl0 ") + kExpected));
  EXPECT_FALSE(verify_webhook(key, kId, kTimestamp, R"({"test": 2432232315})", kExpected));
  EXPECT_FALSE(verify_webhook(key, kId, "1614265331", kBody, kExpected));
  EXPECT_FALSE(verify_webhook(key, kId, kTimestamp, kBody, ""));
}

TEST(Signature, PlainSecretIsUsedAsItsBytes) {
  EXPECT_EQ(*signing_key("s3cret"), "s3cret");
  EXPECT_FALSE(signing_key("whsec_!!!notbase64"));
}

TEST(Signature, AgentSecretEnvironmentName) {
  EXPECT_EQ(agent_secret_env("nnmi1"), "IARELAY_AGENT_NNMI1_SECRET");
  EXPECT_EQ(agent_secret_env("ws-198.east"), "IARELAY_AGENT_WS_198_EAST_SECRET");
}

}  // namespace
}  // namespace iarelay
