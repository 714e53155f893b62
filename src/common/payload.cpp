// Payload inspection (SPEC §6 inference rules) with nlohmann/json.
#include "common/payload.h"

#include <nlohmann/json.hpp>

namespace iarelay {
namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n'))
    --e;
  return std::string(s.substr(b, e - b));
}

std::string scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  if (v.is_number_unsigned()) return std::to_string(v.get<unsigned long long>());
  if (v.is_null()) return "";
  return v.dump();
}

}  // namespace

Result<PayloadInfo> inspect_payload(std::string_view body, std::string_view given_type) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Status::invalid_argument("body is not valid JSON");
  if (!doc.is_object()) return Status::invalid_argument("body is not a JSON object");
  PayloadInfo info;
  if (auto it = doc.find("eventIdentifier"); it != doc.end())
    info.event_id = scalar_text(*it);
  else if (auto it2 = doc.find("eventidentifier"); it2 != doc.end())
    info.event_id = scalar_text(*it2);

  std::string given = trim(given_type);
  if (!given.empty()) {
    info.type = given;
  } else if (auto it = doc.find("xmatters_callback_type");
             it != doc.end() && it->is_string() && !it->get<std::string>().empty()) {
    info.type = it->get<std::string>();
  } else if (doc.contains("deliveryStatus") || doc.contains("deliverystatus")) {
    info.type = "deliveryStatus";
  } else if (doc.contains("response")) {
    info.type = "response";
  } else if (doc.contains("comment")) {
    info.type = "annotation";
  } else if (doc.contains("status")) {
    info.type = "status";
  } else {
    return Status::invalid_argument(
        "trigger type is not given (?type=) and cannot be inferred: the payload has none of "
        "xmatters_callback_type, deliveryStatus, response, comment, status");
  }
  return info;
}

std::string normalize_service(std::string_view service) {
  std::string s = trim(service);
  constexpr std::string_view kDomain = "applications|";
  if (s.rfind(kDomain, 0) == 0) s = trim(std::string_view(s).substr(kDomain.size()));
  return s;
}

std::string normalize_agent(std::string_view agent) {
  return trim(agent);
}

}  // namespace iarelay
