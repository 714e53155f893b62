// spdlog configuration: a text pattern or one JSON object per line, with the journald priority
// prefix when stderr is the journal.
#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common/utf8.h"

namespace iarelay {
namespace {

// %* in a pattern: the message as the inside of a JSON string. A message can quote bytes that
// are not UTF-8 (a journal row's id, an upstream's refused message): they become U+FFFD, so
// every line stays JSON.
class JsonEscapedMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static const char* hex = "0123456789abcdef";
    std::string_view text(msg.payload.data(), msg.payload.size());
    std::string replaced;
    if (!is_valid_utf8(text)) text = replaced = replace_invalid_utf8(text);
    for (char c : text) {
      switch (c) {
        case '"':
          dest.append(std::string_view("\\\""));
          break;
        case '\\':
          dest.append(std::string_view("\\\\"));
          break;
        case '\n':
          dest.append(std::string_view("\\n"));
          break;
        case '\t':
          dest.append(std::string_view("\\t"));
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[(c >> 4) & 15], hex[c & 15]};
            dest.append(std::string_view(esc, 6));
          } else {
            dest.push_back(c);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

// %P in a pattern: the syslog priority of the line's level, as journald reads it from the
// start of a line (sd-daemon(3): "<3>" error, "<4>" warning, "<6>" info, "<7>" debug).
class JournaldPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    char digit = '6';
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug:
        digit = '7';
        break;
      case spdlog::level::warn:
        digit = '4';
        break;
      case spdlog::level::err:
        digit = '3';
        break;
      case spdlog::level::critical:
        digit = '2';
        break;
      default:
        break;
    }
    const char prefix[3] = {'<', digit, '>'};
    dest.append(std::string_view(prefix, 3));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JournaldPriority>();
  }
};

}  // namespace

bool stderr_is_journald() {
  // systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it connected to stderr; a
  // child whose stderr was redirected elsewhere inherits the variable, hence the comparison.
  const char* value = std::getenv("JOURNAL_STREAM");
  if (!value || !*value) return false;
  unsigned long long dev = 0, ino = 0;
  char tail = 0;
  if (std::sscanf(value, "%llu:%llu%c", &dev, &ino, &tail) != 2) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

Status init_logging(const std::string& level, const std::string& format) {
  auto lvl = spdlog::level::from_str(level == "warn" ? "warning" : level);
  if (lvl == spdlog::level::off && level != "off")
    return Status::invalid_argument("log_level must be debug, info, warn or error");
  if (format != "json" && format != "text")
    return Status::invalid_argument("log_format must be text or json");
  // Under systemd, journald stamps each line itself and takes its priority from a "<N>"
  // prefix: lines carry the prefix and, in text, no timestamp of their own.
  const bool journald = stderr_is_journald();
  auto logger = spdlog::stderr_logger_mt("iarelay");
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<JsonEscapedMessage>('*').add_flag<JournaldPriority>('P');
  std::string pattern;
  if (format == "json") {
    // %* escapes the message for a JSON string; everything else in the pattern is fixed text.
    pattern = R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","thread":%t,"msg":"%*"})";
  } else {
    pattern = journald ? "%-5l %v" : "%Y-%m-%dT%H:%M:%S.%eZ %-5l %v";
  }
  formatter->set_pattern(journald ? "%P" + pattern : pattern);
  logger->set_formatter(std::move(formatter));
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return Status::ok();
}

}  // namespace iarelay
