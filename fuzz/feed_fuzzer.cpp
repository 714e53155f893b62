// The feed's wire format (SPEC §4.2) as the poller meets it, and admission of its messages.
// The input is parsed as a feed body; independently, it is cut at 0x1f into the fields of
// stored rows (any bytes), which are rendered and parsed back. Invariants:
// - a parsed batch: next >= the last seq; each payload is the exact bytes of a JSON value of
//   the body (between its payload_prefix and payload_suffix), equal to what nlohmann reads
//   there; its type and event id are those inspect_payload finds;
// - parse_feed(render_feed(batch)) gives the batch back field for field, payload bytes
//   included; render_feed of arbitrary rows is valid JSON that parse_feed reads back with the
//   same seqs, ids and payloads (byte for byte when a row's payload is JSON text: byte order
//   mark and whitespace around the value included), and respects max_bytes after the first;
// - each parsed message is either admitted (payload byte for byte, fields valid text within
//   bounds, a payload direct intake would accept: the depth limit included) or quarantined
//   (fields made safe, payload byte for byte).
#include <nlohmann/json.hpp>

#include "common/payload.h"
#include "common/utf8.h"
#include "fuzz_check.h"
#include "intake/admission.h"
#include "intake/feed.h"
#include "journal/routing.h"

using namespace iarelay;
using iarelay::fuzz::show;
using nlohmann::json;

