// Printing rows and documents as an aligned table, CSV (RFC 4180, header row) or JSON.
// Values are JSON values so one row feeds every format: null prints "-" in a table and an
// empty field in CSV. Values come from the journal, that is from outside: a table shows
// control characters and bytes that are not UTF-8 escaped (terminal_text), a CSV cell a
// spreadsheet would read as a formula gets a leading ' (csv_text), JSON is exact (escaped by
// JSON; bytes that are not UTF-8 become U+FFFD). Not thread-safe; one writer per output stream.
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iarelay::cli {

using Json = nlohmann::ordered_json;

enum class Format { kTable, kCsv, kJson };
std::optional<Format> parse_format(std::string_view text);

// Rows of the same columns. Table output is buffered (to align columns) and printed by
// finish(); CSV and JSON (an array of objects) stream as rows come.
class RowWriter {
 public:
  // Table headers are upper-cased unless `exact_header` (SQL column names stay as written).
  RowWriter(std::ostream& out, Format format, std::vector<std::string> columns,
            bool exact_header = false);
  void row(const std::vector<Json>& values);
  void finish();
  std::size_t rows() const { return count_; }

 private:
  std::ostream& out_;
  Format format_;
  std::vector<std::string> columns_;
  bool exact_header_;
  std::vector<std::vector<std::string>> table_;  // buffered cells (table format)
  std::size_t count_ = 0;
};

// A value as text: strings as they are, numbers and booleans as JSON writes them, null as
// `null_text`.
std::string cell_text(const Json& value, std::string_view null_text);
// Text for a terminal: C0 controls and DEL shown as \x1b, C1 controls as \u009b, bytes that
// are not UTF-8 as \xff, so that no value can move the cursor, retitle the window or recolour
// the text. With `one_line` tab, CR and LF become spaces first (a table cell, a field line);
// without it LF and tab are kept (a payload).
std::string terminal_text(std::string_view text, bool one_line);
// A CSV cell's text (before quoting): a string beginning with =, +, -, @, tab or CR gets a
// leading ' so that a spreadsheet shows it as text instead of running it as a formula (the
// OWASP rule for CSV injection); numbers are written as they are; null is empty.
std::string csv_text(const Json& value);
// RFC 4180 quoting: a field holding a comma, quote, CR or LF is quoted, quotes doubled.
std::string csv_field(const std::string& text);
// "1h2m" style age of a duration in ms, to whole seconds ("0s" under a second); "-" for null.
std::string age_text(const Json& ms);

}  // namespace iarelay::cli
