// Throwaway PostgreSQL clusters for tests: initdb, pg_ctl and psql of Debian's postgresql.
#include "support/pg_cluster.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "support/process.h"

namespace iarelay::testing {
namespace {

// The newest of /usr/lib/postgresql/N/bin (Debian keeps the server programs out of PATH).
std::string server_bin_dir() {
  namespace fs = std::filesystem;
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    int version = std::atoi(entry.path().filename().c_str());
    if (version > best_version && fs::exists(entry.path() / "bin" / "initdb")) {
      best_version = version;
      best = (entry.path() / "bin").string();
    }
  }
  return best;
}

std::string failure(const std::string& what, const CommandResult& r) {
  return what + " exited " + std::to_string(r.exit_code) + ": " + r.err + r.out;
}

}  // namespace

bool PgCluster::make_dir() {
  bin_dir_ = server_bin_dir();
  if (bin_dir_.empty()) {
    error_ = "no PostgreSQL server under /usr/lib/postgresql (tools/setup.sh installs it)";
    return false;
  }
  char tmpl[] = "/tmp/iarelay-pg-XXXXXX";
  if (!mkdtemp(tmpl)) {
    error_ = "mkdtemp failed";
    return false;
  }
  dir_ = tmpl;
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (!pw) {
      error_ = "running as root and there is no postgres user to run PostgreSQL as";
      return false;
    }
    as_postgres_ = true;
    if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      error_ = "chown of " + dir_ + " failed";
      return false;
    }
  }
  return true;
}

PgCluster::PgCluster(bool fsync) : fsync_(fsync) {
  if (!make_dir()) return;
  // initdb (about 2 s) once per machine and server version: a template directory made by the
  // first test that needs it (into a directory of its own, then renamed: a test running
  // beside it never sees half of one), copied for each cluster (a fraction of a second).
  const std::string tmpl_dir = "/tmp/iarelay-pg-template-" + std::to_string(geteuid()) + "-" +
                               std::filesystem::path(bin_dir_).parent_path().filename().string();
  if (!std::filesystem::exists(tmpl_dir + "/PG_VERSION")) {
    const std::string making = dir_ + "/template";
    auto r = run({"/bin/sh", "-c",
                  as_owner(bin_dir_ + "/initdb") + " -D " + making +
                      " -U iarelay --auth=trust -E UTF8 --locale=C --no-sync"});
    if (r.exit_code != 0) {
      error_ = failure("initdb", r);
      return;
    }
    std::error_code ec;
    std::filesystem::rename(making, tmpl_dir, ec);  // fails when another test made it first
    if (ec) std::filesystem::remove_all(making, ec);
  }
  auto r = run({"/bin/sh", "-c", "cp -a " + tmpl_dir + " " + dir_ + "/data"});
  if (r.exit_code != 0) {
    error_ = failure("copying the template cluster", r);
    return;
  }
  port_ = free_port();
  error_ = start();
}

PgCluster::PgCluster(StandbyOf of) : fsync_(of.primary.fsync_) {
  if (!make_dir()) return;
  // The initdb template's pg_hba.conf trusts replication connections on loopback. A fast
  // checkpoint: the default spreads it over minutes.
  auto r = run({"/bin/sh", "-c",
                as_owner(bin_dir_ + "/pg_basebackup") + " -d '" + of.primary.uri() + "' -D " +
                    dir_ + "/data -R -X stream -c fast --no-sync"});
  if (r.exit_code != 0) {
    error_ = failure("pg_basebackup", r);
    return;
  }
  port_ = free_port();
  if (error_ = start(); !error_.empty()) return;
  // Synchronous: the primary answers a COMMIT once this standby has it on disk.
  std::string out = of.primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
  if (out.rfind("ERROR", 0) != 0) out = of.primary.psql("SELECT pg_reload_conf()");
  if (out.rfind("ERROR", 0) == 0) {
    error_ = "setting synchronous_standby_names: " + out;
    return;
  }
  for (int i = 0; i < 300; ++i) {
    if (of.primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync") return;
    usleep(100 * 1000);
  }
  error_ = "the standby did not become the primary's synchronous standby within 30 s: " +
           of.primary.psql("SELECT application_name, state, sync_state FROM pg_stat_replication");
}

std::string PgCluster::promote() {
  auto r = run(
      {"/bin/sh", "-c", as_owner(bin_dir_ + "/pg_ctl") + " -D " + dir_ + "/data -w -t 60 promote"});
  return r.exit_code == 0 ? "" : failure("pg_ctl promote", r);
}

PgCluster::~PgCluster() {
  if (!dir_.empty()) {
    if (port_ != 0) stop("immediate");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string PgCluster::as_owner(const std::string& program) const {
  return as_postgres_ ? "runuser -u postgres -- " + program : program;
}

std::string PgCluster::uri(const std::string& db) const {
  return "postgresql://iarelay@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string PgCluster::start() {
  std::string options = "-p " + std::to_string(port_) +
                        " -c listen_addresses=127.0.0.1 -c unix_socket_directories=" + dir_ +
                        " -c max_connections=50 -c shared_buffers=32MB";
  if (!fsync_) options += " -c fsync=off -c full_page_writes=off";
  auto r = run({"/bin/sh", "-c",
                as_owner(bin_dir_ + "/pg_ctl") + " -D " + dir_ + "/data -l " + dir_ +
                    "/server.log -w -t 60 -o '" + options + "' start"});
  if (r.exit_code != 0) return failure("pg_ctl start", r) + read_file(dir_ + "/server.log");
  return "";
}

std::string PgCluster::stop(const std::string& mode) {
  auto r =
      run({"/bin/sh", "-c",
           as_owner(bin_dir_ + "/pg_ctl") + " -D " + dir_ + "/data -m " + mode + " -w -t 60 stop"});
  return r.exit_code == 0 ? "" : failure("pg_ctl stop", r);
}

std::string PgCluster::psql(const std::string& sql, const std::string& db) {
  auto r = run(
      {"/usr/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri(db), "-c", sql});
  if (r.exit_code != 0) return "ERROR: " + r.err;
  while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r.out;
}

std::string PgCluster::create_database(const std::string& name) {
  std::string out = psql("CREATE DATABASE " + name);
  return out.rfind("ERROR: ", 0) == 0 ? out : "";
}

}  // namespace iarelay::testing
