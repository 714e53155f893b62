// Standard Webhooks signatures over the common crypto helpers.
#include "dispatch/signature.h"

#include <cstdlib>

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

Result<std::string> agent_signing_key(const AgentConfig& agent) {
  const std::string env = agent_secret_env(agent.handle);
  const char* set = std::getenv(env.c_str());
  const bool from_env = set && *set;
  const std::string section = "[agent." + agent.handle + "] ";
  auto secret = read_secret(agent.secret_file, env);
  if (!secret)
    return Status::invalid_argument(section + "secret_file: " + secret.status().message() +
                                    " (and " + env + " is not set)");
  if (secret->empty()) return std::string();  // neither set: unsigned
  auto key = signing_key(*secret);
  if (!key)
    return Status::invalid_argument(section +
                                    (from_env ? env : "secret_file " + agent.secret_file) + ": " +
                                    key.status().message());
  return std::move(key).value();
}

}  // namespace iarelay
