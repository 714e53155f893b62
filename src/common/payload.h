// What the relay needs to know about an xMatters payload (docs/architecture.md, "Payload
// dialects"): its trigger type and the alert's event identifier, in either dialect; and the
// normalisation of service names and agent identifiers (docs/architecture.md, "Routing"). The
// payload itself is never rewritten here.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace iarelay {

struct PayloadInfo {
  std::string type;      // status|deliveryStatus|response|annotation|<as given>
  std::string event_id;  // "" when the payload names no alert
};

// The deepest nesting a payload may have (its top-level object is depth 1; xMatters payloads
// nest 3 or 4 deep). A deeper one is refused at intake: turning it back into text (nlohmann's
// dump(), as format = ia and `iarelay show` do) recurses once per level and would overflow the
// stack of the thread doing it; a 1 MiB body can nest 500,000 deep.
inline constexpr std::size_t kMaxPayloadDepth = 64;

// Whether the JSON text nests arrays and objects deeper than `limit` (a top-level object is
// depth 1). A scan of the bytes, without recursion and without parsing: meant for text already
// known to be JSON (a stored payload), whose brackets outside strings it counts.
bool json_nested_deeper_than(std::string_view text, std::size_t limit);

// Fails with InvalidArgument when the body is not a JSON object, is nested deeper than
// kMaxPayloadDepth, or when `given_type` is empty and the type cannot be inferred. A non-empty
// `given_type` wins over inference.
Result<PayloadInfo> inspect_payload(std::string_view body, std::string_view given_type);

// "applications|hpnnmi" -> "hpnnmi" (every leading "applications|"); surrounding blanks
// removed. Idempotent. Services in the configuration are normalised the same way.
std::string normalize_service(std::string_view service);
// Agent identifiers are compared exactly after trimming blanks.
std::string normalize_agent(std::string_view agent);

}  // namespace iarelay
