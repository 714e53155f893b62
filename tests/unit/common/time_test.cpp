#include "common/time.h"

#include <gtest/gtest.h>

#include <limits>

namespace iarelay {
namespace {

TEST(Time, FormatsFixedWidthUtc) {
  EXPECT_EQ(format_time(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time(1764427171123), "2025-11-29T14:39:31.123Z");
}

TEST(Time, ParsesRfc3339RoundTrip) {
  auto t = parse_time("2025-11-29T14:39:31.123Z", 0);
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(*t, 1764427171123);
  auto off = parse_time("2025-11-29T16:39:31+02:00", 0);
  ASSERT_TRUE(off.is_ok());
  EXPECT_EQ(*off, 1764427171000);
  auto date = parse_time("2025-11-29", 0);
  ASSERT_TRUE(date.is_ok());
  EXPECT_EQ(format_time(*date), "2025-11-29T00:00:00.000Z");
}

TEST(Time, ParsesRelativeTimes) {
  EXPECT_EQ(*parse_time("-2h", 10'000'000), 10'000'000 - 7'200'000);
  EXPECT_EQ(*parse_time("-30m", 10'000'000), 10'000'000 - 1'800'000);
  EXPECT_EQ(*parse_time("+10s", 0), 10'000);
  EXPECT_EQ(*parse_time("now", 42), 42);
}

TEST(Time, RejectsMalformedTimes) {
  for (const char* bad : {"", "yesterday", "2025-13-01", "2025-11-29T14:39", "2025-11-29T14:39:31",
                          "-2x", "-", "2025-11-29T25:00:00Z", "2025-11-29T14:39:31Zjunk"}) {
    auto t = parse_time(bad, 0);
    EXPECT_FALSE(t.is_ok()) << bad;
    if (!t.is_ok()) {
      EXPECT_NE(t.status().message().find("time"), std::string::npos) << bad;
    }
  }
}

TEST(Duration, ParsesUnits) {
  EXPECT_EQ(*parse_duration("250ms"), 250);
  EXPECT_EQ(*parse_duration("10s"), 10'000);
  EXPECT_EQ(*parse_duration("5m"), 300'000);
  EXPECT_EQ(*parse_duration("2h"), 7'200'000);
  EXPECT_EQ(*parse_duration("1h30m"), 5'400'000);
}

TEST(Duration, RejectsBareNumbersAndUnknownUnits) {
  for (const char* bad : {"", "10", "10x", "s", "ten seconds", "-5s"})
    EXPECT_FALSE(parse_duration(bad).is_ok()) << bad;
}

TEST(Duration, FormatsForHumans) {
  EXPECT_EQ(format_duration(350), "350ms");
  EXPECT_EQ(format_duration(3'723'000), "1h2m3s");
  EXPECT_EQ(format_duration(60'000), "1m");
}

TEST(Size, ParsesBinaryUnits) {
  EXPECT_EQ(*parse_size("1MiB"), 1 << 20);
  EXPECT_EQ(*parse_size("512KiB"), 512 << 10);
  EXPECT_EQ(*parse_size("100"), 100);
  EXPECT_EQ(*parse_size("2GiB"), 2LL << 30);
  for (const char* bad : {"", "1MB", "MiB", "1.5MiB", "-1KiB"})
    EXPECT_FALSE(parse_size(bad).is_ok()) << bad;
}

TEST(Time, FractionsBeyondMillisecondsAreTruncatedAndOffsetsApply) {
  EXPECT_EQ(*parse_time("2025-11-29T14:39:31.123456Z", 0), 1764427171123);
  EXPECT_EQ(*parse_time("2025-11-29T14:39:31.5Z", 0), 1764427171500);
  EXPECT_EQ(*parse_time("2025-11-29T09:39:31-05:00", 0), 1764427171000);
  EXPECT_EQ(*parse_time("2025-11-29 14:39:31Z", 0), 1764427171000);
  EXPECT_EQ(*parse_time("+1h30m", 0), 5'400'000);
}

TEST(Time, FormatAndParseRoundTrip) {
  for (Millis t : {Millis{0}, Millis{951782400000} /* 2000-02-29 */, Millis{1764427171123},
                   Millis{4102444799999}}) {
    auto back = parse_time(format_time(t), 0);
    ASSERT_TRUE(back.is_ok()) << format_time(t);
    EXPECT_EQ(*back, t);
  }
  // Fixed width: text order is time order.
  EXPECT_LT(format_time(999), format_time(1000));
  EXPECT_EQ(format_time(1764427171123).size(), 24u);
}

TEST(Duration, CombinesUnitsIncludingDays) {
  EXPECT_EQ(*parse_duration("1h30m15s250ms"), 5'415'250);
  EXPECT_EQ(*parse_duration("7d"), 7 * 86'400'000LL);
  EXPECT_EQ(*parse_duration("0s"), 0);
  EXPECT_EQ(format_duration(90'061'000), "1d1h1m1s");
  auto bad = parse_duration("10 s");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("10 s"), std::string::npos);
}

TEST(Size, AcceptsByteSuffixAndNamesBadInput) {
  EXPECT_EQ(*parse_size("64B"), 64);
  EXPECT_EQ(*parse_size("0"), 0);
  auto bad = parse_size("1TB");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("1TB"), std::string::npos);
}

// Found by fuzz/cli_time_fuzzer.cpp: 12 digits of days overflowed 64-bit milliseconds (undefined
// behaviour; in practice a wrapped, possibly negative, duration); now refused.
TEST(Duration, OutOfRangeIsRefusedNotWrapped) {
  auto days = parse_duration("999999999999d");
  ASSERT_FALSE(days.is_ok());
  EXPECT_NE(days.status().message().find("out of range"), std::string::npos);
  EXPECT_FALSE(parse_duration("999999999999h999999999999h999999999999h").is_ok());
  EXPECT_EQ(*parse_duration("106751991167d"), 106751991167LL * 86'400'000);
}

// Found by fuzz/cli_time_fuzzer.cpp: `--since -999999999999d` overflowed now - d.
TEST(Time, RelativeTimeOutOfRangeIsRefused) {
  EXPECT_FALSE(parse_time("-999999999999d", 1'796'000'000'123).is_ok());
  EXPECT_FALSE(parse_time("+106751991167d", 1'796'000'000'123).is_ok());
  EXPECT_EQ(*parse_time("-106751991167d", 0), -106751991167LL * 86'400'000);
}

// Found by fuzz/cli_time_fuzzer.cpp: "17179869185GiB" wrapped to 1 GiB (max_body).
TEST(Size, OutOfRangeIsRefusedNotWrapped) {
  EXPECT_FALSE(parse_size("17179869185GiB").is_ok());
  EXPECT_FALSE(parse_size("999999999999999GiB").is_ok());
  EXPECT_EQ(*parse_size("8589934591GiB"), 8589934591LL << 30);
}

// The extremes of Millis format without overflow (format_time(t - 999), -d of the smallest).
TEST(Time, ExtremesFormatWithoutOverflow) {
  EXPECT_EQ(format_time(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_FALSE(format_time(std::numeric_limits<Millis>::min()).empty());
  EXPECT_EQ(format_duration(std::numeric_limits<Millis>::min()).front(), '-');
}

// An operator's mistake is answered with what to write: both directions of a relative time, and
// why a time without an offset is refused.
TEST(Time, ErrorsShowBothDirectionsAndWhyAnOffsetIsNeeded) {
  for (const char* bad : {"yesterday", "2h", "2026-13-01"}) {
    auto t = parse_time(bad, 0);
    ASSERT_FALSE(t.is_ok()) << bad;
    const std::string m = t.status().message();
    EXPECT_NE(m.find("-2h for the past"), std::string::npos) << m;
    EXPECT_NE(m.find("+2h for the future"), std::string::npos) << m;
    EXPECT_NE(m.find("2026-11-29T14:00:00Z (Z: UTC)"), std::string::npos) << m;
  }
  auto relative = parse_time("-2x", 0);
  ASSERT_FALSE(relative.is_ok());
  EXPECT_NE(relative.status().message().find("'-2x'"), std::string::npos)
      << relative.status().message();
  EXPECT_NE(relative.status().message().find("+2h for 2 hours from now"), std::string::npos)
      << relative.status().message();
  auto local = parse_time("2026-11-29T14:00:00", 0);
  ASSERT_FALSE(local.is_ok());
  EXPECT_EQ(local.status().message(),
            "time '2026-11-29T14:00:00' has no offset: it would be ambiguous (local time or "
            "UTC?), so it is refused; write 2026-11-29T14:00:00Z for UTC, or add the offset "
            "(+02:00)");
}

}  // namespace
}  // namespace iarelay
