// The start's checks, one list of problems (see checks.h).
#include "daemon/checks.h"

#include <SQLiteCpp/Database.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common/tokens.h"
#include "dispatch/signature.h"
#include "journal/journal.h"
#include "journal/pg/pg_journal.h"

namespace iarelay {
namespace {

// The oldest OpenSSL error queued, as text, and the queue emptied.
std::string openssl_error() {
  unsigned long code = ERR_get_error();
  std::string out;
  if (code) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    out = buf;
  }
  ERR_clear_error();
  return out.empty() ? "unknown error" : out;
}

// Whether a file can be read: "" or why not, in the system's words.
std::string unreadable(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return "it is a directory";
  if (::access(path.c_str(), R_OK) != 0) return std::strerror(errno);
  return "";
}

// As the listener loads them (asio's use_certificate_chain_file and use_private_key_file).
void check_tls(const std::string& prefix, const ListenConfig& l,
               std::vector<std::string>& problems) {
  if (l.tls_cert.empty() || l.tls_key.empty()) return;
  std::size_t before = problems.size();
  if (std::string why = unreadable(l.tls_cert); !why.empty())
    problems.push_back(prefix + "[listen] tls_cert: " + l.tls_cert + ": " + why);
  if (std::string why = unreadable(l.tls_key); !why.empty())
    problems.push_back(prefix + "[listen] tls_key: " + l.tls_key + ": " + why);
  if (problems.size() != before) return;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                        &SSL_CTX_free);
  if (!ctx) {
    problems.push_back(prefix + "[listen] TLS: " + openssl_error());
    return;
  }
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), l.tls_cert.c_str()) != 1) {
    problems.push_back(prefix + "[listen] tls_cert: " + l.tls_cert +
                       ": not a PEM certificate (chain): " + openssl_error());
    return;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), l.tls_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    problems.push_back(prefix + "[listen] tls_key: " + l.tls_key + ": not a PEM private key for " +
                       l.tls_cert + ": " + openssl_error());
    return;
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    problems.push_back(prefix + "[listen] tls_key: " + l.tls_key + " does not match tls_cert " +
                       l.tls_cert + ": " + openssl_error());
}

// The journal opens (existing) or can be created (its nearest existing ancestor directory is
// writable); it is where the configuration says.
void check_journal(const std::string& path, std::vector<std::string>& problems) {
  if (is_postgresql_journal(path)) {
    // The server answers and its migrations are the ones this build knows (or pending).
    auto db = PgConnection::connect(path);
    if (!db) {
      problems.push_back("journal " + journal_for_display(path) + ": " + db.status().message());
      return;
    }
    if (Status s = pg_verify_migrations(**db); !s)
      problems.push_back("journal " + journal_for_display(path) + ": " + s.message());
    return;
  }
  namespace fs = std::filesystem;
  const std::string what = "journal " + path + ": ";
  std::error_code ec;
  fs::path p(path);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (fs::exists(p, ec)) {
    if (fs::is_directory(p, ec)) {
      problems.push_back(what + "is a directory, not a journal file");
      return;
    }
    if (::access(path.c_str(), R_OK | W_OK) != 0) {
      problems.push_back(what + "cannot be read and written: " + std::strerror(errno) +
                         " (run as the user that owns it)");
      return;
    }
    if (::access(dir.c_str(), W_OK | X_OK) != 0) {
      problems.push_back(
          what + "its directory " + dir.string() +
          " is not writable (the -wal, -shm and .lock files go there): " + std::strerror(errno));
      return;
    }
    auto db = open_journal_for_read(path);
    if (!db) {
      problems.push_back(what + db.status().message());
      return;
    }
    if (Status s = verify_migrations(**db); !s) problems.push_back(what + s.message());
    return;
  }
  // Created at start with every missing directory: the nearest one that exists must let us.
  fs::path existing = dir;
  while (!existing.empty() && !fs::exists(existing, ec)) existing = existing.parent_path();
  if (existing.empty()) existing = ".";
  if (!fs::is_directory(existing, ec)) {
    problems.push_back(what + "cannot be created: " + existing.string() + " is not a directory");
    return;
  }
  if (::access(existing.c_str(), W_OK | X_OK) != 0)
    problems.push_back(what + "cannot be created: directory " + existing.string() +
                       " is not writable: " + std::strerror(errno) +
                       " (create it for the service's user, or set journal to a path it owns)");
}

}  // namespace

// As the listener reads its tokens: one per line, at least one.
std::string listen_token_problem(const Config& config) {
  if (!config.listen) return "";
  const char* env = "IARELAY_LISTEN_TOKEN";
  const char* value = std::getenv(env);
  bool from_env = value && *value;
  auto tokens = read_tokens(config.listen->token_file, env);
  if (tokens) return "";
  return (config.file.empty() ? "" : config.file + ": ") +
         "[listen] token_file: " + tokens.status().message() +
         (from_env ? "" : " (and " + std::string(env) + " is not set)");
}

std::vector<std::string> start_problems(const Config& config) {
  std::vector<std::string> problems;
  const std::string prefix = config.file.empty() ? "" : config.file + ": ";
  for (const auto& a : config.agents) {
    auto key = agent_signing_key(a);
    if (!key) problems.push_back(prefix + key.status().message());
  }
  if (config.listen) {
    if (std::string p = listen_token_problem(config); !p.empty()) problems.push_back(p);
    check_tls(prefix, *config.listen, problems);
  }
  if (config.upstream) {
    if (auto token = read_single_token(config.upstream->token_file, "IARELAY_UPSTREAM_TOKEN");
        !token)
      problems.push_back(prefix + "[upstream] token_file: " + token.status().message());
    if (!config.upstream->ca_file.empty())
      if (std::string why = unreadable(config.upstream->ca_file); !why.empty())
        problems.push_back(prefix + "[upstream] ca_file: " + config.upstream->ca_file + ": " + why);
  }
  check_journal(config.journal, problems);
  return problems;
}

}  // namespace iarelay
