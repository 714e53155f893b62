// The power-cut image from a hand-made state directory: what was synced is always there, each
// byte of the rest is the synced byte or one a pending write put there, and over many cuts the
// image keeps none, some (torn at 512-byte sectors) and all of the pending writes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "powerloss/disk_image.h"
#include "powerloss/pending_record.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace iarelay::powerloss {
namespace {

std::string record(std::uint32_t kind, std::uint64_t offset, const std::string& data) {
  RecordHeader h{kRecordMagic, kind, offset, kind == kWrite ? data.size() : 0};
  return std::string(reinterpret_cast<const char*>(&h), sizeof h) + data;
}

TEST(DiskImage, KeepsWhatWasSyncedAndAnyMixOfTheRest) {
  testing::TempDir dir;
  std::string state = dir.file("state");
  std::filesystem::create_directories(state);
  const std::string synced(4096, 's');
  testing::write_file(state + "/journal.db.synced", synced);
  // Two writes over the same bytes, and one past the end (the file grows).
  const std::string a(1024, 'a'), b(1024, 'b'), c(1536, 'c');
  testing::write_file(state + "/journal.db.pending",
                      record(kWrite, 512, a) + record(kWrite, 1024, b) + record(kWrite, 4096, c) +
                          std::string("torn tail"));  // a record cut by a SIGKILL is dropped
  std::mt19937_64 rng(7);
  bool saw_none = false, saw_all_of_a = false, saw_torn = false;
  for (int cut = 0; cut < 300; ++cut) {
    std::string image = dir.file("image");
    ImageStats stats = build_power_cut_image(state, "journal.db", image, rng);
    EXPECT_EQ(stats.pending_records, 3);
    std::string got = testing::read_file(image + "/journal.db");
    ASSERT_GE(got.size(), synced.size());
    for (size_t i = 0; i < got.size(); ++i) {
      char allowed_synced = i < 4096 ? 's' : '\0';
      bool ok = got[i] == allowed_synced || (i >= 512 && i < 1536 && got[i] == 'a') ||
                (i >= 1024 && i < 2048 && got[i] == 'b') || (i >= 4096 && got[i] == 'c');
      ASSERT_TRUE(ok) << "cut " << cut << ": byte " << i << " is '" << got[i] << "'";
    }
    // Sectors change whole: a byte differs from its sector's first byte only at a write's edge.
    for (size_t s = 0; s + 512 <= 4096; s += 512) {
      std::string sector = got.substr(s, 512);
      EXPECT_EQ(sector.find_first_not_of(sector[0]), std::string::npos) << "cut " << cut;
    }
    if (got == synced) saw_none = true;
    if (got.substr(512, 512) == std::string(512, 'a')) saw_all_of_a = true;
    if (stats.torn > 0) saw_torn = true;
  }
  EXPECT_TRUE(saw_none);
  EXPECT_TRUE(saw_all_of_a);
  EXPECT_TRUE(saw_torn);
}

TEST(DiskImage, AFileWhoseNameWasNeverSyncedMayVanishAndARemovedOneIsGone) {
  testing::TempDir dir;
  std::string state = dir.file("state");
  std::filesystem::create_directories(state);
  testing::write_file(state + "/journal.db.synced", "db");
  testing::write_file(state + "/journal.db-wal.synced", "");
  testing::write_file(state + "/journal.db-wal.created", "");
  testing::write_file(state + "/journal.db-journal.synced", "");
  testing::write_file(state + "/journal.db-journal.gone", "");
  std::mt19937_64 rng(11);
  int wal_present = 0;
  for (int cut = 0; cut < 100; ++cut) {
    std::string image = dir.file("image");
    build_power_cut_image(state, "journal.db", image, rng);
    EXPECT_EQ(testing::read_file(image + "/journal.db"), "db");
    EXPECT_FALSE(std::filesystem::exists(image + "/journal.db-journal"));
    wal_present += std::filesystem::exists(image + "/journal.db-wal");
  }
  EXPECT_GT(wal_present, 0);
  EXPECT_LT(wal_present, 100);
}

}  // namespace
}  // namespace iarelay::powerloss
