// iarelay-loadgen against a stand-in intake (cpp-httplib on 127.0.0.1) that refuses some
// requests: every webhook is retried until a 2xx, with the same Idempotency-Key, the token from
// the file, and each accepted id is recorded once; a 4xx fails the run and says why. With several
// --url (real iarelayd relays, or in-process ones over TLS): the webhooks are split across the
// relays, and a relay that fails has its share taken by the others.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "harness.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

using nlohmann::json;

// Answers POST /v1/webhooks/{service}: `decide(k)` gives the status of the k-th request.
class StandIn {
 public:
  explicit StandIn(std::function<int(int)> decide) : decide_(std::move(decide)) {
    server_.Post(R"(/v1/webhooks/(.+))", [this](const httplib::Request& req,
                                                httplib::Response& res) {
      std::lock_guard lock(mu_);
      int k = requests_++;
      int status = decide_(k);
      std::string key = req.get_header_value("Idempotency-Key");
      auth_.insert(req.get_header_value("Authorization"));
      services_.insert(req.matches[1]);
      if (!json::accept(req.body)) ++bad_bodies_;
      res.status = status;
      if (status == 503) {
        ++refused_;
        refused_keys_.insert(key);
        res.set_header("Retry-After", "0");
        res.set_content(R"({"error":"journal not writable: test"})", "application/json");
      } else if (status == 400) {
        res.set_content(R"x({"error":"body is not a JSON object (test)"})x", "application/json");
      } else {
        ++accepted_[key];
        res.set_content(
            json{{"id", "w-" + std::to_string(k)}, {"state", "queued"}, {"duplicate", false}}
                .dump(),
            "application/json");
      }
    });
    // A thread per keep-alive connection: more than the loadgen opens.
    server_.new_task_queue = [] { return new httplib::ThreadPool(32); };
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~StandIn() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  std::mutex mu_;
  int requests_ = 0, refused_ = 0, bad_bodies_ = 0;
  std::map<std::string, int> accepted_;  // Idempotency-Key -> 2xx answers
  std::set<std::string> refused_keys_;   // the Idempotency-Keys answered 503
  std::set<std::string> auth_, services_;

 private:
  std::function<int(int)> decide_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

std::string summary_field(const std::string& out, const std::string& key) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ": ", 0) == 0) return line.substr(key.size() + 2);
  return "?";
}

TEST(Loadgen, RetriesEveryWebhookUntilAcceptedAndRecordsEachIdOnce) {
  testing::TempDir dir;
  StandIn intake([](int k) { return k % 3 == 0 ? 503 : 202; });
  testing::write_file(dir.file("token"), "s3cret\n");
  auto wall_us = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const long long before_us = wall_us();
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url", intake.url(), "--service",
                         "applications|hpnnmi", "--count", "300", "--concurrency", "16",
                         "--token-file", dir.file("token"), "--record", dir.file("rec.jsonl")});
  const long long after_us = wall_us();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(summary_field(r.out, "accepted"), "300");
  EXPECT_EQ(summary_field(r.out, "failed"), "0");
  std::lock_guard lock(intake.mu_);
  EXPECT_GT(intake.refused_, 90);
  EXPECT_EQ(summary_field(r.out, "retried"), std::to_string(intake.refused_));
  EXPECT_EQ(intake.bad_bodies_, 0);
  EXPECT_EQ(intake.auth_, std::set<std::string>{"Bearer s3cret"});
  EXPECT_EQ(intake.services_, std::set<std::string>{"applications|hpnnmi"});
  // One Idempotency-Key per webhook, kept across its retries, accepted exactly once.
  EXPECT_EQ(intake.accepted_.size(), 300u);
  for (const auto& [key, n] : intake.accepted_) EXPECT_EQ(n, 1) << key;
  std::istringstream rec(testing::read_file(dir.file("rec.jsonl")));
  std::set<std::string> ids;
  int lines = 0;
  for (std::string line; std::getline(rec, line); ++lines) {
    json j = json::parse(line);
    ids.insert(j["id"]);
    // The wall-clock time of the 2xx answer, within the run (intake_bench --latency joins it
    // with the agent's receive time).
    ASSERT_TRUE(j.contains("accepted_at_us")) << line;
    EXPECT_GE(j["accepted_at_us"].get<long long>(), before_us) << line;
    EXPECT_LE(j["accepted_at_us"].get<long long>(), after_us) << line;
  }
  EXPECT_EQ(lines, 300);
  EXPECT_EQ(ids.size(), 300u);
}

