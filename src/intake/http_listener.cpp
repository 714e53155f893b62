// Boost.Beast over Boost.Asio, one io_context run by one thread. A Session reads one request
// (header, then `100 Continue` if asked, then body), hands it to the handler, and reads the next
// only after the answer is written (so pipelined requests are answered in order). Sessions that
// wait for an answer are held in busy_, so no other thread ever owns (or destroys) a Session:
// a Reply only posts to the loop, through a Poster that stop() disables.
#include "intake/http_listener.h"

#include <spdlog/spdlog.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "intake/http_request_parser.h"

namespace iarelay {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr int kListenBacklog = 1024;
constexpr auto kBodyTimeout = std::chrono::seconds(60);
constexpr auto kWriteTimeout = std::chrono::seconds(30);
constexpr auto kAcceptRetry = std::chrono::milliseconds(50);
// After a final answer, how long what the client still sends is read and dropped before the
// connection closes (closing with unread data sends a reset that can destroy the answer).
constexpr auto kLingerTimeout = std::chrono::seconds(1);
// Refused connections being answered at once; past it, further ones are closed without a word.
constexpr int kMaxRefusing = 64;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string json_error(std::string_view message) {
  std::string out = "{\"error\":\"";
  for (char c : message) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out + "\"}";
}

// Hands work to the loop from any thread until disabled.
class Poster {
 public:
  explicit Poster(asio::io_context* ioc) : ioc_(ioc) {}
  template <typename F>
  void post(F&& f) {
    std::lock_guard lock(mu_);
    if (ioc_) asio::post(*ioc_, std::forward<F>(f));
  }
  void disable() {
    std::lock_guard lock(mu_);
    ioc_ = nullptr;
  }

 private:
  std::mutex mu_;
  asio::io_context* ioc_;  // GUARDED_BY(mu_)
};

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void close() = 0;
  virtual bool idle() const = 0;
};

// What sessions share with the listener. Touched on the loop thread only, except inflight.
struct LoopState {
  HttpHandler handler;
  HttpListenerOptions options;
  std::shared_ptr<Poster> poster;
  bool stopping = false;
  std::atomic<int> inflight{0};  // requests handed to the handler, answer not yet written
  std::unordered_set<SessionBase*> sessions;
  std::unordered_map<SessionBase*, std::shared_ptr<SessionBase>> busy;
  int refusing = 0;  // refused connections still being answered
};

// A connection past max_connections: a 503, then linger and close.
class Refusal : public std::enable_shared_from_this<Refusal> {
 public:
  Refusal(LoopState& state, tcp::socket socket) : state_(state), stream_(std::move(socket)) {
    ++state_.refusing;
  }
  ~Refusal() { --state_.refusing; }
  void run() {
    std::string body = "{\"error\":\"too many connections (max_connections " +
                       std::to_string(state_.options.max_connections) + "); retry\"}";
    answer_ =
        "HTTP/1.1 503 Service Unavailable\r\nServer: iarelayd\r\nContent-Type: "
        "application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    stream_.expires_after(kLingerTimeout);
    asio::async_write(stream_, asio::buffer(answer_),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->close();
                        beast::error_code ignored;
                        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                        self->drain();
                      });
  }

 private:
  void drain() {
    stream_.async_read_some(asio::buffer(sink_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->drain();
                            });
  }
  void close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  LoopState& state_;
  beast::tcp_stream stream_;
  std::string answer_;
  std::array<char, 4096> sink_;
};

