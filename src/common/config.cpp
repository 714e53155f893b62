// Config table, INI reader and validation. The INI reader is ours (not program_options'
// parse_config_file) because every error must name the line it came from.
#include "common/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "common/payload.h"
#include "common/suggest.h"

namespace iarelay {
namespace {

constexpr ConfigKey kKeys[] = {
    {"", "journal", "path", "var/journal.db", "", false,
     "SQLite journal file, created 0600 with its directory; or postgresql://... (a libpq "
     "connection string: several relays share one journal, docs/high-availability.md)"},
    {"", "sync", "enum", "full", "full|normal", false,
     "full: a 202 survives power loss (fsync per commit); normal: survives a process crash"},
    {"", "role", "enum", "", "deliver|edge", false,
     "deliver: call the [agent.*] sections' agents (none configured: every webhook is held); "
     "edge: call no agent, store every webhook for the feed; unset: edge when the file has no "
     "[agent.*] section at start, else deliver (a warning says so)"},
    {"", "log_level", "enum", "info", "debug|info|warn|error", true, "log verbosity"},
    {"", "log_format", "enum", "text", "text|json", false, "one line per event on stderr"},
    {"", "retain_delivered", "duration", "", "", true,
     "purge delivered webhooks and their attempts older than this (empty: keep forever)"},
    {"", "drain_grace", "duration", "10s", "", true,
     "on SIGTERM, how long in-flight callback calls may finish"},
    {"", "lease", "duration", "10s", "", false,
     "PostgreSQL journal: how long an agent's delivery lease lasts unless renewed; a relay "
     "that dies hands its agents to another relay after this (at least 1s)"},
    {"listen", "address", "address", "127.0.0.1:8080", "", false,
     "host:port of the HTTP intake, feed and admin endpoints"},
    {"listen", "token_file", "path", "", "", false,
     "if set, /v1 requests need one of its tokens (one per line; re-read on SIGHUP) as HTTP "
     "Basic's password, a bearer token or ?token= (env IARELAY_LISTEN_TOKEN)"},
    {"listen", "user", "string", "", "", true,
     "if set, HTTP Basic's user name must be this one (else any user name is accepted)"},
    {"listen", "max_body", "size", "1MiB", "", false, "largest accepted webhook body"},
    {"listen", "max_connections", "int", "1024", "", false,
     "connections served at once; a new one past it is answered 503 and closed"},
    {"listen", "tls_cert", "path", "", "", false, "PEM certificate; with tls_key: HTTPS"},
    {"listen", "tls_key", "path", "", "", false, "PEM private key"},
    {"upstream", "url", "url", "", "", false, "base URL of the upstream relay's feed"},
    {"upstream", "token_file", "path", "", "", false,
     "bearer token for the upstream (env IARELAY_UPSTREAM_TOKEN)"},
    {"upstream", "name", "string", "upstream", "", false, "recorded as each webhook's source"},
    {"upstream", "consumer", "string", "inner", "", false, "this relay's name on the upstream"},
    {"upstream", "poll_wait", "duration", "25s", "", false, "long-poll duration"},
    {"upstream", "batch", "int", "500", "", false, "most webhooks fetched per poll"},
    {"upstream", "proxy", "url", "", "", false,
     "HTTP proxy; empty: the usual *_proxy environment variables apply"},
    {"upstream", "ca_file", "path", "", "", false, "CA bundle for the upstream's certificate"},
    {"service.*", "unrouted", "enum", "discard", "discard|hold", true,
     "no agent available at arrival: discard (xMatters behaviour) or hold until one is"},
    {"agent.*", "id", "string", "", "", true,
     "the agent identifier webhooks carry (default: the section's name)"},
    {"agent.*", "callback", "url", "", "", true,
     "URL each webhook is POSTed to (required); {domain} and {service} are filled in per "
     "webhook (an Integration Agent's gateway: http://ia-host:8081/http/{domain}_{service})"},
    {"agent.*", "domain", "string", "applications", "", true,
     "{domain} in callback for a service written without one ('X|name' gives X)"},
    {"agent.*", "services", "list", "", "", true, "integration services this agent hosts"},
    {"agent.*", "kinds", "list", kDefaultKinds, "", true,
     "webhook types delivered to this agent (* for every type); others end discarded with "
     "the reason"},
    {"agent.*", "format", "enum", "ia", "ia|raw", true,
     "ia: the apia_callback message; raw: the payload as received"},
    {"agent.*", "secret_file", "path", "", "", true,
     "if set, deliveries are signed (env IARELAY_AGENT_<HANDLE>_SECRET)"},
    {"agent.*", "max_inflight", "int", "8", "", true, "concurrent calls to this agent"},
    {"agent.*", "ordering", "enum", "event", "event|fifo|none", true,
     "event: one alert at a time; fifo: one webhook at a time; none: no ordering"},
    {"agent.*", "timeout", "duration", "10s", "", true, "per-call timeout"},
    {"agent.*", "proxy", "url", "", "", true,
     "HTTP proxy for this agent's callbacks; empty: direct (*_proxy variables do not apply)"},
    {"agent.*", "down_after", "int", "5", "", true,
     "consecutive failed attempts that mark the agent down"},
    {"agent.*", "max_attempts", "int", "25", "", true, "real attempts before a webhook fails"},
    {"agent.*", "backoff_initial", "duration", "1s", "", true, "first retry delay"},
    {"agent.*", "backoff_max", "duration", "5m", "", true, "longest retry delay"},
};

struct Entry {
  std::string value;
  std::string where;  // "file:line" or "command line"
};
// The entry under this key (no key is empty) records where a section was declared: its header's
// "file:line", or "command line" for a section only overrides name. Errors about a key left at
// its default (a required one missing) point there.
constexpr const char* kDeclared = "";
// section -> key -> entry; section as written ("", "listen", "agent.nnmi1").
using Entries = std::map<std::string, std::map<std::string, Entry>>;

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

// The table's pattern for a concrete section name, or nullptr if no such section kind.
const char* section_kind(const std::string& section) {
  if (section.empty() || section == "listen" || section == "upstream") return section.c_str();
  if (section.rfind("service.", 0) == 0 && section.size() > 8) return "service.*";
  if (section.rfind("agent.", 0) == 0 && section.size() > 6) return "agent.*";
  return nullptr;
}

const ConfigKey* find_key(const std::string& section, const std::string& key) {
  const char* kind = section_kind(section);
  if (!kind) return nullptr;
  for (const auto& k : kKeys)
    if (std::string_view(k.section) == kind && key == k.key) return &k;
  return nullptr;
}

// " (did you mean address?)" for an unknown key of `section`, or "".
std::string key_suggestion(const std::string& section, const std::string& key) {
  const char* kind = section_kind(section);
  if (!kind) return "";
  std::vector<std::string> known;
  for (const auto& k : kKeys)
    if (std::string_view(k.section) == kind) known.push_back(k.key);
  return did_you_mean(key, known);
}

// What is wrong with a section name section_kind() does not know.
std::string unknown_section(const std::string& section) {
  std::string hint = did_you_mean(section, {"listen", "upstream"});
  size_t dot = section.find('.');
  if (hint.empty() && dot != std::string::npos) {
    std::string kind = nearest(section.substr(0, dot), {"agent", "service"});
    if (!kind.empty()) hint = " (did you mean " + kind + section.substr(dot) + "?)";
  }
  return "unknown section [" + section + "]" + hint +
         "; sections are [listen], [upstream], [service.NAME] and [agent.NAME]";
}

Status error_at(const std::string& where, const std::string& section, const std::string& key,
                const std::string& what) {
  std::string name = section.empty() ? key : "[" + section + "] " + key;
  return Status::invalid_argument(where + ": " + name + ": " + what);
}

Status read_ini(const std::string& file, Entries& out) {
  // Why it cannot be read, in the system's words (missing, permission denied, a directory).
  auto unreadable = [&](const std::string& why) {
    return Status::io_error(file + ": cannot read configuration file: " + why);
  };
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return unreadable(std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return unreadable("it is a directory");
  errno = 0;
  std::ifstream in(file);
  if (!in) return unreadable(errno ? std::strerror(errno) : "open failed");
  // Every line's problem, not only the first: an operator fixes a file in one pass.
  std::vector<std::string> problems;
  auto problem = [&](const Status& s) { problems.push_back(s.message()); };
  std::string line, section;
  bool bad_section = false;  // keys under a section already reported are not reported again
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::string where = file + ":" + std::to_string(lineno);
    // Strip comments: a line starting with # or ;, or " #" / " ;" after a value.
    std::string t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    for (size_t i = 1; i < t.size(); ++i) {
      if ((t[i] == '#' || t[i] == ';') && (t[i - 1] == ' ' || t[i - 1] == '\t')) {
        t = trim(t.substr(0, i));
        break;
      }
    }
    if (t[0] == '[') {
      bad_section = true;
      if (t.back() != ']') {
        problem(Status::invalid_argument(where + ": unterminated section header"));
        continue;
      }
      section = trim(t.substr(1, t.size() - 2));
      if (!section_kind(section)) {
        problem(Status::invalid_argument(where + ": " + unknown_section(section)));
        continue;
      }
      bad_section = false;
      out[section].try_emplace(kDeclared, Entry{"", where});  // an empty [agent.x] declares it
      continue;
    }
    if (bad_section) continue;
    size_t eq = t.find('=');
    if (eq == std::string::npos) {
      problem(Status::invalid_argument(where + ": expected 'key = value', got '" + t + "'"));
      continue;
    }
    std::string key = trim(t.substr(0, eq));
    std::string value = trim(t.substr(eq + 1));
    if (!find_key(section, key)) {
      problem(error_at(where, section, key, "unknown key" + key_suggestion(section, key)));
      continue;
    }
    auto& sec = out[section];
    if (auto it = sec.find(key); it != sec.end()) {
      problem(error_at(where, section, key, "set twice (first at " + it->second.where + ")"));
      continue;
    }
    sec[key] = Entry{value, where};
  }
  if (problems.empty()) return Status::ok();
  std::string all;
  for (const auto& p : problems) all += (all.empty() ? "" : "\n") + p;
  return Status::invalid_argument(all);
}

// The service a [service.NAME] section names: NAME normalised as intake normalises a request's
// ("applications|hpnnmi" is "hpnnmi", docs/architecture.md "Routing").
std::string section_service(const std::string& section) {
  return normalize_service(std::string_view(section).substr(8));
}

// The line number in a "file:line" place, or INT_MAX for "command line" (after every line).
int line_of(const std::string& where) {
  size_t colon = where.rfind(':');
  return colon == std::string::npos ? std::numeric_limits<int>::max()
                                    : std::atoi(where.c_str() + colon + 1);
}

Status apply_overrides(const ConfigOverrides& overrides, Entries& out) {
  for (const auto& [name, value] : overrides) {
    // "agent.nnmi1.timeout" -> section "agent.nnmi1", key "timeout"; "sync" -> top level.
    size_t dot = name.rfind('.');
    std::string section = dot == std::string::npos ? "" : name.substr(0, dot);
    std::string key = dot == std::string::npos ? name : name.substr(dot + 1);
    if (!section_kind(section))
      return Status::invalid_argument("command line: --" + name + ": " + unknown_section(section));
    if (!find_key(section, key))
      return error_at("command line", section, key, "unknown key" + key_suggestion(section, key));
    if (section.rfind("service.", 0) == 0 && !out.count(section)) {
      // --service.hpnnmi.unrouted overrides [service.applications|hpnnmi], and the other way
      // round: the same service, whichever way either spells it.
      for (const auto& [other, values] : out)
        if (other.rfind("service.", 0) == 0 && other.size() > 8 &&
            section_service(other) == section_service(section)) {
          section = other;
          break;
        }
    }
    out[section].try_emplace(kDeclared, Entry{"", "command line"});
    out[section][key] = Entry{value, "command line"};
  }
  return Status::ok();
}

// Typed accessors: value from the entries, else the table's default.
class SectionReader {
 public:
  SectionReader(const Entries& entries, std::string section) : section_(std::move(section)) {
    if (auto it = entries.find(section_); it != entries.end()) values_ = &it->second;
  }

