// Table, CSV and JSON rendering of rows.
#include "output.h"

#include <algorithm>
#include <ostream>

#include "common/time.h"

namespace iarelay::cli {
namespace {

constexpr std::size_t kMaxCellWidth = 60;  // table cells longer than this are cut with "..."

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

// Table cells stay on one line and within a readable width.
std::string table_cell(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > kMaxCellWidth) s = s.substr(0, kMaxCellWidth - 3) + "...";
  return s;
}

}  // namespace

std::optional<Format> parse_format(std::string_view text) {
  if (text == "table") return Format::kTable;
  if (text == "csv") return Format::kCsv;
  if (text == "json") return Format::kJson;
  return std::nullopt;
}

std::string cell_text(const Json& value, std::string_view null_text) {
  if (value.is_null()) return std::string(null_text);
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string age_text(const Json& ms) {
  if (!ms.is_number()) return "-";
  Millis v = ms.get<Millis>();
  return format_duration(v / 1000 * 1000 > 0 ? v / 1000 * 1000 : 0);
}

RowWriter::RowWriter(std::ostream& out, Format format, std::vector<std::string> columns,
                     bool exact_header)
    : out_(out), format_(format), columns_(std::move(columns)), exact_header_(exact_header) {
  if (format_ == Format::kCsv) {
    for (std::size_t i = 0; i < columns_.size(); ++i)
      out_ << (i ? "," : "") << csv_field(columns_[i]);
    out_ << "\r\n";
  } else if (format_ == Format::kJson) {
    out_ << "[";
  }
}

void RowWriter::row(const std::vector<Json>& values) {
  ++count_;
  switch (format_) {
    case Format::kTable: {
      std::vector<std::string> cells;
      for (const auto& v : values) cells.push_back(table_cell(cell_text(v, "-")));
      table_.push_back(std::move(cells));
      break;
    }
    case Format::kCsv:
      for (std::size_t i = 0; i < values.size(); ++i)
        out_ << (i ? "," : "") << csv_field(cell_text(values[i], ""));
      out_ << "\r\n";
      break;
    case Format::kJson: {
      Json object = Json::object();
      for (std::size_t i = 0; i < columns_.size() && i < values.size(); ++i)
        object[columns_[i]] = values[i];
      out_ << (count_ > 1 ? ",\n  " : "\n  ")
           << object.dump(-1, ' ', false, Json::error_handler_t::replace);
      break;
    }
  }
}

void RowWriter::finish() {
  if (format_ == Format::kJson) {
    out_ << (count_ ? "\n]\n" : "]\n");
    return;
  }
  if (format_ != Format::kTable) return;
  std::vector<std::size_t> width(columns_.size());
  for (std::size_t i = 0; i < columns_.size(); ++i) width[i] = columns_[i].size();
  for (const auto& r : table_)
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  auto print = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (std::size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      line += cells[i];
      if (i + 1 < cells.size()) line += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    out_ << line << "\n";
  };
  std::vector<std::string> header;
  for (const auto& c : columns_) header.push_back(exact_header_ ? table_cell(c) : upper(c));
  print(header);
  for (const auto& r : table_) print(r);
}

}  // namespace iarelay::cli
