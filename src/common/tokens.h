// The listen tokens of docs/operations.md "Authentication": a token file (or its environment
// variable) holds one token per line, so a new token can be added before the old one is taken
// away. Pure functions, safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace iarelay {

// The tokens of a token file's text: one per line, surrounding whitespace (spaces, tabs, a
// carriage return) taken off, blank lines skipped, in the file's order.
std::vector<std::string> split_tokens(std::string_view text);

// The tokens of `env_name` when it is set and not empty, else of `file`. Nothing when neither is
// set (no authentication). An error names the file (or the variable) when it cannot be read or
// holds no token; its text never contains a token.
Result<std::vector<std::string>> read_tokens(const std::string& file, const std::string& env_name);

// The one token of a client's token file (`[upstream] token_file`, or `env_name`): as
// read_tokens reads it, but a file of several tokens is an error (a client sends one; sent
// whole, the lines would make a header no server accepts). Nothing set: "".
Result<std::string> read_single_token(const std::string& file, const std::string& env_name);

// `target` (a request target or URL) with the value of every `token` query parameter replaced by
// REDACTED, for anything that shows a target: "/v1/webhooks/s?token=REDACTED&type=status".
std::string redact_token_param(std::string_view target);

}  // namespace iarelay