  // Where `key` was set; for a key left at its default, where its section was declared.
  std::string where(const char* key) const {
    if (values_) {
      if (auto it = values_->find(key); it != values_->end()) return it->second.where;
      if (auto it = values_->find(kDeclared); it != values_->end()) return it->second.where;
    }
    return "default";
  }
  std::string str(const char* key) const {
    if (values_)
      if (auto it = values_->find(key); it != values_->end()) return it->second.value;
    return find_key(section_, key)->default_value;
  }
  Status choice(const char* key, std::string& out) const {
    out = str(key);
    std::string choices = find_key(section_, key)->choices;
    std::stringstream ss(choices);
    std::string c;
    while (std::getline(ss, c, '|'))
      if (c == out) return Status::ok();
    return error_at(where(key), section_, key, "'" + out + "' is not one of " + choices);
  }
  Status duration(const char* key, Millis& out) const {
    std::string v = str(key);
    if (v.empty()) {
      out = 0;
      return Status::ok();
    }
    auto d = parse_duration(v);
    if (!d) return error_at(where(key), section_, key, d.status().message());
    out = *d;
    return Status::ok();
  }
  Status size(const char* key, std::int64_t& out) const {
    auto s = parse_size(str(key));
    if (!s) return error_at(where(key), section_, key, s.status().message());
    out = *s;
    return Status::ok();
  }
  Status integer(const char* key, int& out, int min, int max) const {
    std::string v = str(key);
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < min || n > max)
      return error_at(where(key), section_, key,
                      "'" + v + "' is not a whole number from " + std::to_string(min) + " to " +
                          std::to_string(max));
    out = static_cast<int>(n);
    return Status::ok();
  }
  Status url(const char* key, std::string& out, bool required) const {
    out = str(key);
    if (out.empty()) {
      if (required) return error_at(where(key), section_, key, "is required");
      return Status::ok();
    }
    if (out.rfind("http://", 0) != 0 && out.rfind("https://", 0) != 0)
      return error_at(where(key), section_, key, "'" + out + "' is not an http:// or https:// URL");
    return Status::ok();
  }

