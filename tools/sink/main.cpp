// iarelay-sink (README.md, "What is here"): a stand-in apia_callback endpoint for trials and tests.
// Answers 204 or an injected fault, verifies Standard Webhooks signatures, records one JSON line
// per request and prints a summary (one JSON object on stdout) on SIGTERM or SIGINT.
//
// --down-for D: the sink does not listen at all for the first D (callers see "connection
// refused", as with an agent that is stopped), then starts serving.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>

#include "common/config.h"
#include "common/time.h"
#include "dispatch/signature.h"
#include "stand_in_options.h"

namespace po = boost::program_options;
using iarelay::Millis;

namespace {

struct Options {
  std::string listen;
  std::string record;
  std::string secret_file;
  double fail_rate = 0;
  int fail_status = 503;
  Millis latency = 0;
  Millis down_for = 0;
  std::string retry_after;
  std::uint64_t seed = 0;
  bool seeded = false;
};

struct Totals {
  std::uint64_t requests = 0, ok = 0, faults = 0, valid = 0, invalid = 0, unsigned_ = 0;
  std::uint64_t duplicates = 0;
  std::unordered_set<std::string> ids;
};

// cpp-httplib 0.11 listens with a backlog of 5: a caller opening dozens of connections at once
// (the dispatcher with max_inflight 64) overflows the accept queue and requests stall for
// seconds. listen() again on the bound socket raises the backlog (Linux allows it).
void widen_backlog(int port) {
  for (int fd = 3; fd < 1024; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int p = addr.ss_family == AF_INET    ? ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port)
            : addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                         : -1;
    if (p == port) listen(fd, 1024);
  }
}

