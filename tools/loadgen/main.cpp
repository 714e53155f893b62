// iarelay-loadgen (README.md, "What is here"): posts realistic webhooks to one or several iarelayd
// intakes over --concurrency keep-alive connections (one thread), retries each until 2xx (on the
// next relay when there are several), records every accepted id (flushed line by line), shows
// progress on stderr and prints a summary on stdout.
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/tokens.h"
#include "payloads.h"
#include "stand_in_options.h"

namespace po = boost::program_options;
using iarelay::loadgen::Dialect;
using iarelay::loadgen::Generated;
using iarelay::loadgen::GeneratorOptions;
using iarelay::loadgen::PayloadGenerator;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(60);

std::atomic<bool> g_interrupted{false};
void on_signal(int) {
  g_interrupted.store(true);
}

// How the token goes to the relay (docs/operations.md "Authentication").
enum class Auth { kBearer, kBasic, kQuery };

struct Options {
  // Each relay's base URL (--url, repeatable), without trailing slashes: all http:// or all
  // https://.
  std::vector<std::string> urls;
  std::string service, agent, token, record;
  Auth auth = Auth::kBearer;
  std::string user = "xmatters";  // HTTP Basic's user name
  std::uint64_t count = 1000;
  double rate = 0;  // webhooks per second overall; 0: as fast as possible
  int concurrency = 8;
  bool idempotency = true;
  double give_up_seconds = 120;
  GeneratorOptions gen;
};

// Counters shared by the sender and the progress thread.
struct Totals {
  explicit Totals(size_t urls) : accepted_by(urls) {}
  std::atomic<std::uint64_t> started{0};   // webhooks taken by a worker
  std::atomic<std::uint64_t> requests{0};  // HTTP requests made (including retries)
  std::atomic<std::uint64_t> accepted{0};
  std::vector<std::atomic<std::uint64_t>> accepted_by;  // per --url, in the order given
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> retried{0};
  std::atomic<std::uint64_t> failed{0};
};

// The record file: one JSON line per accepted webhook, written through to the OS at once, so
// it holds every id that got a 2xx even if the daemon (or this program) dies right after.
class Recorder {
 public:
  bool open(const std::string& path) {
    if (path.empty()) return true;
    file_ = std::fopen(path.c_str(), "a");
    return file_ != nullptr;
  }
  ~Recorder() {
    if (file_) std::fclose(file_);
  }
  bool enabled() const { return file_ != nullptr; }
  void write(const std::string& line) {
    if (!file_) return;
    std::lock_guard lock(mu_);
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fputc('\n', file_);
    std::fflush(file_);
  }

 private:
  std::mutex mu_;
  std::FILE* file_ = nullptr;
};

size_t collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t header_line(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  constexpr std::string_view kRetryAfter = "retry-after:";
  if (line.size() > kRetryAfter.size()) {
    std::string lower = line.substr(0, kRetryAfter.size());
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == kRetryAfter)
      *static_cast<long*>(user) = std::atol(line.c_str() + kRetryAfter.size());
  }
  return size * n;
}

