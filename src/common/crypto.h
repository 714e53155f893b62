// Hashing, signing and encoding helpers over OpenSSL, plus webhook id generation.
// All functions are thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace iarelay {

std::string sha256_hex(std::string_view data);
// Raw 32-byte HMAC-SHA256 of `data` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view data);
std::string base64_encode(std::string_view data);
Result<std::string> base64_decode(std::string_view text);
// Compares in time that depends only on the lengths, not on where the inputs differ.
bool constant_time_equal(std::string_view a, std::string_view b);
// A new webhook id: a ULID (26 Crockford base32 characters, time-ordered, 80 random bits).
std::string new_webhook_id();
// Whether `text` has the form of one (what new_webhook_id makes): 26 Crockford base32
// characters, upper case, the first at most '7'.
bool is_webhook_id(std::string_view text);

}  // namespace iarelay
