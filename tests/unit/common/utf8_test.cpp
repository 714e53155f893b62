// The UTF-8 checks that intake and the poller apply to every text field taken from outside.
#include "common/utf8.h"

#include <gtest/gtest.h>

namespace iarelay {
namespace {

TEST(Utf8, AcceptsWellFormedTextAndRefusesEveryMalformedKind) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("ws-1/127.0.0.1:18777"));
  EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xFF"));              // never a UTF-8 byte
  EXPECT_FALSE(is_valid_utf8("\xC3"));              // truncated
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("ok\x80"));            // stray continuation
}

TEST(Utf8, FindsC0DelAndC1ControlCharacters) {
  EXPECT_FALSE(has_control_character("plain text \xC2\xA0 nbsp"));
  EXPECT_TRUE(has_control_character(std::string("a\0b", 3)));
  EXPECT_TRUE(has_control_character("a\nb"));
  EXPECT_TRUE(has_control_character("a\x7F"));
  EXPECT_TRUE(has_control_character("a\xC2\x85"));  // NEL
}

TEST(Utf8, NamesTheProblemAndSanitizesToSafeText) {
  EXPECT_EQ(text_field_problem("hpnnmi", 256), "");
  EXPECT_EQ(text_field_problem("\xFF", 256), "is not valid UTF-8");
  EXPECT_EQ(text_field_problem("a\tb", 256), "contains a control character");
  EXPECT_EQ(text_field_problem(std::string(257, 'a'), 256), "is longer than 256 bytes");
  EXPECT_EQ(sanitize_utf8("a\xFF"
                          "b\n",
                          256),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("caf\xC3\xA9", 4), "caf");  // never cuts a character in two
  EXPECT_EQ(sanitize_utf8("hpnnmi", 256), "hpnnmi");
}

// Issue 11: text cut from an agent's answer (a Latin-1 error page, a UTF-8 character the cut
// splits) is stored as last_error and shown by status and show, so it must be valid UTF-8.
TEST(Utf8, ExcerptIsValidOneLineTextCutOnACharacterBoundary) {
  EXPECT_EQ(text_excerpt("donn\xE9"
                         "es invalides",
                         500),
            "donn\xEF\xBF\xBD"
            "es invalides");
  EXPECT_EQ(text_excerpt("<html>\r\n<body>\x1B[2J\x7F\xC2\x9B</body>", 500),
            "<html>  <body> [2J  </body>");
  // Cut on a character boundary: the two bytes of U+00E9 stay together or go together.
  EXPECT_EQ(text_excerpt("caf\xC3\xA9", 4), "caf");
  EXPECT_EQ(text_excerpt("caf\xC3\xA9", 5), "caf\xC3\xA9");
  // A replacement character takes three bytes, and is cut whole too.
  EXPECT_EQ(text_excerpt("ab\xE9", 4), "ab");
  EXPECT_EQ(text_excerpt("caf\xC3\xA9 \xF0\x9F\x98\x80", 500), "caf\xC3\xA9 \xF0\x9F\x98\x80");
  for (const std::string& s : {std::string("\xFF\xFE\xC3"), std::string(499, 'x') + "\xC3\xA9",
                               std::string("\xE2\x82") + std::string(600, '\xE9')}) {
    std::string e = text_excerpt(s, 500);
    EXPECT_TRUE(is_valid_utf8(e)) << e;
    EXPECT_FALSE(has_control_character(e)) << e;
    EXPECT_LE(e.size(), 500u);
  }
}

}  // namespace
}  // namespace iarelay
