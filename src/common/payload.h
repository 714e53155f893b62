// What the relay needs to know about an xMatters payload (SPEC §6): its trigger type and the
// alert's event identifier, in either dialect; and the normalisation of service names and
// agent identifiers (SPEC §1). The payload itself is never rewritten here.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace iarelay {

struct PayloadInfo {
  std::string type;      // status|deliveryStatus|response|annotation|<as given>
  std::string event_id;  // "" when the payload names no alert
};

// Fails with InvalidArgument when the body is not a JSON object, or when `given_type` is empty
// and the type cannot be inferred. A non-empty `given_type` wins over inference.
Result<PayloadInfo> inspect_payload(std::string_view body, std::string_view given_type);

// "applications|hpnnmi" -> "hpnnmi"; surrounding blanks removed.
std::string normalize_service(std::string_view service);
// Agent identifiers are compared exactly after trimming blanks.
std::string normalize_agent(std::string_view agent);

}  // namespace iarelay
