// Indirect mode in-process: an edge relay's feed polled by an inner relay's Poller. Exactly
// once through upstream restarts and redelivery, garbage upstreams, prompt stop, proxy, TLS.
#include <httplib.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <set>

#include "common/crypto.h"
#include "harness.h"
#include "intake/admission.h"
#include "journal/status_report.h"
#include "journal/store.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using nlohmann::json;
using testing::eventually;
using testing::InProcessRelay;
using testing::make_agent;
using testing::metric_value;

UpstreamConfig upstream_at(const std::string& url, Millis poll_wait = 2000, int batch = 100) {
  UpstreamConfig u;
  u.url = url;
  u.name = "edge";
  u.consumer = "inner-1";
  u.poll_wait = poll_wait;
  u.batch = batch;
  return u;
}

// An httplib stand-in served on its own thread, stopped and joined however the test ends.
struct StandIn {
  httplib::Server server;
  std::thread thread;
  int listen() {
    int port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    return port;
  }
  ~StandIn() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
};

std::string payload(int i) {
  // Varied bytes that a re-serialisation would change: spacing, escapes, unicode, exponents.
  return "{ \"eventIdentifier\" : " + std::to_string(100000 + i / 3) +
         ",\n  \"status\": \"active\", \"comment\": \"n\\u00b0" + std::to_string(i) +
         " \xE2\x9C\x93 caf\xC3\xA9\", \"weight\": 1.0e2 }";
}

// Stores `n` webhooks on the edge (as its intake would), in commits of `chunk`.
void fill_edge(InProcessRelay& edge, int first, int n, int chunk = 50,
               std::chrono::milliseconds pause = std::chrono::milliseconds(0)) {
  for (int done = 0; done < n; done += chunk) {
    auto batch = std::make_shared<std::vector<NewWebhook>>();
    for (int i = done; i < std::min(n, done + chunk); ++i) {
      IntakeRequest r;
      r.service = i % 2 ? "applications|hpnnmi" : "hpnnmi";
      if (i % 5 == 0) r.agent = "ws-198/10.2.0.121:8081";
      r.body = payload(first + i);
      auto w = admit_direct(std::move(r), edge.directory(), now_millis());
      ASSERT_TRUE(w.is_ok()) << w.status().message();
      batch->push_back(std::move(*w));
    }
    ASSERT_TRUE(edge.writer()
                    .run([batch](SQLite::Database& db) {
                      for (const auto& w : *batch) insert_webhook(db, w);
                    })
                    .is_ok());
    if (pause.count()) std::this_thread::sleep_for(pause);
  }
}

// Every edge webhook is in the inner journal exactly once, with the same bytes.
void expect_exactly_once(const InProcessRelay& edge, const InProcessRelay& inner, int n) {
  auto db = inner.reader();
  db->exec("ATTACH DATABASE '" + edge.journal() + "' AS e");
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM webhooks").getInt64(), n);
  EXPECT_EQ(db->execAndGet("SELECT count(DISTINCT source_id) FROM webhooks WHERE source='edge'")
                .getInt64(),
            n);
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM webhooks i JOIN e.webhooks o ON "
                           "i.source_id = o.id AND i.payload = o.payload AND "
                           "i.service = o.service AND i.type = o.type AND "
                           "i.agent IS o.agent AND i.event_id IS o.event_id")
                .getInt64(),
            n);
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM webhooks WHERE state='queued'").getInt64(), n);
  EXPECT_EQ(db->execAndGet("SELECT seq FROM cursors WHERE name='edge'").getInt64(),
            db->execAndGet("SELECT max(seq) FROM e.webhooks").getInt64());
}

// How long a third of the chain may take. Under a sanitizer every commit and poll is several
// times slower (under ThreadSanitizer the first thousand were not through in 30 s).
#ifdef IARELAY_SANITIZED
constexpr std::chrono::seconds kChainDeadline(120);
#else
constexpr std::chrono::seconds kChainDeadline(30);
#endif

