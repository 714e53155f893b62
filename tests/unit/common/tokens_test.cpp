// Tests of common/tokens.h: a token file's lines, the variable winning over the file, a file
// with no token refused without showing its content, and targets shown with the token redacted.
#include "common/tokens.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using Tokens = std::vector<std::string>;

TEST(Tokens, OnePerLineTrimmedWithBlankLinesSkipped) {
  EXPECT_EQ(split_tokens("abc"), Tokens{"abc"});
  EXPECT_EQ(split_tokens("abc\n"), Tokens{"abc"});
  EXPECT_EQ(split_tokens("\n  old-1 \t\r\n\n\tnew-2\r\n  \n"), (Tokens{"old-1", "new-2"}));
  EXPECT_EQ(split_tokens("a b\n"), Tokens{"a b"});  // inner whitespace is the token's
  EXPECT_EQ(split_tokens(""), Tokens{});
  EXPECT_EQ(split_tokens(" \n\t\r\n\n"), Tokens{});
}

// Review of issue 13: the rotation runbook has operators put two lines in the listen token file;
// the same done to an inner relay's [upstream] token_file made it send "Bearer old\nnew", which
// no upstream accepts: every poll refused, delivery through the edge stopped. Now refused at
// --check and at start, naming the file and without its content.
TEST(Tokens, AClientTokenFileHoldsOneToken) {
  testing::TempDir dir;
  const char* env = "IARELAY_TOKENS_TEST_CLIENT";
  ::unsetenv(env);
  testing::write_file(dir.file("one"), "only-token\n");
  auto one = read_single_token(dir.file("one"), env);
  ASSERT_TRUE(one.is_ok()) << one.status().message();
  EXPECT_EQ(*one, "only-token");
  testing::write_file(dir.file("two"), "old-token\nnew-token\n");
  auto two = read_single_token(dir.file("two"), env);
  ASSERT_FALSE(two.is_ok());
  EXPECT_NE(two.status().message().find(dir.file("two") + ": token file holds 2 tokens"),
            std::string::npos)
      << two.status().message();
  EXPECT_EQ(two.status().message().find("old-token"), std::string::npos);
  auto unset = read_single_token("", env);
  ASSERT_TRUE(unset.is_ok());
  EXPECT_EQ(*unset, "");
}

TEST(Tokens, ReadFromTheVariableElseTheFileAndAFileWithoutATokenIsAnError) {
  testing::TempDir dir;
  const char* env = "IARELAY_TOKENS_TEST_TOKEN";
  ::unsetenv(env);
  auto none = read_tokens("", env);
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->empty());

  testing::write_file(dir.file("two"), "first\n\nsecond\n");
  auto two = read_tokens(dir.file("two"), env);
  ASSERT_TRUE(two.is_ok()) << two.status().message();
  EXPECT_EQ(*two, (Tokens{"first", "second"}));

  testing::write_file(dir.file("blank"), "  \n\n\t\n");
  auto blank = read_tokens(dir.file("blank"), env);
  ASSERT_FALSE(blank.is_ok());
  EXPECT_EQ(blank.status().message(),
            dir.file("blank") + ": token file holds no token (write one token per line)");

  auto absent = read_tokens(dir.file("absent"), env);
  ASSERT_FALSE(absent.is_ok());
  EXPECT_EQ(absent.status().message(),
            dir.file("absent") + ": cannot read token file: No such file or directory");

  ::setenv(env, "from-env-1\nfrom-env-2", 1);
  auto from_env = read_tokens(dir.file("absent"), env);
  ASSERT_TRUE(from_env.is_ok());
  EXPECT_EQ(*from_env, (Tokens{"from-env-1", "from-env-2"}));
  ::setenv(env, " \n ", 1);
  auto empty_env = read_tokens(dir.file("two"), env);
  ASSERT_FALSE(empty_env.is_ok());
  EXPECT_EQ(empty_env.status().message(),
            "IARELAY_TOKENS_TEST_TOKEN holds no token (one token per line)");
  ::unsetenv(env);
}

TEST(Tokens, ATargetIsShownWithEveryTokenParameterRedacted) {
  EXPECT_EQ(redact_token_param("/v1/webhooks/hpnnmi"), "/v1/webhooks/hpnnmi");
  EXPECT_EQ(redact_token_param("/v1/webhooks/hpnnmi?agent=a%2Fb&type=status&token=s3cret"),
            "/v1/webhooks/hpnnmi?agent=a%2Fb&type=status&token=REDACTED");
  EXPECT_EQ(redact_token_param("http://h:1/x?token=s3cret&type=status"),
            "http://h:1/x?token=REDACTED&type=status");
  EXPECT_EQ(redact_token_param("/x?token=a&token=b&tokens=c&my_token=d"),
            "/x?token=REDACTED&token=REDACTED&tokens=c&my_token=d");
  // Spelt another way, it is still the parameter the listener reads as `token`.
  EXPECT_EQ(redact_token_param("/x?%74oken=s3cret&tok%65n=s3cret"),
            "/x?%74oken=REDACTED&tok%65n=REDACTED");
  EXPECT_EQ(redact_token_param("/x?token"), "/x?token=REDACTED");
  EXPECT_EQ(redact_token_param("/x?type=status&token=s3cret#frag"),
            "/x?type=status&token=REDACTED#frag");
  EXPECT_EQ(redact_token_param("/x?"), "/x?");
}

}  // namespace
}  // namespace iarelay
