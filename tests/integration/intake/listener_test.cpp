// The HTTP transport under the intake, spoken to over raw sockets: what real senders do that a
// well-behaved client library hides — Expect: 100-continue, chunked bodies, pipelined requests,
// a body over max_body refused before it is sent, a wrong method.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

#include "harness.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using nlohmann::json;
using testing::InProcessRelay;
using testing::make_agent;

constexpr const char* kToken = "s3cret-token";
const std::string kBody =
    R"({"status":"active","eventIdentifier":7,"pad":")" + std::string(2000, 'x') + "\"}";

// A blocking loopback connection with a receive timeout.
class Conn {
 public:
  explicit Conn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Conn() { ::close(fd_); }
  bool ok() const { return ok_; }
  void send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  // Reads until `marker` has been seen `times` times past the start, or EOF / timeout.
  std::string read_until(const std::string& marker, int times = 1) {
    for (;;) {
      size_t seen = 0, pos = 0;
      while ((pos = in_.find(marker, pos)) != std::string::npos) ++seen, pos += marker.size();
      if (seen >= static_cast<size_t>(times)) return in_;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return in_;
      in_.append(buf, static_cast<size_t>(n));
    }
  }
  // Reads one whole response (header + Content-Length body) and removes it from the buffer.
  std::string response() {
    read_until("\r\n\r\n");
    size_t end = in_.find("\r\n\r\n");
    if (end == std::string::npos) return std::exchange(in_, "");
    size_t length = 0;
    auto cl = in_.find("Content-Length: ");
    if (cl != std::string::npos && cl < end) length = std::stoul(in_.substr(cl + 16));
    while (in_.size() < end + 4 + length) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      in_.append(buf, static_cast<size_t>(n));
    }
    std::string r = in_.substr(0, std::min(in_.size(), end + 4 + length));
    in_.erase(0, r.size());
    return r;
  }
  bool closed_by_peer() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::string in_;
};

std::string post_head(const std::string& extra, size_t length) {
  return "POST /v1/webhooks/hpnnmi HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
         std::string(kToken) + "\r\nContent-Type: application/json\r\n" + extra +
         (length == std::string::npos ? std::string()
                                      : "Content-Length: " + std::to_string(length) + "\r\n") +
         "\r\n";
}

json body_json(const std::string& response) {
  auto end = response.find("\r\n\r\n");
  return json::parse(response.substr(end == std::string::npos ? 0 : end + 4), nullptr, false);
}

class ListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<InProcessRelay>(dir_.file("journal.db"),
                                              std::vector{make_agent("a1", {"hpnnmi"})});
    port_ = relay_->start_server(0, kToken, 4096);
    ASSERT_GT(port_, 0);
  }
  std::string stored_payload(const std::string& id) {
    auto db = relay_->reader();
    SQLite::Statement q(*db, "SELECT payload FROM webhooks WHERE id=?");
    q.bind(1, id);
    return q.executeStep() ? q.getColumn(0).getString() : std::string();
  }
  // The response is a 202 whose webhook holds exactly `body`.
  void expect_stored(const std::string& response, const std::string& body) {
    ASSERT_EQ(response.rfind("HTTP/1.1 202", 0), 0u) << response;
    EXPECT_EQ(stored_payload(body_json(response)["id"]), body);
  }
  testing::TempDir dir_;
  std::unique_ptr<InProcessRelay> relay_;
  int port_ = 0;
};

TEST_F(ListenerTest, ExpectContinueGetsA100ThenTheBodyIsStored) {
  Conn c(port_);
  ASSERT_TRUE(c.ok());
  c.send(post_head("Expect: 100-continue\r\n", kBody.size()));
  std::string interim = c.read_until("\r\n\r\n");
  ASSERT_EQ(interim.rfind("HTTP/1.1 100 Continue\r\n", 0), 0u) << interim;
  c.response();  // drops the 100
  c.send(kBody);
  expect_stored(c.response(), kBody);
}

TEST_F(ListenerTest, ExpectContinueOverMaxBodyIsRefusedBeforeTheBodyIsSent) {
  Conn c(port_);
  ASSERT_TRUE(c.ok());
  c.send(post_head("Expect: 100-continue\r\n", 100000));
  std::string r = c.response();
  ASSERT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r;
  EXPECT_NE(body_json(r)["error"].get<std::string>().find("max_body"), std::string::npos);
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(relay_->count(), 0);
}

TEST_F(ListenerTest, ChunkedBodyIsStoredByteForByte) {
  Conn c(port_);
  ASSERT_TRUE(c.ok());
  std::string chunked;
  for (size_t off = 0; off < kBody.size(); off += 700) {
    std::string part = kBody.substr(off, 700);
    char size[16];
    std::snprintf(size, sizeof size, "%zx", part.size());
    chunked += std::string(size) + "\r\n" + part + "\r\n";
  }
  chunked += "0\r\n\r\n";
  c.send(post_head("Transfer-Encoding: chunked\r\n", std::string::npos) + chunked);
  expect_stored(c.response(), kBody);
}

