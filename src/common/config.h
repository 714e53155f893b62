// The configuration of docs/operations.md "Configuration reference": one declarative table of keys
// (kConfigKeys) drives parsing of the INI file and command-line overrides, `--help`,
// examples/iarelay.conf and the reference in docs/operations.md. Parsing never throws; errors name
// the file and line (or "command line").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/time.h"

namespace iarelay {

enum class SyncLevel { kFull, kNormal };
enum class AgentFormat { kIa, kRaw };
enum class Ordering { kEvent, kFifo, kNone };
// deliver: webhooks go to the configured agents; edge: stored for the feed (docs/deployment.md).
enum class Role { kDeliver, kEdge };

// One row of the key table. `section` is "" (top level), "listen", "upstream", "service.*" or
// "agent.*" (one section per service or agent; * is the section's name).
struct ConfigKey {
  const char* section;
  const char* key;
  const char* type;           // path|enum|duration|size|int|string|list|url|address|time
  const char* default_value;  // as written in the file; "" means unset
  const char* choices;        // for enums: "full|normal"; else ""
  bool reloadable;            // takes effect on SIGHUP without a restart
  const char* help;
};
std::span<const ConfigKey> config_keys();

struct ListenConfig {
  std::string address;  // host:port
  std::string token_file;
  std::int64_t max_body = 1 << 20;
  int max_connections = 1024;  // past it a new connection is answered 503 and closed
  std::string tls_cert, tls_key;
  std::string user;  // HTTP Basic's user name; empty: any
};

struct UpstreamConfig {
  std::string url;
  std::string token_file;
  std::string name;
  std::string consumer;
  Millis poll_wait = 25'000;
  int batch = 500;
  std::string proxy;
  std::string ca_file;
};

struct ServiceConfig {
  std::string name;
  bool hold = false;  // unrouted = hold
};

// The webhook types an agent takes by default (`kinds`): those an Integration Agent's
// apia_callback knows.
inline constexpr const char* kDefaultKinds = "status, deliveryStatus, response, annotation";

struct AgentConfig {
  std::string handle;  // the section name
  std::string id;      // the identifier webhooks carry
  // The URL called, may hold {service} and {domain}: callback_url() fills them in per webhook.
  std::string callback;
  std::string domain = "applications";  // {domain} for a service written without one
  std::vector<std::string> services;
  // Webhook types (the journal's `type`, compared exactly) delivered to this agent; the others
  // end discarded with the reason (docs/journal.md). all_kinds (`kinds = *`): every type.
  std::vector<std::string> kinds = {"status", "deliveryStatus", "response", "annotation"};
  bool all_kinds = false;
  AgentFormat format = AgentFormat::kIa;
  std::string secret_file;
  std::string proxy;  // HTTP proxy for its callbacks; empty: direct (no *_proxy variables)
  int max_inflight = 8;
  Ordering ordering = Ordering::kEvent;
  Millis timeout = 10'000;
  int down_after = 5;
  int max_attempts = 25;
  Millis backoff_initial = 1'000;
  Millis backoff_max = 300'000;

  bool hosts(std::string_view service) const;
  // Whether webhooks of `type` are delivered to this agent (`kinds`).
  bool takes(std::string_view type) const;
  // `kinds` as the configuration writes it: "status, deliveryStatus, ..." or "*".
  std::string kinds_text() const;
};

// The URL a webhook of `service` (as the journal stores it, normalised) is sent to: the agent's
// callback with {domain} and {service} filled in. A service "X|name" gives domain X and service
// name; any other gives the agent's `domain` and the whole name. Both are percent-encoded
// (everything but A-Z a-z 0-9 - . _ ~), so they stay one path segment or query value. A
// callback without placeholders is returned as it is.
std::string callback_url(const AgentConfig& agent, std::string_view service);

// Whether `journal` names a PostgreSQL journal (a postgresql:// or postgres:// connection
// string) rather than a SQLite file.
bool is_postgresql_journal(const std::string& journal);
// `journal` as logs and status show it: a password in a PostgreSQL connection string
// (user:password@ or password=) replaced by ***. (Better: PGPASSFILE or PGPASSWORD.)
std::string journal_for_display(const std::string& journal);

struct Config {
  std::string file;  // where it was read from ("" if only defaults and overrides)
  std::string journal = "var/journal.db";
  SyncLevel sync = SyncLevel::kFull;
  Role role = Role::kDeliver;
  bool role_given = false;  // `role` set in the file or command line; else inferred from agents
  std::string log_level = "info";
  std::string log_format = "text";
  Millis retain_delivered = 0;  // 0: keep delivered webhooks forever
  Millis drain_grace = 10'000;
  Millis lease = 10'000;  // PostgreSQL journal: an agent's delivery lease
  std::optional<ListenConfig> listen;
  std::optional<UpstreamConfig> upstream;
  std::vector<ServiceConfig> services;
  std::vector<AgentConfig> agents;  // in configuration order

  const AgentConfig* find_agent(std::string_view id_or_handle) const;
  bool service_holds(std::string_view service) const;
};

// "section.key=value" pairs from the command line; they win over the file.
using ConfigOverrides = std::vector<std::pair<std::string, std::string>>;

// Reads `file` (may be empty: defaults only) and applies `overrides`. Every error is one line
// naming file:line (or "command line") and the key.
Result<Config> load_config(const std::string& file, const ConfigOverrides& overrides = {});

// The documented example configuration (examples/iarelay.conf), generated from the table.
std::string config_example();
// The Markdown reference table for docs/operations.md, generated from the table.
std::string config_reference_markdown();

// A secret: the environment variable `env_name` if set, else the file's content with the
// trailing newline removed; empty `file` and no variable yields an empty string.
Result<std::string> read_secret(const std::string& file, const std::string& env_name);

// The environment variable that may carry an agent's secret: IARELAY_AGENT_<HANDLE>_SECRET with
// the handle upper-cased and every non-alphanumeric character replaced by '_'. Two handles that
// map to the same name are a configuration error (load_config refuses them).
std::string agent_secret_env(std::string_view handle);

}  // namespace iarelay
