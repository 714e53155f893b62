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

}  // namespace
}  // namespace iarelay
