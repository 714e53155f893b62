// Token files: split into tokens, read (variable first), and targets shown without them.
#include "common/tokens.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

namespace iarelay {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A query parameter's name percent-decoded ('+' as a space), as the listener reads it.
std::string decoded_name(std::string_view name) {
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    int hi = name[i] == '%' && i + 2 < name.size() ? hex_digit(name[i + 1]) : -1;
    int lo = hi >= 0 ? hex_digit(name[i + 2]) : -1;
    if (hi >= 0 && lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += name[i] == '+' ? ' ' : name[i];
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> split_tokens(std::string_view text) {
  std::vector<std::string> out;
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    while (!line.empty() && blank(line.front())) line.remove_prefix(1);
    while (!line.empty() && blank(line.back())) line.remove_suffix(1);
    if (!line.empty()) out.emplace_back(line);
  }
  return out;
}

Result<std::vector<std::string>> read_tokens(const std::string& file, const std::string& env_name) {
  if (const char* v = std::getenv(env_name.c_str()); v && *v) {
    auto tokens = split_tokens(v);
    if (tokens.empty())
      return Status::invalid_argument(env_name + " holds no token (one token per line)");
    return tokens;
  }
  if (file.empty()) return std::vector<std::string>();
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return Status::io_error(
        file + ": cannot read token file: " + (errno ? std::strerror(errno) : "open failed"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::io_error(file + ": cannot read token file");
  auto tokens = split_tokens(text);
  if (tokens.empty())
    return Status::invalid_argument(file +
                                    ": token file holds no token (write one token per line)");
  return tokens;
}

std::string redact_token_param(std::string_view target) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, q + 1));
  std::string_view rest = target.substr(q + 1);
  // A fragment is not sent, but a URL shown may carry one: it is kept as it is.
  std::string_view fragment;
  if (size_t hash = rest.find('#'); hash != std::string_view::npos) {
    fragment = rest.substr(hash);
    rest = rest.substr(0, hash);
  }
  bool first = true;
  while (true) {
    size_t amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    if (!first) out += '&';
    first = false;
    // The name as the listener decodes it: "token", "%74oken" and "tok%65n" are all the token.
    if (decoded_name(part.substr(0, part.find('='))) == "token")
      out += std::string(part.substr(0, part.find('='))) + "=REDACTED";
    else
      out += part;
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  out += fragment;
  return out;
}

Result<std::string> read_single_token(const std::string& file, const std::string& env_name) {
  auto tokens = read_tokens(file, env_name);
  if (!tokens) return tokens.status();
  if (tokens->empty()) return std::string();
  if (tokens->size() > 1) {
    const char* env = std::getenv(env_name.c_str());
    const std::string where = env && *env ? env_name : file + ": token file";
    return Status::invalid_argument(where + " holds " + std::to_string(tokens->size()) +
                                    " tokens; a client sends one: keep only the token the "
                                    "upstream relay takes (a listen token file may hold "
                                    "several, this one may not)");
  }
  return std::move(tokens->front());
}

}  // namespace iarelay
