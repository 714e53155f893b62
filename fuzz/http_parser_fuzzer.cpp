// The Beast HTTP parser as the listener configures it (16 KiB header limit, max_body), fed the
// input as one request's bytes. Invariants:
// - reading in small pieces (as from a socket) accepts the same requests as reading all at
//   once, with the same content;
// - an accepted body is within max_body; with max_body one byte smaller the same request is
//   refused with body_limit (the listener's 413), with max_body its exact size it is accepted;
// - an accepted request's body was read chunked exactly when it has a Transfer-Encoding field
//   (the listener reads `chunked` alone and refuses every other coding);
// - an accepted request, written out again (Beast writes the head; the body follows framed as
//   the parser read it) and read back, is the same request (method, target, version, every
//   header in order, body; Beast keeps a repeated field next to the first of its name);
// - the handler's view (decoded path and query) is consistent with the target.
#include <boost/beast/http/error.hpp>
#include <sstream>

#include "fuzz_check.h"
#include "http_request.h"

using iarelay::fuzz::as_view;
using iarelay::fuzz::parse_like_listener;
using iarelay::fuzz::ParsedRequest;
using iarelay::fuzz::show;
namespace http = iarelay::fuzz::http;

namespace {

constexpr std::size_t kMaxBody = 1 << 20;  // the listener's default max_body
constexpr std::size_t kHeadSlack = 8;      // a piece read past the limit (see "A head over")

// The request's bytes again. Not `out << message`: Beast's serializer frames the body by
// message.chunked(), the first Transfer-Encoding field only, so it writes the body of
// `Transfer-Encoding: ` then `Transfer-Encoding: chunked` (read chunked, as RFC 9110 5.6.1 and
// 5.3 make it) unframed. Beast's fields writer still writes the start line and every field.
std::string write_as_read(const http::request<http::string_body>& message, bool chunked) {
  std::ostringstream out;
  out << message.base();
  const std::string& body = message.body();
  if (!chunked) return out.str() + body;
  if (!body.empty()) out << std::hex << body.size() << "\r\n" << body << "\r\n";
  out << "0\r\n\r\n";
  return out.str();
}

std::string describe(const ParsedRequest& p) {
  std::ostringstream out;
  out << "complete=" << p.complete << " chunked=" << p.chunked << " error=" << p.error.message()
      << " consumed=" << p.consumed;
  if (p.complete) out << "\n" << write_as_read(p.message, p.chunked);
  return show(out.str(), 400);
}

bool same_message(const http::request<http::string_body>& a,
                  const http::request<http::string_body>& b) {
  if (a.method_string() != b.method_string() || a.target() != b.target() ||
      a.version() != b.version() || a.body() != b.body())
    return false;
  auto i = a.begin(), j = b.begin();
  for (; i != a.end() && j != b.end(); ++i, ++j)
    if (i->name_string() != j->name_string() || i->value() != j->value()) return false;
  return i == a.end() && j == b.end();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  std::string_view bytes = as_view(data, size);
  ParsedRequest whole = parse_like_listener(bytes, kMaxBody, bytes.size() + 1);
  ParsedRequest pieces = parse_like_listener(bytes, kMaxBody, 1 + size % 7);
  // Which error a malformed request gets may depend on where the reads ended (Beast validates
  // an unfinished start line only once it has more of it); both are answered 400 and closed.
  // A head over the 16 KiB limit: read in pieces, as the listener reads a socket, it is refused
  // (within a piece's few bytes of slack). Parsed from one buffer holding the whole request
  // (never the listener's way) Beast is lenient: heads of 16,388, 16,460 and 18,040 bytes were
  // accepted (the long runs of 2026-12-01), so that reading may go either way. The listener
  // refused the 18,040-byte one too (ListenerTest.AHeadOverTheLimitIsRefusedEvenWhen...).
  const std::size_t head_end = bytes.find("\r\n\r\n");
  if (head_end != std::string_view::npos && head_end + 4 > iarelay::kRequestHeaderLimit) {
    if (head_end + 4 > iarelay::kRequestHeaderLimit + kHeadSlack)
      FUZZ_CHECK(!pieces.complete, "a head of %zu bytes accepted in pieces", head_end + 4);
    return 0;
  }
  FUZZ_CHECK(whole.complete == pieces.complete &&
                 (!whole.complete ||
                  (whole.consumed == pieces.consumed && whole.chunked == pieces.chunked &&
                   same_message(whole.message, pieces.message))),
             "all at once: %s\nin pieces: %s", describe(whole).c_str(), describe(pieces).c_str());
  if (!whole.complete) return 0;

  const auto& msg = whole.message;
  bool has_transfer_encoding = msg.count(http::field::transfer_encoding) > 0;
  FUZZ_CHECK(whole.chunked == has_transfer_encoding,
             "Transfer-Encoding %s, body read chunked %d: %s",
             has_transfer_encoding ? "present" : "absent", whole.chunked, describe(whole).c_str());
  std::size_t body = msg.body().size();
  FUZZ_CHECK(body <= kMaxBody, "body of %zu bytes accepted over max_body", body);
  FUZZ_CHECK(whole.consumed <= bytes.size(), "consumed %zu of %zu", whole.consumed, bytes.size());
  if (body > 0) {
    ParsedRequest tight = parse_like_listener(bytes, body - 1, bytes.size() + 1);
    FUZZ_CHECK(!tight.complete && tight.error == http::error::body_limit,
               "max_body %zu, body %zu: %s", body - 1, body, describe(tight).c_str());
  }
  ParsedRequest exact = parse_like_listener(bytes, body, bytes.size() + 1);
  FUZZ_CHECK(exact.complete && same_message(exact.message, msg), "max_body = body size: %s",
             describe(exact).c_str());

  // Written out again and read back: the same request. Beast writes each field as `Name: value`,
  // so the head written may be longer than the one read (`Host:x` has no space): it is read
  // back with room for that (a byte per field; found by the long run, 2026-12-01: a head just
  // under the listener's 16 KiB of fields without their space came back 16,371 bytes long).
  std::string again_bytes = write_as_read(msg, whole.chunked);
  const auto fields = static_cast<std::uint32_t>(std::distance(msg.begin(), msg.end()));
  ParsedRequest again = parse_like_listener(again_bytes, kMaxBody + 1, again_bytes.size() + 1,
                                            iarelay::kRequestHeaderLimit + fields + 64);
  FUZZ_CHECK(again.complete && same_message(again.message, msg),
             "request %s\nwritten %s\nread back %s", show(bytes.substr(0, whole.consumed)).c_str(),
             show(again_bytes).c_str(), describe(again).c_str());

  iarelay::HttpRequest request = iarelay::fuzz::to_handler_request(msg);
  FUZZ_CHECK(request.body == msg.body(), "the handler's body differs");
  FUZZ_CHECK(
      request.headers.size() == static_cast<std::size_t>(std::distance(msg.begin(), msg.end())),
      "headers lost");
  std::string_view target = msg.target();
  FUZZ_CHECK(request.path.size() <= target.size(), "decoded path longer than the target");
  FUZZ_CHECK(request.path == iarelay::percent_decode(target.substr(0, target.find('?')), false),
             "path");
  return 0;
}
