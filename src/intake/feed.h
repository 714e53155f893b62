// The feed's wire format (docs/deployment.md), both ends: the edge renders GET /v1/feed bodies from
// stored rows; the inner relay's poller parses them. Payloads travel byte for byte: the edge
// embeds each stored JSON text as the message's "payload" value unchanged, and the parser hands
// back that exact text (not a re-serialisation), so the inner journal stores what the edge got.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "journal/store.h"

namespace iarelay {

// The body of GET /v1/feed: {"messages":[...],"next":N,"newest":M}. `next` is the last sent
// message's seq, or `after` when there are none; `newest` (when given) is the largest seq the
// edge has ever assigned, so a consumer whose cursor is above it knows the edge went back
// (restored journal) and must rewind. Messages are sent in order while the body stays within
// `max_bytes`; the first is always sent, so a single larger message still goes out alone. A
// stored payload that is not valid JSON (possible only if the journal was edited by hand) is
// sent as a JSON string, so the document stays valid. What surrounds a stored payload's JSON
// value (a byte order mark, whitespace such as a body's final newline) is sent beside it as
// "payload_prefix" and "payload_suffix" (JSON strings, absent when empty).
std::string render_feed(const std::vector<FeedMessage>& messages, std::int64_t after,
                        std::optional<std::int64_t> newest = std::nullopt,
                        std::size_t max_bytes = std::numeric_limits<std::size_t>::max());

struct FeedItem {
  std::int64_t seq = 0;
  std::string id, service, type;
  std::optional<std::string> agent;
  std::string received_at;
  // The raw JSON text of "payload" exactly as it appears in the body, between the texts of
  // "payload_prefix" and "payload_suffix" when given: the bytes the edge stored.
  std::string payload;
  bool payload_is_object = false;
  // Filled by parse_feed from the payload it already parsed (so admission need not parse it
  // again), by the rules of inspect_payload (docs/architecture.md "Payload dialects"): the given
  // type, else the inferred one
  // ("" when none can be inferred), and the alert's event identifier ("" when none).
  bool inspected = false;
  std::string inferred_type;
  std::string event_id;
  // Set with `inspected`: the payload nests deeper than kMaxPayloadDepth (common/payload.h),
  // which direct intake refuses; admission refuses it too.
  bool too_deep = false;
  // Set when "payload_prefix" or "payload_suffix" holds anything but a byte order mark and
  // whitespace (no iarelay edge sends that): the payload is the value alone, and admission
  // stores the message as failed with this reason.
  std::string framing_error;
};

struct FeedBatch {
  std::vector<FeedItem> messages;
  std::int64_t next = 0;
  std::optional<std::int64_t> newest;  // absent from an edge older than "newest"
};

// Parses a feed body. InvalidArgument, saying what is wrong, when the body is not a feed
// document (not JSON, "messages" or "next" missing or of the wrong type, "newest" not an
// integer, a message without a seq or id). A message whose payload is not an object is returned
// with payload_is_object false, one with a bad "payload_prefix"/"payload_suffix" with its
// framing_error, for the caller to judge.
Result<FeedBatch> parse_feed(std::string_view body);

// The byte range [begin, end) of the JSON value that starts at or after `pos` (leading
// whitespace skipped) in a document already known to be valid JSON.
std::pair<size_t, size_t> json_value_span(std::string_view text, size_t pos);

}  // namespace iarelay