template <typename Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <typename... Args>
  Session(LoopState& state, Args&&... args) : state_(state), stream_(std::forward<Args>(args)...) {
    state_.sessions.insert(this);
  }
  ~Session() override { state_.sessions.erase(this); }

  void run() {
    if constexpr (kTls) {
      lowest().expires_after(kBodyTimeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->close();
                                self->read_header();
                              });
    } else {
      read_header();
    }
  }

  void close() override {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }
  bool idle() const override { return idle_; }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void read_header() {
    idle_ = true;
    parser_.emplace();
    limit_request_parser(*parser_, state_.options.max_body);
    lowest().expires_after(std::chrono::seconds(state_.options.idle_seconds));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_header(ec);
                            });
  }

  void on_header(beast::error_code ec) {
    idle_ = false;
    if (ec) return read_failed(ec);
    head_ = request_head(parser_->get());
    if (auto refused = transfer_encoding_refusal(head_, parser_->get().version()))
      return send_final(refused->first, refused->second);
    if (state_.options.check_head) {
      // Before the body: a refused request costs its header, not its body.
      if (auto refused = state_.options.check_head(head_)) return send_final(std::move(*refused));
    }
    lowest().expires_after(kBodyTimeout);
    auto expect = parser_->get().find(http::field::expect);
    if (expect != parser_->get().end() && iequals(expect->value(), "100-continue") &&
        !parser_->is_done()) {
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = this->shared_from_this()](beast::error_code wec, std::size_t) {
                          if (wec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_body(ec);
                     });
  }

  void read_failed(beast::error_code ec) {
    if (ec == http::error::body_limit) return send_final(413, state_.options.body_too_large);
    if (ec == http::error::header_limit)
      return send_final(431, "request header is larger than 16 KiB");
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::operation_aborted || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::bad_descriptor ||
        ec.category() == asio::error::get_ssl_category() ||
        ec == asio::ssl::error::stream_truncated)
      return close();
    send_final(400, "malformed HTTP request: " + ec.message());
  }

  void on_body(beast::error_code ec) {
    if (ec) return read_failed(ec);
    lowest().expires_never();
    keep_alive_ = parser_->get().keep_alive();
    version_ = parser_->get().version();
    if (state_.stopping) return send_final(503, "iarelayd is shutting down; retry");
    HttpRequest request = std::move(head_);
    request.body = std::move(parser_->release().body());
    parser_.reset();
    auto self = this->shared_from_this();
    state_.busy.emplace(this, self);
    ++state_.inflight;
    std::weak_ptr<Session> weak = self;
    state_.handler(std::move(request),
                   [poster = state_.poster, weak](HttpResponse response) mutable {
                     poster->post([weak, response = std::move(response)]() mutable {
                       if (auto s = weak.lock()) s->send(std::move(response));
                     });
                   });
  }

  // The answer to a request the handler took.
  void send(HttpResponse r) {
    auto self = this->shared_from_this();
    state_.busy.erase(this);
    write(std::move(r), keep_alive_ && !state_.stopping, /*counted=*/true);
  }

  // An answer the transport gives itself, after which the connection closes.
  void send_final(int status, const std::string& message) {
    HttpResponse r;
    r.status = status;
    r.body = json_error(message);
    if (status == 503) r.headers.emplace_back("Retry-After", "1");
    send_final(std::move(r));
  }
  void send_final(HttpResponse r) {
    if (state_.options.on_refused) {
      std::string path;
      if (parser_) {  // the start line may be parsed even when the header failed
        std::string_view target = parser_->get().target();
        path = percent_decode(target.substr(0, target.find('?')), false);
      }
      state_.options.on_refused(path, r.status);
    }
    write(std::move(r), false, /*counted=*/false);
  }

  void write(HttpResponse r, bool keep_alive, bool counted) {
    res_ = {};
    res_.version(version_ ? version_ : 11);
    res_.result(static_cast<unsigned>(r.status));
    res_.set(http::field::server, "iarelayd");
    if (!r.body.empty() || r.status != 204) res_.set(http::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res_.set(k, v);
    res_.body() = std::move(r.body);
    res_.keep_alive(keep_alive);
    res_.prepare_payload();
    lowest().expires_after(kWriteTimeout);
    http::async_write(
        stream_, res_,
        [self = this->shared_from_this(), keep_alive, counted](beast::error_code ec, std::size_t) {
          if (counted) --self->state_.inflight;
          if (ec) return self->close();
          if (!keep_alive) return self->linger();
          self->read_header();
        });
  }

  // After the last answer: stop sending, read and drop what the client still sends (a body we
  // refused to read) until it closes or kLingerTimeout passes, then close. Closing with unread
  // data would send a reset that can destroy the answer before the client reads it.
  void linger() {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    lowest().expires_after(kLingerTimeout);
    drain();
  }
  void drain() {
    lowest().async_read_some(asio::buffer(sink_),
                             [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                               if (ec) return self->close();
                               self->drain();
                             });
  }

  LoopState& state_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  HttpRequest head_;  // the request being read, without its body
  http::response<http::string_body> res_;
  std::array<char, 4096> sink_;  // what linger() drops
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool idle_ = true;
};

class Listener final : public HttpListener {
 public:
  explicit Listener(HttpListenerOptions options, HttpHandler handler) {
    state_.options = std::move(options);
    state_.handler = std::move(handler);
    state_.poster = std::make_shared<Poster>(&ioc_);
  }
  ~Listener() override { stop(0); }

