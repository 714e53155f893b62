// Wall-clock time as used in the journal (RFC 3339 UTC text, millisecond precision) and the
// parsing of operator-given times, durations and sizes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace iarelay {

using Millis = std::int64_t;  // milliseconds since the Unix epoch (or a duration in ms)

Millis now_millis();
Millis steady_millis();  // monotonic: every interval and timeout is measured on it

// Tests only: shifts now_millis() by `offset` ms, as a clock stepped back or forward (an NTP
// correction) would; steady_millis() is unaffected. Any thread.
void set_wall_clock_offset_for_testing(Millis offset);

// "2026-11-29T14:39:31.123Z": fixed width, so text order is time order.
std::string format_time(Millis t);
// Accepts RFC 3339 ("2026-11-29T14:39:31Z", fractional seconds, "+02:00" offsets, a date alone
// "2026-11-29") or a time relative to `now` ("-2h", "-30m", "+10s", "now").
Result<Millis> parse_time(std::string_view text, Millis now);
// "250ms", "10s", "5m", "2h", "1h30m"; a bare number is refused (units are required).
Result<Millis> parse_duration(std::string_view text);
// "1MiB", "512KiB", "100" (bytes), "1GiB".
Result<std::int64_t> parse_size(std::string_view text);
// "1h2m", "350ms": the inverse of parse_duration, for display.
std::string format_duration(Millis d);

}  // namespace iarelay
