// Prepared statements reused across calls on long-lived connections (the writer's, the
// dispatcher's reader). A connection opts in with StatementCache::Scope on its owning thread;
// elsewhere cached_statement() prepares a fresh statement each time. Not shared across threads.
#pragma once

#include <map>
#include <memory>
#include <string>

namespace SQLite {
class Database;
class Statement;
}  // namespace SQLite

namespace iarelay {

// A statement ready to bind: reset and with bindings cleared. Owned by the cache or by itself.
class StatementRef {
 public:
  StatementRef(SQLite::Statement* borrowed, std::unique_ptr<SQLite::Statement> owned);
  ~StatementRef();
  StatementRef(StatementRef&&) noexcept;
  SQLite::Statement* operator->() const { return stmt_; }
  SQLite::Statement& operator*() const { return *stmt_; }

 private:
  SQLite::Statement* stmt_;
  std::unique_ptr<SQLite::Statement> owned_;
};

StatementRef cached_statement(SQLite::Database& db, const std::string& sql);

// While alive, statements for `db` on this thread are cached; they are finalized when the scope
// ends, which must be before `db` closes.
class StatementCacheScope {
 public:
  explicit StatementCacheScope(SQLite::Database& db);
  ~StatementCacheScope();
  StatementCacheScope(const StatementCacheScope&) = delete;
  StatementCacheScope& operator=(const StatementCacheScope&) = delete;

 private:
  SQLite::Database* previous_db_;
  void* previous_cache_;
};

}  // namespace iarelay
