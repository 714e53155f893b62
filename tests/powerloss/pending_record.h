// The format of NAME.pending, the power-cut shim's log of the writes to one journal file since
// its last sync: records of a fixed header and, for a write, the bytes written. A record cut
// short by a SIGKILL at the end of the log is dropped by parse_records().
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace iarelay::powerloss {

constexpr std::uint32_t kRecordMagic = 0x504c5752;  // "RWLP"
constexpr std::uint32_t kWrite = 1;                 // `length` bytes at `offset`
constexpr std::uint32_t kTruncate = 2;              // the file's size becomes `offset`

struct RecordHeader {
  std::uint32_t magic;
  std::uint32_t kind;
  std::uint64_t offset;
  std::uint64_t length;
};

struct Record {
  RecordHeader header;
  size_t data_offset;  // where the written bytes start in the log
};

inline std::vector<Record> parse_records(std::string_view log) {
  std::vector<Record> out;
  size_t at = 0;
  while (log.size() - at >= sizeof(RecordHeader)) {
    RecordHeader h;
    std::memcpy(&h, log.data() + at, sizeof h);
    if (h.magic != kRecordMagic) break;
    size_t data = at + sizeof h;
    std::uint64_t length = h.kind == kWrite ? h.length : 0;
    if (log.size() - data < length) break;
    out.push_back(Record{h, data});
    at = data + length;
  }
  return out;
}

}  // namespace iarelay::powerloss
