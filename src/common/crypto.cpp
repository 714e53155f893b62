// OpenSSL-backed hashing, HMAC and base64; ULID generation.
#include "common/crypto.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <cstdint>
#include <random>

#include "common/time.h"

namespace iarelay {

std::string sha256_hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * sizeof digest);
  for (unsigned char c : digest) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return Status::invalid_argument("base64 length is not a multiple of 4");
  std::string out(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return Status::invalid_argument("not valid base64");
  // EVP_DecodeBlock counts padding as zero bytes; trim them.
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  size_t n = a.size() < b.size() ? a.size() : b.size();
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool is_webhook_id(std::string_view text) {
  if (text.size() != 26 || text[0] < '0' || text[0] > '7') return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') ||
          (c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U')))
      return false;
  return true;
}

std::string new_webhook_id() {
  static const char* alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  unsigned char bytes[16];
  std::uint64_t t = static_cast<std::uint64_t>(now_millis());
  for (int i = 5; i >= 0; --i) {
    bytes[i] = static_cast<unsigned char>(t & 0xff);
    t >>= 8;
  }
  // The 80 random bits come from a per-thread generator seeded once from std::random_device:
  // ids need uniqueness, not secrecy, and RAND_bytes costs a getpid() fork check and a lock
  // per call on the intake path. Independent 256-bit seeds per thread (and per process, so
  // across restarts) make a collision within one millisecond as unlikely as with RAND_bytes.
  // (A fork() would copy the state: no iarelay process makes ids in a forked child.)
  thread_local std::mt19937_64 generator = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(),
                       device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  std::uint64_t high = generator(), low = generator();
  for (int i = 0; i < 8; ++i) bytes[6 + i] = static_cast<unsigned char>(high >> (8 * i));
  for (int i = 0; i < 2; ++i) bytes[14 + i] = static_cast<unsigned char>(low >> (8 * i));
  // 128 bits -> 26 base32 characters, most significant first (first char holds 3 bits).
  std::string out(26, '0');
  // Character i holds bits [130 - 5*(i+1), 130 - 5*i) of the 128-bit value padded to 130.
  for (int i = 0; i < 26; ++i) {
    unsigned value = 0;
    for (int b = 0; b < 5; ++b) {
      int bit = 5 * i + b - 2;  // index from the most significant bit of `bytes`
      unsigned set = bit < 0 ? 0 : (bytes[bit / 8] >> (7 - bit % 8)) & 1;
      value = (value << 1) | set;
    }
    out[static_cast<size_t>(i)] = alphabet[value];
  }
  return out;
}

}  // namespace iarelay
