// The listener's request set-up and head decoding (see the header), in a unit of their own so
// the HTTP fuzz targets call the listener's code rather than a copy of it.
#include "intake/http_request_parser.h"

#include <string_view>
#include <vector>

namespace iarelay {

void limit_request_parser(RequestParser& parser, std::size_t max_body) {
  parser.header_limit(kRequestHeaderLimit);
  parser.body_limit(max_body);
}

HttpRequest request_head(const RequestMessage& msg) {
  HttpRequest r;
  r.method = std::string(msg.method_string());
  std::string_view target = msg.target();
  auto q = target.find('?');
  r.path = percent_decode(target.substr(0, q), false);
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      auto amp = rest.find('&');
      std::string_view part = rest.substr(0, amp);
      if (!part.empty()) {
        auto eq = part.find('=');
        r.query.emplace_back(percent_decode(part.substr(0, eq), true),
                             eq == std::string_view::npos
                                 ? std::string()
                                 : percent_decode(part.substr(eq + 1), true));
      }
      if (amp == std::string_view::npos) break;
      rest = rest.substr(amp + 1);
    }
  }
  r.headers.reserve(8);
  for (const auto& f : msg)
    r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  return r;
}

std::optional<std::pair<int, std::string>> transfer_encoding_refusal(const HttpRequest& head,
                                                                     unsigned version) {
  std::vector<std::string_view> codings;  // every field's list elements, in order
  bool present = false;
  for (const auto& [name, value] : head.headers) {
    if (!boost::beast::iequals(name, "transfer-encoding")) continue;
    present = true;
    std::string_view rest = value;
    for (;;) {
      auto comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (!item.empty()) codings.push_back(item);  // a list may hold empty elements
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (!present) return std::nullopt;
  if (version < 11) return std::pair(400, std::string("Transfer-Encoding on an HTTP/1.0 request"));
  if (codings.empty() || !boost::beast::iequals(codings.back(), "chunked"))
    return std::pair(400, std::string("Transfer-Encoding does not end in chunked: the body's "
                                      "length is unknown"));
  if (codings.size() > 1)
    return std::pair(501, std::string("transfer codings before chunked are not implemented "
                                      "(only Transfer-Encoding: chunked)"));
  return std::nullopt;
}

}  // namespace iarelay