 private:
  std::string section_;
  const std::map<std::string, Entry>* values_ = nullptr;
};

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// The placeholders a callback may hold.
const std::vector<std::string>& callback_placeholders() {
  static const std::vector<std::string> names = {"service", "domain"};
  return names;
}

// What is wrong with a callback template (`url` already starts with http:// or https://), or
// "": every '{' opens a known placeholder closed by '}', none in the scheme or host, and the URL
// expanded with sample values still has a host.
std::string callback_problem(const std::string& url) {
  const size_t authority = url.find("://") + 3;
  const size_t path = std::min(url.find_first_of("/?#", authority), url.size());
  const std::string known = "placeholders are {service} and {domain}";
  for (size_t i = 0; i < url.size(); ++i) {
    if (url[i] == '}') return "'}' at position " + std::to_string(i + 1) + " closes no placeholder";
    if (url[i] != '{') continue;
    size_t close = url.find_first_of("{}", i + 1);
    if (close == std::string::npos || url[close] != '}')
      return "'{' at position " + std::to_string(i + 1) + " opens a placeholder that is not closed";
    const std::string name = url.substr(i + 1, close - i - 1);
    const auto& names = callback_placeholders();
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::string hint = nearest(name, names);
      return "unknown placeholder {" + name + "}" +
             (hint.empty() ? "" : " (did you mean {" + hint + "}?)") + "; " + known;
    }
    if (i < path) return "placeholder {" + name + "} in the host: placeholders go in the path";
    i = close;
  }
  AgentConfig sample;
  sample.callback = url;
  std::string expanded = callback_url(sample, "hpnnmi");
  const size_t host_end = std::min(expanded.find_first_of("/?#", authority), expanded.size());
  if (host_end == authority) return "'" + url + "' names no host";
  for (char c : expanded)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F)
      return "'" + url + "' holds a blank or control character (write it percent-encoded)";
  return "";
}

