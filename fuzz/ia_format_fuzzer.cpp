// format = ia: to_ia_message over a stored payload (the input, any bytes: rows can come from a
// feed, an older version or an operator's SQL) and three types: the payload's own, "response"
// (the annotation rule) and the input's first bytes (possibly not UTF-8). Invariants:
// - it succeeds exactly when the payload, bad bytes replaced by U+FFFD, is a JSON object
//   nested no deeper than kMaxPayloadDepth;
// - the message is a JSON object whose values are strings, except "additionalTokens", an
//   object of strings; keys are lower-case; it is valid UTF-8; xmatters_callback_type is the
//   type (bad bytes replaced) and eventidentifier is present; a response has an annotation;
// - replace_invalid_utf8 yields valid UTF-8, and leaves valid UTF-8 unchanged.
#include <nlohmann/json.hpp>

#include "common/payload.h"
#include "common/utf8.h"
#include "dispatch/ia_format.h"
#include "fuzz_check.h"

using namespace iarelay;
using iarelay::fuzz::show;
using Json = nlohmann::ordered_json;

namespace {

std::size_t depth_of(const nlohmann::json& v) {
  std::size_t deepest = 0;
  std::vector<std::pair<const nlohmann::json*, std::size_t>> todo{{&v, 1}};
  while (!todo.empty()) {
    auto [value, depth] = todo.back();
    todo.pop_back();
    if (!value->is_structured()) continue;
    deepest = std::max(deepest, depth);
    for (const auto& child : *value) todo.emplace_back(&child, depth + 1);
  }
  return deepest;
}

void check(std::string_view type, std::string_view payload) {
  auto message = to_ia_message(type, payload);
  std::string clean = replace_invalid_utf8(payload);
  nlohmann::json in = nlohmann::json::parse(clean, nullptr, false);
  bool convertible = !in.is_discarded() && in.is_object() && depth_of(in) <= kMaxPayloadDepth;
  FUZZ_CHECK(message.is_ok() == convertible, "convertible=%d but %s", convertible,
             message ? "converted" : message.status().message().c_str());
  if (!message) return;

  FUZZ_CHECK(is_valid_utf8(*message), "message is not UTF-8: %s", show(*message).c_str());
  Json out = Json::parse(*message, nullptr, false);
  FUZZ_CHECK(!out.is_discarded() && out.is_object(), "message is not a JSON object: %s",
             show(*message).c_str());
  for (const auto& [k, v] : out.items()) {
    if (k == "additionalTokens") {
      FUZZ_CHECK(v.is_object(), "additionalTokens is not an object");
      for (const auto& [tk, tv] : v.items())
        FUZZ_CHECK(tv.is_string(), "token '%s' is not a string", show(tk).c_str());
      continue;
    }
    FUZZ_CHECK(v.is_string(), "value of '%s' is not a string: %s", show(k).c_str(),
               show(v.dump()).c_str());
    for (char c : k)
      FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "key '%s' is not lower-case", show(k).c_str());
  }
  auto callback_type = out.find("xmatters_callback_type");
  FUZZ_CHECK(callback_type != out.end() && *callback_type == replace_invalid_utf8(type),
             "xmatters_callback_type for type '%s'", show(type).c_str());
  FUZZ_CHECK(out.contains("eventidentifier"), "no eventidentifier");
  if (replace_invalid_utf8(type) == "response")
    FUZZ_CHECK(out.contains("annotation"), "a response without an annotation");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view payload = fuzz::as_view(data, size);
  auto info = inspect_payload(payload, "");
  check(info ? std::string_view(info->type) : std::string_view("status"), payload);
  check("response", payload);
  check(payload.substr(0, 8), payload);

  std::string replaced = replace_invalid_utf8(payload);
  FUZZ_CHECK(is_valid_utf8(replaced), "replace_invalid_utf8 left bad bytes: %s",
             show(replaced).c_str());
  if (is_valid_utf8(payload)) FUZZ_CHECK(replaced == payload, "valid UTF-8 was changed");
  return 0;
}