TEST(Poller, ChainCarriesThousandsExactlyOnceThroughUpstreamRestartsAndRedelivery) {
  testing::TempDir dir;
  InProcessRelay edge(dir.file("edge.db"));
  int port = edge.start_server();
  ASSERT_GT(port, 0);
  InProcessRelay inner(dir.file("inner.db"), {make_agent("ws-198/10.2.0.121:8081", {"hpnnmi"}),
                                              make_agent("a2", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port) + "/"));

  constexpr int kTotal = 3000;
  std::thread producer([&] { fill_edge(edge, 0, kTotal, 50, std::chrono::milliseconds(10)); });
  // Joined on every way out: a failed ASSERT below returns while the producer still writes
  // (a joinable std::thread destroyed is std::terminate, as under ThreadSanitizer once).
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } join_producer{producer};
  // Kill the upstream's listener twice mid-stream, each time for half a second.
  for (int restart = 0; restart < 2; ++restart) {
    ASSERT_TRUE(
        eventually([&] { return inner.count() >= (restart + 1) * kTotal / 3; }, kChainDeadline))
        << inner.count() << " stored before restart " << restart;
    edge.stop_server();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ASSERT_EQ(edge.start_server(port), port);
  }
  producer.join();
  ASSERT_TRUE(eventually([&] { return inner.count() >= kTotal; }, 2 * kChainDeadline))
      << inner.count();
  expect_exactly_once(edge, inner, kTotal);
  // Routed here: those naming an agent went to it, the others to the first available agent.
  EXPECT_EQ(inner.count("assigned_agent='ws-198/10.2.0.121:8081'"), kTotal);
  std::string metrics = inner.metrics().render();
  EXPECT_GE(metric_value(metrics, R"(iarelay_poll_errors_total{kind="connect"})"), 1);
  EXPECT_EQ(
      metric_value(metrics, R"(iarelay_poll_webhooks_total{upstream="edge",outcome="stored"})"),
      kTotal);
  // The upstream learns how far the consumer got.
  ASSERT_TRUE(eventually([&] {
    auto db = edge.reader();
    SQLite::Statement q(*db, "SELECT acked_seq FROM consumers WHERE name='inner-1'");
    return q.executeStep() &&
           q.getColumn(0).getInt64() == db->execAndGet("SELECT max(seq) FROM webhooks").getInt64();
  }));

  // Redelivery: rewind the stored cursor as if the batch's commit had been lost; everything
  // comes again and nothing new is stored.
  inner.poller()->stop();
  ASSERT_TRUE(inner.writer()
                  .run([](SQLite::Database& db) { db.exec("UPDATE cursors SET seq=0"); })
                  .is_ok());
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port)));
  ASSERT_TRUE(eventually([&] {
    return metric_value(inner.metrics().render(),
                        R"(iarelay_poll_webhooks_total{upstream="edge",outcome="duplicate"})") >=
           kTotal;
  })) << inner.metrics().render();
  expect_exactly_once(edge, inner, kTotal);
}

// Issue 11 item 10: the inner relay keeps the edge's webhook ids, so renaming [upstream] name
// (a new cursor, the feed read again from the start) stores nothing twice, and agents see the
// same webhook-id whichever way a webhook came.
TEST(Poller, RenamingTheUpstreamStoresNothingAgainAndIdsAreTheEdges) {
  testing::TempDir dir;
  InProcessRelay edge(dir.file("edge.db"));
  int port = edge.start_server();
  ASSERT_GT(port, 0);
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  inner.start_poller(upstream_at(url));
  constexpr int kTotal = 200;
  fill_edge(edge, 0, kTotal);
  ASSERT_TRUE(eventually([&] { return inner.count() >= kTotal; })) << inner.count();
  inner.poller()->stop();
  UpstreamConfig renamed = upstream_at(url);
  renamed.name = "edge-renamed";
  inner.start_poller(renamed);
  ASSERT_TRUE(eventually([&] {
    return metric_value(
               inner.metrics().render(),
               R"(iarelay_poll_webhooks_total{upstream="edge-renamed",outcome="duplicate"})") >=
           kTotal;
  })) << inner.metrics().render();
  EXPECT_EQ(inner.count(), kTotal);
  auto db = inner.reader();
  db->exec("ATTACH DATABASE '" + edge.journal() + "' AS e");
  EXPECT_EQ(db->execAndGet("SELECT count(*) FROM webhooks i JOIN e.webhooks o ON i.id = o.id AND "
                           "i.source_id = o.id AND i.payload = o.payload")
                .getInt64(),
            kTotal);
}