// A type in `kinds` that differs from a standard one only in case is a likely mistake: types
// compare exactly ("deliverystatus" would never match the stored "deliveryStatus").
std::string kind_problem(const std::string& kind) {
  for (const char* standard : {"status", "deliveryStatus", "response", "annotation"}) {
    std::string_view s = standard;
    if (kind == s || kind.size() != s.size()) continue;
    bool same = true;
    for (size_t i = 0; i < s.size() && same; ++i)
      same = std::tolower(static_cast<unsigned char>(kind[i])) ==
             std::tolower(static_cast<unsigned char>(s[i]));
    if (same)
      return "'" + kind + "' is not a type (did you mean " + standard +
             "?); types compare exactly, case included";
  }
  return "";
}

#define IARELAY_TRY(expr)       \
  do {                          \
    Status s_ = (expr);         \
    if (!s_.is_ok()) return s_; \
  } while (0)

}  // namespace

std::span<const ConfigKey> config_keys() {
  return kKeys;
}

bool AgentConfig::hosts(std::string_view service) const {
  return std::find(services.begin(), services.end(), service) != services.end();
}

bool AgentConfig::takes(std::string_view type) const {
  return all_kinds || std::find(kinds.begin(), kinds.end(), type) != kinds.end();
}

std::string AgentConfig::kinds_text() const {
  if (all_kinds) return "*";
  std::string out;
  for (const auto& k : kinds) out += (out.empty() ? "" : ", ") + k;
  return out;
}