TEST_F(ListenerTest, PipelinedRequestsAreAnsweredInOrder) {
  Conn c(port_);
  ASSERT_TRUE(c.ok());
  std::string both;
  std::vector<std::string> bodies;
  for (int i = 0; i < 5; ++i) {
    bodies.push_back(R"({"status":"active","eventIdentifier":)" + std::to_string(100 + i) + "}");
    both += post_head("", bodies.back().size()) + bodies.back();
  }
  c.send(both);  // all five in one write, before any answer
  for (int i = 0; i < 5; ++i) {
    expect_stored(c.response(), bodies[static_cast<size_t>(i)]);
  }
}

TEST_F(ListenerTest, WrongMethodIs405WithAllow) {
  Conn c(port_);
  ASSERT_TRUE(c.ok());
  c.send("GET /v1/webhooks/hpnnmi HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string r = c.response();
  ASSERT_EQ(r.rfind("HTTP/1.1 405", 0), 0u) << r;
  EXPECT_NE(r.find("Allow: POST"), std::string::npos) << r;
  c.send("DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  r = c.response();
  ASSERT_EQ(r.rfind("HTTP/1.1 405", 0), 0u) << r;
}

TEST_F(ListenerTest, GarbageGets400AndTheConnectionCloses) {
  Conn c(port_);
  ASSERT_TRUE(c.ok());
  c.send("HELLO THERE\r\n\r\n");
  std::string r = c.response();
  ASSERT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r;
  EXPECT_NE(body_json(r)["error"].get<std::string>().find("malformed"), std::string::npos) << r;
  EXPECT_TRUE(c.closed_by_peer());
}

// Found by the http_parser fuzz target: Beast reads a body as chunked when the last
// Transfer-Encoding field ends in chunked, whatever codings come before it, and as absent when
// the codings do not end in chunked (its bytes then parse as a second request). The relay stored
// bytes still in a coding it cannot decode, or a request hidden in a body. Only
// `Transfer-Encoding: chunked` alone is read; anything else is refused from the header.
// A head over the 16 KiB limit is refused (431) however it is written. Beast's parser accepts
// heads up to ~1.7 KiB over when it is handed the whole request in one buffer (the http_parser
// fuzz target's long run: a 1,730-byte start line and fields of 8,840 and 7,437 bytes, 18,040
// in all); the listener reads the socket in pieces and refused that input (431) before this
// test was written. The suite's first test of the 431: it fails with the listener's header
// limit raised to 1 MiB.
TEST_F(ListenerTest, AHeadOverTheLimitIsRefusedEvenWhenItArrivesInOneRead) {
  const std::string body = R"({"status":"ok"})";
  std::string head = "POST /v1/webhooks/hpnnmi?pad=" + std::string(1700, 'a') +
                     " HTTP/1.1\r\nX-Pad-One: " + std::string(8829, 'b') +
                     "\r\nX-Pad-Two: " + std::string(7426, 'c') +
                     "\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                     "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  ASSERT_GT(head.size(), 16u * 1024 + 1024) << head.size();
  Conn conn(port_);
  ASSERT_TRUE(conn.ok());
  conn.send(head + body);
  std::string r = conn.response();
  EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << head.size() << " bytes of head ->\n" << r;
  // The fuzzer's input itself (18,040 bytes of head), in one write.
  std::string input = testing::read_file(std::string(IARELAY_SOURCE_DIR) +
                                         "/tests/fixtures/http/head-over-the-limit.bin");
  ASSERT_GT(input.size(), 18000u);
  Conn again(port_);
  ASSERT_TRUE(again.ok());
  again.send(input);
  std::string r2 = again.response();
  EXPECT_EQ(r2.rfind("HTTP/1.1 431", 0), 0u) << r2;
  EXPECT_EQ(relay_->count(), 0);
}

TEST_F(ListenerTest, TransferEncodingOtherThanChunkedAloneIsRefusedAndNotRead) {
  const std::string body = R"({"status":"ok"})";
  const std::string chunked =
      "8\r\n" + body.substr(0, 8) + "\r\n7\r\n" + body.substr(8) + "\r\n0\r\n\r\n";
  const std::string hidden = post_head("", body.size()) + body;  // a whole second request
  struct Case {
    std::string request;
    const char* status;
  };
  const std::vector<Case> cases = {
      // The fuzzer's input, reduced: an unknown coding in one field, chunked in another.
      {post_head("Transfer-Encoding: /hunked\r\nTransfer-Encoding: chunked\r\n",
                 std::string::npos) +
           chunked,
       "HTTP/1.1 501"},
      {post_head("Transfer-Encoding: gzip, chunked\r\n", std::string::npos) + chunked,
       "HTTP/1.1 501"},
      {post_head("Transfer-Encoding: chunked, chunked\r\n", std::string::npos) + chunked,
       "HTTP/1.1 501"},
      // Not ending in chunked: Beast reads no body, and the body would be the next request.
      {post_head("Transfer-Encoding: gzip\r\n", std::string::npos) + hidden, "HTTP/1.1 400"},
      {post_head("Transfer-Encoding: chunked, gzip\r\n", std::string::npos) + hidden,
       "HTTP/1.1 400"},
      {post_head("Transfer-Encoding: gzip\r\n", hidden.size()) + hidden, "HTTP/1.1 400"},
      {"POST /v1/webhooks/hpnnmi HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer " +
           std::string(kToken) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
       "HTTP/1.1 400"},
  };
  for (const auto& c : cases) {
    Conn conn(port_);
    ASSERT_TRUE(conn.ok());
    conn.send(c.request);
    std::string r = conn.response();
    EXPECT_EQ(r.rfind(c.status, 0), 0u) << c.request << "\n->\n" << r;
    json answer = body_json(r);
    std::string error = answer.is_object() ? answer.value("error", std::string()) : "";
    EXPECT_NE(error.find("ransfer"), std::string::npos) << r;
    EXPECT_TRUE(conn.closed_by_peer()) << c.request;
  }
  EXPECT_EQ(relay_->count(), 0);
  // Chunked alone is still read, in any case and with spaces around it.
  Conn ok(port_);
  ASSERT_TRUE(ok.ok());
  ok.send(post_head("Transfer-Encoding:  Chunked \r\n", std::string::npos) + chunked);
  expect_stored(ok.response(), body);
}

TEST(ListenerBounds, WrongTokenIsRefusedFromTheHeaderWithoutWaitingForTheBody) {
  testing::TempDir dir;
  InProcessRelay relay(dir.file("journal.db"), {make_agent("a1", {"hpnnmi"})});
  int port = relay.start_server(0, kToken, 64 << 20);  // a 10 MB body would be accepted
  ASSERT_GT(port, 0);
  Conn c(port);
  ASSERT_TRUE(c.ok());
  auto started = std::chrono::steady_clock::now();
  c.send(
      "POST /v1/webhooks/hpnnmi HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
      "Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n");
  std::string r = c.response();
  ASSERT_EQ(r.rfind("HTTP/1.1 401", 0), 0u) << r;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  EXPECT_NE(body_json(r)["error"].get<std::string>().find("the bearer token is not a listen token"),
            std::string::npos);
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(testing::metric_value(relay.metrics().render(),
                                  R"(iarelay_intake_requests_total{code="401"})"),
            1);
  // With Expect: 100-continue the client is told before it sends a byte of the body.
  Conn e(port);
  ASSERT_TRUE(e.ok());
  e.send(
      "POST /v1/webhooks/hpnnmi HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: 10000000\r\n\r\n");
  r = e.response();
  ASSERT_EQ(r.rfind("HTTP/1.1 401", 0), 0u) << r;
  EXPECT_EQ(relay.count(), 0);
}

TEST(ListenerBounds, ConnectionsPastMaxConnectionsGet503UntilOneCloses) {
  testing::TempDir dir;
  InProcessRelay relay(dir.file("journal.db"), {make_agent("a1", {"hpnnmi"})});
  int port = relay.start_server(0, kToken, 4096, "", "", /*max_connections=*/4);
  ASSERT_GT(port, 0);
  std::vector<std::unique_ptr<Conn>> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(std::make_unique<Conn>(port));
    ASSERT_TRUE(idle.back()->ok());
  }
  // The listener registers a connection when it accepts it: let it take the four.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  {
    Conn fifth(port);
    ASSERT_TRUE(fifth.ok());
    fifth.send(post_head("", kBody.size()) + kBody);
    std::string r = fifth.response();
    ASSERT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r;
    EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r;
    EXPECT_NE(body_json(r)["error"].get<std::string>().find("max_connections"), std::string::npos)
        << r;
    EXPECT_TRUE(fifth.closed_by_peer());
  }
  EXPECT_EQ(relay.count(), 0);
  idle.pop_back();  // one closes: room for a new one
  ASSERT_TRUE(testing::eventually(
      [&] {
        Conn next(port);
        next.send(post_head("", kBody.size()) + kBody);
        std::string r = next.response();
        return r.rfind("HTTP/1.1 202", 0) == 0;
      },
      std::chrono::seconds(5)));
  EXPECT_EQ(relay.count(), 1);
  // The idle ones were not disturbed: one of them still works.
  idle.front()->send(post_head("", kBody.size()) + kBody);
  EXPECT_EQ(idle.front()->response().rfind("HTTP/1.1 202", 0), 0u);
}

}  // namespace
}  // namespace iarelay