namespace {

constexpr Millis kNow = 1'800'000'000'000;
const AgentDirectory& directory() {
  static const AgentDirectory* d = [] {
    AgentConfig a;
    a.handle = a.id = "nnmi1";
    a.callback = "http://127.0.0.1:1/";
    a.services = {"hpnnmi"};
    return new AgentDirectory({a}, {});
  }();
  return *d;
}

void check_text(const char* what, std::string_view value, std::size_t max) {
  std::string problem = text_field_problem(value, max);
  FUZZ_CHECK(problem.empty(), "%s '%s' %s", what, show(value).c_str(), problem.c_str());
}

// The rows the edge would have stored for `batch` (received_at as the parser gives it back).
std::vector<FeedMessage> as_rows(const FeedBatch& batch) {
  std::vector<FeedMessage> rows;
  for (const auto& item : batch.messages) {
    FeedMessage m;
    m.seq = item.seq;
    m.id = item.id;
    m.service = item.service;
    m.type = item.type;
    m.agent = item.agent;
    m.received_at = 0;
    m.payload = item.payload;
    rows.push_back(std::move(m));
  }
  return rows;
}

void check_batch(std::string_view body, const FeedBatch& batch) {
  if (!batch.messages.empty())
    FUZZ_CHECK(batch.next >= batch.messages.back().seq, "next %lld below the last seq",
               static_cast<long long>(batch.next));
  json doc = json::parse(body, nullptr, false);
  const json& messages = doc["messages"];
  for (std::size_t i = 0; i < batch.messages.size(); ++i) {
    const FeedItem& item = batch.messages[i];
    json payload = json::parse(item.payload, nullptr, false);
    FUZZ_CHECK(!payload.is_discarded() && payload == messages[i]["payload"],
               "message %zu: payload bytes '%s' are not its value", i, show(item.payload).c_str());
    FUZZ_CHECK(item.payload_is_object == payload.is_object(), "payload_is_object");
    if (!item.payload_is_object) continue;
    auto info = inspect_payload(item.payload, item.type);
    if (info) {
      FUZZ_CHECK(item.inferred_type == info->type && item.event_id == info->event_id,
                 "message %zu: feed infers '%s'/'%s', inspect_payload '%s'/'%s'", i,
                 show(item.inferred_type).c_str(), show(item.event_id).c_str(),
                 show(info->type).c_str(), show(info->event_id).c_str());
    }
  }

  // Rendered again, the same batch.
  std::string again = render_feed(as_rows(batch), batch.next, batch.newest);
  auto reparsed = parse_feed(again);
  FUZZ_CHECK(reparsed, "rendered batch not read back: %s\n%s", reparsed.status().message().c_str(),
             show(again).c_str());
  // render_feed's next is the last message's seq (`after` when there is none).
  std::int64_t next = batch.messages.empty() ? batch.next : batch.messages.back().seq;
  FUZZ_CHECK(reparsed->messages.size() == batch.messages.size() && reparsed->next == next &&
                 reparsed->newest == batch.newest,
             "batch shape changed");
  for (std::size_t i = 0; i < batch.messages.size(); ++i) {
    const FeedItem& a = batch.messages[i];
    const FeedItem& b = reparsed->messages[i];
    FUZZ_CHECK(a.seq == b.seq && a.id == b.id && a.service == b.service && a.type == b.type &&
                   a.agent == b.agent && a.payload == b.payload,
               "message %zu changed: payload '%s' -> '%s'", i, show(a.payload).c_str(),
               show(b.payload).c_str());
  }

  // Admission of each message, or its quarantine.
  for (FeedItem item : batch.messages) {
    FeedItem kept = item;
    auto admitted = admit_feed_item(std::move(item), "edge", directory(), kNow);
    if (admitted) {
      const NewWebhook& w = *admitted;
      FUZZ_CHECK(w.payload == kept.payload, "admitted payload differs");
      check_text("service", w.service, kMaxServiceName);
      check_text("type", w.type, kMaxTriggerType);
      if (w.agent) check_text("agent", *w.agent, kMaxAgentId);
      FUZZ_CHECK(w.source_id && *w.source_id == kept.id, "source_id");
      FUZZ_CHECK(!w.service.empty() && !w.type.empty(), "empty service or type");
      // inspect_payload (what direct intake applies) accepts what the feed admits, the depth
      // limit included.
      auto direct = inspect_payload(w.payload, kept.type);
      FUZZ_CHECK(direct.is_ok(), "admitted from the feed what direct intake refuses: %s",
                 direct.status().message().c_str());
    } else {
      FUZZ_CHECK(item.payload == kept.payload && item.id == kept.id,
                 "a refused item was not left whole");
      NewWebhook q = quarantine_feed_item(item, "edge", admitted.status().message(), kNow);
      FUZZ_CHECK(q.payload == kept.payload, "quarantined payload differs");
      check_text("quarantined service", q.service, kMaxServiceName);
      check_text("quarantined type", q.type, kMaxTriggerType);
      if (q.agent) check_text("quarantined agent", *q.agent, kMaxAgentId);
      FUZZ_CHECK(q.source_id, "no source_id");
      check_text("quarantined source_id", *q.source_id, kMaxSourceId);
      FUZZ_CHECK(q.reason && is_valid_utf8(*q.reason), "reason");
      FUZZ_CHECK(q.state == WebhookState::kFailed, "quarantined state");
    }
  }
}

// Rows from the input's fields: id, service, agent, type, payload, repeated.
void check_render(std::string_view input) {
  auto fields = fuzz::split(input, '\x1f');
  std::vector<FeedMessage> rows;
  for (std::size_t i = 0; i + 4 < fields.size(); i += 5) {
    FeedMessage m;
    m.seq = static_cast<std::int64_t>(i) * 1000 - 3;
    m.id = std::string(fields[i]);
    m.service = std::string(fields[i + 1]);
    if (!fields[i + 2].empty()) m.agent = std::string(fields[i + 2]);
    m.type = std::string(fields[i + 3]);
    m.payload = std::string(fields[i + 4]);
    m.received_at = static_cast<Millis>(fields[i + 4].size()) * 86'400'123;
    rows.push_back(std::move(m));
  }
  if (rows.empty()) return;
  std::size_t max_bytes = 64 + input.size() % 512;
  for (std::size_t limit : {std::numeric_limits<std::size_t>::max(), max_bytes}) {
    std::string body = render_feed(rows, -7, 42, limit);
    FUZZ_CHECK(json::accept(body), "render_feed wrote invalid JSON: %s", show(body).c_str());
    auto batch = parse_feed(body);
    // A message without an id cannot be read back; the edge never stores one.
    bool ids = true;
    for (const auto& r : rows) ids = ids && !r.id.empty();
    if (!ids) continue;
    FUZZ_CHECK(batch, "rendered rows not read back: %s\n%s", batch.status().message().c_str(),
               show(body).c_str());
    FUZZ_CHECK(!batch->messages.empty() && batch->messages.size() <= rows.size(), "count");
    if (limit == std::numeric_limits<std::size_t>::max())
      FUZZ_CHECK(batch->messages.size() == rows.size(), "messages lost without a limit");
    else if (batch->messages.size() > 1)
      FUZZ_CHECK(body.size() <= limit, "%zu bytes over max_bytes %zu", body.size(), limit);
    for (std::size_t i = 0; i < batch->messages.size(); ++i) {
      const FeedItem& item = batch->messages[i];
      const FeedMessage& row = rows[i];
      FUZZ_CHECK(item.seq == row.seq, "seq");
      if (is_valid_utf8(row.id)) FUZZ_CHECK(item.id == row.id, "id");
      FUZZ_CHECK(item.agent.has_value() == row.agent.has_value(), "agent presence");
      FUZZ_CHECK(item.received_at == format_time(row.received_at), "received_at");
      // A stored JSON text comes back byte for byte, byte order mark and whitespace around
      // its value included (nlohmann takes a NUL for the end of its input: not JSON text).
      const std::string& payload = row.payload;
      if (payload.find('\0') == std::string::npos && json::accept(payload))
        FUZZ_CHECK(item.payload == payload, "payload '%s' came back as '%s'", show(payload).c_str(),
                   show(item.payload).c_str());
      else
        FUZZ_CHECK(json::parse(item.payload, nullptr, false).is_string(),
                   "a payload that is not JSON is not sent as a string");
    }
    check_batch(body, *batch);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view input = fuzz::as_view(data, size);
  if (auto batch = parse_feed(input)) check_batch(input, *batch);
  check_render(input);
  return 0;
}
