// The HTTP/1.1 transport of iarelayd's listener: one event-loop thread (Boost.Asio's epoll
// reactor, Boost.Beast's parser) serves every connection, plain or TLS, with keep-alive,
// pipelining, chunked bodies, `Expect: 100-continue`, a body limit (413) and idle timeouts.
// It knows nothing of routes: each complete request goes to the handler with a Reply to call
// once, from any thread, when the answer is ready (e.g. after the journal's group commit is
// durable). No thread waits for a commit; this is what lets 64 senders share two cores.
// Bounded under hostile input: a head check (the token) answers before any body is read, and
// connections past max_connections get a 503 and are closed instead of using up descriptors.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace iarelay {

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string path;                                          // percent-decoded, without the query
  std::vector<std::pair<std::string, std::string>> query;    // decoded, in order
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;

  // The first header / query parameter of that name (headers: case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const;
  std::optional<std::string_view> param(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// Sends the response of one request. Call exactly once, from any thread.
using HttpReply = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(HttpRequest, HttpReply)>;

struct HttpListenerOptions {
  std::string host;               // "0.0.0.0", "127.0.0.1", "::1" ...
  int port = 0;                   // 0: an ephemeral port
  std::string tls_cert, tls_key;  // both set: TLS
  std::size_t max_body = 1 << 20;
  // The 413 answer's message: it names the limit and where it is configured.
  std::string body_too_large = "request body is larger than max_body";
  int idle_seconds = 5;  // a keep-alive connection idle this long is closed
  // Open connections served at once; a new one past it is answered 503 (plain HTTP; closed
  // without a word under TLS) and closed.
  std::size_t max_connections = 1024;
  // Called with each request's head (method, path, query, headers; empty body) as soon as the
  // header is read, before the body is read or `100 Continue` sent. A response is sent at once
  // and the connection closed, the body never read (a 401 must not wait for 10 MB). Loop thread.
  std::function<std::optional<HttpResponse>(const HttpRequest& head)> check_head;
  // Told of each answer the transport gives itself (400 malformed, 413, 431, 503 stopping),
  // with the request's decoded path when its header was read ("" otherwise). Loop thread.
  std::function<void(const std::string& path, int status)> on_refused;
};

class HttpListener {
 public:
  // Binds and starts the loop thread. Errors name the address.
  static Result<std::unique_ptr<HttpListener>> start(HttpListenerOptions options,
                                                     HttpHandler handler);
  virtual ~HttpListener() = default;
  // Stops accepting, answers 503 to requests that arrive from now on, waits (up to `grace`
  // seconds) until every request handed to the handler was answered, then closes everything.
  virtual void stop(int grace_seconds) = 0;
  virtual int port() const = 0;
};

// Percent-decoding of a path segment or (plus_is_space) a query component.
std::string percent_decode(std::string_view s, bool plus_is_space);

}  // namespace iarelay
