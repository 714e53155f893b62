// Time formatting and the parsing of times, durations and sizes.
#include "common/time.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>

namespace iarelay {
namespace {

// Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm): timegm without the TZ.
std::int64_t days_from_civil(int y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool read_digits(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  pos += n;
  return true;
}

// Parses "<number><unit>" sequences; returns total in ms.
Result<Millis> parse_unit_sequence(std::string_view text, std::string_view what) {
  if (text.empty()) return Status::invalid_argument("empty " + std::string(what));
  Millis total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
    if (pos == start || pos - start > 12) {
      return Status::invalid_argument("bad " + std::string(what) + " '" + std::string(text) +
                                      "' (expected e.g. 250ms, 10s, 5m, 2h, 7d, 1h30m)");
    }
    Millis n = std::stoll(std::string(text.substr(start, pos - start)));
    size_t ustart = pos;
    while (pos < text.size() && !(text[pos] >= '0' && text[pos] <= '9')) ++pos;
    std::string_view unit = text.substr(ustart, pos - ustart);
    Millis mul;
    if (unit == "ms")
      mul = 1;
    else if (unit == "s")
      mul = 1000;
    else if (unit == "m")
      mul = 60'000;
    else if (unit == "h")
      mul = 3'600'000;
    else if (unit == "d")
      mul = 86'400'000;
    else
      return Status::invalid_argument("bad " + std::string(what) + " '" + std::string(text) +
                                      "': unit must be ms, s, m, h or d");
    // 12 digits of days overflow 64 bits of milliseconds: refuse rather than wrap.
    Millis part;
    if (__builtin_mul_overflow(n, mul, &part) || __builtin_add_overflow(total, part, &total))
      return Status::invalid_argument(std::string(what) + " '" + std::string(text) +
                                      "' is out of range");
  }
  return total;
}

}  // namespace

namespace {
std::atomic<Millis> wall_clock_offset{0};  // tests only (set_wall_clock_offset_for_testing)
}  // namespace

Millis now_millis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() +
         wall_clock_offset.load(std::memory_order_relaxed);
}

void set_wall_clock_offset_for_testing(Millis offset) {
  wall_clock_offset.store(offset, std::memory_order_relaxed);
}

Millis steady_millis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string format_time(Millis t) {
  // Floor division without the overflow of (t - 999) near the smallest Millis.
  Millis whole = t / 1000;
  int ms = static_cast<int>(t % 1000);
  if (ms < 0) --whole, ms += 1000;
  std::time_t secs = static_cast<std::time_t>(whole);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

Result<Millis> parse_time(std::string_view text, Millis now) {
  if (text == "now") return now;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    auto d = parse_unit_sequence(text.substr(1), "relative time");
    if (!d)
      return Status::invalid_argument(
          "bad relative time '" + std::string(text) +
          "' (expected a sign, a number and a unit: -2h for 2 hours ago, +2h for 2 hours from "
          "now; units ms, s, m, h, d, combined as -1h30m)");
    Millis t;
    if (text[0] == '-' ? __builtin_sub_overflow(now, *d, &t) : __builtin_add_overflow(now, *d, &t))
      return Status::invalid_argument("relative time '" + std::string(text) + "' is out of range");
    return t;
  }
  auto bad = [&] {
    return Status::invalid_argument(
        "bad time '" + std::string(text) +
        "' (expected RFC 3339 with an offset, like 2026-11-29T14:00:00Z (Z: UTC) or "
        "2026-11-29T16:00:00+02:00, a date like 2026-11-29 (midnight UTC), or a time relative "
        "to now: -2h for the past, +2h for the future)");
  };
  size_t pos = 0;
  int y, mo, d, h = 0, mi = 0, s = 0;
  if (!read_digits(text, pos, 4, y) || pos >= text.size() || text[pos++] != '-' ||
      !read_digits(text, pos, 2, mo) || pos >= text.size() || text[pos++] != '-' ||
      !read_digits(text, pos, 2, d))
    return bad();
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return bad();
  Millis frac = 0, offset = 0;
  if (pos < text.size()) {
    char sep = text[pos++];
    if (sep != 'T' && sep != 't' && sep != ' ') return bad();
    if (!read_digits(text, pos, 2, h) || pos >= text.size() || text[pos++] != ':' ||
        !read_digits(text, pos, 2, mi) || pos >= text.size() || text[pos++] != ':' ||
        !read_digits(text, pos, 2, s))
      return bad();
    if (h > 23 || mi > 59 || s > 60) return bad();
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      int digits = 0;
      Millis scale = 100;
      while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
        if (digits < 3) frac += (text[pos] - '0') * scale;
        scale /= 10;
        ++digits;
        ++pos;
      }
      if (digits == 0) return bad();
    }
    if (pos >= text.size())  // a time of day needs a zone
      return Status::invalid_argument(
          "time '" + std::string(text) +
          "' has no offset: it would be ambiguous (local time or UTC?), so it is refused; write " +
          std::string(text) + "Z for UTC, or add the offset (+02:00)");
    if (text[pos] == 'Z' || text[pos] == 'z') {
      ++pos;
    } else if (text[pos] == '+' || text[pos] == '-') {
      int sign = text[pos++] == '+' ? 1 : -1;
      int oh, om;
      if (!read_digits(text, pos, 2, oh) || pos >= text.size() || text[pos++] != ':' ||
          !read_digits(text, pos, 2, om))
        return bad();
      offset = sign * (oh * 3600 + om * 60) * 1000LL;
    } else {
      return bad();
    }
    if (pos != text.size()) return bad();
  }
  Millis days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  return ((days * 86400 + h * 3600 + mi * 60 + s) * 1000) + frac - offset;
}

Result<Millis> parse_duration(std::string_view text) {
  return parse_unit_sequence(text, "duration");
}

Result<std::int64_t> parse_size(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
  if (pos == 0 || pos > 15) {
    return Status::invalid_argument("bad size '" + std::string(text) +
                                    "' (expected e.g. 512KiB, 1MiB)");
  }
  std::int64_t n = std::stoll(std::string(text.substr(0, pos)));
  std::string_view unit = text.substr(pos);
  int shift;
  if (unit.empty() || unit == "B")
    shift = 0;
  else if (unit == "KiB")
    shift = 10;
  else if (unit == "MiB")
    shift = 20;
  else if (unit == "GiB")
    shift = 30;
  else
    return Status::invalid_argument("bad size '" + std::string(text) +
                                    "': unit must be B, KiB, MiB or GiB");
  // 15 digits of GiB do not fit in 64 bits: refuse rather than wrap (possibly to a small size).
  if (n > (std::numeric_limits<std::int64_t>::max() >> shift))
    return Status::invalid_argument("size '" + std::string(text) + "' is out of range");
  return n << shift;
}

std::string format_duration(Millis d) {
  // -d overflows for the smallest Millis; one millisecond less is as good for display.
  if (d < 0) return "-" + format_duration(-(d + (d == std::numeric_limits<Millis>::min())));
  if (d < 1000) return std::to_string(d) + "ms";
  std::string out;
  Millis s = d / 1000;
  if (s >= 86400) out += std::to_string(s / 86400) + "d", s %= 86400;
  if (s >= 3600) out += std::to_string(s / 3600) + "h", s %= 3600;
  if (s >= 60) out += std::to_string(s / 60) + "m", s %= 60;
  if (s > 0 || out.empty()) out += std::to_string(s) + "s";
  return out;
}

}  // namespace iarelay
