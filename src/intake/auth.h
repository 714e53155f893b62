// Who may use the listener's /v1 routes (docs/operations.md "Authentication"): a request carries
// one of the listen tokens as the password of HTTP Basic (what an xMatters endpoint can send),
// as `Authorization: Bearer <token>`, or as a `token` query parameter. Every token is compared in
// constant time, all of them for every request. Immutable once built: safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "intake/http_listener.h"

namespace iarelay {

// What the listener accepts; no tokens: no authentication.
struct ListenCredentials {
  std::vector<std::string> tokens;
  std::string user;  // [listen] user; empty: HTTP Basic with any user name
};

// The WWW-Authenticate header of every 401.
inline constexpr std::string_view kWwwAuthenticate = "Basic realm=\"iarelay\", Bearer";

class Authenticator {
 public:
  explicit Authenticator(const ListenCredentials& credentials);
  // Whether requests need a token at all.
  bool required() const { return !token_digests_.empty(); }
  // Nothing when `req` may pass (or no token is required); else why not, for the 401's body.
  // The reason never contains what the request sent.
  std::optional<std::string> refusal(const HttpRequest& req) const;

 private:
  // Whether `presented` is one of the tokens: compares against every one of them, always.
  bool is_token(std::string_view presented) const;

  // SHA-256 of each token and of the user: every comparison is of 64 hex digits, so its time
  // says nothing about a token's length or content.
  std::vector<std::string> token_digests_;
  std::string user_digest_;  // empty: any user
};

// The request without its `token` query parameters (what the routes see after the check).
void strip_token_param(HttpRequest& req);

}  // namespace iarelay
