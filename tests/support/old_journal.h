// A journal as an earlier build left it: only the first migration applied. For the tests of
// upgrades (migrations applied by `iarelay migrate` and by iarelayd at start).
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>

#include <string>

#include "common/crypto.h"
#include "journal/journal.h"

namespace iarelay::testing {

// Creates `path` with schema_migrations and migration 0001 only; returns the open database for
// the caller to add rows as that build would have.
inline SQLite::Database journal_at_first_migration(const std::string& path) {
  SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  const Migration& first = embedded_migrations().at(0);
  db.exec(
      "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
      "checksum TEXT NOT NULL, applied_at TEXT NOT NULL)");
  db.exec(first.sql);
  SQLite::Statement rec(db, "INSERT INTO schema_migrations VALUES (1, ?, ?, 'x')");
  rec.bind(1, first.name);
  rec.bind(2, sha256_hex(first.sql));
  rec.exec();
  return db;
}

}  // namespace iarelay::testing
