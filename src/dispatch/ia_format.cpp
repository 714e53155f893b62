// Conversion of xMatters payloads to the Integration Agent's apia_callback message.
#include "dispatch/ia_format.h"

#include <cctype>
#include <nlohmann/json.hpp>

namespace iarelay {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
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
      return v.dump();
    case Json::value_t::object: {
      auto first = v.find("firstName");
      auto last = v.find("lastName");
      if (first != v.end() && first->is_string() && last != v.end() && last->is_string())
        return first->get<std::string>() + " " + last->get<std::string>();
      return v.dump();
    }
    default:
      return v.dump();
  }
}

}  // namespace

Result<std::string> to_ia_message(std::string_view type, std::string_view payload) {
  Json in = Json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded() || !in.is_object())
    return Status::invalid_argument("payload is not a JSON object");

  OrderedJson out = OrderedJson::object();
  out["xmatters_callback_type"] = std::string(type);
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
  return out.dump();
}

}  // namespace iarelay
