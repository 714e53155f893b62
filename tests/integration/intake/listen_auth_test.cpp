// The listener's authentication (docs/operations.md "Authentication"): HTTP Basic with a token as
// the password (what xMatters can send), a bearer token or a `token` query parameter, any of
// several tokens; every refusal a 401 naming what is accepted; the token in no log line, metric,
// status document or journal byte. In-process (the Server on 127.0.0.1) and, when the binaries
// are built, with iarelayd and iarelay-loadgen (reload rotates the tokens).
#include <httplib.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/crypto.h"
#include "harness.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using nlohmann::json;
using testing::InProcessRelay;
using testing::make_agent;

constexpr const char* kOld = "old-TOKEN-4f1c9a";
constexpr const char* kNew = "new-TOKEN-77b2e0";
constexpr const char* kAgentEncoded = "ws-198%2F10.2.0.121%3A8081";
constexpr const char* kAgent = "ws-198/10.2.0.121:8081";
constexpr const char* kBody = R"({"status":"active","eventIdentifier":1})";

httplib::Headers bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}
httplib::Headers basic(const std::string& user, const std::string& password) {
  return {{"Authorization", "Basic " + base64_encode(user + ":" + password)}};
}

// Logs of the default logger into a string while alive.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

// Every byte of the journal's files (the database, its WAL and shared memory).
std::string journal_bytes(const std::string& journal) {
  std::string out;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"})
    if (std::filesystem::exists(journal + suffix)) out += testing::read_file(journal + suffix);
  return out;
}

class ListenAuth : public ::testing::Test {
 protected:
  // The listener with `tokens` and `user`, an agent for hpnnmi.
  void start(std::vector<std::string> tokens, std::string user = "") {
    relay_ = std::make_unique<InProcessRelay>(dir_.file("journal.db"),
                                              std::vector{make_agent(kAgent, {"hpnnmi"})});
    port_ = relay_->start_server(0, "placeholder-token");
    ASSERT_GT(port_, 0);
    relay_->set_credentials({std::move(tokens), std::move(user)});
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
  }
  httplib::Result post(const std::string& target, const httplib::Headers& headers = {}) {
    return client_->Post(target.c_str(), headers, kBody, "application/json");
  }
  // The 401's body, after checking the status, the header and that the message says what
  // is accepted and echoes none of `secrets`.
  std::string refused(const httplib::Result& r, const std::string& name,
                      const std::vector<std::string>& secrets) {
    EXPECT_TRUE(r) << name;
    if (!r) return "";
    EXPECT_EQ(r->status, 401) << name << ": " << r->body;
    EXPECT_EQ(r->get_header_value_count("WWW-Authenticate"), 1u) << name;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), R"(Basic realm="iarelay", Bearer)") << name;
    json body = json::parse(r->body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body["error"].is_string()) << name << ": " << r->body;
    std::string message = body.value("error", "");
    EXPECT_NE(message.find("as the password of HTTP Basic, as 'Authorization: Bearer <token>', or "
                           "as the query parameter token=<token>"),
              std::string::npos)
        << name << ": " << message;
    for (const auto& s : secrets) EXPECT_EQ(r->body.find(s), std::string::npos) << name;
    return message;
  }

  testing::TempDir dir_;
  std::unique_ptr<InProcessRelay> relay_;
  std::unique_ptr<httplib::Client> client_;
  int port_ = 0;
};

