// A call to an agent: the state libcurl fills in while it runs (Call), and bytes made safe on
// their way into a call's headers or a stored reason. The DispatcherImpl members that prepare,
// start and read calls are in http_call.cpp. Dispatcher thread only.
#pragma once

#include <curl/curl.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/time.h"
#include "dispatch/dispatcher_impl.h"

namespace iarelay::dispatch_internal {

struct Call {
  Agent* agent = nullptr;
  InHand item;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  std::string excerpt;
  std::optional<std::string> retry_after;
  std::optional<std::string> location;  // a 3xx's Location, made safe to store
  Millis started_at = 0;
  Millis steady_start = 0;
  std::string problem;  // set while preparing: why this webhook cannot be sent
  char errbuf[CURL_ERROR_SIZE] = {};
};

// At most `n` bytes of a reason to store or log, as valid UTF-8 cut on a character boundary:
// reasons quote agents' answers and exceptions' messages, whose bytes can be anything.
std::string truncate(const std::string& s, std::size_t n);

// A header value from the journal (id, service, type): control characters (CR and LF above
// all) are dropped, so no stored value can end the header line and add one of its own; bytes
// that are not UTF-8 become U+FFFD.
std::string header_value(std::string_view raw);

}  // namespace iarelay::dispatch_internal
