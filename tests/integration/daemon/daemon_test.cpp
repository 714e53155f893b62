// iarelayd as a process: usage, configuration errors, the journal lock, signals, metrics.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <SQLiteCpp/SQLiteCpp.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "journal/writer.h"

#include "support/old_journal.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::testing {
namespace {

bool wait_for_text(const std::string& path, const std::string& needle,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (read_file(path).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The command line of iarelayd on dir/relay.conf, plus `args`.
std::vector<std::string> relayd(const TempDir& dir, std::vector<std::string> args = {}) {
  std::vector<std::string> argv{bin("iarelayd"), "--config", dir.file("relay.conf")};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// A relay configuration with a listener and one agent whose callback nobody answers.
std::string relay_config(const TempDir& dir, int port, const std::string& extra = "") {
  return "journal = " + dir.file("journal.db") +
         "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
         "\n[agent.a1]\nid = host/127.0.0.1:1\ncallback = http://127.0.0.1:1/apia_callback\n"
         "services = svc\n" +
         extra;
}

// The tests' own port picker: two servers of one test must never be handed one port (the
// second then fails to listen and the first answers in its place), and no outgoing connection
// may take the port before its server binds it (so: below the kernel's ephemeral range).
TEST(TestPorts, NeverTheSamePortTwiceAndNeverAnEphemeralOne) {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 32768;
  range >> low;
  std::set<int> seen;
  for (int i = 0; i < 3000; ++i) {
    int port = free_port();
    EXPECT_TRUE(seen.insert(port).second) << port << " handed out twice";
    EXPECT_LT(port, low);
  }
}

TEST(Daemon, HelpAndVersionExitZero) {
  CommandResult help = run({bin("iarelayd"), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--config"), std::string::npos);
  CommandResult version = run({bin("iarelayd"), "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.out.find("iarelayd "), std::string::npos);
}

TEST(Daemon, BadConfigurationExitsTwoNamingFileAndLine) {
  TempDir dir;
  write_file(dir.file("bad.conf"),
             "journal = j.db\n\n[agent.a]\ncallback = http://x/\ntimeout = soon\n");
  CommandResult r = run({bin("iarelayd"), "--config", dir.file("bad.conf")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(dir.file("bad.conf") + ":5: [agent.a] timeout"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(Daemon, JsonLogLinesAreJsonEvenWithQuotesInTheMessage) {
  TempDir dir;
  int port = free_port();
  std::string journal = dir.file("quote\"and\\backslash.db");
  Process relay({bin("iarelayd"), "--journal=" + journal, "--log_format=json",
                 "--listen.address=127.0.0.1:" + std::to_string(port)},
                "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  relay.signal(SIGTERM);
  ASSERT_EQ(relay.wait(), 0);
  std::istringstream lines(read_file(dir.file("relay.log")));
  std::string line;
  int parsed = 0;
  bool saw_journal = false;
  while (std::getline(lines, line)) {
    auto doc = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << line;
    ++parsed;
    if (doc["msg"].get<std::string>().find(journal) != std::string::npos) saw_journal = true;
  }
  EXPECT_GE(parsed, 3);
  EXPECT_TRUE(saw_journal);
}

TEST(Daemon, UnknownOptionIsBadUsage) {
  CommandResult r = run({bin("iarelayd"), "--no-such-key=1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no-such-key"), std::string::npos) << r.err;
}

TEST(Daemon, SecondDaemonOnTheSameJournalIsRefusedNamingThePid) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  Process first(relayd(dir), "", dir.file("first.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("first.log"));
  CommandResult second = run({bin("iarelayd"), "--config", dir.file("relay.conf"),
                              "--listen.address=127.0.0.1:" + std::to_string(free_port())});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("pid " + std::to_string(first.pid())), std::string::npos) << second.err;
  first.signal(SIGTERM);
  EXPECT_EQ(first.wait(), 0);
}

TEST(Daemon, SigtermStopsCleanlyWithExitZero) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  Process relay(relayd(dir), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":1})",
                         "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 202);
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(std::chrono::seconds(20)), 0) << read_file(dir.file("relay.log"));
  EXPECT_TRUE(wait_for_text(dir.file("relay.log"), "stopped cleanly", std::chrono::seconds(1)));
  // The lock is released: a new daemon starts on the same journal.
  Process again(relayd(dir), "", dir.file("again.log"));
  EXPECT_TRUE(wait_for_port(port)) << read_file(dir.file("again.log"));
}

TEST(Daemon, SighupWithABadFileKeepsTheRunningConfiguration) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  Process relay(relayd(dir), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  write_file(dir.file("relay.conf"), relay_config(dir, port, "max_inflight = lots\n"));
  relay.signal(SIGHUP);
  EXPECT_TRUE(wait_for_text(dir.file("relay.log"), "reload failed"));
  EXPECT_TRUE(wait_for_text(dir.file("relay.log"), "max_inflight"));
  EXPECT_TRUE(relay.running());
  // A good file with a second agent for another service: webhooks for it are routed there.
  write_file(
      dir.file("relay.conf"),
      relay_config(dir, port,
                   "[agent.a2]\nid = a2\ncallback = http://127.0.0.1:1/cb\nservices = other\n"));
  relay.signal(SIGHUP);
  EXPECT_TRUE(wait_for_text(dir.file("relay.log"), "reloaded"));
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/webhooks/other", R"({"status":"active"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 202);
  EXPECT_NE(res->body.find("\"queued\""), std::string::npos) << res->body;
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(std::chrono::seconds(20)), 0);
}

TEST(Daemon, SecondSignalExitsAtOnce) {
  TempDir dir;
  int port = free_port();
  // A long drain_grace and a callback that never answers keep the first stop busy.
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  Process relay(relayd(dir, {"--drain_grace=60s"}), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port));
  relay.signal(SIGTERM);
  relay.signal(SIGTERM);
  int code = relay.wait(std::chrono::seconds(5));
  EXPECT_TRUE(code == 0 || code == 1) << code;
}

TEST(Metrics, EveryDocumentedMetricIsExposedAndCountersMove) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  Process relay(relayd(dir), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  httplib::Client client("127.0.0.1", port);
  auto count_of = [&](const std::string& metrics, const std::string& series) {
    size_t at = metrics.find("\n" + series + " ");
    if (at == std::string::npos) return -1.0;
    return std::stod(metrics.substr(at + series.size() + 2));
  };
  for (int i = 0; i < 3; ++i) {
    auto res = client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":7})",
                           "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 202);
  }
  auto res = client.Post("/v1/webhooks/nobody", R"({"status":"active"})", "application/json");
  ASSERT_TRUE(res);
  // Give the dispatcher a moment to attempt (and fail against the dead callback).
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  ASSERT_EQ(metrics->status, 200);
  std::string text = metrics->body;
  // Every name in the documented table is present.
  std::string doc = read_file(std::string(IARELAY_SOURCE_DIR) + "/docs/operations.md");
  size_t b = doc.find("<!-- metrics:begin -->"), e = doc.find("<!-- metrics:end -->");
  ASSERT_NE(b, std::string::npos);
  int names = 0;
  for (size_t pos = doc.find("| `iarelay_", b); pos != std::string::npos && pos < e;
       pos = doc.find("| `iarelay_", pos + 1)) {
    size_t start = pos + 3, end = doc.find('`', start);
    std::string name = doc.substr(start, end - start);
    std::string row = doc.substr(pos, doc.find('\n', pos) - pos);
    if (row.find("with `[upstream]`") != std::string::npos) continue;  // poller metrics
    ++names;
    EXPECT_NE(text.find("# TYPE " + name + " "), std::string::npos) << name << "\n" << text;
  }
  EXPECT_GE(names, 10);
  EXPECT_EQ(count_of(text, R"(iarelay_intake_webhooks_total{service="svc",state="queued"})"), 3)
      << text;
  EXPECT_EQ(count_of(text, R"(iarelay_intake_webhooks_total{service="other",state="discarded"})"),
            1)
      << text;
  EXPECT_GE(count_of(text, R"(iarelay_deliveries_total{agent="host/127.0.0.1:1",outcome="retry"})"),
            1)
      << text;
}

std::string state_of(const std::string& journal, const std::string& id) {
  SQLite::Database db(journal);
  SQLite::Statement q(db, "SELECT state FROM webhooks WHERE id=?");
  q.bind(1, id);
  return q.executeStep() ? q.getColumn(0).getString() : "<none>";
}

std::string id_from(const std::string& body) {
  size_t at = body.find("\"id\":\"");
  return at == std::string::npos ? "" : body.substr(at + 6, body.find('"', at + 6) - at - 6);
}

// SIGTERM lets a call in flight finish within drain_grace and journals its outcome; past the
// grace the call is abandoned, stays inflight and is made again at the next start.
TEST(Drain, SigtermWaitsForCallsInFlightWithinTheGrace) {
  TempDir dir;
  int port = free_port(), agent_port = free_port();
  Process sink({bin("iarelay-sink"), "--listen", "127.0.0.1:" + std::to_string(agent_port),
                "--latency", "1500ms"},
               dir.file("sink.out"), dir.file("sink.log"));
  ASSERT_TRUE(wait_for_port(agent_port));
  std::string config = "journal = " + dir.file("journal.db") +
                       "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                       "\n[agent.a1]\ncallback = http://127.0.0.1:" + std::to_string(agent_port) +
                       "/cb\nservices = svc\n";
  write_file(dir.file("relay.conf"), config);
  Process relay(relayd(dir, {"--drain_grace=10s"}), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port));
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":5})",
                         "application/json");
  ASSERT_TRUE(res);
  std::string id = id_from(res->body);
  for (int i = 0; i < 200 && state_of(dir.file("journal.db"), id) != "inflight"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(state_of(dir.file("journal.db"), id), "inflight");
  // The claim is visible before its fsync, and the call starts once it is durable: give it the
  // moment to start (the sink holds it 1.5 s).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait(std::chrono::seconds(15)), 0) << read_file(dir.file("relay.log"));
  EXPECT_EQ(state_of(dir.file("journal.db"), id), "delivered") << read_file(dir.file("relay.log"));
}

// A SIGHUP while the relay stops (logrotate's kill -HUP, say) must not reconfigure parts that
// the stop is destroying: it is ignored, and the stop ends cleanly.
TEST(Drain, SighupDuringTheStopIsIgnored) {
  TempDir dir;
  int port = free_port(), agent_port = free_port();
  Process sink({bin("iarelay-sink"), "--listen", "127.0.0.1:" + std::to_string(agent_port),
                "--latency", "1500ms"},
               dir.file("sink.out"), dir.file("sink.log"));
  ASSERT_TRUE(wait_for_port(agent_port));
  std::string config = "journal = " + dir.file("journal.db") +
                       "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                       "\n[agent.a1]\ncallback = http://127.0.0.1:" + std::to_string(agent_port) +
                       "/cb\nservices = svc\n";
  write_file(dir.file("relay.conf"), config);
  Process relay(relayd(dir, {"--drain_grace=10s"}), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port));
  httplib::Client client("127.0.0.1", port);
  auto res = client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":7})",
                         "application/json");
  ASSERT_TRUE(res);
  std::string id = id_from(res->body);
  for (int i = 0; i < 200 && state_of(dir.file("journal.db"), id) != "inflight"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  relay.signal(SIGTERM);  // the stop waits for the call the sink holds 1.5 s
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  relay.signal(SIGHUP);
  EXPECT_EQ(relay.wait(std::chrono::seconds(15)), 0) << read_file(dir.file("relay.log"));
  std::string log = read_file(dir.file("relay.log"));
  EXPECT_NE(log.find("SIGHUP ignored: stopping"), std::string::npos) << log;
  EXPECT_EQ(log.find("reloaded"), std::string::npos) << log;
  EXPECT_EQ(state_of(dir.file("journal.db"), id), "delivered") << log;
}

TEST(Drain, ACallStillRunningAtTheGraceIsMadeAgainAtTheNextStart) {
  TempDir dir;
  int port = free_port(), agent_port = free_port();
  Process sink({bin("iarelay-sink"), "--listen", "127.0.0.1:" + std::to_string(agent_port),
                "--latency", "3s", "--record", dir.file("calls.jsonl")},
               dir.file("sink.out"), dir.file("sink.log"));
  ASSERT_TRUE(wait_for_port(agent_port));
  std::string config = "journal = " + dir.file("journal.db") +
                       "\n[listen]\naddress = 127.0.0.1:" + std::to_string(port) +
                       "\n[agent.a1]\ncallback = http://127.0.0.1:" + std::to_string(agent_port) +
                       "/cb\nservices = svc\n";
  write_file(dir.file("relay.conf"), config);
  std::string id;
  {
    Process relay(relayd(dir, {"--drain_grace=200ms"}), "", dir.file("relay.log"));
    ASSERT_TRUE(wait_for_port(port));
    httplib::Client client("127.0.0.1", port);
    auto res = client.Post("/v1/webhooks/svc", R"({"status":"active","eventIdentifier":6})",
                           "application/json");
    ASSERT_TRUE(res);
    id = id_from(res->body);
    for (int i = 0; i < 200 && state_of(dir.file("journal.db"), id) != "inflight"; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(state_of(dir.file("journal.db"), id), "inflight");
    // Visible before its fsync; the call starts once the claim is durable (the sink holds it 3 s).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto start = std::chrono::steady_clock::now();
    relay.signal(SIGTERM);
    EXPECT_EQ(relay.wait(std::chrono::seconds(15)), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2500));
    EXPECT_EQ(state_of(dir.file("journal.db"), id), "inflight");
  }
  Process relay(relayd(dir), "", dir.file("relay2.log"));
  ASSERT_TRUE(wait_for_port(port));
  for (int i = 0; i < 1000 && state_of(dir.file("journal.db"), id) != "delivered"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(state_of(dir.file("journal.db"), id), "delivered");
  // Both calls carried the same webhook-id.
  std::string calls = read_file(dir.file("calls.jsonl"));
  size_t first = calls.find(id), second = calls.find(id, first + 1);
  EXPECT_NE(first, std::string::npos) << calls;
  EXPECT_NE(second, std::string::npos) << calls;
}

// $NOTIFY_SOCKET as systemd has it: a datagram socket whose messages the test collects.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    timeval timeout{0, 100'000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~NotifySocket() { close(fd_); }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  bool bound() const { return bound_; }
  const std::string& path() const { return path_; }
  // Everything received so far, one message per line.
  const std::string& received() const { return received_; }
  // Collects messages for `for_how_long`.
  void drain(std::chrono::milliseconds for_how_long) {
    auto end = std::chrono::steady_clock::now() + for_how_long;
    char buf[512];
    while (std::chrono::steady_clock::now() < end) {
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n > 0) received_ += std::string(buf, static_cast<size_t>(n)) + "\n";
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::string received_;
};

// Type=notify: READY=1 once serving, WATCHDOG=1 while alive, STOPPING=1 on SIGTERM.
TEST(Systemd, NotifiesReadyWatchdogAndStopping) {
  TempDir dir;
  NotifySocket notify(dir.file("notify.sock"));
  ASSERT_TRUE(notify.bound());
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  {
    Process relay(relayd(dir), "", dir.file("relay.log"),
                  {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "400000"}});
    ASSERT_TRUE(wait_for_port(port));
    notify.drain(std::chrono::milliseconds(700));
    EXPECT_NE(notify.received().find("READY=1"), std::string::npos) << notify.received();
    EXPECT_NE(notify.received().find("WATCHDOG=1"), std::string::npos) << notify.received();
    EXPECT_EQ(notify.received().find("STOPPING=1"), std::string::npos) << notify.received();
    relay.signal(SIGTERM);
    notify.drain(std::chrono::milliseconds(300));
    EXPECT_EQ(relay.wait(), 0);
  }
  EXPECT_NE(notify.received().find("STOPPING=1"), std::string::npos) << notify.received();
}

// A journal an earlier build left: the migrations run before READY=1 and can take minutes, so
// the daemon asks systemd for time first (or a unit killed at its start timeout would roll the
// migration back and start it again, for ever), and says why. With nothing pending it does not.
TEST(Systemd, AsksForTimeBeforeMigratingAnOldJournal) {
  TempDir dir;
  {
    SQLite::Database old = journal_at_first_migration(dir.file("journal.db"));
    old.exec(
        "INSERT INTO webhooks (id, source, received_at, service, type, state, payload) VALUES "
        "('old1', 'direct', '2026-11-29T14:00:00.000Z', 'svc', 'status', 'delivered', '{}')");
  }
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  for (bool first_start : {true, false}) {
    SCOPED_TRACE(first_start ? "the start that migrates" : "the next start");
    NotifySocket notify(dir.file(first_start ? "notify1.sock" : "notify2.sock"));
    ASSERT_TRUE(notify.bound());
    Process relay(relayd(dir), "", dir.file("relay.log"), {{"NOTIFY_SOCKET", notify.path()}});
    ASSERT_TRUE(wait_for_port(port));
    notify.drain(std::chrono::milliseconds(500));
    const std::string& got = notify.received();
    size_t ready = got.find("READY=1");
    ASSERT_NE(ready, std::string::npos) << got;
    size_t extend = got.find("EXTEND_TIMEOUT_USEC=");
    if (first_start) {
      ASSERT_NE(extend, std::string::npos) << got;
      EXPECT_LT(extend, ready) << got;
      EXPECT_NE(got.find("STATUS=applying journal migrations: 0002_held_state"), std::string::npos)
          << got;
    } else {
      EXPECT_EQ(extend, std::string::npos) << got;
    }
    relay.signal(SIGTERM);
    EXPECT_EQ(relay.wait(), 0);
  }
  EXPECT_NE(read_file(dir.file("relay.log")).find("applying 3 journal migration(s)"),
            std::string::npos);
  SQLite::Database db(dir.file("journal.db"));
  EXPECT_EQ(db.execAndGet("SELECT state FROM webhooks WHERE id = 'old1'").getString(), "delivered");
}

TEST(Retention, PurgesOldDeliveredWebhooksOnlyAndAudits) {
  TempDir dir;
  {
    auto writer = Writer::open(dir.file("journal.db"), SyncLevel::kFull);
    ASSERT_TRUE(writer.is_ok()) << writer.status().message();
  }
  {
    SQLite::Database db(dir.file("journal.db"), SQLite::OPEN_READWRITE);
    const char* rows[][3] = {{"old-delivered", "delivered", "2020-01-01T00:00:00.000Z"},
                             {"old-failed", "failed", "2020-01-01T00:00:00.000Z"},
                             {"old-discarded", "discarded", "2020-01-01T00:00:00.000Z"},
                             {"old-queued", "queued", "2020-01-01T00:00:00.000Z"},
                             {"new-delivered", "delivered", "2099-01-01T00:00:00.000Z"}};
    for (auto& r : rows) {
      SQLite::Statement ins(db,
                            "INSERT INTO webhooks (id, source, received_at, service, type, state, "
                            "agent, assigned_agent, payload) VALUES (?, 'direct', ?, 'svc', "
                            "'status', ?, 'nobody-configured', 'nobody-configured', '{}')");
      ins.bind(1, r[0]);
      ins.bind(2, r[2]);
      ins.bind(3, r[1]);
      ins.exec();
    }
    db.exec(
        "INSERT INTO attempts (webhook_id, attempt, agent, started_at, outcome) VALUES "
        "('old-delivered', 1, 'x', '2020-01-01T00:00:00.000Z', 'delivered')");
  }
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port, ""));
  Process relay(relayd(dir, {"--retain_delivered=1h"}), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port));
  ASSERT_TRUE(wait_for_text(dir.file("relay.log"), "retention: purged 1"))
      << read_file(dir.file("relay.log"));
  SQLite::Database db(dir.file("journal.db"));
  std::string left;
  SQLite::Statement q(db, "SELECT id FROM webhooks ORDER BY id");
  while (q.executeStep()) left += q.getColumn(0).getString() + " ";
  EXPECT_EQ(left, "new-delivered old-discarded old-failed old-queued ");
  EXPECT_EQ(db.execAndGet("SELECT count(*) FROM attempts").getInt(), 0);
  EXPECT_EQ(
      db.execAndGet("SELECT count(*) FROM audit WHERE actor='iarelayd' AND affected=1").getInt(),
      1);
}

TEST(Status, AdminEndpointsAnswer) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  Process relay(relayd(dir), "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port));
  httplib::Client client("127.0.0.1", port);
  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  auto status = client.Get("/v1/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  EXPECT_NE(status->body.find("host/127.0.0.1:1"), std::string::npos) << status->body;
}

// Out of file descriptors, accept() fails with the connection left in the backlog: accepting
// again at once would spin at 100% CPU. The listener waits between tries, logs at most once a
// second, and serves again once descriptors are free.
TEST(Daemon, OutOfFileDescriptorsDoesNotSpinAndRecovers) {
  TempDir dir;
  int port = free_port();
  write_file(dir.file("relay.conf"), relay_config(dir, port));
  std::vector<std::string> argv{"/usr/bin/prlimit", "--nofile=40", "--"};
  for (auto& a : relayd(dir)) argv.push_back(a);
  Process relay(argv, "", dir.file("relay.log"));
  ASSERT_TRUE(wait_for_port(port)) << read_file(dir.file("relay.log"));
  std::vector<int> held;
  for (int i = 0; i < 60; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    held.push_back(fd);
  }
  ASSERT_TRUE(wait_for_text(dir.file("relay.log"), "accept failed"));
  auto cpu = [&] {
    std::istringstream stat(read_file("/proc/" + std::to_string(relay.pid()) + "/stat"));
    std::string field;
    long ticks = 0;
    for (int i = 1; i <= 15 && stat >> field; ++i)
      if (i == 14 || i == 15) ticks += std::stol(field);
    return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
  };
  double before = cpu();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_LT(cpu() - before, 0.5) << "the listener spins while out of descriptors";
  std::string log = read_file(dir.file("relay.log"));
  size_t warnings = 0;
  for (size_t p = 0; (p = log.find("accept failed", p)) != std::string::npos; ++p) ++warnings;
  EXPECT_LE(warnings, 4u) << log;
  for (int fd : held) ::close(fd);
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  int status = 0;
  for (int i = 0; i < 50 && status != 202; ++i) {
    auto r = client.Post("/v1/webhooks/svc", R"({"status":"active"})", "application/json");
    status = r ? r->status : 0;
    if (status != 202) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status, 202) << "the listener did not recover once descriptors were free";
}

}  // namespace
}  // namespace iarelay::testing
