// The power-cut image: synced content plus a random, shuffled, partly torn subset of the
// writes pending since each file's last sync.
#include "powerloss/disk_image.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "powerloss/pending_record.h"

namespace iarelay::powerloss {
namespace {

constexpr std::uint64_t kSector = 512;
constexpr std::uint64_t kWalHeaderSize = 32;

bool exists(const std::string& path) {
  return std::filesystem::exists(path);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put(std::string& file, std::uint64_t offset, const char* data, std::uint64_t length) {
  if (file.size() < offset + length) file.resize(offset + length, '\0');
  std::copy(data, data + length, file.begin() + static_cast<std::ptrdiff_t>(offset));
}

}  // namespace

StateLock::StateLock(const std::string& state_dir) {
  fd_ = ::open((state_dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ >= 0)
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
}

StateLock::~StateLock() {
  if (fd_ >= 0) ::close(fd_);  // drops the flock
}

ImageStats build_power_cut_image(const std::string& state_dir, const std::string& journal_name,
                                 const std::string& image_dir, std::mt19937_64& rng) {
  ImageStats stats;
  std::filesystem::create_directories(image_dir);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  // How much of the pending writes reached the disk varies from one power cut to the next:
  // none, all, or a share of them.
  const double shares[] = {0.0, 0.25, 0.5, 0.75, 1.0};
  const double keep = shares[std::uniform_int_distribution<int>(0, 4)(rng)];
  const double torn = unit(rng) < 0.5 ? 0.0 : 0.3;
  for (const char* suffix : {"", "-wal", "-journal", "-shm"}) {
    std::string name = journal_name + suffix;
    std::string target = image_dir + "/" + name;
    std::filesystem::remove(target);
    std::string state = state_dir + "/" + name;
    if (std::string(suffix) == "-shm") continue;  // rebuilt by SQLite from the WAL
    if (!exists(state + ".synced") || exists(state + ".gone")) continue;
    std::string content = slurp(state + ".synced");
    std::string log = slurp(state + ".pending");
    std::vector<Record> records = parse_records(log);
    stats.pending_records += static_cast<std::int64_t>(records.size());
    const bool wal = std::string(suffix) == "-wal";
    for (const Record& r : records) {
      if (!wal || r.header.kind != kWrite) continue;
      if (r.header.offset < kWalHeaderSize)
        stats.wal_header_pending = true;
      else
        stats.wal_frames_pending = true;
    }
    if (exists(state + ".created") && unit(rng) < 0.5) {
      ++stats.vanished;
      continue;
    }
    std::vector<const Record*> chosen;
    for (const Record& r : records)
      if (unit(rng) < keep) chosen.push_back(&r);
    std::shuffle(chosen.begin(), chosen.end(), rng);
    for (const Record* r : chosen) {
      ++stats.applied;
      const RecordHeader& h = r->header;
      if (h.kind == kTruncate) {
        content.resize(h.offset, '\0');
        continue;
      }
      const char* data = log.data() + r->data_offset;
      if (unit(rng) >= torn) {
        put(content, h.offset, data, h.length);
        continue;
      }
      // Torn: each 512-byte sector of the file that the write covers made it or not.
      ++stats.torn;
      std::uint64_t end = h.offset + h.length;
      for (std::uint64_t at = h.offset; at < end;) {
        std::uint64_t sector_end = std::min(end, (at / kSector + 1) * kSector);
        if (unit(rng) < 0.5) put(content, at, data + (at - h.offset), sector_end - at);
        at = sector_end;
      }
    }
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  return stats;
}

}  // namespace iarelay::powerloss