std::string callback_url(const AgentConfig& agent, std::string_view service) {
  const std::string& url = agent.callback;
  if (url.find('{') == std::string::npos) return url;
  std::string_view domain = agent.domain, name = service;
  if (size_t bar = service.find('|'); bar != std::string_view::npos) {
    // `ops|` or `|x` (a sender's spelling): an empty part is never filled in, so no path
    // segment goes empty; the service as sent, encoded, stands for an empty name.
    if (bar > 0) domain = service.substr(0, bar);
    if (bar + 1 < service.size()) name = service.substr(bar + 1);
  }
  auto encode = [](std::string& out, std::string_view v) {
    static const char* kHex = "0123456789ABCDEF";
    // A value of dots only (`.`, `..`) is encoded whole: left as it is, it would be a dot
    // segment that libcurl removes, sending the call to another path of the gateway.
    const bool dots_only = v.find_first_not_of('.') == std::string_view::npos;
    for (char ch : v) {
      auto c = static_cast<unsigned char>(ch);
      if (std::isalnum(c) || c == '-' || (c == '.' && !dots_only) || c == '_' || c == '~') {
        out.push_back(ch);
      } else {
        out.push_back('%');
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
      }
    }
  };
  std::string out;
  out.reserve(url.size() + service.size() + domain.size());
  for (size_t i = 0; i < url.size(); ++i) {
    if (url[i] == '{') {
      size_t close = url.find('}', i + 1);
      if (close != std::string::npos) {
        std::string_view placeholder = std::string_view(url).substr(i + 1, close - i - 1);
        if (placeholder == "service" || placeholder == "domain") {
          encode(out, placeholder == "service" ? name : domain);
          i = close;
          continue;
        }
      }
    }
    out.push_back(url[i]);
  }
  return out;
}

bool is_postgresql_journal(const std::string& journal) {
  return journal.rfind("postgresql://", 0) == 0 || journal.rfind("postgres://", 0) == 0;
}

std::string journal_for_display(const std::string& journal) {
  if (!is_postgresql_journal(journal)) return journal;
  std::string out = journal;
  // postgresql://user:secret@host...: the secret between the first ':' after the scheme and
  // the '@' of the authority.
  const std::size_t start = out.find("://") + 3;
  const std::size_t end = out.find_first_of("/?", start);
  const std::size_t at = out.rfind('@', end == std::string::npos ? out.size() : end);
  if (at != std::string::npos && at >= start) {
    const std::size_t colon = out.find(':', start);
    if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
  }
  // ...?password=secret&...
  for (std::size_t p = out.find("password="); p != std::string::npos;
       p = out.find("password=", p + 1)) {
    if (p > 0 && out[p - 1] != '?' && out[p - 1] != '&') continue;
    const std::size_t v = p + 9;
    const std::size_t e = out.find('&', v);
    out.replace(v, (e == std::string::npos ? out.size() : e) - v, "***");
  }
  return out;
}

const AgentConfig* Config::find_agent(std::string_view id_or_handle) const {
  for (const auto& a : agents)
    if (a.id == id_or_handle) return &a;
  for (const auto& a : agents)
    if (a.handle == id_or_handle) return &a;
  return nullptr;
}

bool Config::service_holds(std::string_view service) const {
  for (const auto& s : services)
    if (s.name == service) return s.hold;
  return false;
}