TEST_F(ListenAuth, BasicBearerAndQueryAreEachAcceptedWithEitherTokenAndTheQueryStillRoutes) {
  start({kOld, kNew});
  int n = 0;
  for (const std::string token : {kOld, kNew}) {
    struct Way {
      std::string name, target;
      httplib::Headers headers;
    };
    const std::string routed = std::string("/v1/webhooks/hpnnmi?agent=") + kAgentEncoded;
    const Way ways[] = {
        {"basic, any user", routed + "&type=status", basic("xmatters", token)},
        {"basic, another user", routed + "&type=status", basic("someone else", token)},
        {"basic, empty user, scheme in lower case",
         routed + "&type=status",
         {{"Authorization", "basic " + base64_encode(":" + token)}}},
        {"bearer", routed + "&type=status", bearer(token)},
        {"query, last", routed + "&type=status&token=" + token, {}},
        {"query, first",
         "/v1/webhooks/hpnnmi?token=" + token + "&type=status&agent=" + kAgentEncoded,
         {}},
    };
    for (const auto& w : ways) {
      auto r = post(w.target, w.headers);
      ASSERT_TRUE(r) << w.name;
      ASSERT_EQ(r->status, 202) << w.name << " with " << token << ": " << r->body;
      ++n;
      std::string id = json::parse(r->body)["id"];
      auto db = relay_->reader();
      SQLite::Statement q(*db, "SELECT agent, type, service FROM webhooks WHERE id=?");
      q.bind(1, id);
      ASSERT_TRUE(q.executeStep());
      EXPECT_EQ(q.getColumn(0).getString(), kAgent) << w.name;
      EXPECT_EQ(q.getColumn(1).getString(), "status") << w.name;
      EXPECT_EQ(q.getColumn(2).getString(), "hpnnmi") << w.name;
    }
  }
  EXPECT_EQ(relay_->count(), n);
}

TEST_F(ListenAuth, EveryRefusalIsA401NamingTheSchemesAndTheMistakeWithoutEchoingIt) {
  start({kOld, kNew}, "xmatters");
  const std::string sent_wrong = "wrong-SECRET-3d9";
  struct Case {
    std::string name, target;
    httplib::Headers headers;
    std::string says;
  };
  const std::string path = "/v1/webhooks/hpnnmi";
  const Case cases[] = {
      {"nothing", path, {}, "no credentials"},
      {"bearer, wrong token", path, bearer(sent_wrong), "the bearer token is not a listen token"},
      {"bearer, empty",
       path,
       {{"Authorization", "Bearer "}},
       "Authorization: Bearer carries no token"},
      {"basic, wrong password", path, basic("xmatters", sent_wrong),
       "the HTTP Basic password is not a listen token"},
      {"basic, wrong user, right password", path, basic("xmatter", kNew),
       "the HTTP Basic user name is not the one configured ([listen] user)"},
      {"basic, wrong user, wrong password", path, basic(sent_wrong, sent_wrong),
       "the HTTP Basic user name is not the one configured ([listen] user)"},
      {"basic, not base64",
       path,
       {{"Authorization", "Basic " + sent_wrong + "!!"}},
       "malformed HTTP Basic credentials: not base64 of user:password"},
      {"basic, base64 without padding",
       path,
       {{"Authorization", "Basic " + base64_encode("xmatters:" + sent_wrong).substr(0, 22)}},
       "malformed HTTP Basic credentials: not base64"},
      {"basic, no colon",
       path,
       {{"Authorization", "Basic " + base64_encode(sent_wrong)}},
       "malformed HTTP Basic credentials: no ':' between the user name and the password"},
      {"basic, empty", path, {{"Authorization", "Basic"}}, "malformed HTTP Basic credentials"},
      {"another scheme",
       path,
       {{"Authorization", "Digest " + sent_wrong}},
       "the Authorization header is neither Basic nor Bearer"},
      {"the token without a scheme",
       path,
       {{"Authorization", sent_wrong}},
       "the Authorization header is neither Basic nor Bearer"},
      {"query, wrong token",
       path + "?type=status&token=" + sent_wrong,
       {},
       "the token query parameter is not a listen token"},
      {"query, empty token",
       path + "?token=",
       {},
       "the token query parameter is not a listen token"},
      {"query, twice",
       path + "?token=" + std::string(kNew) + "&token=" + sent_wrong,
       {},
       "the token query parameter is given more than once"},
      // The header decides: a right token in the query does not make up for a wrong header.
      {"wrong header, right query", path + "?token=" + std::string(kNew), bearer(sent_wrong),
       "the bearer token is not a listen token"},
  };
  for (const auto& c : cases) {
    std::string message = refused(post(c.target, c.headers), c.name, {sent_wrong, kOld, kNew});
    EXPECT_EQ(message.rfind(c.says, 0), 0u) << c.name << ": " << message;
  }
  EXPECT_EQ(relay_->count(), 0);
  EXPECT_EQ(testing::metric_value(relay_->metrics().render(),
                                  R"(iarelay_intake_requests_total{code="401"})"),
            static_cast<double>(std::size(cases)));
  // The configured user with either token passes.
  EXPECT_EQ(post(path, basic("xmatters", kOld))->status, 202);
  EXPECT_EQ(post(path, basic("xmatters", kNew))->status, 202);
}

