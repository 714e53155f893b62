// How the listener (http_listener.cpp) reads a request with Boost.Beast: the parser's limits,
// the head it hands to check_head and the handler, and the transfer codings it reads. Shared with
// the HTTP fuzz targets (fuzz/http_request.cpp), which feed the same parser bytes without a socket.
// Needs BOOST_BEAST_USE_STD_STRING_VIEW, as iarelay_intake is built.
#pragma once

#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "intake/http_listener.h"

namespace iarelay {

using RequestMessage = boost::beast::http::request<boost::beast::http::string_body>;
using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// The largest request header (start line and fields) read: past it, a 431.
inline constexpr std::uint32_t kRequestHeaderLimit = 16 * 1024;

// Sets a fresh parser's limits: the header within kRequestHeaderLimit, the body within
// `max_body` (past it Beast fails with body_limit, the listener's 413).
void limit_request_parser(RequestParser& parser, std::size_t max_body);

// The request without its body: method, percent-decoded path and query (in order), and every
// header as received.
HttpRequest request_head(const RequestMessage& msg);

// The listener reads a body framed by Content-Length or by `Transfer-Encoding: chunked` alone.
// Beast reads a request whose transfer codings end in chunked as chunked, whatever precedes it,
// and one whose codings do not end in chunked as having no body (its bytes then parse as the
// next request). So any other Transfer-Encoding is refused from the header, before the body is
// read, with the status and message returned here (RFC 9112 6.1, 6.3): 400 when the body's length
// cannot be known (chunked not last, or Transfer-Encoding on an HTTP/1.0 request), 501 for a
// coding the relay does not implement before chunked. Nothing when the request may be read.
std::optional<std::pair<int, std::string>> transfer_encoding_refusal(const HttpRequest& head,
                                                                     unsigned version);

}  // namespace iarelay