// All connections driven by one thread through libcurl's multi interface: one easy handle
// (and so one keep-alive connection) per slot of --concurrency. Far fewer context switches than
// a thread per connection, which matters on a small machine shared with the relay under test.
class Sender {
 public:
  Sender(const Options& o, const PayloadGenerator& gen, Totals& totals, Recorder& recorder,
         Clock::time_point start)
      : o_(o),
        gen_(gen),
        totals_(totals),
        recorder_(recorder),
        start_(start),
        event_seq_(std::min<std::uint64_t>(o.gen.events, 1 << 20)),
        rng_(std::random_device{}()) {
    run_id_ = [this] {
      char buf[17];
      std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng_()));
      return std::string(buf);
    }();
  }

  bool run() {
    multi_ = curl_multi_init();
    if (!multi_) return false;
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) return false;
    // Room for a keep-alive connection from every slot to every relay.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                      static_cast<long>(o_.concurrency) * static_cast<long>(o_.urls.size()));
    // libcurl tells which sockets to watch and when to call it back; epoll watches them, so a
    // wake-up costs one event, not a pass over every connection.
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    // The path and query every relay is sent, after its base URL.
    CURL* probe = curl_easy_init();
    char* service = curl_easy_escape(probe, o_.service.c_str(), 0);
    std::string path = std::string("/v1/webhooks/") + service;
    curl_free(service);
    if (!o_.agent.empty()) {
      char* agent = curl_easy_escape(probe, o_.agent.c_str(), 0);
      path += std::string("?agent=") + agent;
      curl_free(agent);
    }
    if (o_.auth == Auth::kQuery && !o_.token.empty()) {
      char* token = curl_easy_escape(probe, o_.token.c_str(), 0);
      path += std::string(o_.agent.empty() ? "?" : "&") + "token=" + token;
      curl_free(token);
    }
    curl_easy_cleanup(probe);
    targets_.resize(o_.urls.size());
    for (size_t i = 0; i < targets_.size(); ++i) targets_[i].url = o_.urls[i] + path;
    // The same header on every request, by either path (raw sockets or libcurl).
    if (!o_.token.empty() && o_.auth == Auth::kBearer)
      authorization_ = "Authorization: Bearer " + o_.token;
    if (!o_.token.empty() && o_.auth == Auth::kBasic)
      authorization_ = "Authorization: Basic " + iarelay::base64_encode(o_.user + ":" + o_.token);
    // The target as it goes out, the token (--auth query) redacted.
    static const char* const kAuthNames[] = {"bearer", "basic", "query"};
    for (const Target& target : targets_)
      std::cerr << "iarelay-loadgen: POST " << iarelay::redact_token_param(target.url) << " ("
                << (o_.token.empty()
                        ? "no token"
                        : std::string("--auth ") + kAuthNames[static_cast<int>(o_.auth)])
                << ")\n";
    // main() has made sure that either every URL is http:// or none is.
    raw_ = targets_.front().url.rfind("http://", 0) == 0;
    for (Target& target : targets_)
      if (raw_ && !setup_raw(target)) return false;
    std::uint64_t slots =
        std::min<std::uint64_t>(o_.concurrency, std::max<std::uint64_t>(o_.count, 1));
    slots_.resize(slots);
    for (auto& slot : slots_) {
      slot.easy = curl_easy_init();
      if (!slot.easy) return false;
      configure(slot);
    }
    loop();
    for (auto& slot : slots_) {
      if (slot.fd >= 0) ::close(slot.fd);
      curl_slist_free_all(slot.headers);
      curl_easy_cleanup(slot.easy);
    }
    curl_multi_cleanup(multi_);
    ::close(epoll_);
    return true;
  }

  std::vector<double>& latencies_ms() { return latencies_ms_; }

 private:
  // One relay (--url) and where its requests go.
  struct Target {
    std::string url;  // the request URL, with the token when --auth query: never shown
    // Plain http:// only (see setup_raw): the request target, the Host header and the address.
    std::string path, host_header;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    int family = AF_INET;
  };

  struct Slot {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string response;
    long retry_after = -1;
    bool busy = false;     // holds a webhook not yet accepted or given up
    bool waiting = false;  // busy, sleeping until retry_at before the next attempt
    Clock::time_point retry_at, first_try, sent_at;
    std::uint64_t n = 0;
    Generated g;
    std::uint32_t seq_in_event = 0;
    int attempt = 0;
    size_t target = 0;  // the relay (index in targets_) of the current attempt
    double backoff = 0.05;
    // Plain http:// only (see send_raw): the connection, to targets_[fd_target], and the
    // request/response bytes.
    int fd = -1;
    size_t fd_target = 0;
    bool connecting = false, want_out = false;
    std::string out, in;
    size_t out_off = 0;
  };

  void configure(Slot& slot) {
    CURL* c = slot.easy;
    curl_easy_setopt(c, CURLOPT_URL, targets_.front().url.c_str());
    curl_easy_setopt(c, CURLOPT_PRIVATE, &slot);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &slot.response);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_line);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &slot.retry_after);
    // A self-signed test certificate is expected with https:// URLs on loopback.
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }

  static int on_socket(CURL*, curl_socket_t fd, int what, void* self, void*) {
    int ep = static_cast<Sender*>(self)->epoll_;
    if (what == CURL_POLL_REMOVE) {
      ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
      return 0;
    }
    epoll_event ev{};
    ev.data.fd = fd;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev.events |= EPOLLOUT;
    if (::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0) ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
  }

  static int on_timer(CURLM*, long timeout_ms, void* self) {
    auto* s = static_cast<Sender*>(self);
    s->timer_at_ = timeout_ms < 0 ? Clock::time_point::max()
                                  : Clock::now() + std::chrono::milliseconds(timeout_ms);
    return 0;
  }

  // Plain http:// is spoken directly over non-blocking sockets: one send() and one recv() per
  // webhook and no per-request epoll_ctl, where libcurl adds socket re-registrations and poll()
  // calls that cost more CPU than the relay's own intake on a 2-core machine. https:// still
  // goes through libcurl.
  bool setup_raw(Target& target) {
    std::string rest = target.url.substr(7);
    size_t slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    target.path = slash == std::string::npos ? "/" : rest.substr(slash);
    std::string host = authority, port = "80";
    if (!authority.empty() && authority.front() == '[') {
      size_t close = authority.find(']');
      host = authority.substr(1, close - 1);
      if (close + 1 < authority.size() && authority[close + 1] == ':')
        port = authority.substr(close + 2);
    } else if (size_t colon = authority.rfind(':'); colon != std::string::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0 || !found) {
      std::cerr << "iarelay-loadgen: cannot resolve " << authority << ": " << gai_strerror(rc)
                << "\n";
      return false;
    }
    std::memcpy(&target.addr, found->ai_addr, found->ai_addrlen);
    target.addr_len = found->ai_addrlen;
    target.family = found->ai_family;
    ::freeaddrinfo(found);
    target.host_header = authority;
    return true;
  }

  void watch(Slot& slot, bool out) {
    epoll_event ev{};
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
    ev.data.u64 = static_cast<std::uint64_t>(&slot - slots_.data());
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, slot.fd, &ev);
    slot.want_out = out;
  }

  void close_raw(Slot& slot) {
    if (slot.fd < 0) return;
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, slot.fd, nullptr);
    ::close(slot.fd);
    slot.fd = -1;
    slot.connecting = false;
    slot.want_out = false;
  }

  void send_raw(Slot& slot) {
    const Target& target = targets_[slot.target];
    const std::string& body = slot.g.body;
    slot.out.clear();
    slot.out +=
        "POST " + target.path + " HTTP/1.1\r\nHost: " + target.host_header +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n";
    if (!authorization_.empty()) slot.out += authorization_ + "\r\n";
    if (o_.idempotency)
      slot.out += "Idempotency-Key: " + run_id_ + "-" + std::to_string(slot.n) + "\r\n";
    slot.out += "\r\n";
    slot.out += body;
    slot.out_off = 0;
    slot.in.clear();
    // A slot keeps a connection to one relay: an attempt bound for another one reconnects.
    if (slot.fd >= 0 && slot.fd_target != slot.target) close_raw(slot);
    if (slot.fd < 0) {
      slot.fd = ::socket(target.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (slot.fd < 0) return fail_raw(slot, std::string("socket: ") + std::strerror(errno));
      slot.fd_target = slot.target;
      int one = 1;
      ::setsockopt(slot.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT;
      ev.data.u64 = static_cast<std::uint64_t>(&slot - slots_.data());
      ::epoll_ctl(epoll_, EPOLL_CTL_ADD, slot.fd, &ev);
      slot.want_out = true;
      if (::connect(slot.fd, reinterpret_cast<const sockaddr*>(&target.addr), target.addr_len) !=
          0) {
        if (errno != EINPROGRESS)
          return fail_raw(slot, std::string("connect: ") + std::strerror(errno));
        slot.connecting = true;
        return;  // the request goes out once the connection is writable
      }
    }
    write_raw(slot);
  }

  void write_raw(Slot& slot) {
    while (slot.out_off < slot.out.size()) {
      ssize_t n = ::send(slot.fd, slot.out.data() + slot.out_off, slot.out.size() - slot.out_off,
                         MSG_NOSIGNAL);
      if (n > 0) {
        slot.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!slot.want_out) watch(slot, true);
        return;
      }
      return fail_raw(slot, std::string("send: ") + std::strerror(errno));
    }
    if (slot.want_out) watch(slot, false);
  }

  void on_raw_event(Slot& slot, std::uint32_t events) {
    if (slot.fd < 0 || !slot.busy || slot.waiting) {
      close_raw(slot);  // an idle keep-alive connection the server closed
      return;
    }
    if (slot.connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(slot.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return fail_raw(slot, std::string("connect: ") + std::strerror(err));
      if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      slot.connecting = false;
    }
    if (slot.out_off < slot.out.size()) {
      write_raw(slot);
      if (slot.fd < 0 || slot.out_off < slot.out.size()) return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(slot.fd, buf, sizeof buf, 0);
      if (n > 0) {
        slot.in.append(buf, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < sizeof buf) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return fail_raw(slot, n == 0 ? "the relay closed the connection"
                                   : std::string("recv: ") + std::strerror(errno));
    }
    parse_raw(slot);
  }

  // Completes the webhook's attempt once a whole response (header and Content-Length body) is in.
  void parse_raw(Slot& slot) {
    size_t end = slot.in.find("\r\n\r\n");
    if (end == std::string::npos) return;
    long status = 0;
    if (slot.in.size() < 12 || std::sscanf(slot.in.c_str(), "HTTP/%*d.%*d %ld", &status) != 1)
      return fail_raw(slot, "malformed HTTP response");
    size_t length = 0;
    bool close = slot.in.compare(0, 8, "HTTP/1.0") == 0;
    slot.retry_after = -1;
    for (size_t line = slot.in.find("\r\n") + 2; line < end;) {
      size_t eol = slot.in.find("\r\n", line);
      std::string_view h(slot.in.data() + line, eol - line);
      auto value = [&](std::string_view name) -> std::optional<std::string_view> {
        if (h.size() <= name.size() || h[name.size()] != ':') return std::nullopt;
        for (size_t i = 0; i < name.size(); ++i)
          if (std::tolower(static_cast<unsigned char>(h[i])) != name[i]) return std::nullopt;
        std::string_view v = h.substr(name.size() + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        return v;
      };
      if (auto v = value("content-length"))
        length = std::strtoul(std::string(*v).c_str(), nullptr, 10);
      if (auto v = value("retry-after")) slot.retry_after = std::atol(std::string(*v).c_str());
      if (auto v = value("connection"); v && (*v == "close" || *v == "Close")) close = true;
      line = eol + 2;
    }
    if (slot.in.size() < end + 4 + length) return;  // body still arriving
    slot.response = slot.in.substr(end + 4, length);
    if (close) close_raw(slot);
    complete(slot, true, status, "");
  }

  void fail_raw(Slot& slot, const std::string& error) {
    close_raw(slot);
    complete(slot, false, 0, error);
  }

  void loop() {
    epoll_event events[64];
    int running = 0;
    for (;;) {
      auto now = Clock::now();
      auto wake = now + std::chrono::milliseconds(100);
      bool any_busy = false;
      for (auto& slot : slots_) {
        if (raw_ && slot.busy && !slot.waiting && now - slot.sent_at > kRequestTimeout)
          fail_raw(slot, "no answer in 60 s");
        if (!slot.busy)
          take_next(slot, now, wake);
        else if (slot.waiting && slot.retry_at <= now)
          launch(slot);
        else if (slot.waiting)
          wake = std::min(wake, slot.retry_at);
        any_busy |= slot.busy;
      }
      if (!any_busy && (next_ >= o_.count || g_interrupted.load())) return;
      if (!raw_ && timer_at_ <= Clock::now())
        curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
      if (completed_ || collect_finished()) {
        completed_ = false;
        continue;  // start the next webhooks before sleeping
      }
      wake = std::min(wake, timer_at_);
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now()).count();
      int n = ::epoll_wait(epoll_, events, 64, static_cast<int>(std::clamp<long long>(ms, 0, 100)));
      for (int i = 0; i < n && raw_; ++i)
        on_raw_event(slots_[static_cast<size_t>(events[i].data.u64)], events[i].events);
      for (int i = 0; i < n && !raw_; ++i) {
        int mask = 0;
        if (events[i].events & EPOLLIN) mask |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
        curl_multi_socket_action(multi_, events[i].data.fd, mask, &running);
      }
      if (!raw_ && n <= 0 && timer_at_ <= Clock::now())
        curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
      if (!raw_) collect_finished();
    }
  }

  // Hands every finished transfer to finished(); true if there was one.
  bool collect_finished() {
    bool freed = false;
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      Slot* slot = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&slot));
      CURLcode rc = m->data.result;
      curl_multi_remove_handle(multi_, m->easy_handle);
      finished(*slot, rc);
      freed = true;
    }
    return freed;
  }

  void take_next(Slot& slot, Clock::time_point now, Clock::time_point& wake) {
    if (next_ >= o_.count || g_interrupted.load()) return;
    if (o_.rate > 0) {
      auto due = start_ + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(static_cast<double>(next_) / o_.rate));
      if (due > now) {
        wake = std::min(wake, due);
        return;
      }
    }
    slot.n = next_++;
    totals_.started.fetch_add(1);
    slot.g = gen_.make(slot.n);
    slot.seq_in_event = ++event_seq_[slot.g.event % event_seq_.size()];
    slot.busy = true;
    slot.attempt = 0;
    slot.backoff = 0.05;
    slot.first_try = now;
    if (raw_) return launch(slot);
    curl_slist_free_all(slot.headers);
    slot.headers = curl_slist_append(nullptr, "Content-Type: application/json");
    slot.headers = curl_slist_append(slot.headers, "Expect:");
    if (!authorization_.empty())
      slot.headers = curl_slist_append(slot.headers, authorization_.c_str());
    if (o_.idempotency)
      slot.headers = curl_slist_append(
          slot.headers, ("Idempotency-Key: " + run_id_ + "-" + std::to_string(slot.n)).c_str());
    curl_easy_setopt(slot.easy, CURLOPT_HTTPHEADER, slot.headers);
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDS, slot.g.body.c_str());
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(slot.g.body.size()));
    launch(slot);
  }

  void launch(Slot& slot) {
    slot.waiting = false;
    slot.response.clear();
    slot.retry_after = -1;
    ++slot.attempt;
    // The first attempt goes to relay n % K, each retry to the next one (same Idempotency-Key),
    // so the webhooks of a relay that fails are taken by the others.
    slot.target = static_cast<size_t>((slot.n + static_cast<std::uint64_t>(slot.attempt) - 1) %
                                      targets_.size());
    slot.sent_at = Clock::now();
    if (raw_) return send_raw(slot);
    if (targets_.size() > 1)
      curl_easy_setopt(slot.easy, CURLOPT_URL, targets_[slot.target].url.c_str());
    curl_multi_add_handle(multi_, slot.easy);
  }

  void finished(Slot& slot, CURLcode rc) {
    long status = 0;
    curl_easy_getinfo(slot.easy, CURLINFO_RESPONSE_CODE, &status);
    complete(slot, rc == CURLE_OK, status, rc == CURLE_OK ? "" : curl_easy_strerror(rc));
  }

  // One attempt ended: with an HTTP status (transport_ok) or with a transport error.
  void complete(Slot& slot, bool transport_ok, long status, const std::string& error) {
    completed_ = true;
    totals_.requests.fetch_add(1);
    auto now = Clock::now();
    if (transport_ok && status / 100 == 2) {
      latencies_ms_.push_back(
          std::chrono::duration<double, std::milli>(now - slot.sent_at).count());
      accepted(slot, status);
      slot.busy = false;
      return;
    }
    bool retryable = !transport_ok || status == 408 || status == 429 || status >= 500;
    if (!retryable) {
      totals_.failed.fetch_add(1);
      report("webhook " + std::to_string(slot.n) + " refused with HTTP " + std::to_string(status) +
             ": " + slot.response.substr(0, 300));
      slot.busy = false;
      return;
    }
    double waited = std::chrono::duration<double>(now - slot.first_try).count();
    if (waited > o_.give_up_seconds || g_interrupted.load()) {
      totals_.failed.fetch_add(1);
      report("webhook " + std::to_string(slot.n) + " given up after " +
             std::to_string(slot.attempt) +
             " attempts: " + (!transport_ok ? error : "HTTP " + std::to_string(status)));
      slot.busy = false;
      return;
    }
    totals_.retried.fetch_add(1);
    // Back off with jitter (50 ms doubling to 2 s); a Retry-After from the server wins.
    double sleep = slot.retry_after >= 0
                       ? static_cast<double>(slot.retry_after)
                       : std::uniform_real_distribution<>(slot.backoff / 2, slot.backoff)(rng_);
    slot.backoff = std::min(slot.backoff * 2, 2.0);
    slot.waiting = true;
    slot.retry_at =
        now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(sleep));
  }

  void accepted(const Slot& slot, long status) {
    // When the 2xx answer was complete, on the wall clock, so that a receiver's own timestamps
    // (e.g. an agent's receive time) can be compared with it.
    const auto accepted_at_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    totals_.accepted.fetch_add(1);
    totals_.accepted_by[slot.target].fetch_add(1);
    auto reply = nlohmann::json::parse(slot.response, nullptr, false);
    bool duplicate = reply.is_object() && reply.value("duplicate", false);
    if (duplicate) totals_.duplicates.fetch_add(1);
    if (!recorder_.enabled()) return;
    nlohmann::json line = {
        {"id", reply.is_object() ? reply.value("id", "") : ""},
        {"n", slot.n},
        {"event", std::to_string(slot.g.event)},
        {"type", slot.g.type},
        {"dialect", slot.g.dialect},
        {"seq_in_event", slot.seq_in_event},
        {"service", o_.service},
        {"agent", o_.agent.empty() ? nlohmann::json() : nlohmann::json(o_.agent)},
        {"state", reply.is_object() ? reply.value("state", "") : ""},
        {"duplicate", duplicate},
        {"status", status},
        {"attempts", slot.attempt},
        {"accepted_at_us", accepted_at_us},
        {"url", iarelay::redact_token_param(o_.urls[slot.target])},
    };
    recorder_.write(line.dump());
  }

  void report(const std::string& message) {
    // The first few hard errors are shown in full; the summary counts the rest.
    if (shown_++ < 10) std::cerr << "iarelay-loadgen: " << message << "\n";
  }

  const Options& o_;
  const PayloadGenerator& gen_;
  Totals& totals_;
  Recorder& recorder_;
  Clock::time_point start_;
  std::vector<std::uint32_t> event_seq_;
  std::mt19937_64 rng_;
  std::string run_id_;           // distinguishes this run's Idempotency-Keys from earlier runs'
  std::vector<Target> targets_;  // one per --url, in the order given
  std::string authorization_;    // the Authorization header line, or ""
  CURLM* multi_ = nullptr;
  int epoll_ = -1;
  Clock::time_point timer_at_ = Clock::time_point::max();  // when libcurl wants a call
  bool raw_ = false;        // plain http://: our own sockets, not libcurl
  bool completed_ = false;  // an attempt ended since the loop last started webhooks
  std::vector<Slot> slots_;
  std::uint64_t next_ = 0;
  int shown_ = 0;
  std::vector<double> latencies_ms_;
};