TEST_F(ListenAuth, FeedAckAndStatusTakeTheSameCredentialsAndProbesStayOpen) {
  start({kOld, kNew}, "xmatters");
  const std::string q = std::string("token=") + kNew;
  // Accepted: each scheme on each route, the query's other parameters still read.
  auto feed = client_->Get(("/v1/feed?after=0&max=1&" + q).c_str());
  ASSERT_TRUE(feed);
  EXPECT_EQ(feed->status, 200) << feed->body;
  EXPECT_TRUE(json::parse(feed->body)["messages"].is_array()) << feed->body;
  EXPECT_EQ(client_->Get("/v1/feed?max=0&" + q)->status, 400);  // max still validated
  EXPECT_EQ(client_->Get("/v1/feed", basic("xmatters", kOld))->status, 200);
  EXPECT_EQ(client_->Get("/v1/status", basic("xmatters", kNew))->status, 200);
  EXPECT_EQ(client_->Get(("/v1/status?" + q).c_str())->status, 200);
  EXPECT_EQ(
      client_
          ->Post(("/v1/feed/ack?" + q).c_str(), R"({"consumer":"c","seq":1})", "application/json")
          ->status,
      204);
  EXPECT_EQ(client_
                ->Post("/v1/feed/ack", basic("xmatters", kOld), R"({"consumer":"c","seq":1})",
                       "application/json")
                ->status,
            204);
  // Refused the same way.
  refused(client_->Get("/v1/feed?token=nope"), "feed, wrong query token", {kOld, kNew});
  refused(client_->Get("/v1/status", basic("other", kNew)), "status, wrong user", {kOld, kNew});
  refused(client_->Post("/v1/feed/ack", basic("xmatters", "nope"), "{}", "application/json"),
          "ack, wrong password", {kOld, kNew});
  // Probes and Prometheus stay open.
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
  EXPECT_EQ(client_->Get("/readyz")->status, 200);
  EXPECT_EQ(client_->Get("/metrics")->status, 200);
}

TEST_F(ListenAuth, DuringARotationBothTokensPassAndAfterItTheRemovedOneIsRefused) {
  start({kOld});
  EXPECT_EQ(post("/v1/webhooks/hpnnmi", basic("xmatters", kOld))->status, 202);
  refused(post("/v1/webhooks/hpnnmi", basic("xmatters", kNew)), "new before rotation", {kNew});
  relay_->set_credentials({{kOld, kNew}, ""});  // the new token added
  for (const char* token : {kOld, kNew}) {
    EXPECT_EQ(post("/v1/webhooks/hpnnmi", basic("xmatters", token))->status, 202) << token;
    EXPECT_EQ(post("/v1/webhooks/hpnnmi", bearer(token))->status, 202) << token;
    EXPECT_EQ(post(std::string("/v1/webhooks/hpnnmi?token=") + token)->status, 202) << token;
  }
  relay_->set_credentials({{kNew}, ""});  // the old one removed
  refused(post("/v1/webhooks/hpnnmi", basic("xmatters", kOld)), "old basic", {kOld, kNew});
  refused(post("/v1/webhooks/hpnnmi", bearer(kOld)), "old bearer", {kOld, kNew});
  refused(post(std::string("/v1/webhooks/hpnnmi?token=") + kOld), "old query", {kOld, kNew});
  EXPECT_EQ(post("/v1/webhooks/hpnnmi", basic("xmatters", kNew))->status, 202);
  // The keep-alive connection the client holds is checked against the new tokens too.
  EXPECT_EQ(relay_->count(), 8);
}

