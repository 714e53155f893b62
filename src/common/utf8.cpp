// A UTF-8 decoder small enough to read: one function finds the length of the well-formed
// sequence at a position (0 when there is none); the checks and the sanitizer walk with it.
#include "common/utf8.h"

#include <algorithm>
#include <cstdint>

namespace iarelay {
namespace {

// Length (1-4) of the well-formed UTF-8 sequence starting at s[i], 0 if it is not one
// (the table of RFC 3629 §4).
std::size_t sequence_length(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) -> std::uint8_t {
    return i + k < s.size() ? static_cast<std::uint8_t>(s[i + k]) : 0;
  };
  auto cont = [&](std::size_t k, std::uint8_t lo = 0x80, std::uint8_t hi = 0xBF) {
    std::uint8_t b = byte(k);
    return i + k < s.size() && b >= lo && b <= hi;
  };
  std::uint8_t b0 = byte(0);
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
  if (b0 == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (b0 == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no surrogates
  if (b0 == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xF1 && b0 <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

// Whether the well-formed sequence of length `n` at s[i] is a control character.
bool is_control(std::string_view s, std::size_t i, std::size_t n) {
  auto b0 = static_cast<std::uint8_t>(s[i]);
  if (n == 1) return b0 < 0x20 || b0 == 0x7F;
  return n == 2 && b0 == 0xC2 && static_cast<std::uint8_t>(s[i + 1]) <= 0x9F;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  return i < s.size() ? sequence_length(s, i) : 0;
}

bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool has_control_character(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = sequence_length(s, i);
    if (n == 0) {
      ++i;
      continue;
    }
    if (is_control(s, i, n)) return true;
    i += n;
  }
  return false;
}

std::string text_field_problem(std::string_view s, std::size_t max_bytes) {
  if (!is_valid_utf8(s)) return "is not valid UTF-8";
  if (has_control_character(s)) return "contains a control character";
  if (s.size() > max_bytes) return "is longer than " + std::to_string(max_bytes) + " bytes";
  return "";
}

namespace {
// Valid UTF-8 within max_bytes, cut on a character boundary: invalid bytes become U+FFFD and
// control characters `control` (what sanitize_utf8 and text_excerpt differ in).
std::string clean_text(std::string_view s, std::size_t max_bytes, std::string_view control) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = sequence_length(s, i);
    std::string_view piece;
    if (n == 0) {
      piece = kReplacement;
      n = 1;
    } else if (is_control(s, i, n)) {
      piece = control;
    } else {
      piece = s.substr(i, n);
    }
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    i += n;
  }
  return out;
}
}  // namespace

std::string sanitize_utf8(std::string_view s, std::size_t max_bytes) {
  return clean_text(s, max_bytes, kReplacement);
}

std::string replace_invalid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = sequence_length(s, i);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append(kReplacement);
      ++i;
    }
  }
  return out;
}

std::string text_excerpt(std::string_view s, std::size_t max_bytes) {
  return clean_text(s, max_bytes, " ");
}

}  // namespace iarelay