TEST(Loadgen, RefusedWebhooksFailTheRunAndSayWhy) {
  StandIn intake([](int k) { return k % 10 == 0 ? 400 : 202; });
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url", intake.url(), "--service",
                         "hpnnmi", "--count", "50", "--concurrency", "4"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(summary_field(r.out, "failed"), "5");
  EXPECT_EQ(summary_field(r.out, "accepted"), "45");
  EXPECT_NE(r.err.find("refused with HTTP 400"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("body is not a JSON object (test)"), std::string::npos) << r.err;
}

TEST(Loadgen, UnreachableRelayIsRetriedThenGivenUpWithTheReason) {
  int port = testing::free_port();  // nothing listens here
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url",
                         "http://127.0.0.1:" + std::to_string(port), "--service", "hpnnmi",
                         "--count", "2", "--concurrency", "2", "--give-up-after", "1"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(summary_field(r.out, "failed"), "2");
  EXPECT_NE(r.err.find("Connection refused"), std::string::npos) << r.err;
}

// A relay that answers 503 to everything: each of its webhooks is retried on the other relay with
// the Idempotency-Key it was first sent with, and accepted there once.
TEST(Loadgen, AWebhookRefusedByOneUrlIsRetriedOnTheNextWithTheSameKey) {
  StandIn refusing([](int) { return 503; });
  StandIn taking([](int) { return 202; });
  auto r =
      testing::run({testing::bin("iarelay-loadgen"), "--url", refusing.url(), "--url", taking.url(),
                    "--service", "hpnnmi", "--count", "100", "--concurrency", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(summary_field(r.out, "accepted"), "100");
  EXPECT_EQ(summary_field(r.out, "accepted_by"), refusing.url() + "=0 " + taking.url() + "=100");
  std::scoped_lock lock(refusing.mu_, taking.mu_);
  // Webhook n goes first to URL n % 2: the even ones were refused once each.
  EXPECT_EQ(refusing.refused_, 50);
  EXPECT_EQ(refusing.refused_keys_.size(), 50u);
  EXPECT_EQ(taking.refused_, 0);
  EXPECT_EQ(taking.accepted_.size(), 100u);
  for (const auto& [key, n] : taking.accepted_) EXPECT_EQ(n, 1) << key;
  for (const auto& key : refusing.refused_keys_) EXPECT_EQ(taking.accepted_.count(key), 1u) << key;
}

bool have_binaries() {
  return access(testing::bin("iarelayd").c_str(), X_OK) == 0 &&
         access(testing::bin("iarelay-loadgen").c_str(), X_OK) == 0;
}

// An iarelayd on a free port of 127.0.0.1 with its own SQLite journal in `dir`.
class RelayProcess {
 public:
  RelayProcess(const testing::TempDir& dir, const std::string& name)
      : journal_(dir.file(name + ".db")), port_(testing::free_port()) {
    testing::write_file(
        dir.file(name + ".conf"),
        "journal = " + journal_ +
            "\nsync = normal\n[listen]\naddress = 127.0.0.1:" + std::to_string(port_) + "\n");
    process_ = std::make_unique<testing::Process>(
        std::vector<std::string>{testing::bin("iarelayd"), "--config", dir.file(name + ".conf")},
        "", dir.file(name + ".log"));
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  bool ready() const { return testing::wait_for_port(port_); }
  // SIGTERM; the exit code.
  int stop() {
    process_->signal(SIGTERM);
    return process_->wait();
  }
  std::set<std::string> stored_ids() const {
    SQLite::Database db(journal_, SQLite::OPEN_READONLY);
    std::set<std::string> ids;
    SQLite::Statement q(db, "SELECT id FROM webhooks");
    while (q.executeStep()) ids.insert(q.getColumn(0).getString());
    return ids;
  }

 private:
  std::string journal_;
  int port_;
  std::unique_ptr<testing::Process> process_;
};

// The record's lines: url -> the ids it accepted.
std::map<std::string, std::set<std::string>> recorded_ids_by_url(const std::string& path) {
  std::map<std::string, std::set<std::string>> out;
  std::istringstream rec(testing::read_file(path));
  for (std::string line; std::getline(rec, line);)
    if (!line.empty()) {
      json j = json::parse(line);
      out[j["url"].get<std::string>()].insert(j["id"].get<std::string>());
    }
  return out;
}

// Two relays (each its own journal here, one PostgreSQL database in docs/high-availability.md):
// the webhooks are split across them, each stored by exactly one, and the summary and the record
// say which relay accepted how many and which ids.
TEST(Loadgen, SeveralUrlsSplitTheWebhooksAcrossTheRelays) {
  if (!have_binaries()) GTEST_SKIP() << "iarelayd or iarelay-loadgen not built";
  testing::TempDir dir;
  RelayProcess a(dir, "a"), b(dir, "b");
  ASSERT_TRUE(a.ready()) << testing::read_file(dir.file("a.log"));
  ASSERT_TRUE(b.ready()) << testing::read_file(dir.file("b.log"));
  constexpr int kCount = 400;
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url", a.url(), "--url", b.url() + "/",
                         "--service", "hpnnmi", "--count", std::to_string(kCount), "--concurrency",
                         "8", "--record", dir.file("rec.jsonl")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(a.stop(), 0);
  EXPECT_EQ(b.stop(), 0);
  EXPECT_EQ(summary_field(r.out, "accepted"), std::to_string(kCount));
  EXPECT_EQ(summary_field(r.out, "failed"), "0");
  auto in_a = a.stored_ids(), in_b = b.stored_ids();
  EXPECT_GT(in_a.size(), 0u);
  EXPECT_GT(in_b.size(), 0u);
  EXPECT_EQ(in_a.size() + in_b.size(), static_cast<size_t>(kCount));
  EXPECT_EQ(summary_field(r.out, "accepted_by"), a.url() + "=" + std::to_string(in_a.size()) + " " +
                                                     b.url() + "=" + std::to_string(in_b.size()));
  auto recorded = recorded_ids_by_url(dir.file("rec.jsonl"));
  EXPECT_EQ(recorded.size(), 2u);
  EXPECT_EQ(recorded[a.url()], in_a);
  EXPECT_EQ(recorded[b.url()], in_b);
}

// One of the two URLs is a port nobody listens on: every webhook is accepted by the live relay,
// half of them (those sent first to the dead URL) at their second attempt.
TEST(Loadgen, AllWebhooksGoToTheLiveRelayWhenTheOtherIsDown) {
  if (!have_binaries()) GTEST_SKIP() << "iarelayd or iarelay-loadgen not built";
  testing::TempDir dir;
  RelayProcess live(dir, "live");
  ASSERT_TRUE(live.ready()) << testing::read_file(dir.file("live.log"));
  const std::string dead = "http://127.0.0.1:" + std::to_string(testing::free_port());
  constexpr int kCount = 300;
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url", dead, "--url", live.url(),
                         "--service", "hpnnmi", "--count", std::to_string(kCount), "--concurrency",
                         "8", "--record", dir.file("rec.jsonl")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(live.stop(), 0);
  EXPECT_EQ(summary_field(r.out, "accepted"), std::to_string(kCount));
  EXPECT_EQ(summary_field(r.out, "failed"), "0");
  EXPECT_GE(std::stoi(summary_field(r.out, "retried")), kCount / 2);
  EXPECT_EQ(summary_field(r.out, "accepted_by"),
            dead + "=0 " + live.url() + "=" + std::to_string(kCount));
  auto stored = live.stored_ids();
  EXPECT_EQ(stored.size(), static_cast<size_t>(kCount));
  auto recorded = recorded_ids_by_url(dir.file("rec.jsonl"));
  EXPECT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[live.url()], stored);
}

// The libcurl path (https://) moves a retry to the next URL too: two in-process relays with TLS
// and, between them, a port nobody listens on, whose share goes on to the relay after it.
TEST(Loadgen, OverHttpsAFailedAttemptGoesToTheNextUrl) {
  if (!have_binaries()) GTEST_SKIP() << "iarelay-loadgen not built";
  testing::TempDir dir;
  ASSERT_EQ(testing::make_self_signed_cert(dir.file("cert.pem"), dir.file("key.pem")), "");
  testing::InProcessRelay first(dir.file("first.db")), second(dir.file("second.db"));
  auto https = [](int port) { return "https://127.0.0.1:" + std::to_string(port); };
  const std::string a = https(first.start_server(0, "", 1 << 20, dir.file("cert.pem"),
                                                 dir.file("key.pem"))),
                    dead = https(testing::free_port()),
                    c = https(second.start_server(0, "", 1 << 20, dir.file("cert.pem"),
                                                  dir.file("key.pem")));
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url", a, "--url", dead, "--url", c,
                         "--service", "hpnnmi", "--count", "60", "--concurrency", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // n % 3 == 1 went to the dead URL first, then to the third.
  EXPECT_EQ(summary_field(r.out, "accepted_by"), a + "=20 " + dead + "=0 " + c + "=40");
  EXPECT_EQ(first.count(), 20);
  EXPECT_EQ(second.count(), 40);
}

// Plain http:// goes over the loadgen's own sockets and https:// through libcurl: one run uses
// one of them.
TEST(Loadgen, MixedSchemesAreAUsageError) {
  auto r = testing::run({testing::bin("iarelay-loadgen"), "--url", "http://127.0.0.1:1", "--url",
                         "https://127.0.0.1:2", "--service", "hpnnmi"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("all http:// or all https://"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace iarelay