int usage_error(const std::string& message) {
  return iarelay::tools::usage_error("iarelay-loadgen", message);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string types, dialect, token_file, auth;
  po::options_description desc(
      "Usage: iarelay-loadgen --url URL [--url URL2 ...] --service S [options]\n\n"
      "Sends realistic xMatters webhooks to an iarelayd intake (POST URL/v1/webhooks/S), "
      "retrying each until it is accepted (2xx). Prints progress on stderr each second and a "
      "summary on stdout. Exit 0 when every webhook was accepted, 1 otherwise, 2 on bad usage.\n\n"
      "With several --url (relays sharing one journal or database), webhook n goes first to "
      "the (n mod K)-th of the K URLs and each retry to the next URL, with the same "
      "Idempotency-Key, so the webhooks of a relay that fails are taken by the others; the "
      "summary's accepted_by says how many each URL accepted.\n\n"
      "Options");
  desc.add_options()("help", "show this help and exit")("version", "show the version and exit")(
      "url", po::value(&o.urls),
      "base URL of the relay, e.g. http://127.0.0.1:8080; repeat it for several relays (all "
      "http:// or all https://)")("service", po::value(&o.service),
                                  "integration service (hpnnmi or applications|hpnnmi)")(
      "agent", po::value(&o.agent),
      "agent identifier to address (?agent=), e.g. host/10.0.0.1:8081")(
      "count", po::value(&o.count)->default_value(1000), "webhooks to send")(
      "rate", po::value(&o.rate)->default_value(0), "webhooks per second overall (0: unlimited)")(
      "concurrency", po::value(&o.concurrency)->default_value(8),
      "parallel connections (keep-alive)")(
      "types", po::value(&types)->default_value("status,deliveryStatus,response,annotation"),
      "trigger types to mix")("dialect", po::value(&dialect)->default_value("mixed"),
                              "payload dialect: ib (Integration Builder), ia (Integration "
                              "Agent) or mixed")(
      "events", po::value(&o.gen.events)->default_value(100), "distinct alerts (event ids)")(
      "payload-size", po::value(&o.gen.payload_size)->default_value(0),
      "pad payloads to about this many bytes with a form property (0: natural size)")(
      "seed", po::value(&o.gen.seed)->default_value(1), "seed of the payload generator")(
      "token-file", po::value(&token_file),
      "file holding the intake token, the first of its lines that is not blank (or "
      "IARELAY_LOADGEN_TOKEN); never on the command line")(
      "auth", po::value(&auth)->default_value("bearer"),
      "how the token is sent: bearer (Authorization: Bearer), basic (HTTP Basic, the token as "
      "password, as xMatters sends it) or query (?token=, the weaker choice)")(
      "user", po::value(&o.user)->default_value("xmatters"),
      "HTTP Basic's user name (--auth basic)")(
      "record", po::value(&o.record),
      "append one JSON line per accepted webhook to this file: id, n, event, type, dialect, "
      "seq_in_event, service, agent, state, duplicate, status, attempts, accepted_at_us (wall "
      "clock, microseconds since the epoch, when the 2xx answer was complete), url (the --url "
      "that accepted it)")(
      "no-idempotency-key",
      "do not send an Idempotency-Key (by default each webhook carries one, so a retry after "
      "a lost answer is stored once)")(
      "give-up-after", po::value(&o.give_up_seconds)->default_value(120),
      "seconds of retrying after which a webhook counts as failed");
  po::variables_map vm;
  if (auto done = iarelay::tools::parse_options(argc, argv, desc, vm, "iarelay-loadgen"))
    return *done;
  if (o.urls.empty()) return usage_error("--url is required");
  if (o.service.empty()) return usage_error("--service is required");
  for (auto& url : o.urls) {
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (url.empty()) return usage_error("--url is empty");
  }
  // Plain http:// goes over the loadgen's own sockets, anything else through libcurl: one path
  // per run keeps the sender simple.
  auto plain = [](const std::string& url) { return url.rfind("http://", 0) == 0; };
  if (std::any_of(o.urls.begin(), o.urls.end(), plain) &&
      !std::all_of(o.urls.begin(), o.urls.end(), plain))
    return usage_error("--url: give all http:// or all https:// URLs, not a mix");
  if (o.concurrency < 1 || o.concurrency > 1024)
    return usage_error("--concurrency must be between 1 and 1024");
  if (o.rate < 0) return usage_error("--rate must be >= 0");
  o.idempotency = !vm.count("no-idempotency-key");
  o.gen.types = split_list(types);
  if (o.gen.types.empty()) return usage_error("--types is empty");
  if (dialect == "ib")
    o.gen.dialect = Dialect::kIntegrationBuilder;
  else if (dialect == "ia")
    o.gen.dialect = Dialect::kIntegrationAgent;
  else if (dialect == "mixed")
    o.gen.dialect = Dialect::kMixed;
  else
    return usage_error("--dialect must be ib, ia or mixed, not '" + dialect + "'");
  if (auth == "bearer")
    o.auth = Auth::kBearer;
  else if (auth == "basic")
    o.auth = Auth::kBasic;
  else if (auth == "query")
    o.auth = Auth::kQuery;
  else
    return usage_error("--auth must be bearer, basic or query, not '" + auth + "'");
  if (o.user.find(':') != std::string::npos)
    return usage_error("--user must not contain ':' (HTTP Basic puts one after the user name)");
  auto tokens = iarelay::read_tokens(token_file, "IARELAY_LOADGEN_TOKEN");
  if (!tokens) {
    std::cerr << "iarelay-loadgen: " << tokens.status().message() << "\n";
    return 1;
  }
  if (!tokens->empty()) o.token = tokens->front();

  Recorder recorder;
  if (!recorder.open(o.record)) {
    std::cerr << "iarelay-loadgen: cannot open record file " << o.record << "\n";
    return 1;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);

  PayloadGenerator generator(o.gen);
  Totals totals(o.urls.size());
  auto start = Clock::now();
  Sender sender(o, generator, totals, recorder, start);
  std::atomic<bool> done{false};
  // "accepted_by: URL=N URL=N", a token in a URL redacted.
  auto accepted_by = [&] {
    std::string out = "accepted_by:";
    for (size_t i = 0; i < o.urls.size(); ++i)
      out += " " + iarelay::redact_token_param(o.urls[i]) + "=" +
             std::to_string(totals.accepted_by[i].load());
    return out;
  };
  std::thread progress([&] {
    std::uint64_t last = 0;
    auto tick = start;
    while (!done.load()) {
      tick += std::chrono::seconds(1);
      while (!done.load() && Clock::now() < tick)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (done.load()) break;
      std::uint64_t acc = totals.accepted.load();
      // With one relay the split says nothing the line does not.
      std::string split = o.urls.size() > 1 ? "  " + accepted_by() : "";
      std::fprintf(stderr, "[%5.0fs] accepted %llu/%llu  retried %llu  failed %llu  %llu/s%s\n",
                   std::chrono::duration<double>(Clock::now() - start).count(),
                   static_cast<unsigned long long>(acc), static_cast<unsigned long long>(o.count),
                   static_cast<unsigned long long>(totals.retried.load()),
                   static_cast<unsigned long long>(totals.failed.load()),
                   static_cast<unsigned long long>(acc - last), split.c_str());
      last = acc;
    }
  });
  bool ran = sender.run();
  done.store(true);
  progress.join();
  if (!ran) {
    std::cerr << "iarelay-loadgen: cannot initialise libcurl\n";
    return 1;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double>& latencies = sender.latencies_ms();
  std::sort(latencies.begin(), latencies.end());
  std::uint64_t accepted = totals.accepted.load();
  std::printf("sent: %llu\n", static_cast<unsigned long long>(totals.started.load()));
  std::printf("requests: %llu\n", static_cast<unsigned long long>(totals.requests.load()));
  std::printf("accepted: %llu\n", static_cast<unsigned long long>(accepted));
  std::printf("%s\n", accepted_by().c_str());
  std::printf("duplicates: %llu\n", static_cast<unsigned long long>(totals.duplicates.load()));
  std::printf("retried: %llu\n", static_cast<unsigned long long>(totals.retried.load()));
  std::printf("failed: %llu\n", static_cast<unsigned long long>(totals.failed.load()));
  std::printf("elapsed_s: %.3f\n", elapsed);
  std::printf("throughput_per_s: %.0f\n",
              elapsed > 0 ? static_cast<double>(accepted) / elapsed : 0);
  std::printf("latency_p50_ms: %.2f\n", percentile(latencies, 0.50));
  std::printf("latency_p99_ms: %.2f\n", percentile(latencies, 0.99));
  std::printf("latency_max_ms: %.2f\n", latencies.empty() ? 0 : latencies.back());
  std::fflush(stdout);
  curl_global_cleanup();
  return accepted == o.count && totals.failed.load() == 0 ? 0 : 1;
}