// An upstream's id that is already another webhook's here is not taken for a duplicate: the
// webhook is stored under an id of its own.
TEST(Poller, AnUpstreamIdThatIsAnotherWebhooksHereIsStoredUnderANewId) {
  testing::TempDir dir;
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  NewWebhook local;
  local.id = new_webhook_id();
  local.service = "hpnnmi";
  local.type = "status";
  local.payload = R"({"status":"active"})";
  local.assigned_agent = "a1";
  NewWebhook fed = local;
  fed.source = "edge";
  fed.source_id = local.id;  // the upstream says its webhook has this id
  fed.payload = R"({"status":"terminated"})";
  InsertOutcome a, b;
  ASSERT_TRUE(inner.writer()
                  .run([&](SQLite::Database& db) {
                    a = insert_webhook(db, local);
                    b = insert_webhook(db, fed);
                  })
                  .is_ok());
  EXPECT_FALSE(b.duplicate);
  EXPECT_NE(b.id, local.id);
  EXPECT_EQ(inner.count(), 2);
}

TEST(Poller, SurvivesAGarbageUpstreamCountingErrorsThenRecovers) {
  testing::TempDir dir;
  httplib::Server junk;
  std::atomic<int> hits{0};
  junk.Get("/v1/feed", [&](const httplib::Request&, httplib::Response& res) {
    switch (hits++ % 4) {
      case 0:
        res.set_content("<html><body>502 Bad Gateway</body></html>", "text/html");
        break;
      case 1:
        res.status = 500;
        res.set_content("{\"error\":\"boom\"}", "application/json");
        break;
      case 2:
        res.set_content("{\"messages\":[{\"seq\":1}],\"next\":1}", "application/json");
        break;
      default:
        res.set_content("{\"messages\":[{\"seq\":1,\"id\":\"x\",\"payl", "application/json");
    }
  });
  // SO_REUSEADDR, as iarelayd's listener sets it (cpp-httplib's default is SO_REUSEPORT alone):
  // otherwise its closed connections, lingering in FIN_WAIT, keep the port from the relay below.
  junk.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  int port = junk.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread serve([&] { junk.listen_after_bind(); });
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port), 1000));
  ASSERT_TRUE(eventually([&] {
    std::string m = inner.metrics().render();
    return metric_value(m, R"(iarelay_poll_errors_total{kind="parse"})") >= 3 &&
           metric_value(m, R"(iarelay_poll_errors_total{kind="http"})") >= 1;
  })) << inner.metrics().render();
  EXPECT_EQ(inner.count(), 0);
  junk.stop();
  serve.join();

  // A real upstream appears on the same port: the poller recovers on its own.
  InProcessRelay edge(dir.file("edge.db"));
  fill_edge(edge, 0, 40);
  ASSERT_EQ(edge.start_server(port), port);
  ASSERT_TRUE(eventually([&] { return inner.count() == 40; }, std::chrono::seconds(60)))
      << inner.count();
  expect_exactly_once(edge, inner, 40);
}

TEST(Poller, StopReturnsPromptlyDuringALongPoll) {
  testing::TempDir dir;
  InProcessRelay edge(dir.file("edge.db"));
  int port = edge.start_server();
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port), 25'000));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto started = std::chrono::steady_clock::now();
  inner.poller()->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
}

