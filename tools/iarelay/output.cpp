// Table, CSV and JSON rendering of rows.
#include "output.h"

#include <algorithm>
#include <ostream>

#include "common/time.h"
#include "common/utf8.h"

namespace iarelay::cli {
namespace {

constexpr std::size_t kMaxCellWidth = 60;  // table cells longer than this are cut with "..."

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

// Table cells stay on one line and within a readable width, cut on a character boundary
// (terminal_text leaves only valid UTF-8).
std::string table_cell(const std::string& text) {
  std::string s = terminal_text(text, /*one_line=*/true);
  if (s.size() <= kMaxCellWidth) return s;
  std::size_t cut = kMaxCellWidth - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "...";
}

// Whether a spreadsheet would read a cell beginning with `text` as a formula.
bool formula_like(std::string_view text) {
  return !text.empty() && std::string_view("=+-@\t\r").find(text.front()) != std::string::npos;
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
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string terminal_text(std::string_view text, bool one_line) {
  static const char* hex = "0123456789abcdef";
  auto escaped = [](const char* prefix, unsigned char b) {
    return std::string(prefix) + hex[b >> 4] + hex[b & 15];
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    const std::size_t n = utf8_sequence_length(text, i);
    if (n == 0) {
      out += escaped("\\x", b);  // not UTF-8: a lone 0x9B is CSI to a Latin-1 terminal
      ++i;
    } else if (n == 1 && (b < 0x20 || b == 0x7F)) {
      if (b == '\n' || b == '\t' || (b == '\r' && one_line))
        out += one_line ? ' ' : static_cast<char>(b);
      else
        out += escaped("\\x", b);
      ++i;
    } else if (n == 2 && b == 0xC2 && static_cast<unsigned char>(text[i + 1]) <= 0x9F) {
      out += escaped("\\u00", static_cast<unsigned char>(text[i + 1]));  // C1: U+0080-U+009F
      i += 2;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string csv_text(const Json& value) {
  std::string text = cell_text(value, "");
  return value.is_string() && formula_like(text) ? "'" + text : text;
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
      out_ << (i ? "," : "") << csv_field(csv_text(columns_[i]));
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
        out_ << (i ? "," : "") << csv_field(csv_text(values[i]));
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
