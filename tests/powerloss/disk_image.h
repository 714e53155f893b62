// Turns the power-cut shim's state directory (power_cut_shim.cpp) into the disk a power cut at
// that moment would leave: every journal file as of its last sync, plus a random subset of the
// writes since then applied in a random order, some torn at 512-byte sectors; a file whose
// name was not yet made durable by a sync of its directory may be missing altogether.
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace iarelay::powerloss {

// What the image was made of, for the harness's report.
struct ImageStats {
  std::int64_t pending_records = 0;  // writes and truncations not yet synced, all files
  std::int64_t applied = 0;          // of which the image kept
  std::int64_t torn = 0;             // of which the image kept only some sectors
  std::int64_t vanished = 0;         // files dropped (created, directory not synced since)
  bool wal_header_pending = false;   // an unsynced write of the WAL header (a WAL restart)
  bool wal_frames_pending = false;   // unsynced WAL frames
};

// Holds STATE/lock, the lock every shimmed process takes around each write and sync of a
// journal file: while it is held the "disk" does not change.
class StateLock {
 public:
  explicit StateLock(const std::string& state_dir);
  ~StateLock();
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  int fd_ = -1;
};

// Writes the power-cut image of `journal_name` (e.g. "journal.db", with its -wal and -journal)
// from `state_dir` into `image_dir` (created if missing; its journal files replaced). The
// caller holds a StateLock, or every shimmed process is dead.
ImageStats build_power_cut_image(const std::string& state_dir, const std::string& journal_name,
                                 const std::string& image_dir, std::mt19937_64& rng);

}  // namespace iarelay::powerloss