TEST(Poller, StoresAMessageThatCannotBeAdmittedAsFailedAndKeepsGoing) {
  testing::TempDir dir;
  StandIn stand_in;
  httplib::Server& upstream = stand_in.server;
  upstream.Get("/v1/feed", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_param_value("after") == "0")
      res.set_content(
          R"({"messages":[)"
          R"({"seq":1,"id":"A","service":"hpnnmi","type":"status","payload":[1]},)"
          R"({"seq":2,"id":"B","service":"hpnnmi","type":"","payload":{"x":1}},)"
          R"({"seq":3,"id":"C","service":"hpnnmi","type":"status","payload":{"s":1}},)"
          R"({"seq":4,"id":"D","service":"hpnnmi","agent":"ws-1\u0001","type":"status",)"
          R"("payload":{"s":4}},)"
          R"({"seq":5,"id":"E","service":"hpnnmi","type":"st\u0085","payload":{"s":5}})"
          R"(],"next":5})",
          "application/json");
    else
      res.set_content(R"({"messages":[],"next":5})", "application/json");
  });
  upstream.Post("/v1/feed/ack",
                [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  int port = stand_in.listen();
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port), 1000));
  // Nothing the upstream was acked for is lost: the good one queued, the others failed with
  // their reason, every text field safe.
  ASSERT_TRUE(eventually([&] { return inner.count() == 5; })) << inner.count();
  auto db = inner.reader();
  EXPECT_EQ(db->execAndGet("SELECT group_concat(source_id) FROM (SELECT source_id FROM webhooks "
                           "WHERE state='queued' ORDER BY seq)")
                .getString(),
            "C");
  EXPECT_EQ(db->execAndGet("SELECT group_concat(source_id) FROM (SELECT source_id FROM webhooks "
                           "WHERE state='failed' ORDER BY seq)")
                .getString(),
            "A,B,D,E");
  EXPECT_EQ(db->execAndGet("SELECT payload FROM webhooks WHERE source_id='A'").getString(), "[1]");
  EXPECT_EQ(db->execAndGet("SELECT agent FROM webhooks WHERE source_id='D'").getString(),
            "ws-1\xEF\xBF\xBD");
  EXPECT_EQ(db->execAndGet("SELECT type FROM webhooks WHERE source_id='E'").getString(),
            "st\xEF\xBF\xBD");
  EXPECT_NE(db->execAndGet("SELECT last_error FROM webhooks WHERE source_id='D'")
                .getString()
                .find("agent contains a control character"),
            std::string::npos);
  EXPECT_EQ(db->execAndGet("SELECT seq FROM cursors WHERE name='edge'").getInt64(), 5);
  EXPECT_EQ(metric_value(inner.metrics().render(), R"(iarelay_poll_errors_total{kind="message"})"),
            4);
  inner.poller()->stop();
}

// Direct intake refuses a body nested deeper than kMaxPayloadDepth (64); a payload from an
// upstream's feed was admitted whatever its depth (and format = ia then failed it, `iarelay show`
// overflowed its stack). It was acknowledged upstream, so it is stored as failed with the reason,
// byte for byte, and the feed goes on.
TEST(Poller, StoresAPayloadNestedTooDeepAsFailedWithTheReason) {
  auto nested = [](int depth) {  // an object (depth 1) holding depth - 1 levels of arrays
    return R"({"status":"active","n":)" + std::string(static_cast<size_t>(depth - 1), '[') +
           std::string(static_cast<size_t>(depth - 1), ']') + "}";
  };
  const std::string deep = nested(65), deepest_allowed = nested(64), very_deep = nested(5000);
  testing::TempDir dir;
  StandIn stand_in;
  httplib::Server& upstream = stand_in.server;
  upstream.Get("/v1/feed", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_param_value("after") == "0")
      res.set_content(R"({"messages":[)"
                      R"({"seq":1,"id":"A","service":"hpnnmi","type":"","payload":)" +
                          deep + R"(},{"seq":2,"id":"B","service":"hpnnmi","type":"","payload":)" +
                          deepest_allowed +
                          R"(},{"seq":3,"id":"C","service":"hpnnmi","type":"","payload":)" +
                          very_deep + R"(}],"next":3})",
                      "application/json");
    else
      res.set_content(R"({"messages":[],"next":3})", "application/json");
  });
  upstream.Post("/v1/feed/ack",
                [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  int port = stand_in.listen();
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port), 1000));
  ASSERT_TRUE(eventually([&] { return inner.count() == 3; })) << inner.count();
  auto db = inner.reader();
  for (const auto& [id, payload] :
       {std::pair<std::string, std::string>{"A", deep}, {"C", very_deep}}) {
    SQLite::Statement q(*db, "SELECT state, last_error, payload FROM webhooks WHERE source_id=?");
    q.bind(1, id);
    ASSERT_TRUE(q.executeStep()) << id;
    EXPECT_EQ(q.getColumn(0).getString(), "failed") << id;
    EXPECT_NE(q.getColumn(1).getString().find("nested deeper than 64 levels"), std::string::npos)
        << q.getColumn(1).getString();
    EXPECT_EQ(q.getColumn(2).getString(), payload) << id;
  }
  EXPECT_EQ(db->execAndGet("SELECT state FROM webhooks WHERE source_id='B'").getString(), "queued");
  EXPECT_EQ(db->execAndGet("SELECT seq FROM cursors WHERE name='edge'").getInt64(), 3);
  inner.poller()->stop();
}

