// spdlog configuration: a text pattern or one JSON object per line.
#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

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

}  // namespace

Status init_logging(const std::string& level, const std::string& format) {
  auto lvl = spdlog::level::from_str(level == "warn" ? "warning" : level);
  if (lvl == spdlog::level::off && level != "off")
    return Status::invalid_argument("log_level must be debug, info, warn or error");
  auto logger = spdlog::stderr_logger_mt("iarelay");
  if (format == "json") {
    // %* escapes the message for a JSON string; everything else in the pattern is fixed text.
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","thread":%t,"msg":"%*"})");
    logger->set_formatter(std::move(formatter));
  } else if (format == "text") {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %v", spdlog::pattern_time_type::utc);
  } else {
    return Status::invalid_argument("log_format must be text or json");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return Status::ok();
}

}  // namespace iarelay
