// `format = ia` (docs/architecture.md, "Calling apia_callback"): converts a stored payload of
// either dialect ("Payload dialects") into the message object an Integration Agent's
// apia_callback(msg) receives. Pure; thread-safe.
//
// The message: "xmatters_callback_type" (the webhook's trigger type), "eventidentifier", then
// the payload's other fields with lower-cased keys and string values:
// - numbers become their decimal text, booleans "true"/"false", JSON null "null";
// - an object with firstName/lastName (Integration Builder's `author`, `recipient`, ...)
//   becomes "First Last"; any other object or array becomes its compact JSON text;
// - `eventProperties` (an array of one-key objects) becomes the object "additionalTokens" with
//   the keys as given and string values; an Integration Agent payload's "additionalTokens" is
//   kept as it is (values made strings);
// - a `response` without an annotation carries "annotation": "null" (the string), as the
//   Integration Agent did; one with a `comment` carries it as its annotation too.
// Bytes that are not valid UTF-8 (in the type or anywhere in the payload: rows can come from
// an upstream feed, an older version or an operator's SQL) become U+FFFD; the conversion never
// throws. The webhook was acknowledged, so a readable message with a replaced byte serves the
// alert better than a failed webhook.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "common/utf8.h"  // replace_invalid_utf8, which the conversion applies

namespace iarelay {

// InvalidArgument when `payload` is not a JSON object, or is nested deeper than
// kMaxPayloadDepth (common/payload.h), which intake refuses and dump() could not render.
Result<std::string> to_ia_message(std::string_view type, std::string_view payload);

}  // namespace iarelay