Result<Config> load_config(const std::string& file, const ConfigOverrides& overrides) {
  Entries entries;
  if (!file.empty()) IARELAY_TRY(read_ini(file, entries));
  IARELAY_TRY(apply_overrides(overrides, entries));

  Config c;
  c.file = file;
  SectionReader top(entries, "");
  c.journal = top.str("journal");
  if (c.journal.empty()) return error_at(top.where("journal"), "", "journal", "must not be empty");
  std::string sync;
  IARELAY_TRY(top.choice("sync", sync));
  c.sync = sync == "full" ? SyncLevel::kFull : SyncLevel::kNormal;
  std::string role = top.str("role");
  if (!role.empty()) IARELAY_TRY(top.choice("role", role));
  c.role_given = !role.empty();
  c.role = role == "edge" ? Role::kEdge : Role::kDeliver;
  IARELAY_TRY(top.choice("log_level", c.log_level));
  IARELAY_TRY(top.choice("log_format", c.log_format));
  IARELAY_TRY(top.duration("retain_delivered", c.retain_delivered));
  IARELAY_TRY(top.duration("drain_grace", c.drain_grace));
  IARELAY_TRY(top.duration("lease", c.lease));
  if (c.lease < 1000) return error_at(top.where("lease"), "", "lease", "must be at least 1s");

  if (entries.count("listen")) {
    SectionReader r(entries, "listen");
    ListenConfig l;
    l.address = r.str("address");
    size_t colon = l.address.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == l.address.size())
      return error_at(r.where("address"), "listen", "address",
                      "'" + l.address + "' is not host:port");
    l.token_file = r.str("token_file");
    l.user = r.str("user");
    if (l.user.find(':') != std::string::npos)
      return error_at(r.where("user"), "listen", "user",
                      "must not contain ':' (HTTP Basic puts one between user name and password)");
    IARELAY_TRY(r.size("max_body", l.max_body));
    if (l.max_body <= 0) return error_at(r.where("max_body"), "listen", "max_body", "must be > 0");
    IARELAY_TRY(r.integer("max_connections", l.max_connections, 1, 1'000'000));
    l.tls_cert = r.str("tls_cert");
    l.tls_key = r.str("tls_key");
    if (l.tls_cert.empty() != l.tls_key.empty())
      return error_at(r.where(l.tls_cert.empty() ? "tls_key" : "tls_cert"), "listen",
                      l.tls_cert.empty() ? "tls_key" : "tls_cert",
                      "tls_cert and tls_key must be set together");
    c.listen = l;
  }
  if (entries.count("upstream")) {
    SectionReader r(entries, "upstream");
    UpstreamConfig u;
    IARELAY_TRY(r.url("url", u.url, true));
    u.token_file = r.str("token_file");
    u.name = r.str("name");
    u.consumer = r.str("consumer");
    if (u.name.empty()) return error_at(r.where("name"), "upstream", "name", "must not be empty");
    if (u.consumer.empty())
      return error_at(r.where("consumer"), "upstream", "consumer", "must not be empty");
    IARELAY_TRY(r.duration("poll_wait", u.poll_wait));
    IARELAY_TRY(r.integer("batch", u.batch, 1, 10000));
    IARELAY_TRY(r.url("proxy", u.proxy, false));
    u.ca_file = r.str("ca_file");
    c.upstream = u;
  }
  std::map<std::string, std::string> seen_ids;          // agent id -> where
  std::map<std::string, std::string> seen_secret_envs;  // IARELAY_AGENT_*_SECRET -> section
  // Services in file order (then those only the command line declares), so that of two
  // sections naming the same service the later one is reported.
  std::vector<std::pair<int, std::string>> service_sections;
  for (const auto& [section, values] : entries)
    if (section.rfind("service.", 0) == 0)
      service_sections.emplace_back(line_of(SectionReader(entries, section).where(kDeclared)),
                                    section);
  std::stable_sort(service_sections.begin(), service_sections.end());
  std::map<std::string, std::string> seen_services;  // normalised name -> "[section] (where)"
  for (const auto& [line, section] : service_sections) {
    SectionReader r(entries, section);
    const std::string where = r.where(kDeclared);
    ServiceConfig s;
    s.name = section_service(section);
    if (s.name.empty())
      return Status::invalid_argument(where + ": [" + section +
                                      "] names no service (nothing is left once 'applications|' "
                                      "is removed)");
    auto [seen, first] = seen_services.try_emplace(s.name, "[" + section + "] (" + where + ")");
    if (!first)
      return Status::invalid_argument(
          where + ": [" + section + "] names the same service '" + s.name + "' as " + seen->second +
          ": 'applications|" + s.name + "' and '" + s.name + "' are one service; keep one section");
    std::string unrouted;
    IARELAY_TRY(r.choice("unrouted", unrouted));
    s.hold = unrouted == "hold";
    c.services.push_back(s);
  }
  // Agents in file order: std::map sorts by name, so recover order from the line numbers.
  std::vector<std::pair<int, std::string>> agent_sections;
  for (const auto& [section, values] : entries) {
    if (section.rfind("agent.", 0) != 0) continue;
    int first = 1 << 30;
    for (const auto& [k, e] : values) {
      size_t colon = e.where.rfind(':');
      if (colon != std::string::npos)
        first = std::min(first, std::atoi(e.where.c_str() + colon + 1));
    }
    agent_sections.emplace_back(first, section);
  }
  std::stable_sort(agent_sections.begin(), agent_sections.end());
  for (const auto& [line, section] : agent_sections) {
    SectionReader r(entries, section);
    AgentConfig a;
    a.handle = section.substr(6);
    a.id = trim(r.str("id"));
    if (a.id.empty()) a.id = a.handle;
    if (auto it = seen_ids.find(a.id); it != seen_ids.end()) {
      // An id defaulted from the handle has no line of its own: where() names the section's.
      return error_at(r.where("id"), section, "id",
                      "agent identifier '" + a.id + "' is already used by [" + it->second + "]");
    }
    seen_ids[a.id] = section;
    // Two handles whose variable names coincide ("a-b", "a_b", "A.B") would both take their
    // secret from one variable: one agent would sign with the other's secret.
    const std::string env = agent_secret_env(a.handle);
    if (auto it = seen_secret_envs.find(env); it != seen_secret_envs.end())
      return error_at(r.where("secret_file"), section, "secret_file",
                      "its secret variable " + env + " is also [" + it->second +
                          "]'s; rename one of the two sections");
    seen_secret_envs[env] = section;
    IARELAY_TRY(r.url("callback", a.callback, true));
    if (std::string problem = callback_problem(a.callback); !problem.empty())
      return error_at(r.where("callback"), section, "callback", problem);
    a.domain = trim(r.str("domain"));
    if (a.domain.empty())
      return error_at(r.where("domain"), section, "domain", "must not be empty");
    a.services = split_list(r.str("services"));
    for (auto& s : a.services) s = normalize_service(s);  // as intake normalises a request's
    a.kinds = split_list(r.str("kinds"));
    if (a.kinds.empty())
      return error_at(r.where("kinds"), section, "kinds",
                      "names no type: list the types to deliver (default " +
                          std::string(kDefaultKinds) + "), or * for every type");
    a.all_kinds = a.kinds.size() == 1 && (a.kinds[0] == "*" || a.kinds[0] == "all");
    for (const auto& k : a.kinds) {
      std::string problem = kind_problem(k);
      if (!a.all_kinds && (k == "*" || k == "all"))
        problem = "'" + k + "' (every type) stands alone, not beside other types";
      if (!problem.empty()) return error_at(r.where("kinds"), section, "kinds", problem);
    }
    if (a.all_kinds) a.kinds.clear();
    std::string v;
    IARELAY_TRY(r.choice("format", v));
    a.format = v == "ia" ? AgentFormat::kIa : AgentFormat::kRaw;
    a.secret_file = r.str("secret_file");
    IARELAY_TRY(r.url("proxy", a.proxy, false));
    IARELAY_TRY(r.integer("max_inflight", a.max_inflight, 1, 1024));
    IARELAY_TRY(r.choice("ordering", v));
    a.ordering = v == "event" ? Ordering::kEvent : v == "fifo" ? Ordering::kFifo : Ordering::kNone;
    IARELAY_TRY(r.duration("timeout", a.timeout));
    if (a.timeout <= 0) return error_at(r.where("timeout"), section, "timeout", "must be > 0");
    IARELAY_TRY(r.integer("down_after", a.down_after, 1, 1000));
    IARELAY_TRY(r.integer("max_attempts", a.max_attempts, 1, 1000000));
    IARELAY_TRY(r.duration("backoff_initial", a.backoff_initial));
    IARELAY_TRY(r.duration("backoff_max", a.backoff_max));
    if (a.backoff_initial <= 0 || a.backoff_max < a.backoff_initial)
      return error_at(r.where("backoff_max"), section, "backoff_max",
                      "must be at least backoff_initial, which must be > 0");
    c.agents.push_back(std::move(a));
  }
  // Unset, the role follows docs/deployment.md (a relay without agents is an edge); the daemon
  // fixes it at start, so a reload that removes the last agent leaves a delivering relay
  // delivering.
  if (!c.role_given) c.role = c.agents.empty() ? Role::kEdge : Role::kDeliver;
  if (c.role == Role::kEdge && !c.agents.empty())
    return error_at(top.where("role"), "", "role",
                    "edge stores every webhook for the feed and calls no agent, but [" +
                        seen_ids[c.agents.front().id] +
                        "] configures one: remove the agents or set role = deliver");
  return c;
}

