// iarelayd as a process with an agent section for an Integration Agent's service gateway
// (issue 13): one section serves several services through {domain}_{service}; a webhook of a
// type the agent's `kinds` leave out is stored, ends discarded with the reason (iarelay list,
// show, /metrics), and a resend after a reload that adds the type delivers it; a mistyped
// placeholder is a configuration error naming the line.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// The stand-in gateway: answers 204 to a POST on any path; keeps each request's path and
// webhook-id.
class Gateway {
 public:
  Gateway() : port_(free_port()) {
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      calls_.emplace_back(req.path, req.get_header_value("webhook-id"));
      res.status = 204;
    });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    EXPECT_TRUE(wait_for_port(port_));
  }
  ~Gateway() {
    server_.stop();
    thread_.join();
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The paths `id` was sent to.
  std::vector<std::string> paths_of(const std::string& id) {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& [path, webhook] : calls_)
      if (webhook == id) out.push_back(path);
    return out;
  }
  std::size_t calls() {
    std::lock_guard lock(mu_);
    return calls_.size();
  }

 private:
  int port_;
  httplib::Server server_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> calls_;  // GUARDED_BY(mu_)
};

std::string config(const TempDir& dir, int port, const std::string& callback,
                   const std::string& extra = "") {
  return "journal = " + dir.file("journal.db") +
         "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
         "\n[agent.nnmi1]\ncallback = " + callback + "\nservices = hpnnmi, remedy\n" + extra;
}

// Posts a webhook to `target` (path and query); returns its id.
std::string post(int port, const std::string& target, const std::string& body) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post(target, body, "application/json");
  EXPECT_TRUE(res);
  if (!res) return "";
  EXPECT_EQ(res->status, 202) << res->body;
  Json doc = Json::parse(res->body, nullptr, false);
  return doc.is_object() ? doc.value("id", "") : "";
}

bool has_line(const std::string& path, const std::string& needle) {
  return read_file(path).find(needle) != std::string::npos;
}

TEST(AgentKinds, OneSectionServesTheGatewayAndOtherTypesEndDiscardedUntilAdded) {
  TempDir dir;
  Gateway ia;
  int port = free_port();
  const std::string conf = dir.file("relay.conf");
  const std::string callback = ia.base() + "/http/{domain}_{service}";
  write_file(conf, config(dir, port, callback));
  Process relay({bin("iarelayd"), "--config", conf}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));

  // "applications|hpnnmi" as xMatters names it (the bar percent-encoded in the path).
  const std::string escalation = post(port, "/v1/webhooks/applications%7Chpnnmi?type=escalation",
                                      R"({"eventIdentifier": 11, "status": "active"})");
  const std::string status = post(port, "/v1/webhooks/applications%7Chpnnmi",
                                  R"({"eventIdentifier": 11, "status": "active"})");
  const std::string remedy =
      post(port, "/v1/webhooks/remedy", R"({"eventIdentifier": 12, "status": "active"})");
  ASSERT_TRUE(wait_until([&] { return ia.calls() >= 2; }, 10s)) << read_file(dir.file("relay.log"));
  EXPECT_EQ(ia.paths_of(status), std::vector<std::string>{"/http/applications_hpnnmi"});
  EXPECT_EQ(ia.paths_of(remedy), std::vector<std::string>{"/http/applications_remedy"});
  EXPECT_TRUE(ia.paths_of(escalation).empty());

  // Stored, discarded with the reason, shown by iarelay list and show.
  const std::string reason =
      "type \"escalation\" is not in [agent.nnmi1] kinds (status, deliveryStatus, response, "
      "annotation)";
  auto list =
      run({bin("iarelay"), "--config", conf, "list", "--state", "discarded", "--format", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  Json rows = Json::parse(list.out, nullptr, false);
  ASSERT_TRUE(rows.is_array() && rows.size() == 1u) << list.out;
  EXPECT_EQ(rows[0]["id"], escalation);
  EXPECT_EQ(rows[0]["type"], "escalation");
  EXPECT_EQ(rows[0]["last_error"], reason);
  auto show = run({bin("iarelay"), "--config", conf, "show", escalation});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find(reason), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("callback         " + ia.base() + "/http/applications_hpnnmi"),
            std::string::npos)
      << show.out;
  // Counted as the other discards are.
  httplib::Client client("127.0.0.1", port);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("iarelay_webhooks_waiting_for_operator{state=\"discarded\"} 1"),
            std::string::npos)
      << metrics->body;

  // The operator adds the type, reloads, resends: delivered to the gateway.
  write_file(conf, config(dir, port, callback,
                          "kinds = status, deliveryStatus, response, annotation, escalation\n"));
  relay.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return has_line(dir.file("relay.log"), "reloaded"); }, 10s))
      << read_file(dir.file("relay.log"));
  auto resend = run({bin("iarelay"), "--config", conf, "resend", escalation});
  ASSERT_EQ(resend.exit_code, 0) << resend.err;
  ASSERT_TRUE(wait_until([&] { return !ia.paths_of(escalation).empty(); }, 10s))
      << read_file(dir.file("relay.log"));
  EXPECT_EQ(ia.paths_of(escalation), std::vector<std::string>{"/http/applications_hpnnmi"});
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