TEST_F(ListenAuth, TheTokenIsInNoLogLineMetricOrJournalByte) {
  LogCapture log;
  start({kOld, kNew});
  // Accepted and refused requests of every kind, with the kinds of query that get logged (an
  // agent identifier nobody configured) and answers that carry messages (400, 404, 405).
  for (const char* token : {kOld, kNew}) {
    std::string t = std::string("token=") + token;
    EXPECT_EQ(post("/v1/webhooks/hpnnmi?agent=nobody-configured&" + t)->status, 202);
    EXPECT_EQ(post("/v1/webhooks/hpnnmi?" + t + "&agent=" + kAgentEncoded)->status, 202);
    EXPECT_EQ(post("/v1/webhooks/unknown-service?type=status&" + t)->status, 202);
    EXPECT_EQ(
        client_->Post(("/v1/webhooks/hpnnmi?" + t).c_str(), "[1]", "application/json")->status,
        400);
    EXPECT_EQ(
        client_->Post(("/v1/webhooks/hpnnmi?type=%FF&" + t).c_str(), kBody, "application/json")
            ->status,
        400);
    EXPECT_EQ(client_->Get(("/v1/webhooks/hpnnmi?" + t).c_str())->status, 405);
    EXPECT_EQ(client_->Get(("/v1/nothing?" + t).c_str())->status, 404);
    EXPECT_EQ(post("/v1/webhooks/hpnnmi", basic(token, "wrong"))->status, 401);
    EXPECT_EQ(post("/v1/webhooks/hpnnmi", basic("xmatters", token))->status, 202);
    EXPECT_EQ(post("/v1/webhooks/hpnnmi", bearer(token))->status, 202);
    auto status = client_->Get(("/v1/status?" + t).c_str());
    EXPECT_EQ(status->status, 200);
    EXPECT_EQ(status->body.find(token), std::string::npos);
  }
  relay_->stop_server();  // every answer sent, every commit done
  std::string metrics = relay_->metrics().render();
  std::string logged = log.text();
  std::string journal = journal_bytes(relay_->journal());
  EXPECT_NE(logged.find("nobody-configured"), std::string::npos) << "nothing was logged?";
  for (const char* token : {kOld, kNew}) {
    EXPECT_EQ(logged.find(token), std::string::npos) << logged;
    EXPECT_EQ(metrics.find(token), std::string::npos) << metrics;
    EXPECT_EQ(journal.find(token), std::string::npos) << token << " is in the journal";
  }
}

// ---- With the real binaries ----

bool have_binaries() {
  return access(testing::bin("iarelayd").c_str(), X_OK) == 0 &&
         access(testing::bin("iarelay-loadgen").c_str(), X_OK) == 0;
}

std::string summary_field(const std::string& out, const std::string& key) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ": ", 0) == 0) return line.substr(key.size() + 2);
  return "?";
}