TEST(Poller, HeartbeatSaysAliveWhileItPollsAndNotAfterItStopped) {
  testing::TempDir dir;
  InProcessRelay edge(dir.file("edge.db"));
  int port = edge.start_server();
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port), 2000));
  EXPECT_TRUE(inner.poller()->alive());
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // through a long-poll
  EXPECT_TRUE(inner.poller()->alive());
  inner.poller()->stop();
  EXPECT_FALSE(inner.poller()->alive());
}

TEST(Poller, RewindsWhenTheUpstreamsNewestIsBelowItsCursor) {
  testing::TempDir dir;
  auto edge = std::make_unique<InProcessRelay>(dir.file("edge.db"));
  fill_edge(*edge, 0, 5);
  // The edge's backup, taken at seq 5.
  edge->reader()->exec("VACUUM INTO '" + dir.file("backup.db") + "'");
  fill_edge(*edge, 5, 5);
  int port = edge->start_server();
  ASSERT_GT(port, 0);
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at(url, 1000));
  ASSERT_TRUE(eventually([&] { return inner.count() == 10; }));

  // The edge comes back from its backup: its newest seq (5) is below the consumer's cursor (10).
  edge.reset();
  InProcessRelay restored(dir.file("backup.db"));
  ASSERT_EQ(restored.start_server(port), port);
  ASSERT_TRUE(eventually([&] {
    return metric_value(inner.metrics().render(),
                        R"(iarelay_upstream_behind_total{upstream="edge"})") == 1;
  })) << inner.metrics().render();
  ASSERT_TRUE(eventually([&] {
    return inner.reader()->execAndGet("SELECT seq FROM cursors WHERE name='edge'").getInt64() == 5;
  }));
  // What it stores now reuses seqs 6-8, at or below the old cursor: none of it is skipped.
  fill_edge(restored, 100, 3);
  ASSERT_TRUE(eventually([&] { return inner.count() == 13; }, std::chrono::seconds(10)))
      << inner.count();
  EXPECT_EQ(inner.reader()->execAndGet("SELECT seq FROM cursors WHERE name='edge'").getInt64(), 8);
  EXPECT_EQ(
      metric_value(inner.metrics().render(), R"(iarelay_poll_upstream_newest{upstream="edge"})"),
      8);
  // `iarelay status` shows when and how far the cursor went back.
  json status = json::parse(status_json(*inner.reader(), nullptr, inner.journal()));
  ASSERT_EQ(status["upstream"].size(), 1u) << status.dump();
  const json& rewound = status["upstream"][0]["rewound"];
  ASSERT_TRUE(rewound.is_object()) << status.dump();
  EXPECT_EQ(rewound["from"], 10);
  EXPECT_EQ(rewound["to"], 5);
  EXPECT_TRUE(rewound["at"].is_string());
  inner.poller()->stop();
}

