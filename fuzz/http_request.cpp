// Session::read_header/on_header/read_body of src/intake/http_listener.cpp without a socket.
#include "http_request.h"

#include <boost/asio/buffer.hpp>
#include <optional>

namespace iarelay::fuzz {

ParsedRequest parse_like_listener(std::string_view bytes, std::size_t max_body, std::size_t chunk,
                                  std::uint32_t header_limit) {
  ParsedRequest out;
  RequestParser parser;
  limit_request_parser(parser, max_body);
  if (header_limit) parser.header_limit(header_limit);
  // async_read_header stops after the header (eager off); async_read then reads the body.
  parser.eager(false);
  std::size_t available = std::min(chunk, bytes.size());
  // on_header: a Transfer-Encoding other than chunked alone is refused before the body.
  bool head_checked = false;
  auto refused = [&] {
    head_checked = true;
    if (!transfer_encoding_refusal(request_head(parser.get()), parser.get().version()))
      return false;
    out.error = http::error::bad_transfer_encoding;
    return true;
  };
  while (!parser.is_done()) {
    if (parser.is_header_done() && !head_checked && refused()) return out;
    if (parser.is_header_done()) parser.eager(true);
    std::string_view pending = bytes.substr(out.consumed, available - out.consumed);
    boost::beast::error_code ec;
    std::size_t used = 0;
    if (!pending.empty())
      used = parser.put(boost::asio::buffer(pending.data(), pending.size()), ec);
    out.consumed += used;
    // No progress without an error: the parser waits for more bytes, as after need_more.
    bool stalled = !ec && used == 0 && !parser.is_done() && parser.is_header_done();
    if (pending.empty() || ec == http::error::need_more || stalled) {
      if (available == bytes.size()) {
        // The peer closed: what Beast's read operations report at end of stream.
        if (parser.got_some())
          parser.put_eof(ec);
        else
          ec = http::error::end_of_stream;
        if (!ec) continue;
        out.error = ec;
        return out;
      }
      available = std::min(bytes.size(), available + chunk);
      continue;
    }
    if (ec) {
      out.error = ec;
      return out;
    }
  }
  if (!head_checked && refused()) return out;
  out.complete = true;
  out.chunked = parser.chunked();
  out.message = parser.release();
  return out;
}

HttpRequest to_handler_request(http::request<http::string_body> msg) {
  HttpRequest r = request_head(msg);
  r.body = std::move(msg.body());
  return r;
}

}  // namespace iarelay::fuzz
