// Standard Webhooks signing (SPEC §5), shared by the dispatcher (signs) and iarelay-sink
// (verifies): the signed content is "<webhook-id>.<webhook-timestamp>.<body>", the header value
// "v1,<base64 HMAC-SHA256>". Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace iarelay {

// The HMAC key of a configured secret: "whsec_<base64>" is base64-decoded; any other text is
// used as its bytes. InvalidArgument when a whsec_ secret is not valid base64 or is empty.
Result<std::string> signing_key(std::string_view secret);

// "v1,<base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))>".
std::string sign_webhook(std::string_view key, std::string_view id, std::string_view timestamp,
                         std::string_view body);

// True when any space-separated "v1,<sig>" entry of `header` matches (constant-time compare).
bool verify_webhook(std::string_view key, std::string_view id, std::string_view timestamp,
                    std::string_view body, std::string_view header);

// The environment variable that may carry an agent's secret: IARELAY_AGENT_<HANDLE>_SECRET with
// the handle upper-cased and every non-alphanumeric character replaced by '_'.
std::string agent_secret_env(std::string_view handle);

}  // namespace iarelay
