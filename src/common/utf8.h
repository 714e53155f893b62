// UTF-8 checks for text taken from outside (request lines, headers, feeds, agents' answers):
// whether bytes are well-formed UTF-8 free of control characters, and a safe rendering of bytes
// that are not. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace iarelay {

// Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Length (1-4) of the well-formed UTF-8 sequence that starts at s[i], 0 when none does there
// (an invalid or cut-short sequence; also when i >= s.size()).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i);

// Whether `s` holds a control character: C0 (U+0000-U+001F), DEL (U+007F) or C1
// (U+0080-U+009F, encoded C2 80-C2 9F). Bytes that are not UTF-8 are not looked at.
bool has_control_character(std::string_view s);

// What is wrong with `s` as a text field of at most `max_bytes` bytes: "" when it is valid
// UTF-8 without control characters and not longer, else a short reason ("is not valid UTF-8",
// "contains a control character", "is longer than 256 bytes").
std::string text_field_problem(std::string_view s, std::size_t max_bytes);

// `s` with every invalid sequence and every control character replaced by U+FFFD, cut on a
// character boundary to at most `max_bytes` bytes. Always valid UTF-8 without control
// characters; equal to `s` when text_field_problem(s, max_bytes) is "".
std::string sanitize_utf8(std::string_view s, std::size_t max_bytes);

// `s` with every byte that does not begin a valid UTF-8 sequence replaced by U+FFFD; valid
// input is returned unchanged (control characters included).
std::string replace_invalid_utf8(std::string_view s);

// Text cut from an answer (an agent's error page, a transport error) to store and show: every
// invalid sequence becomes U+FFFD and every control character a space (one line of text), cut
// on a character boundary to at most `max_bytes` bytes. Always valid UTF-8 without control
// characters. To cut bytes that were already cut short, keep 3 bytes more than `max_bytes`:
// the character the first cut split then is whole, and this cut leaves it out.
std::string text_excerpt(std::string_view s, std::size_t max_bytes);

}  // namespace iarelay
