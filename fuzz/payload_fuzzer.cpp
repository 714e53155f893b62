// Payload inspection and type inference (SPEC §6), and the UTF-8 checks of text fields. The
// input is a request body. Invariants:
// - inspect_payload accepts exactly the JSON objects (checked against nlohmann's DOM parser)
//   that are nested no deeper than kMaxPayloadDepth;
// - its streaming scan agrees with the feed's DOM-based inspection (parse_feed) on the type
//   and the event identifier, with and without a given type; a given type wins, trimmed;
// - normalize_service and normalize_agent are idempotent;
// - sanitize_utf8 always yields a valid text field, equal to the input when that was valid.
#include <nlohmann/json.hpp>

#include "common/payload.h"
#include "common/utf8.h"
#include "fuzz_check.h"
#include "intake/feed.h"

using namespace iarelay;
using iarelay::fuzz::show;

namespace {

// The depth of the deepest value of a document nlohmann accepted (top-level object: 1),
// counted without recursion, stopping once past `limit`.
std::size_t depth_of(std::string_view doc, std::size_t limit) {
  struct Depth : nlohmann::json_sax<nlohmann::json> {
    std::size_t depth = 0, deepest = 0, limit = 0;
    bool open() {
      deepest = std::max(deepest, ++depth);
      return deepest <= limit;
    }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return open(); }
    bool key(string_t&) override { return true; }
    bool end_object() override { return --depth, true; }
    bool start_array(std::size_t) override { return open(); }
    bool end_array() override { return --depth, true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
      return false;
    }
  } d;
  d.limit = limit;
  (void)nlohmann::json::sax_parse(doc, &d);
  return d.deepest;
}

// What parse_feed infers for `body` as a message's payload (with type `type`).
std::optional<FeedItem> via_feed(std::string_view body, std::string_view type) {
  std::string doc = "{\"messages\":[{\"seq\":1,\"id\":\"x\",\"type\":" +
                    nlohmann::json(std::string(type)).dump() + ",\"payload\":" + std::string(body) +
                    "}],\"next\":1}";
  auto batch = parse_feed(doc);
  if (!batch || batch->messages.size() != 1) return std::nullopt;
  return std::move(batch->messages[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view body = fuzz::as_view(data, size);
  auto inferred = inspect_payload(body, "");
  auto given = inspect_payload(body, " status\t");

  nlohmann::json dom = nlohmann::json::parse(body, nullptr, false);
  // nlohmann takes a NUL for the end of its input ("{}<NUL>junk" parses); a NUL is never valid
  // in JSON text, and intake refuses a body holding one.
  bool object = body.find('\0') == std::string_view::npos && !dom.is_discarded() && dom.is_object();
  bool shallow = object && depth_of(body, kMaxPayloadDepth) <= kMaxPayloadDepth;
  FUZZ_CHECK(given.is_ok() == shallow, "object=%d shallow=%d accepted=%d: %s", object, shallow,
             given.is_ok(), given.status().message().c_str());
  if (given) FUZZ_CHECK(given->type == "status", "given type lost: '%s'", given->type.c_str());
  if (inferred) {
    FUZZ_CHECK(shallow, "accepted what is not a JSON object of bounded depth");
    FUZZ_CHECK(!inferred->type.empty(), "empty type");
  }

  // Both implementations of SPEC §6 agree (a body with a leading BOM or trailing bytes is not
  // a JSON value inside a feed document, so only documents nlohmann parses as they are).
  if (object && !body.empty() && nlohmann::json::accept(body)) {
    auto feed = via_feed(body, "");
    if (feed && feed->payload_is_object && feed->inspected) {
      FUZZ_CHECK(inferred.is_ok() == !feed->inferred_type.empty() || !shallow,
                 "feed infers '%s', inspect_payload %s", show(feed->inferred_type).c_str(),
                 inferred ? inferred->type.c_str() : inferred.status().message().c_str());
      if (inferred)
        FUZZ_CHECK(inferred->type == feed->inferred_type && inferred->event_id == feed->event_id,
                   "type '%s' / '%s', event '%s' / '%s'", show(inferred->type).c_str(),
                   show(feed->inferred_type).c_str(), show(inferred->event_id).c_str(),
                   show(feed->event_id).c_str());
    }
  }

  std::string service = normalize_service(body.substr(0, 300));
  FUZZ_CHECK(normalize_service(service) == service, "normalize_service not idempotent: '%s'",
             show(service).c_str());
  std::string agent = normalize_agent(body.substr(0, 300));
  FUZZ_CHECK(normalize_agent(agent) == agent, "normalize_agent not idempotent");

  std::size_t max = size % 300;
  std::string safe = sanitize_utf8(body, max);
  FUZZ_CHECK(text_field_problem(safe, max).empty() && is_valid_utf8(safe), "sanitize_utf8 '%s'",
             show(safe).c_str());
  if (text_field_problem(body, max).empty())
    FUZZ_CHECK(safe == body, "sanitize_utf8 changed a valid field");
  return 0;
}
