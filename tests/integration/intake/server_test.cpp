// The intake listener in-process: direct webhooks end to end into SQLite, every refusal class,
// idempotency, routing outcomes, the feed long-poll and ack, admin endpoints, TLS.
#include <httplib.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "harness.h"
#include "intake/feed.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using nlohmann::json;
using testing::InProcessRelay;
using testing::make_agent;

constexpr const char* kAgent = "ws-198/10.2.0.121:8081";
constexpr const char* kAgentEncoded = "ws-198%2F10.2.0.121%3A8081";
constexpr const char* kToken = "s3cret-token";

httplib::Headers auth(const std::string& token = kToken) {
  return {{"Authorization", "Bearer " + token}};
}

struct Row {
  std::string id, source, service, type, state, payload;
  std::optional<std::string> agent, assigned_agent, event_id, last_error, idempotency_key;
};

std::optional<Row> row(const InProcessRelay& relay, const std::string& id) {
  auto db = relay.reader();
  SQLite::Statement q(*db,
                      "SELECT id, source, service, type, state, payload, agent, assigned_agent, "
                      "event_id, last_error, idempotency_key FROM webhooks WHERE id=?");
  q.bind(1, id);
  if (!q.executeStep()) return std::nullopt;
  auto opt = [&](int i) -> std::optional<std::string> {
    if (q.getColumn(i).isNull()) return std::nullopt;
    return q.getColumn(i).getString();
  };
  return Row{q.getColumn(0).getString(),
             q.getColumn(1).getString(),
             q.getColumn(2).getString(),
             q.getColumn(3).getString(),
             q.getColumn(4).getString(),
             q.getColumn(5).getString(),
             opt(6),
             opt(7),
             opt(8),
             opt(9),
             opt(10)};
}

