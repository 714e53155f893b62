// Conversion of xMatters payloads to the Integration Agent's apia_callback message.
#include "dispatch/ia_format.h"

#include <cctype>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "common/payload.h"
#include "common/utf8.h"

namespace iarelay {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Compact JSON text; invalid UTF-8 cannot be left after replace_invalid_utf8(), but dump()
// must never throw in the dispatcher, so it replaces rather than throws in any case.
template <typename J>
std::string dump(const J& v) {
  return v.dump(-1, ' ', false, J::error_handler_t::replace);
}

// Whether `v` nests deeper than `limit` (v itself: depth 1). Without recursion: the point is
// that a deep value must not reach dump(), which recurses once per level.
bool deeper_than(const Json& v, std::size_t limit) {
  std::vector<std::pair<const Json*, std::size_t>> todo{{&v, 1}};
  while (!todo.empty()) {
    auto [value, depth] = todo.back();
    todo.pop_back();
    if (!value->is_structured()) continue;
    if (depth > limit) return true;
    for (const auto& child : *value) todo.emplace_back(&child, depth + 1);
  }
  return false;
}

// The string form of a payload value (see the header for the rules).
std::string as_text(const Json& v) {
  switch (v.type()) {
    case Json::value_t::string:
      return v.get<std::string>();
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return v.get<bool>() ? "true" : "false";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return dump(v);
    case Json::value_t::object: {
      auto first = v.find("firstName");
      auto last = v.find("lastName");
      if (first != v.end() && first->is_string() && last != v.end() && last->is_string())
        return first->get<std::string>() + " " + last->get<std::string>();
      return dump(v);
    }
    default:
      return dump(v);
  }
}

}  // namespace

Result<std::string> to_ia_message(std::string_view raw_type, std::string_view raw_payload) {
  const std::string type = replace_invalid_utf8(raw_type);
  const std::string payload = replace_invalid_utf8(raw_payload);
  Json in = Json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded() || !in.is_object())
    return Status::invalid_argument("payload is not a JSON object");
  // Intake refuses such payloads; a row from an older version, a feed or an operator's SQL may
  // still hold one, and must fail alone rather than overflow the dispatcher's stack.
  if (deeper_than(in, kMaxPayloadDepth))
    return Status::invalid_argument("payload is nested deeper than " +
                                    std::to_string(kMaxPayloadDepth) + " levels");

  OrderedJson out = OrderedJson::object();
  out["xmatters_callback_type"] = type;
  out["eventidentifier"] = "";
  OrderedJson tokens;  // null until a source of tokens is seen
  for (const auto& [key, value] : in.items()) {
    std::string k = lower(key);
    if (k == "xmatters_callback_type") continue;  // the webhook's stored type is authoritative
    if (key == "eventProperties" && value.is_array()) {
      if (tokens.is_null()) tokens = OrderedJson::object();
      for (const auto& property : value) {
        if (!property.is_object()) continue;
        for (const auto& [pk, pv] : property.items()) tokens[pk] = as_text(pv);
      }
      continue;
    }
    if (key == "additionalTokens" && value.is_object()) {
      if (tokens.is_null()) tokens = OrderedJson::object();
      for (const auto& [pk, pv] : value.items()) tokens[pk] = as_text(pv);
      continue;
    }
    out[k] = as_text(value);
  }
  if (type == "response" && !out.contains("annotation"))
    out["annotation"] = out.contains("comment") ? out["comment"].get<std::string>() : "null";
  if (!tokens.is_null()) out["additionalTokens"] = std::move(tokens);
  return dump(out);
}

}  // namespace iarelay