std::string config_example() {
  // It runs as it is, from the repository root, reaching nothing but 127.0.0.1: the agent is
  // the stand-in iarelay-sink; [upstream] (which would poll another relay) is commented out.
  std::string out =
      "# iarelay configuration: every key with its default (reference: docs/operations.md,\n"
      "# \"Configuration reference\"). Generated from the key table by\n"
      "# `iarelayd --print-config-example`. It runs as it is, from the repository root, and\n"
      "# reaches no host but 127.0.0.1: intake on 127.0.0.1:8080, one agent that a stand-in\n"
      "# answers (build/bin/iarelay-sink --listen 127.0.0.1:8081).\n";
  std::string current = "-";
  for (const auto& k : kKeys) {
    std::string section = k.section;
    const bool upstream = section == "upstream";
    // "#key = value": a key left out; a line starting "# " is help text.
    const std::string off = upstream ? "#" : "";
    if (section != current) {
      current = section;
      if (section == "service.*") section = "service.hpnnmi";
      if (section == "agent.*") section = "agent.nnmi1";
      if (upstream)
        out +=
            "\n# [upstream] makes this relay poll another relay's feed (an inner relay fetching\n"
            "# from an edge relay in the DMZ: docs/deployment.md). Uncomment the section and\n"
            "# give the edge's url (and token_file) to use it.\n";
      if (!section.empty()) out += (upstream ? "" : "\n") + off + "[" + section + "]\n";
    }
    std::string value = k.default_value;
    std::string kk = k.key;
    if (current == "agent.*") {
      if (kk == "id") value = "ws-198/127.0.0.1:8081";
      if (kk == "callback") value = "http://127.0.0.1:8081/apia_callback";
      if (kk == "services") value = "hpnnmi, remedy";
    }
    if (upstream && kk == "url") value = "https://edge.example.net:8443";
    out += "# " + std::string(k.help) +
           (std::string(k.choices).empty() ? "" : " (" + std::string(k.choices) + ")") + "\n";
    out += off + kk + " =" + (value.empty() ? "" : " " + value) + "\n";
  }
  out +=
      "\n# A real Integration Agent's service gateway (docs/integration-agent.md): one section\n"
      "# serves all its services, {domain} and {service} filled in per webhook (hpnnmi:\n"
      "# /http/applications_hpnnmi); types other than kinds end discarded with the reason.\n"
      "# Uncomment the section to use it (beside [agent.nnmi1], it takes over its services\n"
      "# while nnmi1 is down or paused: failover).\n"
      "#[agent.ia1]\n"
      "#id = ws-198/127.0.0.1:8082\n"
      "#callback = http://127.0.0.1:8082/http/{domain}_{service}\n"
      "#services = hpnnmi, remedy\n"
      "#format = ia\n"
      "#kinds = " +
      std::string(kDefaultKinds) + "\n";
  return out;
}