  Status open() {
    const auto& o = state_.options;
    try {
      if (!o.tls_cert.empty() && !o.tls_key.empty()) {
        tls_.emplace(asio::ssl::context::tls_server);
        tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                          asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                          asio::ssl::context::no_tlsv1_1);
        tls_->use_certificate_chain_file(o.tls_cert);
        tls_->use_private_key_file(o.tls_key, asio::ssl::context::pem);
      }
    } catch (const std::exception& e) {
      return Status::invalid_argument("cannot load TLS certificate " + o.tls_cert + " / key " +
                                      o.tls_key + ": " + e.what());
    }
    std::string where = o.host + ":" + std::to_string(o.port);
    try {
      tcp::resolver resolver(ioc_);
      auto endpoints = resolver.resolve(o.host, std::to_string(o.port),
                                        tcp::resolver::passive | tcp::resolver::numeric_service);
      tcp::endpoint endpoint = endpoints.begin()->endpoint();
      acceptor_.open(endpoint.protocol());
      acceptor_.set_option(asio::socket_base::reuse_address(true));
      acceptor_.bind(endpoint);
      acceptor_.listen(kListenBacklog);
      port_ = acceptor_.local_endpoint().port();
    } catch (const std::exception& e) {
      return Status::unavailable("cannot listen on " + where + ": " + e.what());
    }
    accept();
    thread_ = std::thread([this] {
      for (;;) {
        try {
          ioc_.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("HTTP listener: {}", e.what());  // a handler threw; keep serving
        }
      }
    });
    return Status::ok();
  }

  void stop(int grace_seconds) override {
    if (stopped_.exchange(true)) return;
    asio::post(ioc_, [this] {
      state_.stopping = true;
      beast::error_code ec;
      acceptor_.close(ec);
      accept_retry_.cancel();
      for (SessionBase* s :
           std::vector<SessionBase*>(state_.sessions.begin(), state_.sessions.end()))
        if (s->idle()) s->close();
    });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
    while (state_.inflight.load() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    asio::post(ioc_, [this] {
      for (SessionBase* s :
           std::vector<SessionBase*>(state_.sessions.begin(), state_.sessions.end()))
        s->close();
      state_.busy.clear();
    });
    work_.reset();
    if (thread_.joinable()) thread_.join();
    state_.poster->disable();
    state_.busy.clear();
  }

  int port() const override { return port_; }

 private:
  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted || state_.stopping) return;
        // Out of file descriptors (EMFILE) or memory: the pending connection stays in the
        // backlog, so accepting again at once would fail again at once, forever, at 100% CPU.
        // Wait a little; log once per second at most.
        auto now = std::chrono::steady_clock::now();
        if (now - last_accept_warning_ >= std::chrono::seconds(1)) {
          last_accept_warning_ = now;
          spdlog::warn("HTTP listener: accept failed: {} (retrying every {} ms)", ec.message(),
                       kAcceptRetry.count());
        }
        accept_retry_.expires_after(kAcceptRetry);
        accept_retry_.async_wait([this](beast::error_code wec) {
          if (!wec && !state_.stopping) accept();
        });
        return;
      }
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      if (state_.sessions.size() >= state_.options.max_connections) {
        refuse(std::move(socket));
        return accept();
      }
      if (tls_) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(state_, std::move(socket),
                                                                        *tls_)
            ->run();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(state_, std::move(socket))->run();
      }
      accept();
    });
  }

  // A connection past max_connections. TLS peers cannot read a plain answer: closed at once,
  // as are all past kMaxRefusing (an answer in flight holds a descriptor for up to a second).
  void refuse(tcp::socket socket) {
    auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_warning_ >= std::chrono::seconds(1)) {
      last_refusal_warning_ = now;
      spdlog::warn("HTTP listener: {} connections open (max_connections); refusing new ones",
                   state_.sessions.size());
    }
    if (state_.options.on_refused) state_.options.on_refused("", 503);
    if (tls_ || state_.refusing >= kMaxRefusing) {
      beast::error_code ignored;
      socket.close(ignored);
      return;
    }
    std::make_shared<Refusal>(state_, std::move(socket))->run();
  }

  LoopState state_;  // outlives ioc_: sessions destroyed with ioc_ unregister from it
  std::optional<asio::ssl::context> tls_;
  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(ioc_);
  tcp::acceptor acceptor_{ioc_};
  asio::steady_timer accept_retry_{ioc_};
  std::chrono::steady_clock::time_point last_accept_warning_;
  std::chrono::steady_clock::time_point last_refusal_warning_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  int port_ = 0;
};

}  // namespace

std::optional<std::string_view> HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

std::optional<std::string_view> HttpRequest::param(std::string_view name) const {
  for (const auto& [k, v] : query)
    if (k == name) return std::string_view(v);
  return std::nullopt;
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

Result<std::unique_ptr<HttpListener>> HttpListener::start(HttpListenerOptions options,
                                                          HttpHandler handler) {
  auto listener = std::make_unique<Listener>(std::move(options), std::move(handler));
  if (Status s = listener->open(); !s) return s;
  return std::unique_ptr<HttpListener>(std::move(listener));
}

}  // namespace iarelay
