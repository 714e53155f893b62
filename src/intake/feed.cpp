// Feed bodies: rendering stored rows with their payload text embedded unchanged, and parsing
// them back with the payload's exact bytes (nlohmann validates; a small scanner finds spans).
#include "intake/feed.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/payload.h"
#include "common/time.h"

namespace iarelay {
namespace {

using nlohmann::json;

constexpr std::string_view kBom = "\xEF\xBB\xBF";

// Service names and agent identifiers come from URLs and may hold invalid UTF-8; replacing
// such bytes keeps the document valid instead of throwing.
void append_string(std::string& out, std::string_view s) {
  out += json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool only_json_whitespace(std::string_view s) {
  return std::all_of(s.begin(), s.end(), is_ws);
}

size_t skip_ws(std::string_view t, size_t i) {
  while (i < t.size() && is_ws(t[i])) ++i;
  return i;
}

// `i` at the opening quote; returns the index after the closing quote.
size_t skip_string(std::string_view t, size_t i) {
  for (++i; i < t.size(); ++i) {
    if (t[i] == '\\')
      ++i;
    else if (t[i] == '"')
      return i + 1;
  }
  return t.size();
}

size_t skip_value(std::string_view t, size_t i) {
  if (i >= t.size()) return i;
  char c = t[i];
  if (c == '"') return skip_string(t, i);
  if (c == '{' || c == '[') {
    int depth = 0;
    while (i < t.size()) {
      char d = t[i];
      if (d == '"') {
        i = skip_string(t, i);
        continue;
      }
      if (d == '{' || d == '[')
        ++depth;
      else if (d == '}' || d == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return i;
  }
  while (i < t.size() && t[i] != ',' && t[i] != '}' && t[i] != ']' && !is_ws(t[i])) ++i;
  return i;
}

// Calls fn(raw_key, value_begin) for each member of the object at `i` ('{'); returns the
// index after the closing brace. fn returns the index after the value it was given.
template <typename Fn>
size_t for_each_member(std::string_view t, size_t i, Fn fn) {
  i = skip_ws(t, i + 1);
  if (i < t.size() && t[i] == '}') return i + 1;
  while (i < t.size() && t[i] == '"') {
    size_t key_end = skip_string(t, i);
    std::string_view key = t.substr(i + 1, key_end - i - 2);
    i = skip_ws(t, key_end);
    if (i >= t.size() || t[i] != ':') return t.size();
    i = skip_ws(t, i + 1);
    i = skip_ws(t, fn(key, i));
    if (i < t.size() && t[i] == ',')
      i = skip_ws(t, i + 1);
    else
      break;
  }
  return i < t.size() ? i + 1 : i;
}

// The raw payload spans of messages[*], in order, in a document nlohmann accepted.
std::vector<std::pair<size_t, size_t>> payload_spans(std::string_view t) {
  std::vector<std::pair<size_t, size_t>> spans;
  size_t i = skip_ws(t, t.rfind(kBom, 0) == 0 ? kBom.size() : 0);
  if (i >= t.size() || t[i] != '{') return spans;
  for_each_member(t, i, [&](std::string_view key, size_t v) -> size_t {
    if (key != "messages" || t[v] != '[') return skip_value(t, v);
    spans.clear();  // a repeated key: the last one wins, as in nlohmann
    size_t j = skip_ws(t, v + 1);
    if (j < t.size() && t[j] == ']') return j + 1;
    while (j < t.size()) {
      std::pair<size_t, size_t> span{0, 0};
      if (t[j] == '{') {
        j = for_each_member(t, j, [&](std::string_view k, size_t w) -> size_t {
          size_t end = skip_value(t, w);
          if (k == "payload") span = {w, end};
          return end;
        });
      } else {
        j = skip_value(t, j);
      }
      spans.push_back(span);
      j = skip_ws(t, j);
      if (j < t.size() && t[j] == ',')
        j = skip_ws(t, j + 1);
      else
        return j < t.size() ? j + 1 : j;
    }
    return j;
  });
  return spans;
}

std::optional<std::string> string_field(const json& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  if (v.is_number_unsigned()) return std::to_string(v.get<unsigned long long>());
  if (v.is_null()) return "";
  return v.dump();
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_ws(s[b])) ++b;
  while (e > b && is_ws(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// The rules of inspect_payload (common/payload.cpp) over an already parsed object; the unit
// tests check that both agree on every fixture.
void inspect(const json& payload, FeedItem& item) {
  item.inspected = true;
  if (auto it = payload.find("eventIdentifier"); it != payload.end())
    item.event_id = scalar_text(*it);
  else if (auto it2 = payload.find("eventidentifier"); it2 != payload.end())
    item.event_id = scalar_text(*it2);
  std::string given = trim(item.type);
  if (!given.empty()) {
    item.inferred_type = given;
  } else if (auto it = payload.find("xmatters_callback_type");
             it != payload.end() && it->is_string() && !it->get<std::string>().empty()) {
    item.inferred_type = it->get<std::string>();
  } else if (payload.contains("deliveryStatus") || payload.contains("deliverystatus")) {
    item.inferred_type = "deliveryStatus";
  } else if (payload.contains("response")) {
    item.inferred_type = "response";
  } else if (payload.contains("comment")) {
    item.inferred_type = "annotation";
  } else if (payload.contains("status")) {
    item.inferred_type = "status";
  }
}

}  // namespace

std::pair<size_t, size_t> json_value_span(std::string_view text, size_t pos) {
  size_t b = skip_ws(text, pos);
  return {b, skip_value(text, b)};
}

std::string render_feed(const std::vector<FeedMessage>& messages, std::int64_t after,
                        std::optional<std::int64_t> newest, std::size_t max_bytes) {
  std::string out;
  size_t estimate = 64;
  for (const auto& m : messages) estimate += m.payload.size() + 200;
  out.reserve(std::min(estimate, max_bytes));
  out += "{\"messages\":[";
  std::int64_t next = after;
  auto closing = [&](std::int64_t n) {
    std::string c = "],\"next\":" + std::to_string(n);
    if (newest) c += ",\"newest\":" + std::to_string(*newest);
    return c + "}";
  };
  std::string item;
  for (size_t i = 0; i < messages.size(); ++i) {
    const FeedMessage& m = messages[i];
    item.clear();
    if (i) item += ',';
    item += "{\"seq\":" + std::to_string(m.seq) + ",\"id\":";
    append_string(item, m.id);
    item += ",\"service\":";
    append_string(item, m.service);
    item += ",\"agent\":";
    if (m.agent)
      append_string(item, *m.agent);
    else
      item += "null";
    item += ",\"type\":";
    append_string(item, m.type);
    item += ",\"received_at\":\"" + format_time(m.received_at) + "\",";
    // The JSON value goes in "payload" as stored; what surrounds it (a byte order mark, legal at
    // the start of a document but not inside one, and whitespace) in "payload_prefix" and
    // "payload_suffix", so the consumer gets back every byte the edge acknowledged.
    std::string_view payload = m.payload;
    // (nlohmann's lexer takes a NUL for the end of its input: `{}<NUL>x` would pass.)
    if (payload.find('\0') == std::string_view::npos && json::accept(payload)) {
      auto [begin, end] =
          json_value_span(payload, payload.rfind(kBom, 0) == 0 ? kBom.size() : std::size_t{0});
      if (begin > 0) {
        item += "\"payload_prefix\":";
        append_string(item, payload.substr(0, begin));
        item += ',';
      }
      if (end < payload.size()) {
        item += "\"payload_suffix\":";
        append_string(item, payload.substr(end));
        item += ',';
      }
      item += "\"payload\":";
      item += payload.substr(begin, end - begin);
    } else {
      item += "\"payload\":";
      append_string(item, m.payload);
    }
    item += '}';
    // The first message always goes (a consumer must be able to pass a large one); later ones
    // only while the whole body, closing included, stays within max_bytes.
    if (i > 0 && out.size() + item.size() + closing(m.seq).size() > max_bytes) break;
    out += item;
    next = m.seq;
  }
  out += closing(next);
  return out;
}

Result<FeedBatch> parse_feed(std::string_view body) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Status::invalid_argument("feed body is not valid JSON");
  if (!doc.is_object()) return Status::invalid_argument("feed body is not a JSON object");
  auto messages = doc.find("messages");
  if (messages == doc.end() || !messages->is_array())
    return Status::invalid_argument("feed body has no \"messages\" array");
  auto next = doc.find("next");
  if (next == doc.end() || !next->is_number_integer())
    return Status::invalid_argument("feed body has no integer \"next\"");
  FeedBatch batch;
  batch.next = next->get<std::int64_t>();
  if (auto newest = doc.find("newest"); newest != doc.end()) {
    if (!newest->is_number_integer())
      return Status::invalid_argument("feed body: \"newest\" is not an integer");
    batch.newest = newest->get<std::int64_t>();
  }
  auto spans = payload_spans(body);
  if (spans.size() != messages->size())
    return Status::invalid_argument("feed body: cannot locate the messages' payloads");
  batch.messages.reserve(messages->size());
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    std::string where = "feed message " + std::to_string(i);
    if (!m.is_object()) return Status::invalid_argument(where + " is not an object");
    FeedItem item;
    auto seq = m.find("seq");
    if (seq == m.end() || !seq->is_number_integer())
      return Status::invalid_argument(where + " has no integer \"seq\"");
    item.seq = seq->get<std::int64_t>();
    auto id = string_field(m, "id");
    if (!id || id->empty()) return Status::invalid_argument(where + " has no \"id\"");
    item.id = std::move(*id);
    item.service = string_field(m, "service").value_or("");
    item.type = string_field(m, "type").value_or("");
    item.agent = string_field(m, "agent");
    item.received_at = string_field(m, "received_at").value_or("");
    auto payload = m.find("payload");
    if (payload == m.end() || spans[i].second <= spans[i].first)
      return Status::invalid_argument(where + " has no \"payload\"");
    item.payload_is_object = payload->is_object();
    if (item.payload_is_object) {
      // The depth first: inspecting a payload nested too deep could recurse once per level
      // (an event identifier that is an array is read back as its text).
      item.too_deep = json_nested_deeper_than(
          body.substr(spans[i].first, spans[i].second - spans[i].first), kMaxPayloadDepth);
      if (item.too_deep)
        item.inspected = true;
      else
        inspect(*payload, item);
    }
    // The stored payload's bytes around its value: a byte order mark and whitespace before,
    // whitespace after; anything else would make the payload something other than its value.
    // A message that sends anything else is kept (its value alone) with the reason, for
    // admission to store as failed: the rest of the batch, and the feed, go on.
    std::string prefix, suffix;
    if (auto it = m.find("payload_prefix"); it != m.end()) {
      std::string_view p;
      if (it->is_string()) p = it->get_ref<const std::string&>();
      if (p.rfind(kBom, 0) == 0) p.remove_prefix(kBom.size());
      if (it->is_string() && only_json_whitespace(p))
        prefix = it->get<std::string>();
      else
        item.framing_error = "\"payload_prefix\" is not whitespace";
    }
    if (auto it = m.find("payload_suffix"); it != m.end()) {
      if (it->is_string() && only_json_whitespace(it->get_ref<const std::string&>()))
        suffix = it->get<std::string>();
      else
        item.framing_error = "\"payload_suffix\" is not whitespace";
    }
    if (!item.framing_error.empty()) {
      prefix.clear();
      suffix.clear();
    }
    item.payload = std::move(prefix);
    item.payload.append(body.substr(spans[i].first, spans[i].second - spans[i].first));
    item.payload += suffix;
    batch.messages.push_back(std::move(item));
  }
  if (!batch.messages.empty() && batch.next < batch.messages.back().seq)
    return Status::invalid_argument("feed body: \"next\" is below the last message's seq");
  return batch;
}

}  // namespace iarelay