std::string config_reference_markdown() {
  std::string out =
      "| section | key | type | default | reload | meaning |\n|---|---|---|---|---|---|\n";
  for (const auto& k : kKeys) {
    std::string type = k.type;
    if (std::string(k.choices).size()) type = std::string(k.choices);
    std::string choices = type;
    for (auto& ch : choices)
      if (ch == '|') ch = '/';
    out += "| " + std::string(*k.section ? k.section : "(top)") + " | `" + k.key + "` | " +
           choices + " | " + (*k.default_value ? "`" + std::string(k.default_value) + "`" : "") +
           " | " + (k.reloadable ? "yes" : "no") + " | " + k.help + " |\n";
  }
  return out;
}

Result<std::string> read_secret(const std::string& file, const std::string& env_name) {
  if (const char* v = std::getenv(env_name.c_str()); v && *v) return std::string(v);
  if (file.empty()) return std::string();
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return Status::io_error(
        file + ": cannot read secret file: " + (errno ? std::strerror(errno) : "open failed"));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return Status::invalid_argument(file + ": secret file is empty");
  return s;
}

std::string agent_secret_env(std::string_view handle) {
  std::string name = "IARELAY_AGENT_";
  for (char c : handle)
    name += std::isalnum(static_cast<unsigned char>(c))
                ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                : '_';
  return name + "_SECRET";
}

}  // namespace iarelay
