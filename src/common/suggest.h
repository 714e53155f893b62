// "Did you mean": the nearest of a few known names to a mistyped one, for usage and
// configuration errors (`adress` -> `address`).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace iarelay {

// Edit distance (Levenshtein: insertions, deletions, substitutions; a swap of two neighbours
// counts one) between `a` and `b`, case-insensitive.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `word`, or "" when none is near enough to be a likely typo (at most
// 2 edits, and fewer than half of the word's length), or when `word` is one of them.
std::string nearest(std::string_view word, const std::vector<std::string>& candidates);

// " (did you mean X?)" for nearest(word, candidates), or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace iarelay
