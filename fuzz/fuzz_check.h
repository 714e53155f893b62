// What every fuzz target shares: FUZZ_CHECK (an invariant that must hold for every input;
// on violation it prints what was expected and aborts, so libFuzzer saves the input) and a
// splitter for inputs made of several text fields.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#define FUZZ_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fprintf(stderr, "\n");                                                         \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace iarelay::fuzz {

inline std::string_view as_view(const unsigned char* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// `input` cut at every `separator`: always at least one (possibly empty) field.
inline std::vector<std::string_view> split(std::string_view input, char separator) {
  std::vector<std::string_view> out;
  for (;;) {
    auto at = input.find(separator);
    out.push_back(input.substr(0, at));
    if (at == std::string_view::npos) return out;
    input.remove_prefix(at + 1);
  }
}

// A printable excerpt of bytes for invariant messages.
inline std::string show(std::string_view s, std::size_t max = 200) {
  std::string out;
  for (char c : s.substr(0, max)) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace iarelay::fuzz
