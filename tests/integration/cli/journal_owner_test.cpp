// `iarelay` run as root on a journal that belongs to the service account: it works as that
// account, so the -wal and -shm files SQLite creates stay the service's (else the service can
// no longer open its journal); when root cannot switch, it refuses and names the command to use.
// These tests need root (they chown the journal to `nobody`); elsewhere they say so and skip.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "sample_journal.h"

namespace iarelay::clitest {
namespace {

class JournalOwnerTest : public CliTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (chowns a journal to nobody); not root";
    const passwd* pw = ::getpwnam("nobody");
    if (!pw) GTEST_SKIP() << "no user 'nobody' on this machine";
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    CliTest::SetUp();
    close_journal();
    // As a service's StateDirectory: the directory and the journal belong to the account.
    for (const std::string& p : {dir_.path(), journal_})
      ASSERT_EQ(::chown(p.c_str(), uid_, gid_), 0) << p;
    for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(journal_ + suffix);
  }

  // Owner of the journal's -wal and -shm: "absent" or "ok" or what is wrong.
  std::string side_files() {
    std::string out;
    for (const char* suffix : {"-wal", "-shm"}) {
      struct stat st {};
      std::string path = journal_ + suffix;
      if (::stat(path.c_str(), &st) != 0) continue;
      if (st.st_uid != uid_) out += path + " owned by uid " + std::to_string(st.st_uid) + "; ";
    }
    return out;
  }

  // iarelay as nobody (no capabilities, no groups): what the service can do with its journal.
  testing::CommandResult as_nobody(std::vector<std::string> args) {
    std::vector<std::string> argv = {"/usr/bin/setpriv",
                                     "--reuid=" + std::to_string(uid_),
                                     "--regid=" + std::to_string(gid_),
                                     "--clear-groups",
                                     testing::bin("iarelay"),
                                     "--journal",
                                     journal_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run(argv);
  }

  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

TEST_F(JournalOwnerTest, RootReadsAndWritesAsTheOwnerAndTheOwnerCanStillWrite) {
  // A read-only command cannot checkpoint, so its -wal and -shm stay behind: as root before the
  // switch existed they were root's, 0644, and the service's next write failed.
  auto status = iarelay({"status"}, {{"USER", "alice"}});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(side_files(), "");
  auto pause = iarelay({"agent", "pause", kAgentA, "--reason", "patching"}, {{"USER", "alice"}});
  ASSERT_EQ(pause.exit_code, 0) << pause.err;
  EXPECT_EQ(side_files(), "");
  auto list = iarelay({"list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(side_files(), "");
  struct stat st {};
  ASSERT_EQ(::stat(journal_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid_);

  // The owner (the service) still reads and writes its journal.
  auto resume = as_nobody({"agent", "resume", kAgentA});
  EXPECT_EQ(resume.exit_code, 0) << resume.err;
  EXPECT_EQ(side_files(), "");

  // The audit row names who ran the command, not the account it ran as.
  SQLite::Database db(journal_, SQLite::OPEN_READONLY);
  EXPECT_EQ(
      db.execAndGet("SELECT actor FROM audit WHERE action='pause'").getString().rfind("alice@", 0),
      0u);
}

TEST_F(JournalOwnerTest, MigrateAsRootCreatesTheJournalAsTheDirectorysOwner) {
  // The service's StateDirectory before its first start: root creating the journal there would
  // leave a root-owned 0600 file the service cannot open.
  std::string fresh = dir_.file("fresh.db");
  auto r = iarelay_raw({"--journal", fresh, "migrate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(fresh.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid_);
  EXPECT_EQ(st.st_gid, gid_);
  std::string journal = journal_;
  journal_ = fresh;
  EXPECT_EQ(side_files(), "");
  // The owner writes to it (purge changes nothing here but opens it for writing and audits).
  auto purge = as_nobody({"purge", "--before", "-1d"});
  EXPECT_EQ(purge.exit_code, 0) << purge.err;
  journal_ = journal;
}

TEST_F(JournalOwnerTest, SideFilesLeftByRootAreGivenBack) {
  // SQLite itself gives a -wal or -shm it creates as root to the journal's owner; other tools
  // (a copy, an older SQLite) may not. Root's, 0644: the owner cannot write them.
  for (const char* suffix : {"-wal", "-shm"}) {
    testing::write_file(journal_ + suffix, "");
    ASSERT_EQ(::chown((journal_ + suffix).c_str(), 0, 0), 0);
    ASSERT_EQ(::chmod((journal_ + suffix).c_str(), 0644), 0);
  }
  ASSERT_NE(side_files(), "");
  auto r = iarelay({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("gave it back to nobody"), std::string::npos) << r.err;
  EXPECT_EQ(side_files(), "");
  auto resume = as_nobody({"agent", "resume", kAgentA});
  EXPECT_EQ(resume.exit_code, 0) << resume.err;
}

TEST_F(JournalOwnerTest, RootThatCannotSwitchRefusesNamingTheCommand) {
  // Root without CAP_SETUID/CAP_SETGID (a restricted container) cannot become the owner.
  std::vector<std::string> argv = {"/usr/bin/setpriv",
                                   "--bounding-set=-setuid,-setgid",
                                   "--inh-caps=-setuid,-setgid",
                                   testing::bin("iarelay"),
                                   "--journal",
                                   journal_,
                                   "agent",
                                   "pause",
                                   kAgentA,
                                   "--reason",
                                   "two words"};
  auto r = testing::run(argv);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(journal_ + " belongs to nobody"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Run: runuser -u nobody -- iarelay --journal " + journal_ + " agent pause " +
                       kAgentA + " --reason 'two words'"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(side_files(), "");
  EXPECT_FALSE(std::filesystem::exists(journal_ + "-wal"));
}

}  // namespace
}  // namespace iarelay::clitest