TEST(Poller, AnswerOverItsSizeLimitMakesItAskForFewerInsteadOfWedging) {
  testing::TempDir dir;
  constexpr size_t kLimit = 64 << 10;
  constexpr int kTotal = 30;
  std::mutex mu;
  std::vector<std::int64_t> asked_bytes;
  // An upstream that ignores max_bytes (an older edge): `max` messages of 10 kB each.
  StandIn stand_in;
  httplib::Server& upstream = stand_in.server;
  upstream.Get("/v1/feed", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mu);
      asked_bytes.push_back(std::stoll(req.get_param_value("max_bytes")));
    }
    int after = std::stoi(req.get_param_value("after"));
    int max = std::stoi(req.get_param_value("max"));
    std::string body = R"({"messages":[)";
    int next = after;
    for (int seq = after + 1; seq <= std::min(kTotal, after + max); ++seq) {
      if (seq > after + 1) body += ',';
      body += R"({"seq":)" + std::to_string(seq) + R"(,"id":"M)" + std::to_string(seq) +
              R"(","service":"hpnnmi","type":"status","payload":{"pad":")" +
              std::string(10'000, 'x') + R"("}})";
      next = seq;
    }
    body += R"(],"next":)" + std::to_string(next) + "}";
    res.set_content(body, "application/json");
  });
  upstream.Post("/v1/feed/ack",
                [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  int port = stand_in.listen();
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  inner.start_poller(upstream_at("http://127.0.0.1:" + std::to_string(port), 1000, 100), "",
                     kLimit);
  ASSERT_TRUE(eventually([&] { return inner.count() == kTotal; }, std::chrono::seconds(20)))
      << inner.count() << "\n"
      << inner.metrics().render();
  EXPECT_GE(
      metric_value(inner.metrics().render(), R"(iarelay_poll_errors_total{kind="too_large"})"), 1);
  inner.poller()->stop();
  std::lock_guard lock(mu);
  ASSERT_FALSE(asked_bytes.empty());
  for (auto b : asked_bytes) EXPECT_LE(b, static_cast<std::int64_t>(kLimit) / 2);
}

TEST(Poller, GoesThroughTheConfiguredProxy) {
  testing::TempDir dir;
  httplib::Server proxy;
  std::mutex mu;
  std::vector<std::string> seen;
  proxy.Get(".*", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mu);
      seen.push_back(req.path + " host=" + req.get_header_value("Host"));
    }
    if (req.get_param_value("after") == "0")
      res.set_content(R"({"messages":[{"seq":1,"id":"P1","service":"hpnnmi","agent":null,)"
                      R"("type":"status","payload":{"status":"active"}}],"next":1})",
                      "application/json");
    else
      res.set_content(R"({"messages":[],"next":1})", "application/json");
  });
  proxy.Post(".*", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  int port = proxy.bind_to_any_port("127.0.0.1");
  std::thread serve([&] { proxy.listen_after_bind(); });
  InProcessRelay inner(dir.file("inner.db"), {make_agent("a1", {"hpnnmi"})});
  UpstreamConfig u = upstream_at("http://edge.example.invalid:8443", 1000);
  u.proxy = "http://127.0.0.1:" + std::to_string(port);
  inner.start_poller(u);
  ASSERT_TRUE(eventually([&] { return inner.count() == 1; }));
  inner.poller()->stop();
  proxy.stop();
  serve.join();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(
      seen[0].rfind("http://edge.example.invalid:8443/v1/feed host=edge.example.invalid:8443", 0),
      0u)
      << seen[0];
}

TEST(Poller, VerifiesTheUpstreamCertificateAgainstTheCaFile) {
  testing::TempDir dir;
  ASSERT_EQ(testing::make_self_signed_cert(dir.file("cert.pem"), dir.file("key.pem")), "");
  InProcessRelay edge(dir.file("edge.db"));
  fill_edge(edge, 0, 20);
  int port = edge.start_server(0, "feed-token", 1 << 20, dir.file("cert.pem"), dir.file("key.pem"));
  ASSERT_GT(port, 0);
  std::string url = "https://127.0.0.1:" + std::to_string(port);

  InProcessRelay trusting(dir.file("trusting.db"), {make_agent("a1", {"hpnnmi"})});
  UpstreamConfig with_ca = upstream_at(url, 1000);
  with_ca.ca_file = dir.file("cert.pem");
  trusting.start_poller(with_ca, "feed-token");
  InProcessRelay doubting(dir.file("doubting.db"), {make_agent("a1", {"hpnnmi"})});
  doubting.start_poller(upstream_at(url, 1000), "feed-token");
  InProcessRelay tokenless(dir.file("tokenless.db"), {make_agent("a1", {"hpnnmi"})});
  tokenless.start_poller(with_ca);

  ASSERT_TRUE(eventually([&] { return trusting.count() == 20; }));
  expect_exactly_once(edge, trusting, 20);
  ASSERT_TRUE(eventually([&] {
    return metric_value(doubting.metrics().render(),
                        R"(iarelay_poll_errors_total{kind="connect"})") >= 1 &&
           metric_value(tokenless.metrics().render(),
                        R"(iarelay_poll_errors_total{kind="http"})") >= 1;
  }));
  EXPECT_EQ(doubting.count(), 0);
  EXPECT_EQ(tokenless.count(), 0);
}

}  // namespace
}  // namespace iarelay
