// A throwaway PostgreSQL cluster for one test (issue 15): initdb into a private directory,
// started on a free loopback port, stopped and removed with everything in it when it goes.
// PostgreSQL refuses to run as root: run by root, the cluster belongs to the `postgres` user
// that Debian's package creates, and its programs run as that user (runuser). The superuser is
// `iarelay`, trusted on loopback (no password).
#pragma once

#include <string>

namespace iarelay::testing {

class PgCluster {
 public:
  // fsync off by default (tests of behaviour, not of durability): a faster start and commits.
  explicit PgCluster(bool fsync = false);
  // A streaming standby of `primary` (pg_basebackup -R), started on a port of its own; made the
  // primary's synchronous standby (synchronous_standby_names), so that a COMMIT the primary
  // answers is on both. error() says why not.
  struct StandbyOf {
    PgCluster& primary;
  };
  explicit PgCluster(StandbyOf of);
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // Empty once running; else why it could not start (the test should fail with it).
  const std::string& error() const { return error_; }
  int port() const { return port_; }
  // A libpq URI of database `db` (created by create_database, or "postgres").
  std::string uri(const std::string& db = "postgres") const;
  // CREATE DATABASE through psql; empty on success, else psql's error.
  std::string create_database(const std::string& name);
  // Runs SQL through psql on `db`; returns its output (unaligned, tuples only), or
  // "ERROR: ..." with psql's error.
  std::string psql(const std::string& sql, const std::string& db = "postgres");
  // pg_ctl stop -m MODE ("fast", "immediate"), and start again on the same port.
  std::string stop(const std::string& mode = "fast");
  std::string start();
  // pg_ctl promote (a standby becomes a primary that takes writes); waits for it.
  std::string promote();

 private:
  // A private directory (owned by `postgres` when run by root), in dir_; false with error_ set.
  bool make_dir();
  std::string as_owner(const std::string& program) const;
  std::string dir_, bin_dir_;
  int port_ = 0;
  bool fsync_ = false;
  bool as_postgres_ = false;  // run by root: programs run as the `postgres` user
  std::string error_;
};

}  // namespace iarelay::testing
