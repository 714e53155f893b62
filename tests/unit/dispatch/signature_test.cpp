// Standard Webhooks signing: the scheme's published test vector, verification, secrets and
// each agent's signing key.
#include "dispatch/signature.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "support/process.h"
#include "support/temp_dir.h"

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

AgentConfig agent_with_secret(const std::string& handle, const std::string& secret_file) {
  AgentConfig a;
  a.handle = handle;
  a.id = handle;
  a.callback = "http://127.0.0.1:1/apia_callback";
  a.secret_file = secret_file;
  return a;
}

TEST(AgentSigningKey, NoSecretFileAndNoVariableSignsNothing) {
  ::unsetenv("IARELAY_AGENT_SIGNKEY1_SECRET");
  auto key = agent_signing_key(agent_with_secret("signkey1", ""));
  ASSERT_TRUE(key) << key.status().message();
  EXPECT_EQ(*key, "");
}

TEST(AgentSigningKey, FromTheFileOrTheVariableDecoded) {
  testing::TempDir dir;
  testing::write_file(dir.file("secret"), std::string(kSecret) + "\n");
  ::unsetenv("IARELAY_AGENT_SIGNKEY2_SECRET");
  auto from_file = agent_signing_key(agent_with_secret("signkey2", dir.file("secret")));
  ASSERT_TRUE(from_file) << from_file.status().message();
  EXPECT_EQ(*from_file, *signing_key(kSecret));
  ::setenv("IARELAY_AGENT_SIGNKEY2_SECRET", "plain", 1);
  auto from_env = agent_signing_key(agent_with_secret("signkey2", dir.file("secret")));
  ::unsetenv("IARELAY_AGENT_SIGNKEY2_SECRET");
  ASSERT_TRUE(from_env) << from_env.status().message();
  EXPECT_EQ(*from_env, "plain");
}

// An agent whose secret cannot be read must not run unsigned or silently hold its webhooks: the
// error names the agent, the file and the variable that would have served instead.
TEST(AgentSigningKey, UnreadableEmptyOrInvalidSecretIsAnErrorNamingAgentAndSource) {
  testing::TempDir dir;
  ::unsetenv("IARELAY_AGENT_SIGNKEY3_SECRET");
  auto missing = agent_signing_key(agent_with_secret("signkey3", dir.file("absent")));
  ASSERT_FALSE(missing);
  const std::string m = missing.status().message();
  EXPECT_NE(m.find("[agent.signkey3]"), std::string::npos) << m;
  EXPECT_NE(m.find(dir.file("absent")), std::string::npos) << m;
  EXPECT_NE(m.find("IARELAY_AGENT_SIGNKEY3_SECRET"), std::string::npos) << m;
  testing::write_file(dir.file("empty"), "\n");
  EXPECT_FALSE(agent_signing_key(agent_with_secret("signkey3", dir.file("empty"))));
  testing::write_file(dir.file("bad"), "whsec_!!!notbase64\n");
  auto bad = agent_signing_key(agent_with_secret("signkey3", dir.file("bad")));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find(dir.file("bad")), std::string::npos)
      << bad.status().message();
  ::setenv("IARELAY_AGENT_SIGNKEY3_SECRET", "whsec_!!!notbase64", 1);
  auto bad_env = agent_signing_key(agent_with_secret("signkey3", ""));
  ::unsetenv("IARELAY_AGENT_SIGNKEY3_SECRET");
  ASSERT_FALSE(bad_env);
  EXPECT_NE(bad_env.status().message().find("IARELAY_AGENT_SIGNKEY3_SECRET"), std::string::npos)
      << bad_env.status().message();
  // The secret itself never appears in the message.
  EXPECT_EQ(bad_env.status().message().find("!!!notbase64"), std::string::npos)
      << bad_env.status().message();
}

}  // namespace
}  // namespace iarelay
