#include "journal/writer.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include "support/temp_dir.h"

namespace iarelay {
namespace {

TEST(Writer, CommitsSubmittedOperation) {
  testing::TempDir dir;
  auto w = Writer::open(dir.file("j.db"), SyncLevel::kFull);
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  Status s = (*w)->run([](SQLite::Database& db) {
    db.exec("INSERT INTO audit (at, actor, action, affected) VALUES ('t','me','x',1)");
  });
  EXPECT_TRUE(s.is_ok()) << s.message();
  SQLite::Database r(dir.file("j.db"));
  EXPECT_EQ(r.execAndGet("SELECT count(*) FROM audit").getInt(), 1);
}

}  // namespace
}  // namespace iarelay
