// Standard Webhooks signing (docs/architecture.md, "Calling apia_callback"), shared by the
// dispatcher (signs) and iarelay-sink (verifies): the signed content is
// "<webhook-id>.<webhook-timestamp>.<body>", the header value "v1,<base64 HMAC-SHA256>". Pure
// functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/config.h"
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

// The key an agent's deliveries are signed with (its secret from IARELAY_AGENT_<HANDLE>_SECRET,
// else from `secret_file`, through signing_key): "" when it has neither, so it signs nothing.
// InvalidArgument naming the agent's section and the file or variable when the secret cannot
// be read or is not a usable key.
Result<std::string> agent_signing_key(const AgentConfig& agent);

}  // namespace iarelay
