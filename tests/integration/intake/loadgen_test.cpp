// iarelay-loadgen against a stand-in intake (cpp-httplib on 127.0.0.1) that refuses some
// requests: every webhook is retried until a 2xx, with the same Idempotency-Key, the token from
// the file, and each accepted id is recorded once; a 4xx fails the run and says why.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>

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

}  // namespace
}  // namespace iarelay
