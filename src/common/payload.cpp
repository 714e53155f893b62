// Payload inspection (the inference rules of docs/architecture.md, "Payload dialects") with
// nlohmann/json.
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

constexpr const char* kNoType =
    "trigger type is not given (?type=) and cannot be inferred: the payload has none of "
    "xmatters_callback_type, deliveryStatus, response, comment, status";

// Which top-level member a SAX event belongs to.
enum Member {
  kOther,
  kEventId,
  kEventIdLower,
  kCallbackType,
  kDeliveryStatus,
  kResponse,
  kComment,
  kStatus,
  kMemberCount
};

Member classify(const std::string& key) {
  if (key == "eventIdentifier") return kEventId;
  if (key == "eventidentifier") return kEventIdLower;
  if (key == "xmatters_callback_type") return kCallbackType;
  if (key == "deliveryStatus" || key == "deliverystatus") return kDeliveryStatus;
  if (key == "response") return kResponse;
  if (key == "comment") return kComment;
  if (key == "status") return kStatus;
  return kOther;
}

// Reads what inference needs from the top-level members while nlohmann's parser validates the
// whole document, without building a tree (the tree's allocations were most of intake's parsing
// cost). Mirrors the DOM semantics: a repeated member's last value wins; event identifiers are
// rendered as scalar_text() would, and the rare ones it would dump() (floats, booleans, objects,
// arrays) send the caller back to the DOM path so their text stays exactly the same.
class TopLevelScan : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool is_object = false;
  bool too_deep = false;  // nested deeper than kMaxPayloadDepth: the scan stopped there
  bool needs_dom = false;
  bool present[kMemberCount] = {};
  std::string event_id[2];        // eventIdentifier, eventidentifier: as scalar_text()
  bool callback_type_ok = false;  // xmatters_callback_type is a non-empty string
  std::string callback_type;

  bool null() override { return scalar(""); }
  bool boolean(bool) override { return complex_value(); }
  bool number_integer(number_integer_t v) override { return scalar(std::to_string(v)); }
  bool number_unsigned(number_unsigned_t v) override {
    // scalar_text() reads every integer as long long, unsigned ones included.
    return scalar(std::to_string(static_cast<long long>(v)));
  }
  bool number_float(number_float_t, const string_t&) override { return complex_value(); }
  bool string(string_t& v) override {
    if (depth_ == 1 && member_ == kCallbackType) {
      callback_type_ok = !v.empty();
      callback_type = v;
      member_ = kOther;
      return true;
    }
    return scalar(v);
  }
  bool binary(binary_t&) override { return complex_value(); }
  bool start_object(std::size_t) override {
    if (depth_ == 0) is_object = true;
    if (!complex_value()) return false;
    return enter();
  }
  bool key(string_t& k) override {
    if (depth_ == 1) {
      member_ = classify(k);
      present[member_] = true;
    }
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    if (!complex_value()) return false;
    return enter();
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  // One level down; false (stop parsing) past kMaxPayloadDepth.
  bool enter() {
    if (static_cast<std::size_t>(++depth_) <= kMaxPayloadDepth) return true;
    too_deep = true;
    return false;
  }
  // A scalar value: kept if it is a top-level event identifier.
  bool scalar(const std::string& text) {
    if (depth_ == 1) {
      if (member_ == kEventId || member_ == kEventIdLower) event_id[member_ - kEventId] = text;
      if (member_ == kCallbackType) callback_type_ok = false;
      member_ = kOther;
    }
    return true;
  }
  // A value scalar_text() would dump(), or a nested one.
  bool complex_value() {
    if (depth_ == 1) {
      if (member_ == kEventId || member_ == kEventIdLower) needs_dom = true;
      if (member_ == kCallbackType) callback_type_ok = false;
      member_ = kOther;
    }
    return true;
  }

  int depth_ = 0;
  Member member_ = kOther;
};

// The reference implementation over a DOM tree; used when TopLevelScan cannot render an event
// identifier itself.
Result<PayloadInfo> inspect_payload_dom(std::string_view body, std::string_view given_type) {
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
    return Status::invalid_argument(kNoType);
  }
  return info;
}

}  // namespace

Result<PayloadInfo> inspect_payload(std::string_view body, std::string_view given_type) {
  // nlohmann's lexer takes a NUL byte for the end of the input (C strings), so it would accept
  // `{...}<NUL>junk`; a NUL is never valid in JSON text, and such a body, relayed raw inside
  // a feed document, makes the whole feed unreadable downstream.
  if (body.find('\0') != std::string_view::npos)
    return Status::invalid_argument("body is not valid JSON");
  TopLevelScan scan;
  if (!nlohmann::json::sax_parse(body, &scan)) {
    if (scan.too_deep)
      return Status::invalid_argument(scan.is_object
                                          ? "body is nested deeper than " +
                                                std::to_string(kMaxPayloadDepth) + " levels"
                                          : std::string("body is not a JSON object"));
    return Status::invalid_argument("body is not valid JSON");
  }
  if (!scan.is_object) return Status::invalid_argument("body is not a JSON object");
  if (scan.needs_dom) return inspect_payload_dom(body, given_type);
  PayloadInfo info;
  if (scan.present[kEventId])
    info.event_id = std::move(scan.event_id[0]);
  else if (scan.present[kEventIdLower])
    info.event_id = std::move(scan.event_id[1]);

  std::string given = trim(given_type);
  if (!given.empty()) {
    info.type = given;
  } else if (scan.callback_type_ok) {
    info.type = std::move(scan.callback_type);
  } else if (scan.present[kDeliveryStatus]) {
    info.type = "deliveryStatus";
  } else if (scan.present[kResponse]) {
    info.type = "response";
  } else if (scan.present[kComment]) {
    info.type = "annotation";
  } else if (scan.present[kStatus]) {
    info.type = "status";
  } else {
    return Status::invalid_argument(kNoType);
  }
  return info;
}

bool json_nested_deeper_than(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return true;
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return false;
}

std::string normalize_service(std::string_view service) {
  // Every leading "applications|" goes, not only the first: "applications|applications|x" is
  // "x", as "applications|x" is, so normalising again changes nothing (an edge and the inner
  // relay that admits the edge's row again from its feed route the webhook alike).
  constexpr std::string_view kDomain = "applications|";
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  std::string_view s = service;
  for (;;) {
    while (!s.empty() && blank(s.front())) s.remove_prefix(1);
    if (s.substr(0, kDomain.size()) != kDomain) break;
    s.remove_prefix(kDomain.size());
  }
  return trim(s);
}

std::string normalize_agent(std::string_view agent) {
  return trim(agent);
}

}  // namespace iarelay
