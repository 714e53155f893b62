// The listener's request parsing without a socket, for the HTTP fuzz targets: a Beast
// request_parser with the listener's limits, fed bytes as its async_read_header and async_read
// would, and the head decoded as its to_head() does. A mirror of src/intake/http_listener.cpp,
// which keeps both in an anonymous namespace (docs/reliability.md, "Fuzzing", names the small
// refactor that would let these targets call the listener's own code instead).
#pragma once

#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "intake/http_listener.h"

namespace iarelay::fuzz {

namespace http = boost::beast::http;

// http_listener.cpp's kHeaderLimit.
inline constexpr std::uint32_t kListenerHeaderLimit = 16 * 1024;

struct ParsedRequest {
  bool complete = false;           // one whole request was read
  boost::beast::error_code error;  // why not (http::error::need_more: the bytes ended early)
  std::size_t consumed = 0;        // bytes of the input the request took
  http::request<http::string_body> message;
};

// Parses the first request in `bytes` with the listener's header limit and `max_body`, handing
// the parser at most `chunk` (> 0) new bytes at a time, as reads from a socket would.
ParsedRequest parse_like_listener(std::string_view bytes, std::size_t max_body, std::size_t chunk);

// The request as the listener hands it to the server: method, decoded path and query, headers
// and body.
HttpRequest to_handler_request(http::request<http::string_body> message);

}  // namespace iarelay::fuzz
