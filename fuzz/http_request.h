// The listener's request parsing without a socket, for the HTTP fuzz targets: a Beast
// request_parser set up by the listener's own limit_request_parser(), fed bytes as its
// async_read_header and async_read would, the head checked (transfer_encoding_refusal) and
// decoded (request_head) by the listener's own functions (src/intake/http_request_parser.h).
#pragma once

#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "intake/http_request_parser.h"

namespace iarelay::fuzz {

namespace http = boost::beast::http;

struct ParsedRequest {
  bool complete = false;           // one whole request was read
  boost::beast::error_code error;  // why not (http::error::need_more: the bytes ended early)
  std::size_t consumed = 0;        // bytes of the input the request took
  // The parser read the body chunked: when some Transfer-Encoding field ends in chunked. Not
  // message.chunked(), Beast's serializer's view, which reads only the first such field (empty in
  // `Transfer-Encoding: ` then `Transfer-Encoding: chunked`, a chunked request).
  bool chunked = false;
  http::request<http::string_body> message;
};

// Parses the first request in `bytes` with the listener's header limit and `max_body`, handing
// the parser at most `chunk` (> 0) new bytes at a time, as reads from a socket would. A
// Transfer-Encoding the listener refuses ends it with bad_transfer_encoding. `header_limit`,
// when given, replaces the listener's (reading back a head Beast wrote out again, which may be
// longer than the one it read: `Host:x` is written `Host: x`).
ParsedRequest parse_like_listener(std::string_view bytes, std::size_t max_body, std::size_t chunk,
                                  std::uint32_t header_limit = 0);

// The request as the listener hands it to the server: request_head() and the body.
HttpRequest to_handler_request(http::request<http::string_body> message);

}  // namespace iarelay::fuzz