// While its agent is paused, `iarelay show` says that a queued webhook's type is not in the
// agent's kinds (with --config); on resume it ends discarded, not sent.
TEST(AgentKinds, ShowSaysAQueuedTypeIsNotInTheAgentsKinds) {
  TempDir dir;
  Gateway ia;
  int port = free_port();
  const std::string conf = dir.file("relay.conf");
  write_file(conf, config(dir, port, ia.base() + "/http/{domain}_{service}"));
  Process relay({bin("iarelayd"), "--config", conf}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  auto pause = run({bin("iarelay"), "--config", conf, "agent", "pause", "nnmi1"});
  ASSERT_EQ(pause.exit_code, 0) << pause.err;
  ASSERT_TRUE(
      wait_until([&] { return has_line(dir.file("relay.log"), "paused by operator"); }, 10s))
      << read_file(dir.file("relay.log"));
  const std::string id = post(port, "/v1/webhooks/hpnnmi?agent=nnmi1",
                              R"({"eventIdentifier": 21, "xmatters_callback_type": "escalation"})");
  auto show = run({bin("iarelay"), "--config", conf, "show", id});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("state            queued"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("its type \"escalation\" is not in [agent.nnmi1] kinds (status, "
                          "deliveryStatus, response, annotation) of " +
                          conf + ": the daemon discards it instead of sending it"),
            std::string::npos)
      << show.out;
  auto resume = run({bin("iarelay"), "--config", conf, "agent", "resume", "nnmi1"});
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  ASSERT_TRUE(wait_until(
      [&] {
        auto list = run(
            {bin("iarelay"), "--config", conf, "list", "--state", "discarded", "--format", "json"});
        Json rows = Json::parse(list.out, nullptr, false);
        return rows.is_array() && rows.size() == 1u && rows[0]["id"] == id;
      },
      10s))
      << read_file(dir.file("relay.log"));
  EXPECT_EQ(ia.calls(), 0u);
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

// A mistyped placeholder is refused at start (and by --check) and at a reload, naming the line.
TEST(AgentKinds, UnknownPlaceholderIsAConfigurationErrorNamingTheLine) {
  TempDir dir;
  int port = free_port();
  const std::string conf = dir.file("relay.conf");
  const std::string bad = config(dir, port, "http://127.0.0.1:8081/http/{domain}_{servcie}");
  const std::string where = conf +
                            ":5: [agent.nnmi1] callback: unknown placeholder {servcie} "
                            "(did you mean {service}?)";
  write_file(conf, bad);
  auto check = run({bin("iarelayd"), "--config", conf, "--check"});
  EXPECT_NE(check.exit_code, 0);
  EXPECT_NE(check.err.find(where), std::string::npos) << check.err;

  write_file(conf, config(dir, port, "http://127.0.0.1:8081/http/{domain}_{service}"));
  Process relay({bin("iarelayd"), "--config", conf}, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  write_file(conf, bad);
  relay.signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return has_line(dir.file("relay.log"), "reload failed"); }, 10s))
      << read_file(dir.file("relay.log"));
  EXPECT_TRUE(has_line(dir.file("relay.log"), where)) << read_file(dir.file("relay.log"));
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(20s), 0);
}

}  // namespace
}  // namespace iarelay::testing
