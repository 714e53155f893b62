// The listener's credential check: Basic, Bearer or a token query parameter, against every token.
#include "intake/auth.h"

#include <algorithm>
#include <cctype>

#include "common/crypto.h"

namespace iarelay {
namespace {

// Said at the end of every refusal, so a 401 alone tells an integrator what to send.
constexpr std::string_view kAccepted =
    "; send a listen token as the password of HTTP Basic, as 'Authorization: Bearer <token>', or "
    "as the query parameter token=<token>";

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Standard base64 with its padding (RFC 4648 section 4), as RFC 7617 requires of Basic.
bool is_base64(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return false;
  size_t pad = 0;
  while (pad < 2 && s[s.size() - 1 - pad] == '=') ++pad;
  for (size_t i = 0; i < s.size() - pad; ++i) {
    char c = s[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') return false;
  }
  return true;
}

std::string refused(std::string why) {
  return why + std::string(kAccepted);
}

}  // namespace

Authenticator::Authenticator(const ListenCredentials& credentials) {
  for (const auto& t : credentials.tokens) token_digests_.push_back(sha256_hex(t));
  if (!credentials.user.empty()) user_digest_ = sha256_hex(credentials.user);
}

bool Authenticator::is_token(std::string_view presented) const {
  std::string digest = sha256_hex(presented);
  // No early exit: the time taken does not depend on which token matched, or whether one did.
  unsigned match = 0;
  for (const auto& d : token_digests_)
    match |= static_cast<unsigned>(constant_time_equal(digest, d));
  return match != 0;
}

std::optional<std::string> Authenticator::refusal(const HttpRequest& req) const {
  if (!required()) return std::nullopt;
  // The Authorization header decides when there is one; a token parameter beside it is ignored.
  if (auto header = req.header("Authorization")) {
    std::string_view value = trim(*header);
    std::string_view scheme = value.substr(0, value.find(' '));
    std::string_view credentials =
        trim(scheme.size() < value.size() ? value.substr(scheme.size()) : std::string_view());
    if (iequals(scheme, "Bearer")) {
      if (credentials.empty()) return refused("Authorization: Bearer carries no token");
      if (!is_token(credentials)) return refused("the bearer token is not a listen token");
      return std::nullopt;
    }
    if (iequals(scheme, "Basic")) {
      if (!is_base64(credentials))
        return refused("malformed HTTP Basic credentials: not base64 of user:password");
      auto decoded = base64_decode(credentials);
      if (!decoded) return refused("malformed HTTP Basic credentials: not base64 of user:password");
      size_t colon = decoded->find(':');
      if (colon == std::string::npos)
        return refused(
            "malformed HTTP Basic credentials: no ':' between the user name and the password");
      std::string_view user = std::string_view(*decoded).substr(0, colon);
      std::string_view password = std::string_view(*decoded).substr(colon + 1);
      // Both compared whatever the other's outcome, so the time taken tells nothing either.
      bool user_matches = constant_time_equal(sha256_hex(user), user_digest_);
      bool user_ok = user_digest_.empty() || user_matches;
      bool password_ok = is_token(password);
      // A wrong user name is said whatever the password, so the answer is no test of a token.
      if (!user_ok)
        return refused("the HTTP Basic user name is not the one configured ([listen] user)");
      if (!password_ok) return refused("the HTTP Basic password is not a listen token");
      return std::nullopt;
    }
    // The scheme is not shown: a client that sends the token without a scheme would see it.
    return refused("the Authorization header is neither Basic nor Bearer");
  }
  size_t given = 0;
  std::string_view token;
  for (const auto& [name, value] : req.query)
    if (name == "token") {
      if (given++ == 0) token = value;
    }
  if (given == 0) return refused("no credentials");
  if (given > 1) return refused("the token query parameter is given more than once");
  if (!is_token(token)) return refused("the token query parameter is not a listen token");
  return std::nullopt;
}

void strip_token_param(HttpRequest& req) {
  req.query.erase(std::remove_if(req.query.begin(), req.query.end(),
                                 [](const auto& p) { return p.first == "token"; }),
                  req.query.end());
}

}  // namespace iarelay
