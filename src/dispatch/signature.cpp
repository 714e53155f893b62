// Standard Webhooks signatures over the common crypto helpers.
#include "dispatch/signature.h"

#include <cctype>

#include "common/crypto.h"

namespace iarelay {

Result<std::string> signing_key(std::string_view secret) {
  constexpr std::string_view kPrefix = "whsec_";
  if (secret.substr(0, kPrefix.size()) != kPrefix) return std::string(secret);
  auto key = base64_decode(secret.substr(kPrefix.size()));
  if (!key) return Status::invalid_argument("secret: whsec_ value is not valid base64");
  if (key->empty()) return Status::invalid_argument("secret: whsec_ value is empty");
  return std::move(key).value();
}

std::string sign_webhook(std::string_view key, std::string_view id, std::string_view timestamp,
                         std::string_view body) {
  std::string content;
  content.reserve(id.size() + timestamp.size() + body.size() + 2);
  content.append(id).append(".").append(timestamp).append(".").append(body);
  return "v1," + base64_encode(hmac_sha256(key, content));
}

bool verify_webhook(std::string_view key, std::string_view id, std::string_view timestamp,
                    std::string_view body, std::string_view header) {
  const std::string expected = sign_webhook(key, id, timestamp, body);
  bool ok = false;
  size_t pos = 0;
  while (pos <= header.size()) {
    size_t end = header.find(' ', pos);
    if (end == std::string_view::npos) end = header.size();
    std::string_view entry = header.substr(pos, end - pos);
    // Compare every entry so the time does not reveal which one matched.
    if (!entry.empty() && constant_time_equal(entry, expected)) ok = true;
    pos = end + 1;
  }
  return ok;
}

std::string agent_secret_env(std::string_view handle) {
  std::string name = "IARELAY_AGENT_";
  for (char c : handle)
    name += std::isalnum(static_cast<unsigned char>(c))
                ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                : '_';
  return name + "_SECRET";
}

}  // namespace iarelay
