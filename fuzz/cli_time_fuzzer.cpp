// The parsing of operator-given times, durations and sizes (common/time.h: `iarelay --since`,
// `purge --before`, `agent pause --until`, and the configuration's durations and sizes). The
// input's lines are each parsed as all three; its first 16 bytes are also read as a time and a
// duration to format and parse back. Invariants:
// - no overflow (UBSan aborts on one); an accepted duration or size is the exact value of its
//   text, never a wrapped one (checked in 128-bit arithmetic), and not negative;
// - a relative time is `now` plus or minus that exact duration;
// - an accepted RFC 3339 time formats (format_time) to a text that parses back to it;
// - parse_time(format_time(t)) == t for every t from year 0000 to 9999;
// - parse_duration(format_duration(d)) == d for whole seconds and for d < 1 s.
#include <cstring>

#include "common/time.h"
#include "fuzz_check.h"

using namespace iarelay;
using iarelay::fuzz::show;

namespace {

constexpr Millis kNow = 1'796'000'000'123;      // 2026-11-30
constexpr Millis kFirst = -62'167'219'200'000;  // 0000-01-01T00:00:00Z
constexpr Millis kLast = 253'402'300'799'999;   // 9999-12-31T23:59:59.999Z

// The exact value of "<digits><unit>..." (units of parse_duration), or -1 when it is not one.
__int128 exact_duration(std::string_view s) {
  if (s.empty()) return -1;
  __int128 total = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t start = i;
    __int128 n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 13)
      n = n * 10 + (s[i++] - '0');
    if (i == start) return -1;
    std::size_t ustart = i;
    while (i < s.size() && !(s[i] >= '0' && s[i] <= '9')) ++i;
    std::string_view unit = s.substr(ustart, i - ustart);
    __int128 mul = unit == "ms"  ? 1
                   : unit == "s" ? 1000
                   : unit == "m" ? 60'000
                   : unit == "h" ? 3'600'000
                   : unit == "d" ? 86'400'000
                                 : 0;
    if (mul == 0) return -1;
    total += n * mul;
  }
  return total;
}

void check_text(std::string_view text) {
  auto d = parse_duration(text);
  if (d) {
    __int128 exact = exact_duration(text);
    FUZZ_CHECK(*d >= 0 && exact == *d, "duration '%s' parsed as %lld", show(text).c_str(),
               static_cast<long long>(*d));
  }

  auto size = parse_size(text);
  if (size) {
    std::size_t digits = 0;
    __int128 n = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
      n = n * 10 + (text[digits++] - '0');
    std::string_view unit = text.substr(digits);
    int shift = unit == "KiB" ? 10 : unit == "MiB" ? 20 : unit == "GiB" ? 30 : 0;
    __int128 exact = n << shift;
    FUZZ_CHECK(*size >= 0 && exact == *size, "size '%s' parsed as %lld", show(text).c_str(),
               static_cast<long long>(*size));
  }

  auto t = parse_time(text, kNow);
  if (!t) return;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    __int128 d_exact = exact_duration(text.substr(1));
    __int128 exact = text[0] == '-' ? kNow - d_exact : kNow + d_exact;
    FUZZ_CHECK(d_exact >= 0 && exact == *t, "relative time '%s' parsed as %lld", show(text).c_str(),
               static_cast<long long>(*t));
  } else if (text != "now" && *t >= kFirst && *t <= kLast) {
    std::string formatted = format_time(*t);
    auto again = parse_time(formatted, kNow);
    FUZZ_CHECK(again && *again == *t, "'%s' -> %lld -> '%s'", show(text).c_str(),
               static_cast<long long>(*t), formatted.c_str());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view input = fuzz::as_view(data, size);
  for (std::string_view line : fuzz::split(input, '\n')) check_text(line);

  if (size >= 16) {
    std::int64_t a, b;
    std::memcpy(&a, data, 8);
    std::memcpy(&b, data + 8, 8);
    Millis t = kFirst + static_cast<Millis>(static_cast<std::uint64_t>(a) %
                                            static_cast<std::uint64_t>(kLast - kFirst + 1));
    std::string text = format_time(t);
    auto back = parse_time(text, kNow);
    FUZZ_CHECK(back && *back == t, "%lld -> '%s' -> %lld", static_cast<long long>(t), text.c_str(),
               back ? static_cast<long long>(*back) : -1LL);

    Millis d = static_cast<Millis>(static_cast<std::uint64_t>(b) >> 2);  // >= 0
    if (d >= 1000) d -= d % 1000;
    std::string dtext = format_duration(d);
    auto dback = parse_duration(dtext);
    FUZZ_CHECK(dback && *dback == d, "%lld -> '%s' -> %lld", static_cast<long long>(d),
               dtext.c_str(), dback ? static_cast<long long>(*dback) : -1LL);
  }
  return 0;
}
