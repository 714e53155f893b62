// Per-thread prepared statement cache, scoped to one connection.
#include "journal/statement_cache.h"

#include <SQLiteCpp/SQLiteCpp.h>

namespace iarelay {
namespace {

using Cache = std::map<std::string, std::unique_ptr<SQLite::Statement>>;
thread_local SQLite::Database* t_db = nullptr;
thread_local Cache* t_cache = nullptr;

}  // namespace

StatementRef::StatementRef(SQLite::Statement* borrowed, std::unique_ptr<SQLite::Statement> owned)
    : stmt_(borrowed ? borrowed : owned.get()), owned_(std::move(owned)) {}

StatementRef::StatementRef(StatementRef&& o) noexcept
    : stmt_(o.stmt_), owned_(std::move(o.owned_)) {
  o.stmt_ = nullptr;
}

StatementRef::~StatementRef() {
  // Leave a cached statement reset so it holds no read snapshot open between uses.
  if (stmt_ && !owned_) {
    try {
      stmt_->reset();
    } catch (...) {
      // reset() reports the last step's error again; it was already reported to the caller.
    }
  }
}

StatementRef cached_statement(SQLite::Database& db, const std::string& sql) {
  if (t_db == &db && t_cache) {
    auto& slot = (*t_cache)[sql];
    if (!slot)
      slot = std::make_unique<SQLite::Statement>(db, sql);
    else {
      try {
        slot->reset();
      } catch (...) {
        // A previous step's error; the statement itself is fine to reuse.
      }
      slot->clearBindings();
    }
    return StatementRef(slot.get(), nullptr);
  }
  return StatementRef(nullptr, std::make_unique<SQLite::Statement>(db, sql));
}

StatementCacheScope::StatementCacheScope(SQLite::Database& db)
    : previous_db_(t_db), previous_cache_(t_cache) {
  t_db = &db;
  t_cache = new Cache();
}

StatementCacheScope::~StatementCacheScope() {
  delete t_cache;
  t_db = previous_db_;
  t_cache = static_cast<Cache*>(previous_cache_);
}

}  // namespace iarelay