class ServerTest : public ::testing::Test {
 protected:
  void start(std::vector<AgentConfig> agents, std::vector<ServiceConfig> services = {},
             std::string token = kToken, std::int64_t max_body = 1 << 20) {
    relay_ = std::make_unique<InProcessRelay>(dir_.file("journal.db"), std::move(agents),
                                              std::move(services));
    port_ = relay_->start_server(0, std::move(token), max_body);
    ASSERT_GT(port_, 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(60, 0);
  }
  json body_of(const httplib::Result& r) {
    EXPECT_TRUE(r) << "no response";
    if (!r) return json();
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << r->body;
    return json::parse(r->body, nullptr, false);
  }

  testing::TempDir dir_;
  std::unique_ptr<InProcessRelay> relay_;
  std::unique_ptr<httplib::Client> client_;
  int port_ = 0;
};

TEST_F(ServerTest, EveryFixtureIsStoredByteForByteWithTypeServiceAgentAndState) {
  start({make_agent(kAgent, {"hpnnmi"})});
  const std::pair<const char*, const char*> fixtures[] = {
      {"ib_status.json", "status"},     {"ib_delivery.json", "deliveryStatus"},
      {"ib_response.json", "response"}, {"ib_annotation.json", "annotation"},
      {"ia_status.json", "status"},     {"ia_delivery.json", "deliveryStatus"},
      {"ia_response.json", "response"},
  };
  int n = 0;
  for (auto [file, type] : fixtures) {
    std::string body = testing::read_file(testing::fixture(file));
    ASSERT_FALSE(body.empty()) << file;
    // Alternate both spellings of the service, with and without a named agent.
    bool named = n % 2 == 0;
    std::string path =
        std::string("/v1/webhooks/") +
        (n % 3 == 0 ? "applications%7Chpnnmi" : (n % 3 == 1 ? "hpnnmi" : "applications|hpnnmi")) +
        (named ? std::string("?agent=") + kAgentEncoded : "");
    ++n;
    auto r = client_->Post(path.c_str(), auth(), body, "application/json");
    ASSERT_TRUE(r) << file;
    ASSERT_EQ(r->status, 202) << file << ": " << r->body;
    json reply = body_of(r);
    EXPECT_EQ(reply["state"], "queued") << file;
    EXPECT_EQ(reply["duplicate"], false);
    auto stored = row(*relay_, reply["id"]);
    ASSERT_TRUE(stored) << file;
    EXPECT_EQ(stored->payload, body) << file;
    EXPECT_EQ(stored->type, type) << file;
    EXPECT_EQ(stored->service, "hpnnmi") << file;
    EXPECT_EQ(stored->source, "direct");
    EXPECT_EQ(stored->state, "queued");
    EXPECT_EQ(stored->assigned_agent, kAgent);
    EXPECT_TRUE(stored->event_id.has_value()) << file;
    if (named)
      EXPECT_EQ(stored->agent, kAgent) << file;
    else
      EXPECT_FALSE(stored->agent.has_value()) << file;
  }
  EXPECT_EQ(relay_->count(), 7);
  std::string metrics = relay_->metrics().render();
  EXPECT_EQ(testing::metric_value(metrics, R"(iarelay_intake_requests_total{code="202"})"), 7);
  EXPECT_EQ(testing::metric_value(
                metrics, R"(iarelay_intake_webhooks_total{service="hpnnmi",state="queued"})"),
            7);
}

TEST_F(ServerTest, BadRequestsGetTheirStatusAMessageAndStoreNothing) {
  start({make_agent("a1", {"hpnnmi"})}, {}, kToken, 4096);
  std::string ok_body = R"({"status":"active","eventIdentifier":1})";
  struct Case {
    const char* name;
    httplib::Headers headers;
    std::string path, body;
    int status;
    const char* says;
  };
  std::vector<Case> cases = {
      {"no token", {}, "/v1/webhooks/hpnnmi", ok_body, 401, "no credentials"},
      {"bad token", auth("wrong"), "/v1/webhooks/hpnnmi", ok_body, 401,
       "the bearer token is not a listen token"},
      {"basic auth, wrong password",
       {{"Authorization", "Basic eDp5"}},
       "/v1/webhooks/hpnnmi",
       ok_body,
       401,
       "the HTTP Basic password is not a listen token"},
      {"array", auth(), "/v1/webhooks/hpnnmi", "[1,2,3]", 400, "not a JSON object"},
      {"not json", auth(), "/v1/webhooks/hpnnmi", "status=active", 400, "not valid JSON"},
      {"no type", auth(), "/v1/webhooks/hpnnmi", R"({"foo":"bar"})", 400, "cannot be inferred"},
      {"too big", auth(), "/v1/webhooks/hpnnmi",
       R"({"status":"active","pad":")" + std::string(8000, 'x') + "\"}", 413,
       "body is larger than 4 KiB ([listen] max_body = 4KiB)"},
      {"empty service", auth(), "/v1/webhooks/applications%7C", ok_body, 400, "service"},
  };
  for (const auto& c : cases) {
    auto r = client_->Post(c.path.c_str(), c.headers, c.body, "application/json");
    ASSERT_TRUE(r) << c.name;
    EXPECT_EQ(r->status, c.status) << c.name << ": " << r->body;
    json reply = body_of(r);
    ASSERT_TRUE(reply.is_object() && reply["error"].is_string()) << c.name << ": " << r->body;
    EXPECT_NE(reply["error"].get<std::string>().find(c.says), std::string::npos)
        << c.name << ": " << r->body;
  }
  EXPECT_EQ(relay_->count(), 0);
  std::string metrics = relay_->metrics().render();
  EXPECT_EQ(testing::metric_value(metrics, R"(iarelay_intake_requests_total{code="401"})"), 3);
  EXPECT_EQ(testing::metric_value(metrics, R"(iarelay_intake_requests_total{code="400"})"), 4);
  EXPECT_EQ(testing::metric_value(metrics, R"(iarelay_intake_requests_total{code="413"})"), 1);
  // The same client still works afterwards.
  auto r = client_->Post("/v1/webhooks/hpnnmi", auth(), ok_body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(relay_->count(), 1);
}

TEST_F(ServerTest, RepeatedIdempotencyKeyReturnsTheFirstWebhook) {
  start({make_agent("a1", {"hpnnmi", "remedy"})});
  httplib::Headers h = auth();
  h.emplace("Idempotency-Key", "evt-77-status");
  std::string body = R"({"status":"active"})";
  auto first = client_->Post("/v1/webhooks/hpnnmi", h, body, "application/json");
  auto second = client_->Post("/v1/webhooks/applications%7Chpnnmi", h, R"({"status":"terminated"})",
                              "application/json");
  auto other_service = client_->Post("/v1/webhooks/remedy", h, body, "application/json");
  ASSERT_TRUE(first && second && other_service);
  ASSERT_EQ(first->status, 202);
  ASSERT_EQ(second->status, 202);
  json a = body_of(first), b = body_of(second), c = body_of(other_service);
  EXPECT_EQ(a["duplicate"], false);
  EXPECT_EQ(b["duplicate"], true);
  EXPECT_EQ(a["id"], b["id"]);
  EXPECT_EQ(c["duplicate"], false);
  EXPECT_NE(c["id"], a["id"]);
  EXPECT_EQ(relay_->count("service='hpnnmi'"), 1);
  EXPECT_EQ(row(*relay_, a["id"])->payload, body);
  EXPECT_EQ(row(*relay_, a["id"])->idempotency_key, "evt-77-status");
  EXPECT_EQ(
      testing::metric_value(relay_->metrics().render(),
                            R"(iarelay_intake_webhooks_total{service="hpnnmi",state="duplicate"})"),
      1);
}

TEST_F(ServerTest, AgentIdentifiersWithSlashAndColonGetTheirOwnQueue) {
  start({make_agent(kAgent, {"hpnnmi"}), make_agent("other", {"hpnnmi"})});
  // Encoded, raw, with blanks around it, and an agent nobody has configured yet.
  const std::pair<std::string, std::string> cases[] = {
      {std::string("?agent=") + kAgentEncoded, kAgent},
      {"?agent=%20%20ws-198%2F10.2.0.121%3A8081%20", kAgent},
      {"?agent=late%2F10.9.9.9%3A9000", "late/10.9.9.9:9000"},
      {"?agent=", ""},
  };
  for (const auto& [query, expected] : cases) {
    auto r = client_->Post(("/v1/webhooks/applications%7Chpnnmi" + query).c_str(), auth(),
                           R"({"status":"active"})", "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    auto stored = row(*relay_, body_of(r)["id"]);
    if (expected.empty()) {
      EXPECT_FALSE(stored->agent.has_value());
      EXPECT_EQ(stored->assigned_agent, kAgent);  // first available in configuration order
    } else {
      EXPECT_EQ(stored->agent, expected) << query;
      EXPECT_EQ(stored->assigned_agent, expected) << query;
    }
    EXPECT_EQ(stored->state, "queued");
  }
}

// Logs of the default logger into a string while alive.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST_F(ServerTest, AHandleIsResolvedToItsAgentsIdentifierAndAnUnknownIdIsLoggedOnce) {
  AgentConfig named = make_agent(kAgent, {"hpnnmi"});
  named.handle = "nnmi1";  // [agent.nnmi1] id = ws-198/10.2.0.121:8081
  start({named});
  LogCapture log;
  auto post = [&](const std::string& query) {
    auto r = client_->Post(("/v1/webhooks/hpnnmi" + query).c_str(), auth(),
                           R"({"status":"active"})", "application/json");
    EXPECT_TRUE(r && r->status == 202) << (r ? r->body : "no response");
    return row(*relay_, body_of(r)["id"]);
  };
  // The handle: recorded (agent and queue) under the identifier the dispatcher delivers to.
  auto by_handle = post("?agent=nnmi1");
  ASSERT_TRUE(by_handle);
  EXPECT_EQ(by_handle->agent, kAgent);
  EXPECT_EQ(by_handle->assigned_agent, kAgent);
  // Neither an identifier nor a handle: kept as given, and said once per identifier.
  for (int i = 0; i < 3; ++i) {
    auto unknown = post("?agent=nnmi2");
    ASSERT_TRUE(unknown);
    EXPECT_EQ(unknown->agent, "nnmi2");
    EXPECT_EQ(unknown->state, "queued");
  }
  post("?agent=ws-9%2F10.0.0.9%3A8081");
  post(std::string("?agent=") + kAgentEncoded);  // configured: not logged
  std::string text = log.text();
  EXPECT_EQ(occurrences(text, "agent identifier 'nnmi2'"), 1u) << text;
  EXPECT_EQ(occurrences(text, "agent identifier 'ws-9/10.0.0.9:8081'"), 1u) << text;
  EXPECT_EQ(occurrences(text, "which no configured agent has"), 2u) << text;
  EXPECT_NE(text.find("configured: ws-198/10.2.0.121:8081 ([agent.nnmi1])"), std::string::npos)
      << text;
  EXPECT_NE(text.find("[warning]"), std::string::npos) << text;
}

TEST_F(ServerTest, NoAvailableAgentDiscardsWithReasonUnlessTheServiceHolds) {
  start({make_agent("a1", {"hpnnmi", "remedy"})}, {ServiceConfig{"remedy", true}});
  relay_->directory().set_availability("a1", Availability::kDown);
  auto discarded =
      client_->Post("/v1/webhooks/hpnnmi", auth(), R"({"status":"active"})", "application/json");
  auto held =
      client_->Post("/v1/webhooks/remedy", auth(), R"({"status":"active"})", "application/json");
  auto unknown =
      client_->Post("/v1/webhooks/nobody?type=status", auth(), R"({"x":1})", "application/json");
  ASSERT_TRUE(discarded && held && unknown);
  EXPECT_EQ(body_of(discarded)["state"], "discarded");
  EXPECT_EQ(body_of(held)["state"], "queued");
  auto d = row(*relay_, body_of(discarded)["id"]);
  EXPECT_EQ(d->state, "discarded");
  ASSERT_TRUE(d->last_error);
  EXPECT_NE(d->last_error->find("no agent available (a1 down)"), std::string::npos);
  auto h = row(*relay_, body_of(held)["id"]);
  EXPECT_EQ(h->state, "queued");
  EXPECT_FALSE(h->assigned_agent.has_value());
  auto u = row(*relay_, body_of(unknown)["id"]);
  EXPECT_EQ(u->state, "discarded");
  EXPECT_EQ(u->last_error, "unknown service");
  EXPECT_EQ(u->type, "status");
}

TEST_F(ServerTest, JournalFailureAnswers503AndStoresNothing) {
  start({make_agent("a1", {"hpnnmi"})});
  ASSERT_TRUE(relay_->writer()
                  .run([](SQLite::Database& db) {
                    db.exec(
                        "CREATE TRIGGER refuse BEFORE INSERT ON webhooks BEGIN "
                        "SELECT RAISE(ABORT, 'disk says no'); END");
                  })
                  .is_ok());
  auto r =
      client_->Post("/v1/webhooks/hpnnmi", auth(), R"({"status":"active"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  EXPECT_NE(body_of(r)["error"].get<std::string>().find("disk says no"), std::string::npos);
  EXPECT_EQ(relay_->count(), 0);
}

TEST_F(ServerTest, EdgeStoresAndFeedLongPollReturnsWhenAWebhookArrives) {
  start({});
  // Nothing yet: a short long-poll returns empty with next = after.
  auto empty = client_->Get("/v1/feed?after=0&wait=0", auth());
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 200);
  EXPECT_EQ(body_of(empty), json::parse(R"({"messages":[],"next":0,"newest":0})"));

  std::string body = testing::read_file(testing::fixture("ib_response.json"));
  std::optional<httplib::Response> polled;
  auto started = std::chrono::steady_clock::now();
  std::thread poll([&] {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    auto got = c.Get("/v1/feed?after=0&max=10&wait=30", auth());
    if (got) polled = *got;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto r = client_->Post(("/v1/webhooks/hpnnmi?agent=" + std::string(kAgentEncoded)).c_str(),
                         auth(), body, "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202);
  json reply = body_of(r);
  EXPECT_EQ(reply["state"], "stored");
  poll.join();
  auto waited = std::chrono::steady_clock::now() - started;
  ASSERT_TRUE(polled);
  ASSERT_EQ(polled->status, 200);
  EXPECT_LT(waited, std::chrono::seconds(20));  // woken by the commit, not by the timeout
  json feed = json::parse(polled->body);
  ASSERT_EQ(feed["messages"].size(), 1u);
  const json& m = feed["messages"][0];
  EXPECT_EQ(m["id"], reply["id"]);
  EXPECT_EQ(m["service"], "hpnnmi");
  EXPECT_EQ(m["agent"], kAgent);
  EXPECT_EQ(m["type"], "response");
  EXPECT_EQ(m["payload"], json::parse(body));
  EXPECT_EQ(feed["next"], m["seq"]);
  // The stored bytes travel exactly: the JSON value embedded as received, what surrounded it in
  // the body (the fixture's final newline) beside it, as parse_feed puts them back together.
  auto batch = parse_feed(polled->body);
  ASSERT_TRUE(batch.is_ok()) << batch.status().message();
  EXPECT_EQ(batch->messages.at(0).payload, body);
  EXPECT_EQ(row(*relay_, reply["id"])->state, "stored");

  // After the last seq: empty again, next stays.
  std::string after = "/v1/feed?after=" + std::to_string(m["seq"].get<int>()) + "&wait=0";
  EXPECT_EQ(body_of(client_->Get(after.c_str(), auth()))["messages"].size(), 0u);
}

TEST_F(ServerTest, FeedValidatesParametersAndRequiresTheToken) {
  start({});
  EXPECT_EQ(client_->Get("/v1/feed?after=0")->status, 401);
  auto bad = client_->Get("/v1/feed?after=abc", auth());
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(body_of(bad)["error"].get<std::string>().find("after"), std::string::npos);
  EXPECT_EQ(client_->Get("/v1/feed?max=0", auth())->status, 400);
  EXPECT_EQ(client_->Get("/v1/feed?wait=-1", auth())->status, 400);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(client_->Post("/v1/webhooks/hpnnmi", auth(), R"({"status":"x"})", "application/json")
                  ->status,
              202);
  json two = body_of(client_->Get("/v1/feed?after=1&max=2", auth()));
  ASSERT_EQ(two["messages"].size(), 2u);
  EXPECT_EQ(two["messages"][0]["seq"], 2);
  EXPECT_EQ(two["next"], 3);
}

TEST_F(ServerTest, InvalidTextInTheRequestLineOrHeadersIs400NamingTheField) {
  start({make_agent("a1", {"hpnnmi"})});
  std::string ok_body = R"({"status":"active","eventIdentifier":1})";
  struct Case {
    std::string path;
    httplib::Headers headers;
    const char* says;
  };
  std::vector<Case> cases = {
      {"/v1/webhooks/hpnnmi?agent=ws-1%2F127.0.0.1%3A18777&type=%FF", auth(),
       "type is not valid UTF-8"},
      {"/v1/webhooks/hpnnmi?agent=ws-1%0A", auth(), "agent contains a control character"},
      {"/v1/webhooks/hp%C3nnmi", auth(), "service is not valid UTF-8"},
      {"/v1/webhooks/" + std::string(300, 's'), auth(), "service is longer than 256 bytes"},
      {"/v1/webhooks/hpnnmi?agent=" + std::string(300, 'a'), auth(),
       "agent is longer than 256 bytes"},
  };
  httplib::Headers key = auth();
  key.emplace("Idempotency-Key", "k\xFF");
  cases.push_back({"/v1/webhooks/hpnnmi", key, "Idempotency-Key is not valid UTF-8"});
  for (const auto& c : cases) {
    auto r = client_->Post(c.path.c_str(), c.headers, ok_body, "application/json");
    ASSERT_TRUE(r) << c.path;
    EXPECT_EQ(r->status, 400) << c.path << ": " << r->body;
    json reply = body_of(r);
    ASSERT_TRUE(reply.is_object() && reply["error"].is_string()) << c.path << ": " << r->body;
    EXPECT_NE(reply["error"].get<std::string>().find(c.says), std::string::npos)
        << c.path << ": " << r->body;
  }
  EXPECT_EQ(relay_->count(), 0);
  // The status document and the feed are still whole JSON (nothing invalid was stored).
  auto r =
      client_->Post("/v1/webhooks/hpnnmi?agent=caf%C3%A9", auth(), ok_body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
}

TEST_F(ServerTest, FeedAnswerIsBoundedInBytes) {
  start({});
  const std::string pad(100'000, 'x');
  for (int i = 0; i < 60; ++i) {
    std::string body = R"({"status":"active","eventIdentifier":)" + std::to_string(i) +
                       R"(,"pad":")" + pad + "\"}";
    ASSERT_EQ(client_->Post("/v1/webhooks/hpnnmi", auth(), body, "application/json")->status, 202);
  }
  // Asked for: never more than max_bytes (unless one message alone is larger).
  auto r = client_->Get("/v1/feed?after=0&max=100&max_bytes=250000", auth());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_LE(r->body.size(), 250'000u);
  json small = json::parse(r->body);
  ASSERT_EQ(small["messages"].size(), 2u);
  EXPECT_EQ(small["next"], small["messages"][1]["seq"]);
  EXPECT_EQ(small["newest"], 60);
  auto one = json::parse(client_->Get("/v1/feed?after=0&max=100&max_bytes=10", auth())->body);
  EXPECT_EQ(one["messages"].size(), 1u);
  // Not asked for: a default of a few MiB, not 60 x 100 kB.
  auto all = client_->Get("/v1/feed?after=0&max=100", auth());
  ASSERT_TRUE(all);
  EXPECT_LE(all->body.size(), 4u << 20);
  size_t n = json::parse(all->body)["messages"].size();
  EXPECT_GE(n, 30u);
  EXPECT_LT(n, 60u);
  EXPECT_EQ(client_->Get("/v1/feed?max_bytes=0", auth())->status, 400);
}

TEST_F(ServerTest, UnknownServicesShareOneMetricSeries) {
  start({make_agent("a1", {"hpnnmi"})}, {{"held", true}});
  std::string body = R"({"status":"active","eventIdentifier":1})";
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(client_
                  ->Post(("/v1/webhooks/svc" + std::to_string(i)).c_str(), auth(), body,
                         "application/json")
                  ->status,
              202);
  ASSERT_EQ(client_->Post("/v1/webhooks/hpnnmi", auth(), body, "application/json")->status, 202);
  ASSERT_EQ(client_->Post("/v1/webhooks/held", auth(), body, "application/json")->status, 202);
  std::string metrics = client_->Get("/metrics")->body;
  size_t series = 0;
  for (size_t pos = 0;
       (pos = metrics.find("\niarelay_intake_webhooks_total{", pos)) != std::string::npos; ++pos)
    ++series;
  EXPECT_EQ(series, 3u) << metrics;
  EXPECT_EQ(testing::metric_value(
                metrics, R"(iarelay_intake_webhooks_total{service="other",state="discarded"})"),
            100)
      << metrics;
  EXPECT_EQ(testing::metric_value(
                metrics, R"(iarelay_intake_webhooks_total{service="hpnnmi",state="queued"})"),
            1);
  EXPECT_NE(metrics.find(R"(iarelay_intake_webhooks_total{service="held",)"), std::string::npos);
  EXPECT_EQ(metrics.find("svc7"), std::string::npos);
}

TEST_F(ServerTest, FeedAckIsRecordedForTheConsumer) {
  start({});
  auto ok = client_->Post("/v1/feed/ack", auth(), R"({"consumer":"inner-1","seq":17})",
                          "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 204);
  // A lower ack never moves it back.
  EXPECT_EQ(
      client_->Post("/v1/feed/ack", auth(), R"({"consumer":"inner-1","seq":3})", "application/json")
          ->status,
      204);
  EXPECT_EQ(relay_->reader()
                ->execAndGet("SELECT acked_seq FROM consumers WHERE name='inner-1'")
                .getInt64(),
            17);
  EXPECT_EQ(client_->Post("/v1/feed/ack", auth(), R"({"seq":3})", "application/json")->status, 400);
  EXPECT_EQ(
      client_->Post("/v1/feed/ack", auth(), R"({"consumer":"x","seq":-1})", "application/json")
          ->status,
      400);
  EXPECT_EQ(
      client_->Post("/v1/feed/ack", R"({"consumer":"x","seq":1})", "application/json")->status,
      401);
}

TEST_F(ServerTest, AdminEndpointsAndJsonErrors) {
  start({});
  auto health = client_->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(body_of(health)["status"], "ok");
  EXPECT_EQ(client_->Get("/readyz")->status, 200);
  auto status = client_->Get("/v1/status", auth());
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(body_of(status)["status"], "from-context");
  EXPECT_EQ(client_->Get("/v1/status")->status, 401);
  ASSERT_EQ(
      client_->Post("/v1/webhooks/hpnnmi", auth(), R"({"status":"x"})", "application/json")->status,
      202);
  auto metrics = client_->Get("/metrics");
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_NE(metrics->body.find(R"(iarelay_intake_requests_total{code="202"} 1)"),
            std::string::npos);
  auto missing = client_->Get("/v1/nothing-here");
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(body_of(missing)["error"].get<std::string>().find("/v1/nothing-here"),
            std::string::npos);
}

TEST_F(ServerTest, StopReturnsWhileAFeedLongPollIsWaiting) {
  start({});
  std::thread poll([&] {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    (void)c.Get("/v1/feed?after=0&wait=60", auth());  // the outcome does not matter
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto started = std::chrono::steady_clock::now();
  relay_->stop_server();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(15));
  poll.join();
}

TEST(ServerTls, ServesHttpsWithTheConfiguredCertificate) {
  testing::TempDir dir;
  ASSERT_EQ(testing::make_self_signed_cert(dir.file("cert.pem"), dir.file("key.pem")), "");
  InProcessRelay relay(dir.file("j.db"));
  int port = relay.start_server(0, "", 1 << 20, dir.file("cert.pem"), dir.file("key.pem"));
  ASSERT_GT(port, 0);
  httplib::SSLClient tls("127.0.0.1", port);
  tls.set_ca_cert_path(dir.file("cert.pem").c_str());
  tls.enable_server_certificate_verification(true);
  auto r = tls.Post("/v1/webhooks/hpnnmi", R"({"status":"active"})", "application/json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 202);
  httplib::Client plain("127.0.0.1", port);
  auto refused = plain.Get("/healthz");
  EXPECT_TRUE(!refused || refused->status != 200);
  EXPECT_EQ(relay.count(), 1);
}

}  // namespace
}  // namespace iarelay
