// Tests of common/config.h: every docs/operations.md "Configuration reference" key and default read
// from a real INI file, each bad value reported with file:line and key, command-line overrides,
// agent order and secrets.
#include "common/config.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <string>

#include "common/payload.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay {
namespace {

class ConfigFile : public ::testing::Test {
 protected:
  // Writes `ini` to a file and loads it.
  Result<Config> load(const std::string& ini, const ConfigOverrides& overrides = {}) {
    testing::write_file(path(), ini);
    return load_config(path(), overrides);
  }
  std::string path() const { return dir_.file("iarelay.conf"); }
  // The error of loading `ini`, which must fail.
  std::string error(const std::string& ini, const ConfigOverrides& overrides = {}) {
    auto c = load(ini, overrides);
    EXPECT_FALSE(c.is_ok()) << ini;
    return c.is_ok() ? "" : c.status().message();
  }
  testing::TempDir dir_;
};

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

const char* kMinimalAgent = "[agent.nnmi1]\ncallback = http://127.0.0.1:8081/apia_callback\n";

TEST_F(ConfigFile, EveryDefaultOfTheSpec) {
  auto c = load(std::string("[listen]\n[upstream]\nurl = https://edge.example.net:8443\n"
                            "[service.hpnnmi]\n") +
                kMinimalAgent);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->file, path());
  EXPECT_EQ(c->journal, "var/journal.db");
  EXPECT_EQ(c->sync, SyncLevel::kFull);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->log_format, "text");
  EXPECT_EQ(c->retain_delivered, 0);
  EXPECT_EQ(c->drain_grace, 10'000);

  ASSERT_TRUE(c->listen.has_value());
  EXPECT_EQ(c->listen->address, "127.0.0.1:8080");
  EXPECT_EQ(c->listen->token_file, "");
  EXPECT_EQ(c->listen->max_body, 1 << 20);
  EXPECT_EQ(c->listen->max_connections, 1024);
  EXPECT_EQ(c->listen->tls_cert, "");
  EXPECT_EQ(c->listen->tls_key, "");

  ASSERT_TRUE(c->upstream.has_value());
  EXPECT_EQ(c->upstream->url, "https://edge.example.net:8443");
  EXPECT_EQ(c->upstream->token_file, "");
  EXPECT_FALSE(c->upstream->name.empty());
  EXPECT_FALSE(c->upstream->consumer.empty());
  EXPECT_EQ(c->upstream->poll_wait, 25'000);
  EXPECT_EQ(c->upstream->batch, 500);
  EXPECT_EQ(c->upstream->proxy, "");
  EXPECT_EQ(c->upstream->ca_file, "");

  ASSERT_EQ(c->services.size(), 1u);
  EXPECT_EQ(c->services[0].name, "hpnnmi");
  EXPECT_FALSE(c->services[0].hold);  // unrouted = discard

  ASSERT_EQ(c->agents.size(), 1u);
  const AgentConfig& a = c->agents[0];
  EXPECT_EQ(a.handle, "nnmi1");
  EXPECT_EQ(a.id, "nnmi1");  // the handle by default
  EXPECT_EQ(a.callback, "http://127.0.0.1:8081/apia_callback");
  EXPECT_TRUE(a.services.empty());
  EXPECT_EQ(a.format, AgentFormat::kIa);
  EXPECT_EQ(a.secret_file, "");
  EXPECT_EQ(a.max_inflight, 8);
  EXPECT_EQ(a.ordering, Ordering::kEvent);
  EXPECT_EQ(a.timeout, 10'000);
  EXPECT_EQ(a.down_after, 5);
  EXPECT_EQ(a.max_attempts, 25);
  EXPECT_EQ(a.backoff_initial, 1'000);
  EXPECT_EQ(a.backoff_max, 300'000);
  EXPECT_EQ(a.domain, "applications");
  EXPECT_EQ(a.kinds,
            (std::vector<std::string>{"status", "deliveryStatus", "response", "annotation"}));
  EXPECT_FALSE(a.all_kinds);
}

TEST_F(ConfigFile, APostgresqlJournalIsTakenWithItsLease) {
  for (const char* uri : {"postgresql://iarelay@db1,db2/iarelay?target_session_attrs=read-write",
                          "postgres://db/x"}) {
    auto c = load(std::string("journal = ") + uri + "\nlease = 3s\n");
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    EXPECT_EQ(c->journal, uri);
    EXPECT_TRUE(is_postgresql_journal(c->journal));
    EXPECT_EQ(c->lease, 3'000);
  }
  EXPECT_FALSE(is_postgresql_journal("var/postgresql://journal.db"));
  EXPECT_EQ(load("journal = x.db\n")->lease, 10'000);
  std::string e = error("journal = postgresql://db/x\nlease = 500ms\n");
  EXPECT_TRUE(contains(e, path() + ":2: lease: must be at least 1s")) << e;
}

TEST(JournalForDisplay, HidesThePasswordOfAConnectionString) {
  EXPECT_EQ(journal_for_display("postgresql://iarelay:pw-secret@db1,db2/iarelay"),
            "postgresql://iarelay:***@db1,db2/iarelay");
  EXPECT_EQ(
      journal_for_display("postgresql://db/iarelay?user=x&password=pw-secret&sslmode=require"),
      "postgresql://db/iarelay?user=x&password=***&sslmode=require");
  EXPECT_EQ(journal_for_display("postgres://db/iarelay?password=pw-secret"),
            "postgres://db/iarelay?password=***");
  EXPECT_EQ(journal_for_display("postgresql://iarelay@db/x"), "postgresql://iarelay@db/x");
  EXPECT_EQ(journal_for_display("var/journal.db"), "var/journal.db");
}

TEST_F(ConfigFile, AbsentSectionsMeanNoListenerNoPollingNoAgents) {
  auto c = load("# nothing but a comment\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_FALSE(c->listen.has_value());
  EXPECT_FALSE(c->upstream.has_value());
  EXPECT_TRUE(c->agents.empty());
  EXPECT_TRUE(c->services.empty());
  auto none = load_config("");  // no file: defaults only
  ASSERT_TRUE(none.is_ok()) << none.status().message();
  EXPECT_EQ(none->journal, "var/journal.db");
}

TEST_F(ConfigFile, ListenUserIsReadAndMayNotHoldAColon) {
  auto c = load("[listen]\nuser = xmatters\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->listen->user, "xmatters");
  EXPECT_EQ(load("[listen]\n")->listen->user, "");  // any user name
  EXPECT_TRUE(contains(error("[listen]\nuser = x:y\n"),
                       "iarelay.conf:2: [listen] user: must not contain ':'"));
}

TEST_F(ConfigFile, EveryKeyOfTheSpecIsRead) {
  auto c = load(R"(journal = /srv/iarelay/journal.db   # comment after a value
sync = normal
log_level = debug
log_format = json
retain_delivered = 7d
drain_grace = 3s

; a semicolon comment
[listen]
address = 0.0.0.0:9443
token_file = /etc/iarelay/intake.token
max_body = 512KiB
max_connections = 64
tls_cert = /etc/iarelay/cert.pem
tls_key = /etc/iarelay/key.pem

[upstream]
url = https://edge.example.net:8443
token_file = /etc/iarelay/upstream.token
name = edge
consumer = inner-1
poll_wait = 30s
batch = 250
proxy = http://proxy.example.net:3128
ca_file = /etc/iarelay/ca.pem

[service.hpnnmi]
unrouted = hold

[agent.nnmi1]
id = ws-198/10.2.0.121:8081
callback = https://10.2.0.121:8081/apia_callback
services = hpnnmi, applications|remedy
format = raw
secret_file = /etc/iarelay/nnmi1.secret
max_inflight = 16
ordering = fifo
timeout = 2500ms
down_after = 3
max_attempts = 100
backoff_initial = 500ms
backoff_max = 1h
)");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->journal, "/srv/iarelay/journal.db");
  EXPECT_EQ(c->sync, SyncLevel::kNormal);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->log_format, "json");
  EXPECT_EQ(c->retain_delivered, 7 * 86'400'000LL);
  EXPECT_EQ(c->drain_grace, 3'000);
  EXPECT_EQ(c->listen->address, "0.0.0.0:9443");
  EXPECT_EQ(c->listen->token_file, "/etc/iarelay/intake.token");
  EXPECT_EQ(c->listen->max_body, 512 * 1024);
  EXPECT_EQ(c->listen->max_connections, 64);
  EXPECT_EQ(c->listen->tls_cert, "/etc/iarelay/cert.pem");
  EXPECT_EQ(c->listen->tls_key, "/etc/iarelay/key.pem");
  EXPECT_EQ(c->upstream->token_file, "/etc/iarelay/upstream.token");
  EXPECT_EQ(c->upstream->name, "edge");
  EXPECT_EQ(c->upstream->consumer, "inner-1");
  EXPECT_EQ(c->upstream->poll_wait, 30'000);
  EXPECT_EQ(c->upstream->batch, 250);
  EXPECT_EQ(c->upstream->proxy, "http://proxy.example.net:3128");
  EXPECT_EQ(c->upstream->ca_file, "/etc/iarelay/ca.pem");
  ASSERT_EQ(c->services.size(), 1u);
  EXPECT_TRUE(c->services[0].hold);
  EXPECT_TRUE(c->service_holds("hpnnmi"));
  EXPECT_FALSE(c->service_holds("remedy"));
  const AgentConfig& a = c->agents.at(0);
  EXPECT_EQ(a.id, "ws-198/10.2.0.121:8081");
  EXPECT_EQ(a.callback, "https://10.2.0.121:8081/apia_callback");
  EXPECT_EQ(a.services, (std::vector<std::string>{"hpnnmi", "remedy"}));
  EXPECT_TRUE(a.hosts("remedy"));
  EXPECT_FALSE(a.hosts("applications|remedy"));
  EXPECT_EQ(a.format, AgentFormat::kRaw);
  EXPECT_EQ(a.secret_file, "/etc/iarelay/nnmi1.secret");
  EXPECT_EQ(a.max_inflight, 16);
  EXPECT_EQ(a.ordering, Ordering::kFifo);
  EXPECT_EQ(a.timeout, 2'500);
  EXPECT_EQ(a.down_after, 3);
  EXPECT_EQ(a.max_attempts, 100);
  EXPECT_EQ(a.backoff_initial, 500);
  EXPECT_EQ(a.backoff_max, 3'600'000);
  EXPECT_EQ(c->find_agent("ws-198/10.2.0.121:8081"), &a);
  EXPECT_EQ(c->find_agent("nnmi1"), &a);  // by handle too
  EXPECT_EQ(c->find_agent("nobody"), nullptr);
}

TEST_F(ConfigFile, OrderingNoneAndFormatIa) {
  auto c = load(std::string(kMinimalAgent) + "ordering = none\nformat = ia\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->agents[0].ordering, Ordering::kNone);
  EXPECT_EQ(c->agents[0].format, AgentFormat::kIa);
}

TEST_F(ConfigFile, TheKeyTableCoversTheSpecAndEachKeyIsAccepted) {
  // The keys docs/operations.md "Configuration reference" names, by section.
  std::set<std::string> spec = {".journal",
                                ".sync",
                                ".log_level",
                                ".log_format",
                                "listen.address",
                                "listen.token_file",
                                "listen.max_body",
                                "listen.tls_cert",
                                "listen.tls_key",
                                "upstream.url",
                                "upstream.token_file",
                                "upstream.name",
                                "upstream.consumer",
                                "upstream.poll_wait",
                                "upstream.batch",
                                "upstream.proxy",
                                "upstream.ca_file",
                                "service.*.unrouted",
                                "agent.*.id",
                                "agent.*.callback",
                                "agent.*.domain",
                                "agent.*.services",
                                "agent.*.kinds",
                                "agent.*.format",
                                "agent.*.secret_file",
                                "agent.*.max_inflight",
                                "agent.*.ordering",
                                "agent.*.timeout",
                                "agent.*.down_after",
                                "agent.*.max_attempts",
                                "agent.*.backoff_initial",
                                "agent.*.backoff_max"};
  std::set<std::string> table;
  for (const ConfigKey& k : config_keys()) {
    table.insert(std::string(k.section) + "." + k.key);
    EXPECT_STRNE(k.help, "") << k.key;
    if (std::string(k.type) == "enum" && *k.default_value) {  // "" : unset (role: inferred)
      std::string choices = std::string("|") + k.choices + "|";
      EXPECT_TRUE(contains(choices, std::string("|") + k.default_value + "|")) << k.key;
    }
  }
  for (const auto& key : spec) EXPECT_TRUE(table.count(key)) << key << " missing from the table";

  // Each key of the table, written with its default (or a sample where it has none) in its
  // section, is accepted.
  for (const ConfigKey& k : config_keys()) {
    std::string section = k.section;
    std::string value = k.default_value;
    if (std::string(k.type) == "url") value = "http://127.0.0.1:1/x";
    if (std::string(k.key) == "tls_cert" || std::string(k.key) == "tls_key") continue;
    std::string ini;
    if (section == "service.*")
      ini = "[service.s]\n";
    else if (section == "agent.*")
      ini = "[agent.a]\n";
    else if (!section.empty())
      ini = "[" + section + "]\n";
    ini += std::string(k.key) + " = " + value + "\n";
    if (section == "upstream" && std::string(k.key) != "url") ini += "url = http://127.0.0.1:1\n";
    if (section == "agent.*" && std::string(k.key) != "callback")
      ini += "callback = http://127.0.0.1:1/apia_callback\n";
    auto c = load(ini);
    EXPECT_TRUE(c.is_ok()) << ini << "\n" << c.status().message();
  }
}

TEST_F(ConfigFile, ExampleConfigurationParsesToTheDefaults) {
  testing::write_file(path(), config_example());
  auto c = load_config(path());
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->journal, "var/journal.db");
  ASSERT_EQ(c->agents.size(), 1u);
  EXPECT_EQ(c->agents[0].max_inflight, 8);
  EXPECT_TRUE(c->listen.has_value());
  // [upstream] is there, commented out: the example reaches no host but 127.0.0.1.
  EXPECT_FALSE(c->upstream.has_value());
  EXPECT_TRUE(contains(config_example(), "\n#[upstream]\n"));
  EXPECT_TRUE(contains(config_example(), "\n#url = https://"));
  EXPECT_TRUE(contains(config_reference_markdown(), "`backoff_max`"));
}

struct BadValue {
  const char* ini;
  int line;         // where the error must point
  const char* key;  // what it must name
};

TEST_F(ConfigFile, EachBadValueNamesFileLineAndKey) {
  const BadValue cases[] = {
      {"sync = sometimes\n", 1, "sync"},
      {"\nlog_level = loud\n", 2, "log_level"},
      {"log_format = xml\n", 1, "log_format"},
      {"retain_delivered = 10\n", 1, "retain_delivered"},
      {"drain_grace = soon\n", 1, "drain_grace"},
      {"journal =\n", 1, "journal"},
      {"[listen]\naddress = localhost\n", 2, "address"},
      {"[listen]\nmax_body = 1MB\n", 2, "max_body"},
      {"[listen]\nmax_body = 0\n", 2, "max_body"},
      {"[listen]\nmax_connections = 0\n", 2, "max_connections"},
      {"[listen]\nmax_connections = lots\n", 2, "max_connections"},
      {"[upstream]\nurl = ftp://edge\n", 2, "url"},
      {"[upstream]\nurl = http://e\npoll_wait = 5\n", 3, "poll_wait"},
      {"[upstream]\nurl = http://e\nbatch = 0\n", 3, "batch"},
      {"[upstream]\nurl = http://e\nbatch = many\n", 3, "batch"},
      {"[upstream]\nurl = http://e\nproxy = socks5://p:1080\n", 3, "proxy"},
      {"[upstream]\nurl = http://e\nname =\n", 3, "name"},
      {"[service.hpnnmi]\nunrouted = keep\n", 2, "unrouted"},
      {"[agent.a]\ncallback = 10.2.0.121:8081/apia_callback\n", 2, "callback"},
      {"[agent.a]\ncallback = http://x\nformat = xml\n", 3, "format"},
      {"[agent.a]\ncallback = http://x\nmax_inflight = 0\n", 3, "max_inflight"},
      {"[agent.a]\ncallback = http://x\nordering = random\n", 3, "ordering"},
      {"[agent.a]\ncallback = http://x\ntimeout = 0s\n", 3, "timeout"},
      {"[agent.a]\ncallback = http://x\ntimeout = 10\n", 3, "timeout"},
      {"[agent.a]\ncallback = http://x\ndown_after = -1\n", 3, "down_after"},
      {"[agent.a]\ncallback = http://x\nmax_attempts = lots\n", 3, "max_attempts"},
      {"[agent.a]\ncallback = http://x\nbackoff_initial = 1\n", 3, "backoff_initial"},
      {"[agent.a]\ncallback = http://x\nbackoff_initial = 10s\nbackoff_max = 1s\n", 4,
       "backoff_max"},
  };
  for (const auto& bad : cases) {
    std::string e = error(bad.ini);
    EXPECT_TRUE(contains(e, path() + ":" + std::to_string(bad.line) + ":"))
        << bad.ini << " -> " << e;
    EXPECT_TRUE(contains(e, bad.key)) << bad.ini << " -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;  // one line
  }
}

TEST_F(ConfigFile, UnknownKeysSuggestTheNearestKnownOne) {
  std::string e = error("[listen]\nadress = 127.0.0.1:8080\n");
  EXPECT_TRUE(contains(e, path() + ":2: [listen] adress: unknown key (did you mean address?)"))
      << e;
  e = error(std::string(kMinimalAgent) + "timout = 5s\n");
  EXPECT_TRUE(contains(e, "timout: unknown key (did you mean timeout?)")) << e;
  e = error("jornal = j.db\n");
  EXPECT_TRUE(contains(e, "jornal: unknown key (did you mean journal?)")) << e;
  e = error("[lisen]\n");
  EXPECT_TRUE(contains(e, "unknown section [lisen] (did you mean listen?)")) << e;
  e = error("[agnet.nnmi1]\n");
  EXPECT_TRUE(contains(e, "(did you mean agent.nnmi1?)")) << e;
  // Nothing near: no guess.
  e = error("colour = red\n");
  EXPECT_TRUE(contains(e, "colour: unknown key")) << e;
  EXPECT_FALSE(contains(e, "did you mean")) << e;
  // The command line too.
  e = error("", {{"listen.adress", "127.0.0.1:1"}});
  EXPECT_TRUE(contains(e, "command line: [listen] adress: unknown key (did you mean address?)"))
      << e;
}

// A file with several mistakes names each of them, with its line, at once (and the keys of a
// section it could not read are not reported again, one by one).
TEST_F(ConfigFile, EveryMistakeOfTheFileIsListedAtOnce) {
  std::string e = error(
      "jornal = j.db\n"              // 1
      "[listen]\n"                   // 2
      "adress = 127.0.0.1:8080\n"    // 3
      "max_body = 1MiB\n"            // 4
      "max_body = 2MiB\n"            // 5
      "[lisen]\n"                    // 6
      "address = 127.0.0.1:1\n"      // 7
      "port 8080\n"                  // 8 (under the unknown section: not reported again)
      "[upstream]\n"                 // 9
      "url http://127.0.0.1:1/\n");  // 10
  EXPECT_TRUE(contains(e, path() + ":1: jornal: unknown key (did you mean journal?)")) << e;
  EXPECT_TRUE(contains(e, path() + ":3: [listen] adress: unknown key")) << e;
  EXPECT_TRUE(contains(e, path() + ":5: [listen] max_body: set twice (first at " + path() + ":4)"))
      << e;
  EXPECT_TRUE(contains(e, path() + ":6: unknown section [lisen]")) << e;
  EXPECT_FALSE(contains(e, ":7:")) << e;
  EXPECT_FALSE(contains(e, ":8:")) << e;
  EXPECT_TRUE(contains(e, path() + ":10: expected 'key = value'")) << e;
}

TEST_F(ConfigFile, AFileThatCannotBeReadSaysWhy) {
  auto missing = load_config(dir_.file("absent.conf"));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(
      missing.status().message(),
      dir_.file("absent.conf") + ": cannot read configuration file: No such file or directory");
  auto directory = load_config(dir_.path());
  ASSERT_FALSE(directory.is_ok());
  EXPECT_TRUE(
      contains(directory.status().message(), "cannot read configuration file: it is a directory"))
      << directory.status().message();
  if (::geteuid() != 0) {  // root reads anything
    testing::write_file(path(), "sync = full\n");
    ::chmod(path().c_str(), 0);
    auto denied = load_config(path());
    ASSERT_FALSE(denied.is_ok());
    EXPECT_TRUE(
        contains(denied.status().message(), "cannot read configuration file: Permission denied"))
        << denied.status().message();
  }
}

TEST_F(ConfigFile, UnknownKeysAndSectionsAreErrors) {
  std::string e = error("journal = j.db\ncolour = red\n");
  EXPECT_TRUE(contains(e, path() + ":2:")) << e;
  EXPECT_TRUE(contains(e, "colour")) << e;
  EXPECT_TRUE(contains(e, "unknown key")) << e;

  e = error("[agent.a]\ncallback = http://x\nretries = 3\n");
  EXPECT_TRUE(contains(e, path() + ":3:")) << e;
  EXPECT_TRUE(contains(e, "retries")) << e;

  e = error("[listen]\nurl = http://x\n");  // a key of another section
  EXPECT_TRUE(contains(e, path() + ":2:")) << e;

  e = error("sync = full\n\n[database]\npath = x\n");
  EXPECT_TRUE(contains(e, path() + ":3:")) << e;
  EXPECT_TRUE(contains(e, "database")) << e;
  EXPECT_TRUE(contains(e, "unknown section")) << e;

  e = error("[agent.]\n");
  EXPECT_TRUE(contains(e, path() + ":1:")) << e;

  e = error("just some words\n");
  EXPECT_TRUE(contains(e, path() + ":1:")) << e;
}

TEST_F(ConfigFile, DuplicateKeyIsAnError) {
  std::string e = error("sync = full\nlog_level = info\nsync = normal\n");
  EXPECT_TRUE(contains(e, path() + ":3:")) << e;
  EXPECT_TRUE(contains(e, "sync")) << e;
  EXPECT_TRUE(contains(e, path() + ":1")) << e;  // where it was first set
}

TEST_F(ConfigFile, DuplicateAgentIdentifierIsAnError) {
  std::string e = error(
      "[agent.first]\nid = ws-198/10.2.0.121:8081\ncallback = http://a\n\n"
      "[agent.second]\nid = ws-198/10.2.0.121:8081 \ncallback = http://b\n");
  EXPECT_TRUE(contains(e, path() + ":6:")) << e;
  EXPECT_TRUE(contains(e, "ws-198/10.2.0.121:8081")) << e;
  EXPECT_TRUE(contains(e, "agent.first")) << e;
}

TEST_F(ConfigFile, DuplicateAgentIdentifierFromAHandleNamesALine) {
  // [agent.y] has no id line: its identifier is its handle, which [agent.x] already claims.
  std::string e = error("[agent.x]\nid = y\ncallback = http://a\n[agent.y]\ncallback = http://b\n");
  EXPECT_TRUE(contains(e, path() + ":4:")) << e;  // the [agent.y] header: the handle is there
  EXPECT_TRUE(contains(e, "'y'")) << e;
}

// Issue 11 B: "applications|hpnnmi" and "hpnnmi" name the same service (docs/architecture.md
// "Routing"), so two sections that do are one policy given twice: an error naming both lines, not a
// silent pick.
TEST_F(ConfigFile, TwoSectionsNamingTheSameServiceAreAnError) {
  std::string e = error(
      "[service.hpnnmi]\nunrouted = discard\n\n[service.applications|hpnnmi]\n"
      "unrouted = hold\n");
  EXPECT_TRUE(contains(e, path() + ":4:")) << e;
  EXPECT_TRUE(contains(e, path() + ":1")) << e;
  EXPECT_TRUE(contains(e, "[service.applications|hpnnmi]")) << e;
  EXPECT_TRUE(contains(e, "[service.hpnnmi]")) << e;
  EXPECT_TRUE(contains(e, "'hpnnmi'")) << e;
  // Whichever spelling comes first, the later section is the one at fault.
  e = error("[service.applications|x]\n[service. x]\n");
  EXPECT_TRUE(contains(e, path() + ":2:")) << e;
  EXPECT_TRUE(contains(e, path() + ":1")) << e;
  // A name that normalises to nothing names no service.
  e = error("[service.applications|]\nunrouted = hold\n");
  EXPECT_TRUE(contains(e, path() + ":1:")) << e;
  EXPECT_TRUE(contains(e, "no service")) << e;
}

// The spelling of a section does not matter to the policy, nor to a command-line override,
// which wins over the file's section whichever way either spells the service.
TEST_F(ConfigFile, ServiceSpelledWithTheDomainHoldsTheService) {
  auto c = load("[service.applications|hpnnmi]\nunrouted = hold\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  ASSERT_EQ(c->services.size(), 1u);
  EXPECT_EQ(c->services[0].name, "hpnnmi");
  EXPECT_TRUE(c->service_holds("hpnnmi"));
  c = load("[service.applications|hpnnmi]\nunrouted = hold\n",
           {{"service.hpnnmi.unrouted", "discard"}});
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  ASSERT_EQ(c->services.size(), 1u);
  EXPECT_FALSE(c->service_holds("hpnnmi"));
  c = load("[service.hpnnmi]\n", {{"service.applications|hpnnmi.unrouted", "hold"}});
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  ASSERT_EQ(c->services.size(), 1u);
  EXPECT_TRUE(c->service_holds("hpnnmi"));
}

// Both handles' secrets would come from one variable (IARELAY_AGENT_NNMI_1_SECRET): one agent
// would sign with the other's secret. Refused, naming the variable and both sections.
TEST_F(ConfigFile, AgentHandlesSharingASecretVariableAreAnError) {
  std::string e =
      error("[agent.nnmi-1]\ncallback = http://a\n\n[agent.NNMI_1]\ncallback = http://b\n");
  EXPECT_TRUE(contains(e, path() + ":4:")) << e;
  EXPECT_TRUE(contains(e, "IARELAY_AGENT_NNMI_1_SECRET")) << e;
  EXPECT_TRUE(contains(e, "[agent.nnmi-1]")) << e;
  EXPECT_TRUE(contains(e, "[agent.NNMI_1]")) << e;
  // Different variables are fine.
  auto c = load("[agent.nnmi-1]\ncallback = http://a\n[agent.nnmi-2]\ncallback = http://b\n");
  EXPECT_TRUE(c.is_ok()) << c.status().message();
}

TEST_F(ConfigFile, AgentProxyIsReadAndMustBeAnHttpUrl) {
  auto c = load(std::string(kMinimalAgent) + "proxy = http://127.0.0.1:3128\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->agents.at(0).proxy, "http://127.0.0.1:3128");
  auto none = load(kMinimalAgent);
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(none->agents.at(0).proxy, "");  // direct
  std::string e = error(std::string(kMinimalAgent) + "proxy = 127.0.0.1:3128\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.nnmi1] proxy")) << e;
}

TEST(Secrets, AgentSecretEnvironmentName) {
  EXPECT_EQ(agent_secret_env("nnmi1"), "IARELAY_AGENT_NNMI1_SECRET");
  EXPECT_EQ(agent_secret_env("ws-198.east"), "IARELAY_AGENT_WS_198_EAST_SECRET");
}

TEST_F(ConfigFile, TlsCertAndKeyGoTogether) {
  std::string e = error("[listen]\ntls_cert = /etc/cert.pem\n");
  EXPECT_TRUE(contains(e, path() + ":2:")) << e;
  EXPECT_TRUE(contains(e, "tls_key")) << e;
  e = error("[listen]\n\ntls_key = /etc/key.pem\n");
  EXPECT_TRUE(contains(e, path() + ":3:")) << e;
  EXPECT_TRUE(contains(e, "tls_cert")) << e;
}

TEST_F(ConfigFile, AgentWithoutCallbackIsAnError) {
  std::string e = error("[agent.nnmi1]\nservices = hpnnmi\n");
  EXPECT_TRUE(contains(e, "callback")) << e;
  EXPECT_TRUE(contains(e, "required")) << e;
  EXPECT_TRUE(contains(e, "agent.nnmi1")) << e;
}

// Issue 11 item 4: an edge is a choice the file makes, and an edge calls no agent.
TEST_F(ConfigFile, RoleIsDeliverUnlessTheFileSaysEdge) {
  // Unset: docs/deployment.md's rule at start (no agents: an edge), said to be inferred.
  auto none = load("sync = full\n");
  ASSERT_TRUE(none) << none.status().message();
  EXPECT_EQ(none->role, Role::kEdge);
  EXPECT_FALSE(none->role_given);
  auto agents = load("[agent.nnmi1]\ncallback = http://127.0.0.1:9/\n");
  ASSERT_TRUE(agents) << agents.status().message();
  EXPECT_EQ(agents->role, Role::kDeliver);
  auto deliver = load("role = deliver\n");
  ASSERT_TRUE(deliver) << deliver.status().message();
  EXPECT_EQ(deliver->role, Role::kDeliver);  // no agents, and still not an edge: it said so
  EXPECT_TRUE(deliver->role_given);
  auto edge = load("role = edge\n[listen]\n");
  ASSERT_TRUE(edge) << edge.status().message();
  EXPECT_EQ(edge->role, Role::kEdge);
  std::string e = error("role = edge\n\n[agent.nnmi1]\ncallback = http://127.0.0.1:9/\n");
  EXPECT_EQ(e.rfind(path() + ":1: role:", 0), 0u) << e;
  EXPECT_TRUE(contains(e, "agent.nnmi1")) << e;
  EXPECT_TRUE(contains(error("role = relay\n"), "deliver|edge"));
}

// Found by fuzz/config_fuzzer.cpp: a required key left out was reported as "default: [agent.x]
// callback: is required", naming neither the file nor a line. It names the section's header.
TEST_F(ConfigFile, MissingRequiredKeyNamesTheSectionHeader) {
  std::string e = error("sync = full\n\n[agent.nnmi1]\nservices = hpnnmi\n");
  EXPECT_EQ(e.rfind(path() + ":3: [agent.nnmi1] callback: is required", 0), 0u) << e;
  e = error("[upstream]\nname = edge\n");
  EXPECT_EQ(e.rfind(path() + ":1: [upstream] url: is required", 0), 0u) << e;
  e = error("[agent.empty]\n");
  EXPECT_EQ(e.rfind(path() + ":1: [agent.empty] callback", 0), 0u) << e;
  // A section only the command line declares.
  e = error("sync = full\n", {{"agent.late.timeout", "3s"}});
  EXPECT_EQ(e.rfind("command line: [agent.late] callback: is required", 0), 0u) << e;
}

TEST_F(ConfigFile, UpstreamWithoutUrlIsAnError) {
  std::string e = error("[upstream]\nname = edge\n");
  EXPECT_TRUE(contains(e, "url")) << e;
  EXPECT_TRUE(contains(e, "required")) << e;
}

TEST_F(ConfigFile, CommandLineOverridesWin) {
  auto c = load(std::string("sync = full\n[listen]\naddress = 127.0.0.1:8080\n") + kMinimalAgent +
                    "timeout = 10s\n",
                {{"sync", "normal"},
                 {"listen.address", "127.0.0.1:9999"},
                 {"agent.nnmi1.timeout", "3s"},
                 {"agent.nnmi1.services", "applications|hpnnmi"}});
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->sync, SyncLevel::kNormal);
  EXPECT_EQ(c->listen->address, "127.0.0.1:9999");
  EXPECT_EQ(c->agents[0].timeout, 3'000);
  EXPECT_EQ(c->agents[0].services, std::vector<std::string>{"hpnnmi"});

  // An override may create a section the file lacks.
  auto d = load("sync = full\n", {{"listen.address", "127.0.0.1:7000"}});
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  ASSERT_TRUE(d->listen.has_value());
  EXPECT_EQ(d->listen->address, "127.0.0.1:7000");
}

TEST_F(ConfigFile, BadOverridesNameTheCommandLine) {
  std::string e = error("sync = full\n", {{"sync", "sometimes"}});
  EXPECT_TRUE(contains(e, "command line")) << e;
  EXPECT_TRUE(contains(e, "sync")) << e;
  e = error("sync = full\n", {{"listen.colour", "red"}});
  EXPECT_TRUE(contains(e, "command line")) << e;
  EXPECT_TRUE(contains(e, "colour")) << e;
  EXPECT_TRUE(contains(e, "unknown key")) << e;
}

TEST_F(ConfigFile, AgentsKeepConfigurationOrder) {
  auto c = load(
      "[agent.zeta]\ncallback = http://z\nservices = s\n"
      "[agent.alpha]\ncallback = http://a\nservices = s\n"
      "[service.s]\nunrouted = hold\n"
      "[agent.mid]\ncallback = http://m\nservices = s\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  ASSERT_EQ(c->agents.size(), 3u);
  EXPECT_EQ(c->agents[0].handle, "zeta");
  EXPECT_EQ(c->agents[1].handle, "alpha");
  EXPECT_EQ(c->agents[2].handle, "mid");
}

TEST_F(ConfigFile, ServicesListIsTrimmedAndLosesTheApplicationsDomain) {
  auto c = load(std::string(kMinimalAgent) +
                "services =  applications|hpnnmi ,remedy,, applications|servicenow \n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->agents[0].services, (std::vector<std::string>{"hpnnmi", "remedy", "servicenow"}));
}

TEST_F(ConfigFile, AgentIdIsTrimmed) {
  auto c = load("[agent.h]\nid =   host/10.0.0.1:8081   \ncallback = http://x\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->agents[0].id, "host/10.0.0.1:8081");
}

TEST_F(ConfigFile, MissingFileIsAnError) {
  auto c = load_config(dir_.file("absent.conf"));
  ASSERT_FALSE(c.is_ok());
  EXPECT_TRUE(contains(c.status().message(), dir_.file("absent.conf"))) << c.status().message();
}

// Services are normalised as intake normalises a request's (normalize_service), so an agent
// configured for "applications|applications|x" hosts what intake stores as "x".
TEST_F(ConfigFile, ServicesAreNormalisedAsIntakeNormalisesThem) {
  auto c = load(R"(
[service.applications|held]
unrouted = hold

[agent.a]
callback = http://127.0.0.1:1/
services = applications|applications|x, applications| y, z
)");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->agents.at(0).services, (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_TRUE(c->agents.at(0).hosts(normalize_service("applications|applications|x")));
  EXPECT_TRUE(c->service_holds("held"));
}

// Issue 13: one agent section serves several services of an Integration Agent's gateway.
TEST_F(ConfigFile, CallbackPlaceholdersAreFilledInPerWebhook) {
  auto c = load(R"([agent.ia1]
callback = http://127.0.0.1:8081/http/{domain}_{service}
services = hpnnmi, remedy, ops|omi
[agent.ia2]
callback = http://127.0.0.1:8082/gw/{service}?domain={domain}
domain = custom
[agent.plain]
callback = http://127.0.0.1:8083/apia_callback
)");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  const AgentConfig& ia1 = c->agents.at(0);
  EXPECT_EQ(ia1.callback, "http://127.0.0.1:8081/http/{domain}_{service}");  // as written
  EXPECT_EQ(callback_url(ia1, "hpnnmi"), "http://127.0.0.1:8081/http/applications_hpnnmi");
  EXPECT_EQ(callback_url(ia1, "remedy"), "http://127.0.0.1:8081/http/applications_remedy");
  // As intake stores "applications|hpnnmi": the domain is the agent's.
  EXPECT_EQ(callback_url(ia1, normalize_service("applications|hpnnmi")),
            "http://127.0.0.1:8081/http/applications_hpnnmi");
  // A service with another domain keeps it: "ops|omi" is domain ops, service omi.
  EXPECT_EQ(callback_url(ia1, normalize_service("ops|omi")), "http://127.0.0.1:8081/http/ops_omi");
  // Whatever a sender names stays inside its path segment.
  EXPECT_EQ(callback_url(ia1, "a b/../c?d#e%"),
            "http://127.0.0.1:8081/http/applications_a%20b%2F..%2Fc%3Fd%23e%25");
  EXPECT_EQ(callback_url(ia1, "x|y|z"), "http://127.0.0.1:8081/http/x_y%7Cz");
  const AgentConfig& ia2 = c->agents.at(1);
  EXPECT_EQ(ia2.domain, "custom");
  EXPECT_EQ(callback_url(ia2, "hpnnmi"), "http://127.0.0.1:8082/gw/hpnnmi?domain=custom");
  EXPECT_EQ(callback_url(ia2, "ops|omi"), "http://127.0.0.1:8082/gw/omi?domain=ops");
  EXPECT_EQ(callback_url(c->agents.at(2), "hpnnmi"), "http://127.0.0.1:8083/apia_callback");
}

// review13 finding 3: a placeholder standing alone as a path segment ("/gw/{service}") keeps
// "." and ".." as they are (both unreserved), and libcurl squashes dot segments
// (CURLOPT_PATH_AS_IS is not set): a webhook whose service (or domain) is ".." or "." — any
// service is accepted with ?agent= — is POSTed to another path of the gateway ("/gw/.." goes
// out as "POST /"), not inside its own segment as callback_url() promises. An empty side of
// '|' gives an empty segment or a bare "_".
TEST_F(ConfigFile, PlaceholderValuesNeverBecomeDotSegmentsOrEmpty) {
  auto c = load(R"([agent.ia2]
callback = http://127.0.0.1:8082/gw/{service}/in?domain={domain}
[agent.ia3]
callback = http://127.0.0.1:8083/{domain}/{service}
)");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  const AgentConfig& ia2 = c->agents.at(0);
  const AgentConfig& ia3 = c->agents.at(1);
  // libcurl sends "POST /in" and "POST /gw/in" for these.
  EXPECT_EQ(callback_url(ia2, ".."), "http://127.0.0.1:8082/gw/%2E%2E/in?domain=applications");
  EXPECT_EQ(callback_url(ia2, "."), "http://127.0.0.1:8082/gw/%2E/in?domain=applications");
  // "..|remedy" -> "/../remedy" -> libcurl sends "POST /remedy".
  EXPECT_EQ(callback_url(ia3, "..|remedy"), "http://127.0.0.1:8083/%2E%2E/remedy");
  // An empty service name after '|' gives "/gw//in": not the service's segment either.
  EXPECT_NE(callback_url(ia2, "ops|"), "http://127.0.0.1:8082/gw//in?domain=ops");
}

TEST_F(ConfigFile, CallbackPlaceholderMistakesNameTheLine) {
  const char* head = "[agent.ia1]\nservices = hpnnmi\n";
  std::string e =
      error(std::string(head) + "callback = http://127.0.0.1:8081/http/{domain}_{servcie}\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.ia1] callback: unknown placeholder {servcie} (did "
                                   "you mean {service}?); placeholders are {service} and {domain}"))
      << e;
  e = error(std::string(head) + "callback = http://127.0.0.1:8081/http/{host}\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.ia1] callback: unknown placeholder {host};")) << e;
  e = error(std::string(head) + "callback = http://127.0.0.1:8081/http/{service\n");
  EXPECT_TRUE(contains(e, path() + ":3:")) << e;
  EXPECT_TRUE(contains(e, "not closed")) << e;
  e = error(std::string(head) + "callback = http://127.0.0.1:8081/http/service}\n");
  EXPECT_TRUE(contains(e, "closes no placeholder")) << e;
  e = error(std::string(head) + "callback = http://{domain}.example.net:8081/http/{service}\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.ia1] callback: placeholder {domain} in the host"))
      << e;
  e = error(std::string(head) + "callback = http:///http/{domain}_{service}\n");
  EXPECT_TRUE(contains(e, "names no host")) << e;
  e = error(std::string(head) + "callback = http://127.0.0.1:8081/http/{service}\ndomain =\n");
  EXPECT_TRUE(contains(e, path() + ":4: [agent.ia1] domain: must not be empty")) << e;
  // The command line is checked the same way.
  e = error(std::string(head) + "callback = http://127.0.0.1:8081/x\n",
            {{"agent.ia1.callback", "http://127.0.0.1:8081/{Service}"}});
  EXPECT_TRUE(contains(e,
                       "command line: [agent.ia1] callback: unknown placeholder {Service} "
                       "(did you mean {service}?)"))
      << e;
}

TEST_F(ConfigFile, KindsSayWhichTypesAreDelivered) {
  auto c = load(std::string(kMinimalAgent) + "kinds = status, escalation ,response\n" +
                "[agent.all]\ncallback = http://127.0.0.1:8082/\nkinds = *\n" +
                "[agent.every]\ncallback = http://127.0.0.1:8083/\nkinds = all\n" +
                "[agent.default]\ncallback = http://127.0.0.1:8084/\n");
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  const AgentConfig& some = c->agents.at(0);
  EXPECT_EQ(some.kinds, (std::vector<std::string>{"status", "escalation", "response"}));
  EXPECT_TRUE(some.takes("escalation"));
  EXPECT_FALSE(some.takes("annotation"));
  EXPECT_FALSE(some.takes("Status"));  // compared exactly, as stored
  EXPECT_EQ(some.kinds_text(), "status, escalation, response");
  for (int i : {1, 2}) {
    EXPECT_TRUE(c->agents.at(i).all_kinds) << i;
    EXPECT_TRUE(c->agents.at(i).takes("targetedRecipientFailure")) << i;
    EXPECT_EQ(c->agents.at(i).kinds_text(), "*");
  }
  const AgentConfig& d = c->agents.at(3);
  for (const char* t : {"status", "deliveryStatus", "response", "annotation"})
    EXPECT_TRUE(d.takes(t)) << t;
  EXPECT_FALSE(d.takes("escalation"));
  EXPECT_EQ(d.kinds_text(), kDefaultKinds);

  std::string e = error(std::string(kMinimalAgent) + "kinds =\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.nnmi1] kinds: names no type")) << e;
  e = error(std::string(kMinimalAgent) + "kinds = , ,\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.nnmi1] kinds: names no type")) << e;
  e = error(std::string(kMinimalAgent) + "kinds = status, deliverystatus\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.nnmi1] kinds: 'deliverystatus' is not a type (did "
                                   "you mean deliveryStatus?)"))
      << e;
  e = error(std::string(kMinimalAgent) + "kinds = status, *\n");
  EXPECT_TRUE(contains(e, path() + ":3: [agent.nnmi1] kinds: '*' (every type) stands alone")) << e;
}

TEST(Secrets, EnvironmentWinsOverTheFile) {
  testing::TempDir dir;
  testing::write_file(dir.file("secret"), "from-file\n");
  ::setenv("IARELAY_TEST_SECRET", "from-env", 1);
  auto s = read_secret(dir.file("secret"), "IARELAY_TEST_SECRET");
  ::unsetenv("IARELAY_TEST_SECRET");
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(*s, "from-env");
}

TEST(Secrets, FileContentWithoutTheTrailingNewline) {
  testing::TempDir dir;
  ::unsetenv("IARELAY_TEST_SECRET");
  testing::write_file(dir.file("secret"), "whsec_c2VjcmV0 \r\n");
  auto s = read_secret(dir.file("secret"), "IARELAY_TEST_SECRET");
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(*s, "whsec_c2VjcmV0 ");  // only the line ending goes
}

TEST(Secrets, NoFileAndNoVariableIsEmpty) {
  ::unsetenv("IARELAY_TEST_SECRET");
  auto s = read_secret("", "IARELAY_TEST_SECRET");
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(*s, "");
}

TEST(Secrets, UnreadableOrEmptyFileIsAnErrorNamingTheFileNotTheSecret) {
  testing::TempDir dir;
  ::unsetenv("IARELAY_TEST_SECRET");
  auto missing = read_secret(dir.file("absent"), "IARELAY_TEST_SECRET");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_TRUE(contains(missing.status().message(), dir.file("absent")));
  testing::write_file(dir.file("empty"), "\n");
  auto empty = read_secret(dir.file("empty"), "IARELAY_TEST_SECRET");
  EXPECT_FALSE(empty.is_ok());
}

}  // namespace
}  // namespace iarelay