// iarelayd with two tokens and [listen] user: loadgen with Basic (no bearer) and with the query
// parameter gets every webhook in; a reload after the old token is removed refuses it and keeps
// the new one; a reload with a token file emptied is refused and the tokens stay; no token is in
// the daemon's log, /metrics, /v1/status or the journal's files.
TEST(ListenAuthDaemon, LoadgenWithBasicAndQueryAndRotationByReload) {
  if (!have_binaries()) GTEST_SKIP() << "iarelayd or iarelay-loadgen not built";
  testing::TempDir dir;
  const int port = testing::free_port();
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  testing::write_file(dir.file("intake.token"),
                      std::string("\n  ") + kOld + "  \n\n" + kNew + "\r\n");
  testing::write_file(dir.file("relay.conf"),
                      "journal = " + dir.file("journal.db") +
                          "\nlog_level = debug\n[listen]\naddress = 127.0.0.1:" +
                          std::to_string(port) + "\ntoken_file = " + dir.file("intake.token") +
                          "\nuser = xmatters\n[agent.a1]\nid = " + kAgent +
                          "\ncallback = http://127.0.0.1:1/cb\nservices = hpnnmi\n");
  auto check =
      testing::run({testing::bin("iarelayd"), "--config", dir.file("relay.conf"), "--check"});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  testing::Process daemon({testing::bin("iarelayd"), "--config", dir.file("relay.conf")}, "",
                          dir.file("daemon.log"));
  ASSERT_TRUE(testing::wait_for_port(port)) << testing::read_file(dir.file("daemon.log"));

  // The loadgen reads the first token of its file; a file like the daemon's is fine.
  testing::write_file(dir.file("old.token"), std::string(kOld) + "\n" + kNew + "\n");
  testing::write_file(dir.file("new.token"), std::string(kNew) + "\n");
  auto loadgen = [&](const std::string& token_file, std::vector<std::string> extra) {
    std::vector<std::string> argv = {testing::bin("iarelay-loadgen"),
                                     "--url",
                                     url,
                                     "--service",
                                     "applications|hpnnmi",
                                     "--agent",
                                     kAgent,
                                     "--count",
                                     "40",
                                     "--concurrency",
                                     "4",
                                     "--token-file",
                                     token_file,
                                     "--give-up-after",
                                     "20"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return testing::run(argv);
  };
  auto by_basic = loadgen(dir.file("old.token"), {"--auth", "basic"});
  EXPECT_EQ(by_basic.exit_code, 0) << by_basic.out << by_basic.err;
  EXPECT_EQ(summary_field(by_basic.out, "accepted"), "40");
  auto by_query = loadgen(dir.file("new.token"), {"--auth", "query"});
  EXPECT_EQ(by_query.exit_code, 0) << by_query.out << by_query.err;
  EXPECT_EQ(summary_field(by_query.out, "accepted"), "40");
  EXPECT_NE(by_query.err.find("iarelay-loadgen: POST " + url +
                              "/v1/webhooks/applications%7Chpnnmi?agent=ws-198%2F10.2.0.121%3A8081"
                              "&token=REDACTED (--auth query)"),
            std::string::npos)
      << by_query.err;
  auto wrong_user = loadgen(dir.file("new.token"), {"--auth", "basic", "--user", "nnmi"});
  EXPECT_EQ(wrong_user.exit_code, 1);
  EXPECT_NE(wrong_user.err.find("refused with HTTP 401"), std::string::npos) << wrong_user.err;
  EXPECT_NE(wrong_user.err.find("user name is not the one configured"), std::string::npos)
      << wrong_user.err;

  httplib::Client client("127.0.0.1", port);
  auto post = [&](const httplib::Headers& h, const std::string& query = "") {
    auto r = client.Post(("/v1/webhooks/hpnnmi?type=status" + query).c_str(), h, kBody,
                         "application/json");
    return r ? r->status : -1;
  };
  EXPECT_EQ(post(basic("xmatters", kOld)), 202);
  EXPECT_EQ(post(bearer(kNew)), 202);
  EXPECT_EQ(post({}, std::string("&token=") + kOld), 202);
  EXPECT_EQ(post(basic("someone", kOld)), 401);

  // Rotation: the old token removed from the file, SIGHUP.
  testing::write_file(dir.file("intake.token"), std::string(kNew) + "\n");
  daemon.signal(SIGHUP);
  ASSERT_TRUE(testing::wait_until(
      [&] {
        return testing::read_file(dir.file("daemon.log")).find("reloaded") != std::string::npos;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(post(basic("xmatters", kOld)), 401);
  EXPECT_EQ(post(bearer(kOld)), 401);
  EXPECT_EQ(post({}, std::string("&token=") + kOld), 401);
  EXPECT_EQ(post(basic("xmatters", kNew)), 202);
  // A token file with no token: the reload is refused, the tokens in use stay.
  testing::write_file(dir.file("intake.token"), "\n   \n");
  daemon.signal(SIGHUP);
  ASSERT_TRUE(testing::wait_until(
      [&] {
        return testing::read_file(dir.file("daemon.log")).find("reload failed") !=
               std::string::npos;
      },
      std::chrono::seconds(10)));
  EXPECT_NE(testing::read_file(dir.file("daemon.log")).find("token file holds no token"),
            std::string::npos);
  EXPECT_EQ(post(basic("xmatters", kNew)), 202);
  check = testing::run({testing::bin("iarelayd"), "--config", dir.file("relay.conf"), "--check"});
  EXPECT_EQ(check.exit_code, 2) << check.err;
  EXPECT_NE(check.err.find("[listen] token_file: " + dir.file("intake.token") +
                           ": token file holds no token (write one token per line)"),
            std::string::npos)
      << check.err;

  auto metrics = client.Get("/metrics");
  auto status = client.Get("/v1/status", basic("xmatters", kNew));
  ASSERT_TRUE(metrics && status);
  EXPECT_EQ(status->status, 200);
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0);
  std::string logged = testing::read_file(dir.file("daemon.log"));
  std::string journal = journal_bytes(dir.file("journal.db"));
  EXPECT_GT(journal.size(), 0u);
  for (const char* token : {kOld, kNew}) {
    EXPECT_EQ(logged.find(token), std::string::npos) << logged;
    EXPECT_EQ(metrics->body.find(token), std::string::npos);
    EXPECT_EQ(status->body.find(token), std::string::npos) << status->body;
    EXPECT_EQ(journal.find(token), std::string::npos) << token << " is in the journal";
    EXPECT_EQ(by_basic.err.find(token), std::string::npos) << by_basic.err;
    EXPECT_EQ(by_query.err.find(token), std::string::npos) << by_query.err;
  }
}

// A token file with no token in it does not start the daemon (nor pass --check), naming the
// file; the same file with a token does.
TEST(ListenAuthDaemon, ATokenFileWithoutATokenStopsTheStart) {
  if (!have_binaries()) GTEST_SKIP() << "iarelayd not built";
  testing::TempDir dir;
  const int port = testing::free_port();
  testing::write_file(dir.file("intake.token"), "\n \t\n\n");
  testing::write_file(dir.file("relay.conf"),
                      "journal = " + dir.file("journal.db") +
                          "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                          "\ntoken_file = " + dir.file("intake.token") + "\n");
  const std::string says = "[listen] token_file: " + dir.file("intake.token") +
                           ": token file holds no token (write one token per line)";
  for (bool check : {true, false}) {
    std::vector<std::string> argv = {testing::bin("iarelayd"), "--config", dir.file("relay.conf")};
    if (check) argv.push_back("--check");
    auto r = testing::run(argv);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << r.err;
  }
  testing::write_file(dir.file("intake.token"), std::string(kNew) + "\n");
  auto ok = testing::run({testing::bin("iarelayd"), "--config", dir.file("relay.conf"), "--check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// The loadgen's libcurl path (https://) sends each scheme too: an in-process relay with TLS
// takes every webhook of each run with Basic (the configured user), bearer and query.
TEST(ListenAuthDaemon, LoadgenOverHttpsSendsEachScheme) {
  if (!have_binaries()) GTEST_SKIP() << "iarelay-loadgen not built";
  testing::TempDir dir;
  ASSERT_EQ(testing::make_self_signed_cert(dir.file("cert.pem"), dir.file("key.pem")), "");
  InProcessRelay relay(dir.file("j.db"), {make_agent(kAgent, {"hpnnmi"})});
  int port =
      relay.start_server(0, "placeholder", 1 << 20, dir.file("cert.pem"), dir.file("key.pem"));
  ASSERT_GT(port, 0);
  relay.set_credentials({{kOld, kNew}, "nnmi-relay"});
  testing::write_file(dir.file("token"), std::string(kNew) + "\n");
  int expected = 0;
  for (std::vector<std::string> how :
       {std::vector<std::string>{"--auth", "basic", "--user", "nnmi-relay"},
        {"--auth", "bearer"},
        {"--auth", "query"},
        {"--auth", "basic"}}) {
    std::vector<std::string> argv = {testing::bin("iarelay-loadgen"),
                                     "--url",
                                     "https://127.0.0.1:" + std::to_string(port),
                                     "--service",
                                     "hpnnmi",
                                     "--count",
                                     "20",
                                     "--concurrency",
                                     "2",
                                     "--token-file",
                                     dir.file("token"),
                                     "--give-up-after",
                                     "20"};
    argv.insert(argv.end(), how.begin(), how.end());
    auto r = testing::run(argv);
    bool wrong_user = how.size() == 2 && how[1] == "basic";  // default user "xmatters"
    EXPECT_EQ(r.exit_code, wrong_user ? 1 : 0) << how[1] << ": " << r.out << r.err;
    EXPECT_EQ(summary_field(r.out, "accepted"), wrong_user ? "0" : "20") << how[1] << r.err;
    if (!wrong_user) expected += 20;
    EXPECT_EQ(r.err.find(kNew), std::string::npos) << r.err;
  }
  EXPECT_EQ(relay.count(), expected);
}

}  // namespace
}  // namespace iarelay