int usage_error(const std::string& message) {
  return iarelay::tools::usage_error("iarelay-sink", message);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string latency_text = "0ms", down_text = "0ms";
  po::options_description desc(
      "iarelay-sink: a stand-in apia_callback endpoint that records deliveries\n"
      "Usage: iarelay-sink --listen HOST:PORT [options]\nOptions");
  desc.add_options()("help", "show this help and exit")("version", "show the version and exit")(
      "listen", po::value(&o.listen), "address to listen on, HOST:PORT (port 0: any free port)")(
      "record", po::value(&o.record), "append one JSON line per request to this file")(
      "secret-file", po::value(&o.secret_file),
      "verify webhook-signature with this secret (or IARELAY_SINK_SECRET)")(
      "fail-rate", po::value(&o.fail_rate), "fraction of requests answered with --fail-status")(
      "fail-status", po::value(&o.fail_status), "status of injected failures (default 503)")(
      "retry-after", po::value(&o.retry_after), "Retry-After header sent with injected failures")(
      "latency", po::value(&latency_text), "delay before each answer, e.g. 20ms")(
      "down-for", po::value(&down_text), "do not listen at all for this long after start")(
      "seed", po::value(&o.seed), "seed of the failure draw (default: random)");
  po::variables_map vm;
  if (auto done = iarelay::tools::parse_options(argc, argv, desc, vm, "iarelay-sink")) return *done;
  o.seeded = vm.count("seed") > 0;
  if (o.listen.empty()) return usage_error("--listen is required");
  auto colon = o.listen.rfind(':');
  if (colon == std::string::npos) return usage_error("--listen: expected HOST:PORT");
  std::string host = o.listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(o.listen.substr(colon + 1));
  } catch (const std::exception&) {
    return usage_error("--listen: bad port");
  }
  if (o.fail_rate < 0 || o.fail_rate > 1) return usage_error("--fail-rate: expected 0..1");
  auto latency = iarelay::parse_duration(latency_text);
  if (!latency) return usage_error("--latency: " + latency.status().message());
  auto down = iarelay::parse_duration(down_text);
  if (!down) return usage_error("--down-for: " + down.status().message());
  o.latency = *latency;
  o.down_for = *down;

  std::string key;
  auto secret = iarelay::read_secret(o.secret_file, "IARELAY_SINK_SECRET");
  if (!secret) {
    std::cerr << "iarelay-sink: " << secret.status().message() << "\n";
    return 1;
  }
  if (!secret->empty()) {
    auto k = iarelay::signing_key(*secret);
    if (!k) {
      std::cerr << "iarelay-sink: " << o.secret_file << ": " << k.status().message() << "\n";
      return 1;
    }
    key = *k;
  }
  FILE* record = nullptr;
  if (!o.record.empty()) {
    record = std::fopen(o.record.c_str(), "a");
    if (!record) {
      std::cerr << "iarelay-sink: " << o.record << ": cannot open for appending\n";
      return 1;
    }
  }

  // Signals are taken by one thread with sigwait, so handlers need no async-signal care.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  httplib::Server server;
  std::mutex mu;
  Totals totals;                                                    // GUARDED_BY(mu)
  std::mt19937_64 rng(o.seeded ? o.seed : std::random_device{}());  // GUARDED_BY(mu)
  std::uniform_real_distribution<double> draw(0.0, 1.0);

  server.new_task_queue = [] { return new httplib::ThreadPool(128); };
  server.set_keep_alive_max_count(1000000);
  server.set_payload_max_length(64 << 20);
  server.Post(".*", [&](const httplib::Request& req, httplib::Response& res) {
    const Millis received = iarelay::now_millis();
    if (o.latency > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.latency));
    const std::string id = req.get_header_value("webhook-id");
    const std::string ts = req.get_header_value("webhook-timestamp");
    const std::string sig = req.get_header_value("webhook-signature");
    std::string verdict = "unsigned";
    if (!sig.empty())
      verdict =
          !key.empty() && iarelay::verify_webhook(key, id, ts, req.body, sig) ? "valid" : "invalid";
    int status = 204;
    {
      std::lock_guard lock(mu);
      if (o.fail_rate > 0 && draw(rng) < o.fail_rate) status = o.fail_status;
      ++totals.requests;
      if (status >= 200 && status < 300) {
        ++totals.ok;
        if (!totals.ids.insert(id).second) ++totals.duplicates;
      } else {
        ++totals.faults;
      }
      if (verdict == "valid")
        ++totals.valid;
      else if (verdict == "invalid")
        ++totals.invalid;
      else
        ++totals.unsigned_;
      if (record) {
        nlohmann::json line = {{"webhook_id", id},
                               {"attempt", req.get_header_value("X-Iarelay-Attempt")},
                               {"type", req.get_header_value("X-Iarelay-Type")},
                               {"service", req.get_header_value("X-Iarelay-Service")},
                               {"timestamp", ts},
                               {"received_at", iarelay::format_time(received)},
                               {"signature", verdict},
                               {"status", status},
                               {"body", req.body}};
        std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        text += '\n';
        std::fwrite(text.data(), 1, text.size(), record);
        std::fflush(record);
      }
    }
    res.status = status;
    if (status >= 200 && status < 300) return;
    if (!o.retry_after.empty()) res.set_header("Retry-After", o.retry_after);
    res.set_content("{\"error\":\"injected failure\"}", "application/json");
  });

  // On SIGTERM/SIGINT: stop accepting, print the summary and exit at once. Waiting for the
  // server's workers would wait out every idle keep-alive connection (5 s each); records are
  // already flushed line by line, and the lock keeps a half-written line out.
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    server.stop();
    std::lock_guard lock(mu);
    if (record) std::fclose(record);
    nlohmann::json summary = {
        {"requests", totals.requests},
        {"answered_2xx", totals.ok},
        {"faults", totals.faults},
        {"distinct_delivered", totals.ids.size()},
        {"duplicates", totals.duplicates},
        {"signatures",
         {{"valid", totals.valid}, {"invalid", totals.invalid}, {"unsigned", totals.unsigned_}}}};
    std::cout << summary.dump() << std::endl;
    std::_Exit(0);
  });
  signal_thread.detach();

  if (o.down_for > 0) {
    std::cerr << "iarelay-sink: down (not listening) for " << down_text << "\n";
    std::this_thread::sleep_for(std::chrono::milliseconds(o.down_for));
  }
  int bound =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    std::cerr << "iarelay-sink: cannot listen on " << o.listen << "\n";
    return 1;
  }
  widen_backlog(bound);
  std::cerr << "iarelay-sink: listening on " << host << ":" << bound << "\n";
  server.listen_after_bind();
  // Only reached if the listener failed on its own; a signal exits from its thread.
  std::cerr << "iarelay-sink: listener stopped\n";
  return 1;
}
